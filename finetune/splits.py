"""Train / validation / test splits of a `TaskData`, seeded and written to the run directory.

Rules, in order:
1. A split given by the data (``split`` metadata or CSV column) wins. Items marked "val" form the
   validation set; when none are, validation is carved from the TRAINING part only (subject-wise when
   the training part has at least two subjects, else stratified by label). Items with no split mark join
   training. The test part is never touched.
2. Else, when every item has a subject and there are at least three subjects: subject-wise, no subject
   in two splits, stratified by label as far as whole subjects allow (scikit-learn's `StratifiedGroupKFold`,
   subjects shuffled with the seed; test, then val, is one fold of what is left).
3. Else stratified by label: per class, its units are shuffled and cut by the fractions.
Throughout, the unit of assignment is ``task.groups`` (an epoch, a CSV row, a BIDS event, a whole
recording), so windows of one labelled unit never straddle two splits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from data.atomic import write_json_atomic

from .data import TaskData
from .errors import LabelError

log = logging.getLogger("brainforge.finetune")

SPLITS = ("train", "val", "test")


class Splits(dict):
    """{"train"|"val"|"test": sorted int64 indices into the task} plus ``strategy`` and ``seed``."""

    def __init__(self, parts: dict[str, np.ndarray], strategy: str, seed: int):
        super().__init__({k: np.sort(np.asarray(parts.get(k, []), dtype=np.int64)) for k in SPLITS})
        self.strategy, self.seed = strategy, seed


def _units(task: TaskData, idx: np.ndarray, key: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Distinct units (subjects or groups) among ``idx``, in first-seen order, and their item indices."""
    values = task.subjects if key == "subject" else task.groups
    members: dict[str, list[int]] = {}
    for i in idx:
        members.setdefault(str(values[i]), []).append(int(i))
    return list(members), {u: np.asarray(m, dtype=np.int64) for u, m in members.items()}


def _by_subjects(task: TaskData, idx: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Whole subjects to each split, label proportions kept as far as whole subjects allow.

    Each split other than train (in the order of ``fractions``) is one fold of scikit-learn's `StratifiedGroupKFold`
    (groups: subjects, shuffled with ``seed``) over what is left, with ``round(1 / share)`` folds (at most one per
    subject left, at least 2): every split gets at least one subject and train keeps at least one.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    subjects = np.array([str(task.subjects[i]) for i in idx])
    labels = np.asarray(task.labels)[idx]
    rest, left = np.arange(len(idx)), 1.0
    out: dict[str, np.ndarray] = {}
    for k in [k for k in fractions if k != "train"]:
        n_subjects = len(set(subjects[rest]))
        if fractions[k] <= 0 or n_subjects < 2:
            out[k] = idx[:0]
            continue
        n_splits = min(n_subjects, max(2, round(left / fractions[k])))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "the least populated class has only N members": expected for few subjects
            warnings.simplefilter("ignore", UserWarning)
            held = next(te for _, te in folds.split(rest, labels[rest], subjects[rest]) if 0 < len(te) < len(rest))
        out[k] = idx[rest[held]]
        rest, left = np.delete(rest, held), left - fractions[k]
    out["train"] = idx[rest]
    return out


def _stratified(task: TaskData, idx: np.ndarray, fractions: dict[str, float], rng) -> dict[str, np.ndarray]:
    """Per class, whole groups to each split by the fractions (at least one group per split when possible)."""
    out: dict[str, list[int]] = {k: [] for k in fractions}
    units, members = _units(task, idx, "group")
    by_class: dict[int, list[str]] = {}
    for u in units:
        by_class.setdefault(int(task.labels[members[u][0]]), []).append(u)
    names = [k for k in fractions if k != "train"]
    for cls in sorted(by_class):
        us = [by_class[cls][i] for i in rng.permutation(len(by_class[cls]))]
        pos = 0
        for k in names:
            n = int(round(fractions[k] * len(us)))
            n = max(n, 1) if (fractions[k] > 0 and len(us) - pos > 1) else 0
            for u in us[pos : pos + n]:
                out[k].extend(members[u])
            pos += n
        for u in us[pos:]:
            out["train"].extend(members[u])
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def make_splits(task: TaskData, seed: int, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Splits:
    """Split ``task`` into train / val / test (see the module docstring for the rules).

    Returns:
        `Splits`: {"train", "val", "test"} -> sorted int64 item indices; ``.strategy`` says which rule applied.

    Raises:
        LabelError: the training part would hold fewer than two classes.
    """
    rng = np.random.default_rng(seed)
    all_idx = np.arange(len(task))
    if task.has_splits:
        given = np.array([s or "train" for s in task.splits])
        test, val, train = all_idx[given == "test"], all_idx[given == "val"], all_idx[given == "train"]
        strategy = "given"
        if len(val) == 0 and val_fraction > 0:
            n_subj = len({task.subjects[i] for i in train}) if task.has_subjects else 0
            frac = {"val": val_fraction, "train": 1 - val_fraction}
            if n_subj >= 2:
                parts = _by_subjects(task, train, frac, seed)
                strategy = "given; val carved subject-wise from train"
            else:
                parts = _stratified(task, train, frac, rng)
                strategy = "given; val carved from train, stratified by label"
            train, val = parts["train"], parts["val"]
        splits = Splits({"train": train, "val": val, "test": test}, strategy, seed)
    else:
        frac = {"test": test_fraction, "val": val_fraction, "train": 1 - val_fraction - test_fraction}
        n_subj = len(set(task.subjects)) if task.has_subjects else 0
        if n_subj >= 3:
            splits = Splits(_by_subjects(task, all_idx, frac, seed), "subject-wise", seed)
        else:
            splits = Splits(_stratified(task, all_idx, frac, rng), "stratified by label", seed)
    train_classes = {int(task.labels[i]) for i in splits["train"]}
    if len(train_classes) < 2:
        raise LabelError(
            f"{(task.source.get('paths') or [task.source.get('kind', 'task')])[0]}: the training split holds only class(es) "
            f"{[task.classes[c] for c in sorted(train_classes)]} ({splits.strategy})"
        )
    for k in SPLITS:
        if len(splits[k]) == 0:
            log.warning("split %r is empty (%s, %d items)", k, splits.strategy, len(task))
    return splits


def split_summary(splits: Splits, task: TaskData) -> dict:
    """JSON-able description: per split the indices, sizes, class counts, recordings and subjects."""
    out = {"strategy": splits.strategy, "seed": splits.seed, "n_items": len(task), "classes": task.classes,
           "data_hash": task.source.get("hash")}  # fmt: skip
    for k in SPLITS:
        idx = splits[k]
        out[k] = {
            "n": int(len(idx)),
            "class_counts": task.class_counts(idx),
            "recordings": sorted({task.recordings[i] for i in idx}),
            "subjects": sorted({str(task.subjects[i]) for i in idx if task.subjects[i] is not None}),
            "indices": [int(i) for i in idx],
        }
    return out


def write_splits(splits: Splits, task: TaskData, path: str | Path) -> Path:
    """Write ``splits.json`` (see `split_summary`) atomically; ``path`` is the file or the run directory."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        path = path / "splits.json"
    write_json_atomic(path, split_summary(splits, task))
    return path
