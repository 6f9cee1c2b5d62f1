"""Backbone package: ``config.json`` + ``model.safetensors`` (+ ``metrics.json``), written atomically.

``config.json`` holds the `BackboneConfig`, the reference to the tokenizer package the backbone was trained
on (path and sha256 of its config and weights), the segment length and the training facts. The weights
(backbone, frozen codebooks, masked-token heads) go through safetensors only, never pickle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from data.atomic import atomic_directory, content_hash, write_json_atomic
from pretrain.model import BackboneConfig, MaskedTokenModel
from runkit.checkpoints import find_checkpoint, submodule_state

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class BackbonePackageError(Exception):
    """A backbone package or run is missing a file or holds an unreadable or incompatible one."""


@dataclass
class BackbonePackage:
    model: MaskedTokenModel  # eval mode
    tokenizer: dict[str, Any] = field(default_factory=dict)  # {"path", "config_sha256", "weights_sha256"}
    meta: dict[str, Any] = field(default_factory=dict)  # the whole config.json


def export_run(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """A `PretrainModule` checkpoint -> backbone package directory ``out`` (atomic)."""
    from pretrain.lightning import BACKBONE_KEY, TOKENIZER_KEY

    ckpt = find_checkpoint(run, BackbonePackageError)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if BACKBONE_KEY not in state:
        raise BackbonePackageError(f"{ckpt} is not a PretrainModule checkpoint (no {BACKBONE_KEY!r} entry)")
    hp = state.get("hyper_parameters", {})
    config = BackboneConfig.from_dict(state[BACKBONE_KEY])
    model = MaskedTokenModel(config)
    model.load_state_dict(submodule_state(state))  # checks the config against the weights
    tok = state.get(TOKENIZER_KEY) or {"path": hp.get("tokenizer")}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": "MaskedTokenModel",
        "config": config.to_dict(),
        "tokenizer": tok,
        "training": {"checkpoint": str(ckpt), "global_step": state.get("global_step"), "epoch": state.get("epoch"),
                     "mask_ratio": hp.get("mask_ratio"), "mask_mode": hp.get("mask_mode", "random"),
                     "mask_span": hp.get("mask_span"), "regression_weight": hp.get("regression_weight", 0.0)},
    }
    with atomic_directory(out, overwrite) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE),
                  metadata={"format_version": str(FORMAT_VERSION)})
        write_json_atomic(tmp / CONFIG_FILE, meta)
    return Path(out)


def load_backbone(path: str | Path, map_location: str = "cpu", check_tokenizer: bool = True) -> BackbonePackage:
    """Read a package written by `export_run`. With ``check_tokenizer``, a tokenizer package still at the
    recorded path must have the recorded hashes (a mismatch raises; a missing one only logs a warning)."""
    root = Path(path)
    cfg_path = root / CONFIG_FILE
    if not cfg_path.is_file():
        raise BackbonePackageError(f"backbone package: missing {cfg_path}")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION or "config" not in meta:
        raise BackbonePackageError(f"backbone package: {cfg_path} has format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    model = MaskedTokenModel(BackboneConfig.from_dict(meta["config"]))
    try:
        model.load_state_dict(load_file(str(root / WEIGHTS_FILE), device=map_location))
    except (RuntimeError, FileNotFoundError) as e:
        raise BackbonePackageError(f"backbone package: {root / WEIGHTS_FILE} does not match {cfg_path}: {e}") from e
    tok = meta.get("tokenizer", {})
    if check_tokenizer and tok.get("path"):
        tp = Path(tok["path"])
        if not (tp / "model.safetensors").is_file():
            log.warning("backbone package %s: its tokenizer package %s is not present", root, tp)
        elif tok.get("weights_sha256") and content_hash(tp / "model.safetensors") != tok["weights_sha256"]:
            raise BackbonePackageError(f"backbone package {root}: tokenizer package {tp} has changed since training (weights sha256 differs)")
    return BackbonePackage(model=model.to(map_location).eval(), tokenizer=tok, meta=meta)
