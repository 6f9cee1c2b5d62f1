"""`FinetuneCLI`: `runkit.cli.RunDirCLI` (run directory, CSV + TensorBoard logs) with checkpoint selection
and early stopping on the validation split, and a final test of the chosen checkpoint.

Checkpoints: ``<run>/checkpoints/best.ckpt`` (highest ``val/selection``: balanced accuracy, ties broken by lower
validation loss) and ``last.ckpt``. Early stopping watches the same value (``--early_stopping_patience``
validation epochs). After ``fit`` the best checkpoint is validated and tested once; the run directory gets
``test_metrics.json`` (val + test metrics of that checkpoint, split facts), ``confusion_test.png`` and
``confusion_val.png``, beside ``splits.json`` written by the data module.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

from data.atomic import write_json_atomic
from runkit.cli import RunDirCLI, has_instance

log = logging.getLogger("brainforge.finetune")
MONITOR = "val/selection"


class FinetuneCLI(RunDirCLI):
    """``python -m finetune fit``: default run directory ``runs/finetune``; atomic checkpoint files."""

    stage = "finetune"
    atomic_checkpoints = True
    supported = ("fit", "validate", "test")  # `python -m finetune predict` is the packaged-model tool

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--early_stopping_patience", type=int, default=10,
                            help="stop after this many validation epochs without a better val/selection (0: never)")

    def default_callbacks(self, root: str, present: list[Callback]) -> list[Callback]:
        """``best.ckpt`` (highest val/selection) + ``last.ckpt``, and early stopping on the same value."""
        extra: list[Callback] = []
        if not has_instance(present, ModelCheckpoint):
            extra.append(ModelCheckpoint(dirpath=f"{root}/checkpoints", filename="best", monitor=MONITOR, mode="max",
                                         save_top_k=1, save_last=True, enable_version_counter=False))
        patience = self._get(self.config, "early_stopping_patience", default=10)
        if patience and not has_instance(present, EarlyStopping):
            extra.append(EarlyStopping(monitor=MONITOR, mode="max", patience=patience))
        return extra

    def after_fit(self) -> None:
        evaluate_best(self.trainer, self.model, self.datamodule)


def evaluate_best(trainer: Trainer, model, datamodule) -> dict | None:
    """Validate and test the checkpoint chosen on the validation split; write ``test_metrics.json`` and the
    confusion-matrix PNGs into the run directory (global rank 0)."""
    from finetune.metrics import save_confusion_png

    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    run = Path(trainer.default_root_dir)
    if not best or not Path(best).is_file():
        last = run / "checkpoints" / "last.ckpt"
        best = str(last) if last.is_file() else None
        log.warning("no best checkpoint on %s; evaluating %s", MONITOR, best or "the current weights")
    trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    val = dict(model.last_eval.get("val", {}))
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    test = dict(model.last_eval.get("test", {}))
    if not trainer.is_global_zero:
        return None
    classes = model.facts["labels"]
    facts = {**model.facts["task"], "arch": model.facts["model"].get("arch") or f"{model.facts['mode']} ({model.facts['model'].get('input')})",
             "mode": model.facts["mode"]}
    summary = {"best_checkpoint": str(Path(best).resolve()) if best else None, "monitor": MONITOR, "classes": classes,
               "val": val, "test": test, "facts": facts}
    write_json_atomic(run / "test_metrics.json", summary)
    for stage, values in (("test", test), ("val", val)):
        if values.get("confusion_matrix"):
            save_confusion_png(values["confusion_matrix"], classes, run / f"confusion_{stage}.png", f"{facts['arch']}: {stage}")
    print(f"test metrics of {best}: " + ", ".join(f"{k}={v:.3f}" for k, v in test.items() if isinstance(v, float)))
    return summary
