"""Model packages in a registry folder: ``REGISTRY/<name>/<version>/`` (versions 1, 2, 3, ...).

A package holds:

* ``config.json``: format version, name, version, the classifier config (``model``: foundation = tokenizer +
  backbone + head sizes, or baseline = braindecode architecture), ``channels`` (the training channel names;
  a baseline needs exactly these), ``window`` (samples, sfreq) and where it came from (``source``);
* ``model.safetensors``: every weight (tokenizer + backbone + head, LoRA adapters merged), safetensors only;
* ``preprocessing.json``: `TaskPreprocessing.to_dict()` (what `finetune.predict` repeats);
* ``labels.json``: the class names in output order;
* ``metrics.json``: test metrics, the baseline's test metrics, split sizes, data hash, seed;
* ``model_card.md``: what it was trained on, how to call it, its measured quality.

A version is written into a hidden sibling folder and renamed into place; the rename fails when the version
exists, so an existing version is never overwritten (a concurrent export simply takes the next number).
Names and versions never reach outside the registry.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from finetune.errors import ModelPackageError
from finetune.preprocessing import TaskPreprocessing

log = logging.getLogger("brainforge.finetune")

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSING_FILE = "preprocessing.json"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "model_card.md"
PACKAGE_FILES = (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSING_FILE, LABELS_FILE, METRICS_FILE, CARD_FILE)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
CHECKPOINT_KEY = "brainforge_finetune"  # what FinetuneModule.on_save_checkpoint stores


@dataclass
class ModelPackage:
    """A loaded package. ``model`` is in eval mode on CPU; ``config`` is the whole config.json."""

    name: str
    version: str
    path: Path
    labels: list[str]
    preprocessing: TaskPreprocessing
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    model: nn.Module | None = None

    @property
    def kind(self) -> str:
        """``foundation`` (tokenizer + backbone + head) or ``baseline`` (braindecode)."""
        return self.config["model"]["kind"]

    @property
    def channels(self) -> list[str] | None:
        """Training channel names in model order (None when the task mixed channel sets)."""
        return self.config.get("channels")

    @property
    def seen_channels(self) -> list[str] | None:
        """Every channel name seen in training (also for mixed channel sets); None when unknown."""
        return self.config.get("seen_channels") or self.channels


# --- registry paths ----------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """A model name: letters, digits, ``.``, ``_``, ``-``; no path separators, not ``.``/``..``."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise ModelPackageError(f"model name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                                "(starting with a letter or digit), no '/' or '..'")
    return name


def check_version(version: str | int) -> str:
    v = str(version)
    if not VERSION_RE.match(v):
        raise ModelPackageError(f"model version {version!r} is not allowed: versions are positive integers (1, 2, 3, ...)")
    return v


def _inside(registry: Path, path: Path) -> Path:
    root, p = registry.resolve(), path.resolve()
    if not p.is_relative_to(root) or p == root:
        raise ModelPackageError(f"{path} is outside the registry {registry}")
    return p


def versions(registry: str | Path, name: str) -> list[int]:
    """Published versions of ``name`` (folders with a config.json), ascending."""
    folder = _inside(Path(registry), Path(registry) / check_name(name))
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if VERSION_RE.match(p.name) and (p / CONFIG_FILE).is_file())


def resolve_version(registry: str | Path, name: str, version: str | int | None = None) -> Path:
    """REGISTRY/NAME/VERSION (the latest version when None). Names or versions that would escape the registry
    (``..``, ``/``, absolute paths) and missing models or versions raise `ModelPackageError`."""
    registry = Path(registry)
    if not registry.is_dir():
        raise ModelPackageError(f"model registry {registry} is not a directory")
    check_name(name)
    if version is None:
        found = versions(registry, name)
        if not found:
            raise ModelPackageError(f"model {name!r} has no version in the registry {registry}")
        version = found[-1]
    path = _inside(registry, registry / name / check_version(version))
    if not path.is_dir():
        have = versions(registry, name)
        raise ModelPackageError(f"model {name!r} has no version {version} in {registry} "
                                f"(versions: {have or 'none'})")
    return path


def split_model_path(path: str | Path) -> tuple[Path, str, str | None]:
    """``DIR/NAME`` or ``DIR/NAME/VERSION`` (the `finetune predict --model` argument) -> (registry, name, version)."""
    p = Path(path)
    if VERSION_RE.match(p.name) and (p / CONFIG_FILE).is_file():
        return p.parent.parent, p.parent.name, p.name
    return p.parent, p.name, None


# --- reading -----------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelPackageError(f"model package: missing {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelPackageError(f"model package: {path} is not valid JSON: {e}") from e


def load_model_package(path: str | Path, map_location: str = "cpu") -> ModelPackage:
    """Load REGISTRY/NAME/VERSION. Weights through safetensors only. Every problem raises
    `ModelPackageError` naming the file at fault (missing, unreadable, not matching config.json)."""
    from finetune.model import build_classifier

    root = Path(path)
    if not root.is_dir():
        raise ModelPackageError(f"model package {root} is not a directory")
    cfg_path = root / CONFIG_FILE
    config = _read_json(cfg_path)
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION or "model" not in config:
        raise ModelPackageError(f"model package: {cfg_path} has format_version "
                                f"{config.get('format_version') if isinstance(config, dict) else None!r}, "
                                f"expected {FORMAT_VERSION} with a 'model' entry")
    labels = _read_json(root / LABELS_FILE)
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ModelPackageError(f"model package: {root / LABELS_FILE} must be a list of >= 2 class names")
    try:
        preprocessing = TaskPreprocessing.from_dict(_read_json(root / PREPROCESSING_FILE))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelPackageError(f"model package: {root / PREPROCESSING_FILE} is not a valid TaskPreprocessing: {e}") from e
    metrics = _read_json(root / METRICS_FILE)
    card_path = root / CARD_FILE
    card = card_path.read_text() if card_path.is_file() else ""
    try:
        model = build_classifier(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelPackageError(f"model package: bad 'model' config in {cfg_path}: {e}") from e
    n_out = model.head.cfg.n_classes if config["model"]["kind"] == "foundation" else model.n_outputs
    if n_out != len(labels):
        raise ModelPackageError(f"model package: {root / LABELS_FILE} has {len(labels)} labels, the model in {cfg_path} {n_out} outputs")
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelPackageError(f"model package: missing {weights}")
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelPackageError(f"model package: {weights} is not a readable safetensors file: {e}") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelPackageError(f"model package: {weights} does not match {cfg_path}: {str(e)[:500]}") from e
    model.to(map_location).eval()
    return ModelPackage(name=str(config.get("name", root.parent.name)), version=str(config.get("version", root.name)),
                        path=root, labels=labels, preprocessing=preprocessing, config=config, metrics=metrics,
                        card=card, model=model)


def key_facts(path: Path) -> dict[str, Any]:
    """What `list_models` shows of one version (reads JSON only, never the weights)."""
    config, metrics = _read_json(path / CONFIG_FILE), _read_json(path / METRICS_FILE)
    test = metrics.get("test") or {}
    base = metrics.get("baseline") or {}
    return {
        "version": path.name, "kind": config["model"]["kind"],
        "arch": config["model"].get("arch") or f"{config['model'].get('input')}+backbone",
        "labels": _read_json(path / LABELS_FILE), "task": metrics.get("task"),
        "split_sizes": metrics.get("split_sizes"),
        "test_balanced_accuracy": test.get("balanced_accuracy"),
        "baseline": {"arch": base.get("arch"), "test_balanced_accuracy": (base.get("test") or {}).get("balanced_accuracy")} if base else None,
        "created": config.get("created"),
    }


def list_models(registry: str | Path) -> list[dict[str, Any]]:
    """Every model of the registry: ``name``, ``versions`` (ascending), ``latest`` (key facts of the newest
    version) or ``error`` (why the newest version cannot be read; the listing itself never fails on one model)."""
    registry = Path(registry)
    if not registry.is_dir():
        raise ModelPackageError(f"model registry {registry} is not a directory")
    out = []
    for folder in sorted(p for p in registry.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
        found = versions(registry, folder.name)
        if not found:
            continue
        entry: dict[str, Any] = {"name": folder.name, "versions": [str(v) for v in found]}
        try:
            entry["latest"] = key_facts(folder / str(found[-1]))
        except (ModelPackageError, KeyError, TypeError, AttributeError) as e:
            entry["error"] = str(e)
        out.append(entry)
    return out


# --- writing -----------------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_model_package(
    registry: str | Path,
    name: str,
    model: nn.Module,
    labels: list[str],
    preprocessing: TaskPreprocessing,
    metrics: dict[str, Any],
    card: str,
    channels: list[str] | None = None,
    source: dict[str, Any] | None = None,
    seen_channels: list[str] | None = None,
) -> Path:
    """Publish ``model`` (a classifier with ``config_dict()``; LoRA already merged) as the next version of ``name``.

    Returns REGISTRY/NAME/VERSION. ``card`` may contain ``{version}`` and ``{name}`` placeholders.
    Nothing is half-written: the files go to a hidden folder that is renamed into place at the end.
    """
    from finetune.model import has_lora

    check_name(name)
    if has_lora(model):
        raise ModelPackageError("save_model_package: merge the LoRA adapters first (finetune.model.merge_lora)")
    registry = Path(registry)
    folder = registry / name
    folder.mkdir(parents=True, exist_ok=True)
    _inside(registry, folder)
    tmp = folder / f".partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        _write_json(tmp / PREPROCESSING_FILE, preprocessing.to_dict())
        _write_json(tmp / LABELS_FILE, list(labels))
        _write_json(tmp / METRICS_FILE, metrics)
        version = (versions(registry, name) or [0])[-1] + 1
        while True:
            config = {"format_version": FORMAT_VERSION, "name": name, "version": str(version),
                      "created": datetime.now(UTC).isoformat(timespec="seconds"), "model": model.config_dict(),
                      "channels": channels, "seen_channels": seen_channels, "window": {"samples": preprocessing.window_samples, "sfreq": preprocessing.spec.sfreq},
                      "source": source or {}}
            _write_json(tmp / CONFIG_FILE, config)
            (tmp / CARD_FILE).write_text(card.replace("{version}", str(version)).replace("{name}", name))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            out = folder / str(version)
            try:
                os.rename(tmp, out)  # fails if the version exists (non-empty directory): never overwrite
                return out
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) and not out.exists():
                    raise
                version += 1  # a concurrent export took this number
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_run(run: str | Path, registry: str | Path, name: str, baseline_run: str | Path | None = None,
               checkpoint: str | Path | None = None) -> Path:
    """A fine-tuning run directory (its best checkpoint on the validation split, its test metrics) -> the next
    version of REGISTRY/NAME. ``baseline_run``: a baseline run on the same task whose test metrics go beside
    this model's in metrics.json and the model card."""
    from finetune.model import build_classifier, has_lora, merge_lora
    from runkit.checkpoints import submodule_state

    run = Path(run)
    ckpt = Path(checkpoint) if checkpoint else best_checkpoint(run)
    if run.is_file():  # a .ckpt given directly: its run directory holds test_metrics.json
        run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is a package error naming the file
        raise ModelPackageError(f"cannot read checkpoint {ckpt}: {e}") from e
    facts = state.get(CHECKPOINT_KEY)
    if not facts:
        raise ModelPackageError(f"{ckpt} is not a fine-tuning checkpoint (no {CHECKPOINT_KEY!r} entry)")
    model = build_classifier(facts["model"])
    if facts.get("lora"):
        from finetune.model import add_lora

        add_lora(model.backbone, **facts["lora"])
    model.load_state_dict(submodule_state(state))
    if has_lora(model):
        merge_lora(model)
    model.eval()
    test = _read_optional_json(run / "test_metrics.json")
    if test is None:
        log.warning("%s has no test_metrics.json: the package's metrics.json will have no test metrics", run)
    metrics: dict[str, Any] = {"test": (test or {}).get("test"), "val": (test or {}).get("val"),
                               "checkpoint": str(ckpt), **facts.get("task", {})}
    metrics["arch"] = facts["model"].get("arch") or f"{facts.get('mode')} ({facts['model'].get('input')})"
    metrics["mode"] = facts.get("mode")
    if baseline_run is not None:
        base = _read_optional_json(Path(baseline_run) / "test_metrics.json")
        if base is None:
            raise ModelPackageError(f"baseline run {baseline_run} has no test_metrics.json (run fit with --model.baseline first)")
        bfacts = base.get("facts", {})
        if bfacts.get("data_hash") and metrics.get("data_hash") and bfacts["data_hash"] != metrics["data_hash"]:
            raise ModelPackageError(f"baseline run {baseline_run} was trained on other data (data hash differs)")
        if bfacts.get("splits_hash") and metrics.get("splits_hash") and bfacts["splits_hash"] != metrics["splits_hash"]:
            raise ModelPackageError(f"baseline run {baseline_run} used other splits (splits hash differs)")
        metrics["baseline"] = {"run": str(baseline_run), "arch": bfacts.get("arch"), "test": base.get("test")}
    preprocessing = TaskPreprocessing.from_dict(facts["preprocessing"])
    from finetune.card import model_card

    card = model_card(facts, metrics, preprocessing)
    return save_model_package(registry, name, model, facts["labels"], preprocessing, metrics, card,
                              channels=facts.get("channels"), source={"run": str(run.resolve()), **facts.get("source", {})},
                              seen_channels=facts.get("seen_channels"))


def best_checkpoint(run: Path) -> Path:
    """The run's checkpoint chosen on the validation split (``checkpoints/best.ckpt``), else ``last.ckpt``."""
    if run.is_file():
        return run
    summary = _read_optional_json(run / "test_metrics.json") or {}
    for cand in (summary.get("best_checkpoint"), run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"):
        if cand and Path(cand).is_file():
            return Path(cand)
    raise ModelPackageError(f"no checkpoint in {run}/checkpoints (best.ckpt or last.ckpt): is it a fine-tuning run directory?")


def _read_optional_json(path: Path) -> Any:
    return _read_json(path) if path.is_file() else None
