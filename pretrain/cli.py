"""`PretrainCLI`: the tokenizer's `RunDirCLI` (run directory, CSV + TensorBoard logs, ``last.ckpt``) with
atomic checkpoint files.

Lightning writes checkpoints on global rank 0 only; `AtomicCheckpointIO` makes each local file appear
whole or not at all (write a hidden sibling, fsync, rename), so a SIGKILL or a SLURM pre-emption mid-write
leaves the previous ``last.ckpt`` intact. Object-store URLs go through Lightning's own writer.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

from tokenizer.cli import RunDirCLI


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


class PretrainCLI(RunDirCLI):
    """``python -m pretrain fit``: default run directory ``runs/pretrain``; adds `AtomicCheckpointIO` and
    saves ``<run>/checkpoints/last.ckpt`` every ``--checkpoint_every_n_steps`` optimizer steps (and at the end)."""

    stage = "pretrain"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                            help="write checkpoints/last.ckpt every N optimizer steps (a given ModelCheckpoint replaces this)")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = config.get("default_root_dir") or f"runs/{self.stage}"
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        defaults = self.trainer_defaults.get("callbacks") or []
        defaults = defaults if isinstance(defaults, list) else [defaults]
        if not any(isinstance(c, ModelCheckpoint) for c in [*given, *callbacks, *defaults]):
            every = self._get(self.config, "checkpoint_every_n_steps", default=500)
            config["callbacks"] = [*given, RunCheckpoint(dirpath=f"{root}/checkpoints", save_last=True, every_n_train_steps=every)]
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super()._instantiate_trainer(config, callbacks)
