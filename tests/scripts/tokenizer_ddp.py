"""Run by tests/test_tokenizer_train.py (a script: Lightning DDP relaunches it per rank): 2-process Lightning DDP (gloo, CPU) on real window shards.

Each rank saves its codebooks after training, so the test can check they are identical, and the share of the
time cap its lr schedule saw at every step (`runkit.schedule.TimeBudget`), which must be rank 0's on both ranks.
Usage: python tests/scripts/tokenizer_ddp.py SHARDS OUT_DIR [auto|off]  (off forces sync_codebook=False)
"""

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch

from data import WindowDataModule
from tokenizer.lightning import TokenizerModule


class SaveCodebooks(L.Callback):
    def __init__(self, out: Path):
        self.out = out
        self.fractions = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.fractions.append(pl_module.time_budget.fraction)

    def on_train_end(self, trainer, pl_module):
        cb = pl_module.model.quantizer.rvq.codebooks.detach().cpu().numpy()
        np.save(self.out / f"rank{trainer.global_rank}.npy", cb)
        np.save(self.out / f"time_fraction_rank{trainer.global_rank}.npy", np.array(self.fractions))


if __name__ == "__main__":
    shards, out = sys.argv[1], Path(sys.argv[2])
    sync = None if len(sys.argv) < 4 or sys.argv[3] == "auto" else False
    torch.set_num_threads(1)
    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4, max_time={"minutes": 5}, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[SaveCodebooks(out)],
    )
    dm = WindowDataModule(shards, batch_size=4, max_channels=32)
    module = TokenizerModule("tiny", warmup_steps=1, sync_codebook=sync)
    module.time_budget.every = 1  # a broadcast at every step
    trainer.fit(module, dm)
