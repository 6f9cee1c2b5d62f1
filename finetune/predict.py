"""Prediction with a model package: the code path of ``python -m finetune predict`` and of the server.

    predictor = Predictor(load_model_package("registry/scp/1"))
    windows = predictor.prepare_raw(raw, "rec.edf")        # the package's TaskPreprocessing
    probs = predictor.predict_items(windows.items)          # [N, K] float32
    result = predictor.summarise(windows, probs)            # per window + per recording
    print(result.to_dict())

Channels: a foundation model is channel-agnostic (the tokenizer embeds each sensor by its type and position),
so a recording with channels the model never saw is predicted, and the result carries a warning naming them.
A baseline (braindecode) model needs its training channels: they are picked by name in training order,
other channels are ignored (with a warning), and a missing one raises `ChannelMismatchError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.readers import is_epochs_file
from finetune.errors import FinetuneDataError
from finetune.package import ModelPackage
from finetune.preprocessing import (
    HOP,
    ModelInputs,
    check_tokenizer_agrees,
    windows_from_epochs,
    windows_from_raw,
)

log = logging.getLogger("brainforge.finetune")

class ChannelMismatchError(FinetuneDataError):
    """The input lacks channels that a fixed-channel (baseline) model needs; the message names them."""


@dataclass
class RecordingPrediction:
    """Predictions for one recording or epochs file.

    windows: one dict per window: ``t0_s``, ``t1_s`` (seconds from the data start, or the epoch's time on the
    recording clock), ``label``, ``probabilities`` {class: p}. summary: ``label`` (argmax of the mean),
    ``probabilities`` (mean over windows), ``n_windows``.
    """

    recording: str
    labels: list[str]
    windows: list[dict[str, Any]]
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    model: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording, "model": self.model, "labels": self.labels, "summary": self.summary,
                "windows": self.windows, "warnings": self.warnings}


class Predictor:
    """Batched, gradient-free inference with a loaded package (safe to call from worker threads: one forward at a
    time per predictor)."""

    def __init__(self, package: ModelPackage, batch_size: int = 32) -> None:
        if package.model is None:
            raise ValueError(f"model package {package.path} was loaded without its model")
        self.package = package
        self.model = package.model.eval()
        self.batch_size = max(1, int(batch_size))
        self._lock = threading.Lock()
        from data.dataset import WindowCollator

        self._collate = WindowCollator(max_channels=None)
        tok_config = getattr(getattr(self.model, "tokenizer", None), "config", None)
        self.hop = int(getattr(tok_config, "hop", HOP))  # window lengths must be multiples of it
        if not self.is_baseline:
            check_tokenizer_agrees(package.preprocessing, getattr(tok_config, "sfreq", None), self.hop,
                                   f"model package {package.path}")

    @property
    def labels(self) -> list[str]:
        return self.package.labels

    @property
    def is_baseline(self) -> bool:
        return self.package.kind == "baseline"

    # --- inputs ------------------------------------------------------------------------------------
    def prepare_raw(self, raw, name: str) -> ModelInputs:
        """An opened MNE recording -> ModelInputs with the package's preprocessing (and channels, for baselines)."""
        return self._fit_channels(windows_from_raw(raw, self.package.preprocessing, name), name)

    def prepare_epochs(self, epochs, name: str) -> ModelInputs:
        """MNE Epochs -> ModelInputs with the package's preprocessing."""
        return self._fit_channels(windows_from_epochs(epochs, self.package.preprocessing, name), name)

    def prepare(self, obj, name: str) -> ModelInputs:
        """An MNE Raw or `data.arrays.ArrayRecording` (`prepare_raw`), or MNE Epochs (`prepare_epochs`) -> ModelInputs."""
        import mne

        return self.prepare_epochs(obj, name) if isinstance(obj, mne.BaseEpochs) else self.prepare_raw(obj, name)

    def prepare_path(self, path: str | Path, name: str | None = None,
                     check: Callable[[Any], None] | None = None) -> ModelInputs:
        """A recording file (any format `data.open_raw` reads) or an epochs file (`data.is_epochs_file`) -> ModelInputs.

        Args:
            path: the file (or CTF/EGI folder).
            name: how items, warnings and errors name it (default: ``str(path)``).
            check: called with the opened Raw or Epochs before preprocessing (the server's limits); may raise.
        """
        from data.readers import open_raw
        from finetune.data import read_epochs_file

        path = Path(path)
        obj = read_epochs_file(path) if is_epochs_file(path) else open_raw(path)
        if check is not None:
            check(obj)
        return self.prepare(obj, str(path) if name is None else name)

    def _fit_channels(self, windows: ModelInputs, name: str) -> ModelInputs:
        trained = self.package.channels
        names = list(windows.layout.names)
        if not self.is_baseline:
            seen = self.package.seen_channels
            if seen:
                seen = set(seen)
                unseen = [c for c in names if c not in seen]
                if unseen:
                    windows.warnings.append(
                        f"{name}: {len(unseen)} of {len(names)} channel(s) were not in the training data "
                        f"({', '.join(unseen[:8])}{', ...' if len(unseen) > 8 else ''}); the model is channel-agnostic "
                        "and predicts from them, but its measured quality holds for the training channels"
                    )
            return windows
        if not trained:
            raise ChannelMismatchError(f"baseline package {self.package.path} records no training channels")
        missing = [c for c in trained if c not in names]
        if missing:
            raise ChannelMismatchError(
                f"{name}: the {self.package.config['model'].get('arch')} model needs its {len(trained)} training channels; "
                f"missing {len(missing)}: {', '.join(missing[:12])}{', ...' if len(missing) > 12 else ''} "
                f"(the input has {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
            )
        trained_set = set(trained)
        extra = [c for c in names if c not in trained_set]
        if extra:
            windows.warnings.append(f"{name}: {len(extra)} channel(s) the baseline was not trained on are ignored: {', '.join(extra[:8])}")
        idx = np.array([names.index(c) for c in trained])
        if list(idx) != list(range(len(names))):
            for it in windows.items:
                for k in ("signal", "types", "positions", "orientations"):
                    it[k] = it[k][idx]
            windows.layout = windows.layout.select(idx)
        return windows

    # --- inference ---------------------------------------------------------------------------------
    def _batches(self, items: list[dict]):
        """Collated batches (on CPU), moved to the model's device (``load_model_package(map_location=...)``)."""
        device = next(self.model.parameters()).device
        for start in range(0, len(items), self.batch_size):
            b = self._collate(items[start : start + self.batch_size])
            yield {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}

    def _check(self, items: list[dict]) -> None:
        if not items:
            raise ValueError("no windows to predict")
        t = {int(np.shape(it["signal"])[-1]) for it in items}
        if len(t) != 1:
            raise ValueError(f"windows of different lengths {sorted(t)} samples; expected {self.package.preprocessing.window_samples}")
        (n,) = t
        if n % self.hop:
            raise ValueError(f"window length {n} samples is not a multiple of the tokenizer's hop {self.hop}")

    @torch.no_grad()
    def predict_items(self, items: list[dict]) -> np.ndarray:
        """WindowCollator items (channel sets may differ: padded per batch) -> probabilities [N, K] float32."""
        self._check(items)
        out = []
        with self._lock:
            for b in self._batches(items):
                logits = self.model(b["signal"], b["types"], b["positions"], b["orientations"], b["channel_mask"],
                                    b.get("channel_ids"))
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def tokenize_items(self, items: list[dict]) -> np.ndarray:
        """WindowCollator items -> tokenizer indices [N, N_latent, F, L] int64 (foundation packages only)."""
        if self.is_baseline:
            raise ValueError(f"model package {self.package.path} is a braindecode baseline: it has no tokenizer")
        self._check(items)
        out = []
        with self._lock:
            for b in self._batches(items):
                out.append(self.model.tokenize(b["signal"], b["types"], b["positions"], b["orientations"], b["channel_mask"],
                                               b.get("channel_ids")).cpu().numpy())
        return np.concatenate(out).astype(np.int64)

    def summarise(self, windows: ModelInputs, probs: np.ndarray, recording: str | None = None) -> RecordingPrediction:
        """Per-window predictions (with times) and the recording's summary (mean probabilities)."""
        labels = self.labels
        probs = np.asarray(probs, dtype=np.float64)
        dur = self.package.preprocessing.window_s
        rows = [
            {"t0_s": round(float(t0), 6), "t1_s": round(float(t0) + dur, 6), "label": labels[int(p.argmax())],
             "probabilities": {c: round(float(v), 6) for c, v in zip(labels, p, strict=True)}}
            for t0, p in zip(windows.t0_s, probs, strict=True)
        ]
        mean = probs.mean(axis=0)
        name = recording or (windows.items[0].get("recording") if windows.items else "") or ""
        summary = {"label": labels[int(mean.argmax())], "probabilities": {c: round(float(v), 6) for c, v in zip(labels, mean, strict=True)},
                   "n_windows": len(rows)}
        return RecordingPrediction(recording=str(name), labels=list(labels), windows=rows, summary=summary,
                                   warnings=list(windows.warnings),
                                   model={"name": self.package.name, "version": self.package.version})


def predict_path(predictor: Predictor, path: str | Path) -> RecordingPrediction:
    """A recording (any format `data.open_raw` reads) or an ``-epo.fif`` file -> its predictions."""
    windows = predictor.prepare_path(path)
    return predictor.summarise(windows, predictor.predict_items(windows.items), str(path))
