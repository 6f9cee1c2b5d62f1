"""Run by tests/test_tokenizer_train.py (a script: Lightning DDP relaunches it per rank): 2-process Lightning DDP (gloo, CPU) on real window shards.

Each rank saves its codebooks after training, so the test can check they are identical.
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

    def on_train_end(self, trainer, pl_module):
        cb = pl_module.model.quantizer.rvq.codebooks.detach().cpu().numpy()
        np.save(self.out / f"rank{trainer.global_rank}.npy", cb)


if __name__ == "__main__":
    shards, out = sys.argv[1], Path(sys.argv[2])
    sync = None if len(sys.argv) < 4 or sys.argv[3] == "auto" else False
    torch.set_num_threads(1)
    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[SaveCodebooks(out)],
    )
    dm = WindowDataModule(shards, batch_size=4, max_channels=32)
    trainer.fit(TokenizerModule("tiny", warmup_steps=1, sync_codebook=sync), dm)
