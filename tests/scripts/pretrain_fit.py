"""Run by tests/test_pretrain_train.py: ``python -m pretrain fit ARGS`` (the real CLI) plus a recorder.

The recorder appends one JSON line per optimizer step to OUT/rank{R}.jsonl (step, loss, and the
recording/start/anchor of every segment of the batch), logs every checkpoint write with the rank that made
it to OUT/saves_rank{R}.txt, saves the trained parameters to OUT/weights_rank{R}.npy, and with KILL > 0
SIGKILLs its own process once step KILL is done (at the start of the next step).
Usage: python tests/scripts/pretrain_fit.py OUT KILL fit -c pretrain/configs/tiny.yaml --data.tokens ... [...]
(Lightning DDP and torchrun re-run this same script per rank.)
"""

import json
import os
import signal
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pretrain.__main__ import main


class Recorder(L.Callback):
    def __init__(self, out: Path, kill_after: int):
        self.out, self.kill_after = out, kill_after

    def setup(self, trainer, pl_module, stage):
        io, rank, out = trainer.strategy.checkpoint_io, trainer.global_rank, self.out
        save = io.save_checkpoint

        def logged_save(checkpoint, path, storage_options=None):
            with open(out / f"saves_rank{rank}.txt", "a") as f:
                f.write(f"{type(io).__name__} {path}\n")
            return save(checkpoint, path, storage_options)

        io.save_checkpoint = logged_save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kill_after and trainer.global_step == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        rec = {"step": trainer.global_step, "loss": float(outputs["loss"]), "recording": batch["recording"],
               "start": batch["start"].tolist(), "anchor": batch["anchor"].tolist()}
        with open(self.out / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.model.parameters()]).cpu().numpy()
        np.save(self.out / f"weights_rank{trainer.global_rank}.npy", flat)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, kill = Path(sys.argv[1]), int(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    sys.exit(main(sys.argv[3:], trainer_defaults={"callbacks": [Recorder(out, kill)]}))
