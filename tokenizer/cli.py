"""A LightningCLI that gives every run a directory: CSV + TensorBoard logs and checkpoints with ``last.ckpt``.

``--trainer.default_root_dir`` is the run directory (default ``runs/<stage>``); logs go straight into it and
checkpoints into ``<run>/checkpoints/``. Any ``--trainer.*`` option still works; a logger or ModelCheckpoint
given on the command line or in YAML replaces the defaults. Later stages reuse this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


class RunDirCLI(LightningCLI):
    """LightningCLI with run-directory defaults. ``stage`` names the default ``runs/<stage>`` folder."""

    stage = "run"
    #: the LightningCLI subcommands this stage's module has steps for (``test``/``predict`` need
    #: ``test_step``/``predict_step``); only these are listed and accepted
    supported = ("fit", "validate")

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        return {k: v for k, v in LightningCLI.subcommands().items() if k in self.supported}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = config.get("default_root_dir") or f"runs/{self.stage}"
        config["default_root_dir"] = root
        if config.get("logger") in (None, True):
            config["logger"] = [CSVLogger(root, name="", version=""), TensorBoardLogger(root, name="", version="")]
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if not any(isinstance(c, ModelCheckpoint) for c in given):
            callbacks = [*callbacks, ModelCheckpoint(dirpath=f"{root}/checkpoints", save_last=True)]
        return super()._instantiate_trainer(config, callbacks)


def find_checkpoint(run: str | Path, error: type[Exception] = FileNotFoundError) -> Path:
    """RUN may be a checkpoint file or a run directory (its ``checkpoints/last.ckpt``); else ``error``."""
    run = Path(run)
    ckpt = run if run.is_file() else run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise error(f"no checkpoint at {ckpt}: pass a run directory with checkpoints/last.ckpt or a .ckpt file")
    return ckpt
