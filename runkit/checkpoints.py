"""Checkpoint files: atomic local writes, step-based ``last.ckpt``, finding a run's checkpoint, and the weights
of one submodule out of a Lightning checkpoint.

Lightning writes checkpoints on global rank 0 only; `AtomicCheckpointIO` makes each local file appear whole or
not at all (write a hidden sibling, fsync, rename), so a SIGKILL or a SLURM pre-emption mid-write leaves the
previous ``last.ckpt`` intact. Object-store URLs go through Lightning's own writer.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are temp-file + fsync + ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` every N optimizer steps that also writes ``last.ckpt`` at the end of each epoch, so also
    when ``max_steps`` ends training (a step-based ModelCheckpoint alone skips a final step that is not a
    multiple of N)."""

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step and not trainer.fast_dev_run:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


def find_checkpoint(run: str | Path, error: type[Exception] = FileNotFoundError) -> Path:
    """RUN may be a checkpoint file or a run directory (its ``checkpoints/last.ckpt``); else ``error``."""
    run = Path(run)
    ckpt = run if run.is_file() else run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise error(f"no checkpoint at {ckpt}: pass a run directory with checkpoints/last.ckpt or a .ckpt file")
    return ckpt


def submodule_state(checkpoint: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The state dict of the LightningModule attribute named by ``prefix`` (keys without the prefix)."""
    return {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
