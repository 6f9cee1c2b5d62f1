"""`TaskData` (a labelled task ready for training) and the helpers every task source shares."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data.atomic import content_hash
from data.sensors import SensorLayout

from ..errors import LabelError, TaskFormatError
from ..preprocessing import (
    TaskPreprocessing,
    fit_scales,
    scale_epochs,
)

log = logging.getLogger("brainforge.finetune")

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test", "eval": "test"}  # fmt: skip
CSV_COLUMNS = ("path", "label", "subject", "start_s", "stop_s", "split")
DEFAULT_EVENT_WINDOW_S = (0.0, 0.5)  # BIDS events with no duration
PROGRESS_MIN = 4  # files before a progress bar shows


@dataclass
class TaskData:
    """A labelled task, ready for training.

    items: N WindowCollator items (signal [C, T] float32 scaled units, types [C] int8, positions [C, 3]
        float32 metres, NaN unknown, orientations [C, 3], channels (C names), recording, t0_s, label), all
        with the same T.
    labels: [N] int64 indices into ``classes``.
    classes: class names, in label-index order.
    subjects: per item, the subject or None.
    recordings: per item, the recording (file) it came from.
    t0_s: [N] float64 start of each item (see `ModelInputs`).
    splits: per item "train" / "val" / "test" when the data says so, else None.
    groups: per item, the labelled unit it came from (epoch, CSV row, BIDS event, recording): windows of
        one unit always land in the same split.
    preprocessing: how items were made (repeat at predict time).
    source: {"kind": "epochs"|"csv"|"bids"|"braindecode", "paths": [...], "hash": sha256 of the inputs}.
    warnings: what was guessed or dropped while loading.
    """

    items: list[dict]
    labels: np.ndarray
    classes: list[str]
    subjects: list[str | None]
    recordings: list[str]
    t0_s: np.ndarray
    splits: list[str | None]
    preprocessing: TaskPreprocessing
    source: dict
    groups: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _volts: list[tuple[SensorLayout, np.ndarray]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.items)
        if not self.groups:
            self.groups = [f"{r}#{i}" for i, r in enumerate(self.recordings)]
        for name in ("labels", "subjects", "recordings", "t0_s", "splits", "groups"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TaskData: {n} items but {len(getattr(self, name))} {name}")
        for it, y in zip(self.items, self.labels, strict=True):
            it["label"] = int(y)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def window_samples(self) -> int:
        return self.preprocessing.window_samples

    def class_counts(self, idx: np.ndarray | None = None) -> dict[str, int]:
        y = self.labels if idx is None else self.labels[np.asarray(idx, dtype=np.int64)]
        return {c: int((y == k).sum()) for k, c in enumerate(self.classes)}

    @property
    def has_subjects(self) -> bool:
        return all(s is not None for s in self.subjects) and len(self.subjects) > 0

    @property
    def has_splits(self) -> bool:
        return any(s is not None for s in self.splits)

    def fit_on(self, train_idx: np.ndarray) -> TaskData:
        """Refit the epochs offsets/scales on the items at ``train_idx`` and rescale every item, in place.

        Call after `finetune.splits.make_splits` when the split was not given by the data (load_task fits
        on the given "train" rows, else on all items). No-op for continuous recordings (scaled per recording).
        """
        if self._volts is None:
            return self
        idx = np.asarray(train_idx, dtype=np.int64)
        prep = fit_scales(self.preprocessing, stack_by_layout([self._volts[i] for i in idx]))
        self.preprocessing = prep
        for it, (layout, v) in zip(self.items, self._volts, strict=True):
            it["signal"] = scale_epochs(layout, v[None], prep, it["recording"], [])[0]
        return self

    def subset(self, idx: np.ndarray) -> TaskData:
        """The items at ``idx`` (same classes and preprocessing)."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return dataclasses.replace(
            self, items=pick(self.items), labels=self.labels[idx], subjects=pick(self.subjects),
            recordings=pick(self.recordings), t0_s=self.t0_s[idx], splits=pick(self.splits),
            groups=pick(self.groups), _volts=pick(self._volts) if self._volts is not None else None,
        )  # fmt: skip


def stack_by_layout(pairs: list[tuple[SensorLayout, np.ndarray]]) -> list[tuple[SensorLayout, np.ndarray]]:
    """(layout, [C, T]) per item -> (layout, [E, C, T]) per distinct channel set (for `fit_scales`)."""
    groups: dict[tuple, tuple[SensorLayout, list[np.ndarray]]] = {}
    for layout, v in pairs:
        groups.setdefault(layout.names, (layout, []))[1].append(v)
    return [(lay, np.stack(vs)) for lay, vs in groups.values()]


def progress_bar(seq: Sequence, desc: str):
    """A tqdm bar over ``seq`` when it is long enough to be worth one."""
    return tqdm(seq, desc=desc, unit="file", disable=len(seq) < PROGRESS_MIN, leave=False)


def norm_split(value, where: str) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    s = SPLIT_NAMES.get(str(value).strip().lower())
    if s is None:
        raise TaskFormatError(f"{where}: split {value!r} is not one of train, val, test")
    return s


def norm_subject(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip()
    return s or None


def hash_inputs(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(set(Path(p).resolve() for p in paths)):
        h.update(str(p.name).encode())
        h.update(content_hash(p).encode())
    return h.hexdigest()


def class_order(names: Sequence[str], codes: dict[str, int] | None = None) -> list[str]:
    """Classes sorted by event code when known, else naturally (numbers as numbers)."""
    def key(n: str):
        code = (codes or {}).get(n)
        parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)]
        return (code if code is not None else 1 << 60, [(0, p) if isinstance(p, int) else (1, p) for p in parts])

    return sorted(set(names), key=key)


def check_classes(labels: Sequence[str], where: str) -> None:
    present = sorted(set(labels))
    if len(present) < 2:
        raise LabelError(
            f"{where}: only one class ({present[0] if present else 'none'!s}) in {len(labels)} labelled items; "
            f"a classifier needs at least two"
        )


def recentred(items: list[dict]) -> list[dict]:
    """The items with their own per-channel median removed: items [N] of ``signal`` [C, T] -> new item dicts.

    The median runs over every item of ``items`` with the same channel names (or count, without names) and over
    time; no label is read. Applied to each split on its own (``--data.recentre``), it removes the channel offsets a
    session shares, the unsupervised re-centring BCI pipelines apply per session, while keeping every difference
    between the items of one split. It is transductive: a model trained this way needs the same re-centring of
    the data it predicts on (a session's median), which a single served window does not give.
    """
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        names = it.get("channels")
        groups.setdefault(tuple(names) if names is not None else (np.shape(it["signal"])[0],), []).append(i)
    out = list(items)
    for idx in groups.values():
        signals = [np.asarray(items[i]["signal"], dtype=np.float32) for i in idx]
        median = np.median(np.concatenate(signals, axis=1), axis=1)[:, None]  # items may differ in length
        for i, signal in zip(idx, signals, strict=True):
            out[i] = {**items[i], "signal": signal - median}
    return out
