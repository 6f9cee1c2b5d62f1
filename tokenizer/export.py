"""``python -m tokenizer export RUN --out DIR``: a training run's checkpoint -> a tokenizer package."""

from __future__ import annotations

from pathlib import Path

import torch

from data.atomic import atomic_directory
from runkit.checkpoints import find_checkpoint, submodule_state
from tokenizer.lightning import PREPROCESSING_KEY, checkpoint_config
from tokenizer.model import BrainTokenizer
from tokenizer.package import TokenizerPackageError, save_package


def model_from_checkpoint(ckpt: Path) -> tuple[BrainTokenizer, dict, dict]:
    """(model in eval mode, preprocessing dict, checkpoint facts) from a TokenizerModule checkpoint."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = BrainTokenizer(checkpoint_config(state))
    model.load_state_dict(submodule_state(state))
    facts = {"checkpoint": str(ckpt), "global_step": state.get("global_step"), "epoch": state.get("epoch")}
    return model.eval(), state.get(PREPROCESSING_KEY, {}), facts


def export_run(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the package atomically; its metrics.json starts with the training facts (eval adds quality)."""
    model, preprocessing, facts = model_from_checkpoint(find_checkpoint(run, TokenizerPackageError))
    with atomic_directory(out, overwrite) as tmp:
        save_package(model, tmp, preprocessing=preprocessing, metrics={"training": facts})
    return Path(out)
