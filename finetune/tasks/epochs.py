"""(a) ``*-epo.fif`` files: one item per epoch, labels from ``event_id``; ``metadata`` columns ``subject`` and
``split`` are honoured. See `finetune.data`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import mne
import numpy as np

from data.preprocess import PreprocessingSpec
from data.sensors import SensorLayout

from ..errors import LabelError, TaskFormatError
from ..preprocessing import (
    TaskPreprocessing,
    epochs_volts,
    fit_preprocessing,
    fit_scales,
    scale_epochs,
)
from .base import (
    TaskData,
    check_classes,
    class_order,
    hash_inputs,
    norm_split,
    norm_subject,
    progress_bar,
    stack_by_layout,
)

log = logging.getLogger("brainforge.finetune")

# ----------------------------------------------------------------------------------------------------
# (a) epochs files


def read_epochs_file(p: str | Path) -> mne.BaseEpochs:
    """An MNE epochs file (preloaded) -> Epochs; a missing or unreadable file raises `TaskFormatError` naming it."""
    p = Path(p)
    if not p.is_file():
        raise TaskFormatError(f"{p}: no such epochs file")
    try:
        return mne.read_epochs(p, preload=True, verbose="error")
    except Exception as e:  # MNE raises many types for corrupt files
        raise TaskFormatError(f"{p}: cannot be read as MNE epochs ({type(e).__name__}: {e})") from e


def load_epochs_task(
    files: Sequence[str | Path],
    *,
    trial_types: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
) -> TaskData:
    """(a) One item per epoch of each ``*-epo.fif``; see `load_task`."""
    files = [Path(f) for f in files]
    raw_parts = []  # (file, info, data [E, C, n], names [E], subjects, splits, t0)
    all_names: set[str] = set()
    codes: dict[str, int] = {}
    for f in progress_bar(files, "reading epochs"):
        ep = read_epochs_file(f)
        inv = {v: k for k, v in ep.event_id.items()}
        names = [inv.get(int(c)) for c in ep.events[:, 2]]
        if any(n is None for n in names):
            bad = sorted({int(c) for c, n in zip(ep.events[:, 2], names, strict=True) if n is None})
            raise LabelError(f"{f}: event code(s) {bad} have no name in event_id {ep.event_id}")
        all_names.update(names)
        for k, v in ep.event_id.items():
            codes.setdefault(k, v)
        md = ep.metadata
        subj = [norm_subject(v) for v in md["subject"]] if md is not None and "subject" in md else [None] * len(ep)
        if md is not None and "split" in md:
            spl = [norm_split(v, f"{f}: epoch {i} (metadata row {i})") for i, v in enumerate(md["split"])]
        else:
            spl = [None] * len(ep)
        t0 = ep.events[:, 0] / ep.info["sfreq"] + ep.tmin
        raw_parts.append((f, ep.info, ep.get_data(), names, subj, spl, t0))

    if trial_types is not None:
        unknown = sorted(set(trial_types) - all_names)
        if unknown:
            raise TaskFormatError(
                f"{', '.join(map(str, files))}: trial type(s) {unknown} not in the epochs' event_id "
                f"(present: {class_order(all_names, codes)})"
            )
        keep_names = set(trial_types)
    else:
        keep_names = all_names
    where = ", ".join(map(str, files))
    kept = [n for part in raw_parts for n in part[3] if n in keep_names]
    check_classes(kept, where)
    classes = class_order(set(kept), codes)

    if preprocessing is None:
        given_train = any(s == "train" for part in raw_parts for s in part[5])
        lengths = [
            part[2].shape[-1] / part[1]["sfreq"]
            for part in raw_parts for n, s in zip(part[3], part[5], strict=True)
            if n in keep_names and (s == "train" or not given_train)
        ]  # fmt: skip
        prep = fit_preprocessing("epochs", lengths, spec=spec)
    else:
        prep, given_train = preprocessing, False
    if prep.input_kind != "epochs":
        raise TaskFormatError(f"{where}: the given preprocessing is for {prep.input_kind!r}, not epochs")

    items: list[dict] = []
    volts: list[tuple[SensorLayout, np.ndarray]] = []
    labels, subjects, recordings, t0s, splits, groups, warnings = [], [], [], [], [], [], []
    for f, info, data, names, subj, spl, t0 in raw_parts:
        sel = np.array([n in keep_names for n in names], dtype=bool)
        if not sel.any():
            continue
        layout, v, _ = epochs_volts(info, data[sel], prep, str(f), warnings)
        idx = np.flatnonzero(sel)
        for j, e in enumerate(idx):
            volts.append((layout, v[j]))
            labels.append(classes.index(names[e]))
            subjects.append(subj[e])
            recordings.append(str(f))
            t0s.append(float(t0[e]))
            splits.append(spl[e])
            groups.append(f"{f}#epoch{e}")
    if preprocessing is None:
        fit_idx = [i for i, s in enumerate(splits) if s == "train" or not given_train]
        prep = fit_scales(prep, stack_by_layout([volts[i] for i in fit_idx]))
    for (layout, v), rec, t0 in zip(volts, recordings, t0s, strict=True):
        sig = scale_epochs(layout, v[None], prep, rec, warnings)[0]
        items.append({"signal": sig, "types": layout.types.astype(np.int8), "positions": layout.positions,
                      "orientations": layout.orientations, "channels": layout.names, "recording": rec, "t0_s": t0})  # fmt: skip
    source = {"kind": "epochs", "paths": [str(f) for f in files], "hash": hash_inputs(files)}
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s), splits,
                    prep, source, groups, sorted(set(warnings)), volts)  # fmt: skip
