"""`RunDirCLI`: a LightningCLI that gives every run a directory: CSV + TensorBoard logs and checkpoints.

``--trainer.default_root_dir`` is the run directory (default ``runs/<stage>``); logs go straight into it and
checkpoints into ``<run>/checkpoints/``. Any ``--trainer.*`` option still works; a logger, callback or
checkpoint plugin given on the command line, in YAML or in ``trainer_defaults`` replaces the default of its kind.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from runkit.checkpoints import AtomicCheckpointIO


def as_list(value: Any) -> list:
    """A config entry that may be None, one object or a list -> a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def has_instance(objects: list, kind: type) -> bool:
    return any(isinstance(o, kind) for o in objects)


class RunDirCLI(LightningCLI):
    """LightningCLI with run-directory defaults. ``stage`` names the default ``runs/<stage>`` folder."""

    stage = "run"
    #: the LightningCLI subcommands this stage's module has steps for (``test``/``predict`` need
    #: ``test_step``/``predict_step``); only these are listed and accepted
    supported = ("fit", "validate")
    #: write checkpoints through `AtomicCheckpointIO` unless a CheckpointIO plugin is given
    atomic_checkpoints = False

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        return {k: v for k, v in LightningCLI.subcommands().items() if k in self.supported}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def default_callbacks(self, root: str, present: list[Callback]) -> list[Callback]:
        """Callbacks to add, given those already ``present``: ``last.ckpt`` unless a ModelCheckpoint is there."""
        if has_instance(present, ModelCheckpoint):
            return []
        return [ModelCheckpoint(dirpath=f"{root}/checkpoints", save_last=True)]

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = config.get("default_root_dir") or f"runs/{self.stage}"
        config["default_root_dir"] = root
        if config.get("logger") in (None, True):
            config["logger"] = [CSVLogger(root, name="", version=""), TensorBoardLogger(root, name="", version="")]
        given = as_list(config.get("callbacks"))
        present = [*given, *callbacks, *as_list(self.trainer_defaults.get("callbacks"))]
        config["callbacks"] = [*given, *self.default_callbacks(root, present)]
        plugins = as_list(config.get("plugins"))
        if self.atomic_checkpoints and not has_instance(plugins, CheckpointIO):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super()._instantiate_trainer(config, callbacks)
