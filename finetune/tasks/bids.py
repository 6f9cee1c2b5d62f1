"""(c) A BIDS root: labels from the ``trial_type`` of ``*_events.tsv``. See `finetune.data`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import mne
import numpy as np

from data.errors import BrainforgeDataError
from data.preprocess import PreprocessingSpec

from ..errors import FinetuneDataError, LabelError, TaskFormatError
from ..preprocessing import (
    TaskPreprocessing,
    fit_preprocessing,
    windows_from_raw,
)
from .base import DEFAULT_EVENT_WINDOW_S, TaskData, check_classes, class_order, hash_inputs, progress_bar

log = logging.getLogger("brainforge.finetune")

# ----------------------------------------------------------------------------------------------------
# (c) BIDS


def _annotation_segments(raw: mne.io.BaseRaw) -> list[tuple[str, float, float]]:
    """(description, onset_s, duration_s) with onsets in seconds of ``raw.times``."""
    ann = raw.annotations
    shift = raw.first_time if ann.orig_time is not None else 0.0
    return [(str(d), float(o) - shift, float(du)) for d, o, du in zip(ann.description, ann.onset, ann.duration, strict=True)]


def load_bids_task(
    root: str | Path,
    *,
    trial_types: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
    event_window_s: tuple[float, float] | None = None,
) -> TaskData:
    """(c) A BIDS root: one segment per event of the chosen trial types; see `load_task`."""
    from data.readers import discover

    root = Path(root)
    sources, skipped = discover([root])
    sources = [s for s in sources if s.bids_path is not None]
    if not sources:
        why = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise TaskFormatError(f"{root}: no BIDS recording found{(' (' + why + ')') if why else ''}")
    opened = []
    present: set[str] = set()
    for src in progress_bar(sources, "opening BIDS recordings"):
        try:
            raw = src.open()
        except BrainforgeDataError as e:
            raise TaskFormatError(f"{root}: {e}") from e
        events = [ev for ev in _annotation_segments(raw) if not ev[0].upper().startswith(("BAD", "EDGE"))]
        present.update(ev[0] for ev in events)
        opened.append((src, raw, events))
    if trial_types is not None:
        unknown = sorted(set(trial_types) - present)
        if unknown:
            raise TaskFormatError(f"{root}: trial type(s) {unknown} not in any events.tsv (present: {sorted(present)})")
        keep = set(trial_types)
    else:
        keep = present
    if not keep:
        raise LabelError(f"{root}: no events with a trial_type in any *_events.tsv")

    warnings: list[str] = []
    plan = []  # (src, raw, [(label, a, b)])
    for src, raw, events in opened:
        dur = raw.n_times / raw.info["sfreq"]
        segs = []
        for desc, onset, d in events:
            if desc not in keep:
                continue
            lo, hi = event_window_s if event_window_s is not None else ((0.0, d) if d > 0 else DEFAULT_EVENT_WINDOW_S)
            a, b = onset + lo, onset + hi
            if a < 0 or b > dur:
                warnings.append(f"{src.recording_id}: event {desc!r} at {onset:.3f} s: window [{a:.3f}, {b:.3f}) s leaves the recording; dropped")
                continue
            segs.append((desc, a, b))
        plan.append((src, raw, segs))
    labels_all = [s[0] for _, _, segs in plan for s in segs]
    check_classes(labels_all, str(root))
    classes = class_order(labels_all)
    if preprocessing is None:
        prep = fit_preprocessing("recordings", [b - a for _, _, segs in plan for _, a, b in segs], spec=spec)
    else:
        prep = preprocessing

    items, labels, subjects, recordings, t0s, groups = [], [], [], [], [], []
    for src, raw, segs in progress_bar(plan, "windowing BIDS events"):
        if not segs:
            continue
        try:
            rw = windows_from_raw(raw, prep, src.recording_id, [(a, b) for _, a, b in segs])
        except FinetuneDataError as e:
            raise TaskFormatError(f"{root}: {e}") from e
        except BrainforgeDataError as e:
            raise TaskFormatError(f"{root}: {src.path}: {e}") from e
        warnings.extend(rw.warnings)
        for it, t0, k in zip(rw.items, rw.t0_s, rw.source_index, strict=True):
            items.append(dict(it))
            labels.append(classes.index(segs[k][0]))
            subjects.append(src.subject)
            recordings.append(src.recording_id)
            t0s.append(float(t0))
            groups.append(f"{src.recording_id}#event{k}")
    files = [Path(s.path) for s, _, _ in plan] + sorted(root.rglob("*_events.tsv"))
    source = {"kind": "bids", "paths": [str(root)], "hash": hash_inputs(files), "trial_types": sorted(keep)}
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s),
                    [None] * len(items), prep, source, groups, warnings)  # fmt: skip
