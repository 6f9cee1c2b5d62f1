"""`PretrainCLI`: `runkit.cli.RunDirCLI` (run directory, CSV + TensorBoard logs, ``last.ckpt``) with atomic
checkpoint files (`runkit.checkpoints.AtomicCheckpointIO`) and a ``last.ckpt`` every N optimizer steps."""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

from runkit.checkpoints import RunCheckpoint
from runkit.cli import RunDirCLI, has_instance


class PretrainCLI(RunDirCLI):
    """``python -m pretrain fit``: default run directory ``runs/pretrain``; adds `AtomicCheckpointIO` and
    saves ``<run>/checkpoints/last.ckpt`` every ``--checkpoint_every_n_steps`` optimizer steps (and at the end)."""

    stage = "pretrain"
    atomic_checkpoints = True

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                            help="write checkpoints/last.ckpt every N optimizer steps (a given ModelCheckpoint replaces this)")

    def default_callbacks(self, root: str, present: list[Callback]) -> list[Callback]:
        if has_instance(present, ModelCheckpoint):
            return []
        every = self._get(self.config, "checkpoint_every_n_steps", default=500)
        return [RunCheckpoint(dirpath=f"{root}/checkpoints", save_last=True, every_n_train_steps=every)]
