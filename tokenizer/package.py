"""Tokenizer package directory: ``config.json``, ``model.safetensors``, ``preprocessing.json``, ``metrics.json``.

Weights go through safetensors only (never pickle). The state dict includes the quantizer's buffers
(``initted``, ``cluster_size``, ``embed_avg``, ``embed``) and the sensor encoder's Fourier basis, so a
loaded package gives exactly the same tokens. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from tokenizer.config import TokenizerConfig
from tokenizer.model import BrainTokenizer

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSING_FILE = "preprocessing.json"
METRICS_FILE = "metrics.json"


def package_reference(path: str | os.PathLike) -> dict[str, str]:
    """How a manifest or a later package refers to a package directory (tokenizer, backbone, ...): its absolute
    path and the sha256 of its ``config.json`` and ``model.safetensors``."""
    from data.atomic import content_hash

    root = Path(path).resolve()
    return {"path": str(root), "config_sha256": content_hash(root / CONFIG_FILE),
            "weights_sha256": content_hash(root / WEIGHTS_FILE)}


class TokenizerPackageError(Exception):
    """A tokenizer package directory is missing a file or holds an unreadable or incompatible one."""


@dataclass
class TokenizerPackage:
    """A loaded package: the model (eval mode), its preprocessing spec and its metrics (plain dicts)."""

    model: BrainTokenizer
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    _write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def save_package(
    model: BrainTokenizer,
    path: str | os.PathLike,
    preprocessing: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (config + all parameters and buffers) and the two dicts into directory ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_atomic(out / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"format_version": str(FORMAT_VERSION)}))
    _write_json(out / CONFIG_FILE, {"format_version": FORMAT_VERSION, "model": "BrainTokenizer", "config": model.config.to_dict()})
    _write_json(out / PREPROCESSING_FILE, dict(preprocessing or {}))
    _write_json(out / METRICS_FILE, dict(metrics or {}))
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TokenizerPackageError(f"tokenizer package: missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TokenizerPackageError(f"tokenizer package: {path} is not valid JSON: {e}") from e


def load_package(path: str | os.PathLike, map_location: str = "cpu") -> TokenizerPackage:
    """Read a package written by `save_package`; the model is returned in eval mode on ``map_location``."""
    root = Path(path)
    meta = _read_json(root / CONFIG_FILE)
    if meta.get("format_version") != FORMAT_VERSION or "config" not in meta:
        raise TokenizerPackageError(
            f"tokenizer package: {root / CONFIG_FILE} has format_version {meta.get('format_version')!r}, "
            f"expected {FORMAT_VERSION} with a 'config' entry"
        )
    try:
        config = TokenizerConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise TokenizerPackageError(f"tokenizer package: bad config in {root / CONFIG_FILE}: {e}") from e
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise TokenizerPackageError(f"tokenizer package: missing {weights}")
    model = BrainTokenizer(config)
    try:
        model.load_state_dict(load_file(str(weights), device=map_location))
    except RuntimeError as e:
        raise TokenizerPackageError(f"tokenizer package: {weights} does not match {root / CONFIG_FILE}: {e}") from e
    model.to(map_location).eval()
    return TokenizerPackage(
        model=model,
        preprocessing=_read_json(root / PREPROCESSING_FILE),
        metrics=_read_json(root / METRICS_FILE),
    )
