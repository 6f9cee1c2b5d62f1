"""(d) A braindecode ``BaseConcatDataset`` of windows (labels are its targets). See `finetune.data`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import mne
import numpy as np

from data.preprocess import PreprocessingSpec

from ..errors import LabelError, TaskFormatError
from ..preprocessing import (
    TaskPreprocessing,
    epochs_volts,
    fit_preprocessing,
    fit_scales,
    scale_epochs,
)
from .base import TaskData, check_classes, norm_split, norm_subject, stack_by_layout

log = logging.getLogger("brainforge.finetune")

# ----------------------------------------------------------------------------------------------------
# (d) braindecode


def task_from_braindecode(
    ds,
    *,
    classes: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
    subject_key: str = "subject",
    split_key: str | None = "split",
) -> TaskData:
    """(d) A braindecode ``BaseConcatDataset`` of windows (``create_windows_from_events`` /
    ``create_fixed_length_windows``) -> TaskData, with the epochs preprocessing.

    Args:
        ds: the concat dataset; each sub-dataset is a ``WindowsDataset`` (``.windows``: mne Epochs) or an
            ``EEGWindowsDataset`` (``.raw`` + ``.metadata``). Signals must be in SI units (volts), as MNE reads them.
        classes: names for the integer targets 0..K-1 (default: the targets as strings).
        preprocessing: reuse a fitted TaskPreprocessing.
        spec: base spec for fitting.
        subject_key / split_key: columns of each sub-dataset's ``description`` giving the subject / split.

    Raises:
        TaskFormatError: a sub-dataset that is not windowed, non-integer targets, NaN data.
        LabelError: fewer than two classes.
    """
    subs = getattr(ds, "datasets", None)
    if not subs:
        raise TaskFormatError("task_from_braindecode: expected a braindecode BaseConcatDataset of windows datasets")
    parts = []  # (name, info, data [E, C, n], targets [E], subject, split, t0 [E])
    for d_i, sub in enumerate(subs):
        name = f"braindecode dataset {d_i}"
        desc = getattr(sub, "description", None)
        subject = norm_subject(desc.get(subject_key)) if desc is not None and subject_key in desc else None
        split = norm_split(desc.get(split_key), name) if desc is not None and split_key and split_key in desc else None
        if hasattr(sub, "windows"):
            info = sub.windows.info
        elif hasattr(sub, "raw") and hasattr(sub, "metadata"):
            info = sub.raw.info
        else:
            raise TaskFormatError(f"{name}: {type(sub).__name__} is not a windows dataset (use create_windows_from_events first)")
        if len(sub) == 0:
            continue
        xs, ys, t0 = [], [], []
        for j in range(len(sub)):
            x, y, inds = sub[j]
            xs.append(np.asarray(x))
            ys.append(y)
            t0.append(float(inds[1]) / info["sfreq"])
        if len({x.shape for x in xs}) > 1:
            raise TaskFormatError(f"{name}: windows of different shapes {sorted({x.shape for x in xs})}")
        try:
            targets = np.asarray(ys, dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise TaskFormatError(f"{name}: targets must be integer class indices ({e})") from e
        if targets.ndim != 1:
            raise TaskFormatError(f"{name}: targets must be one integer per window, got shape {targets.shape}")
        ch_names = list(getattr(sub, "windows", None).ch_names if hasattr(sub, "windows") else sub.raw.ch_names)
        info = mne.pick_info(info, [info["ch_names"].index(c) for c in ch_names]) if ch_names != info["ch_names"] else info
        parts.append((name, info, np.stack(xs), targets, subject, split, np.asarray(t0)))
    if not parts:
        raise TaskFormatError("task_from_braindecode: every sub-dataset is empty")
    all_targets = np.concatenate([p[3] for p in parts])
    if all_targets.min() < 0:
        raise TaskFormatError(f"task_from_braindecode: negative target {int(all_targets.min())}")
    k = int(all_targets.max()) + 1
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    if len(classes) < k:
        raise LabelError(f"task_from_braindecode: target {k - 1} has no name in classes {classes}")
    check_classes([classes[t] for t in all_targets], "braindecode dataset")

    given_train = any(p[5] == "train" for p in parts)
    if preprocessing is None:
        lengths = [p[2].shape[-1] / p[1]["sfreq"] for p in parts if p[5] == "train" or not given_train]
        prep = fit_preprocessing("epochs", lengths, spec=spec)
    else:
        prep = preprocessing
    volts, labels, subjects, recordings, t0s, splits, groups, warnings = [], [], [], [], [], [], [], []
    for name, info, data, targets, subject, split, t0 in parts:
        layout, v, _ = epochs_volts(info, data, prep, name, warnings)
        for j in range(len(v)):
            volts.append((layout, v[j]))
            labels.append(int(targets[j]))
            subjects.append(subject)
            recordings.append(name)
            t0s.append(float(t0[j]))
            splits.append(split)
            groups.append(f"{name}#window{j}")
    if preprocessing is None:
        fit_idx = [i for i, s in enumerate(splits) if s == "train" or not given_train]
        prep = fit_scales(prep, stack_by_layout([volts[i] for i in fit_idx]))
    items = []
    for (layout, v), rec, t0 in zip(volts, recordings, t0s, strict=True):
        sig = scale_epochs(layout, v[None], prep, rec, warnings)[0]
        items.append({"signal": sig, "types": layout.types.astype(np.int8), "positions": layout.positions,
                      "orientations": layout.orientations, "channels": layout.names, "recording": rec, "t0_s": t0})  # fmt: skip
    h = hashlib.sha256()
    for _, _, data, targets, *_ in parts:
        h.update(np.ascontiguousarray(data, dtype=np.float32).tobytes())
        h.update(targets.tobytes())
    source = {"kind": "braindecode", "paths": [], "hash": h.hexdigest(), "n_datasets": len(parts)}
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s), splits,
                    prep, source, groups, sorted(set(warnings)), volts)  # fmt: skip
