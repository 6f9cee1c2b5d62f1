"""The "recordings" preprocessing: a continuous recording (whole, or labelled segments) -> `ModelInputs`, through
the data stage's `RecordingPipeline`; for an epochs model, consecutive pieces through the epochs path."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import mne
import numpy as np

from data.errors import NoUsableWindowsError, RecordingTooShortError
from data.preprocess import RecordingPipeline

from ..errors import TaskFormatError
from .epochs import windows_from_epoch_array
from .task import (
    EPOCHS_PER_BATCH,
    ModelInputs,
    TaskPreprocessing,
    _captured_warnings,
    _concat,
    _items,
    _model_channels,
)

log = logging.getLogger("brainforge.finetune")

# ----------------------------------------------------------------------------------------------------
# Continuous recordings


def windows_from_raw(
    raw: mne.io.BaseRaw,
    prep: TaskPreprocessing,
    name: str,
    segments: Sequence[tuple[float, float]] | None = None,
    chunk_s: float | None = None,
) -> ModelInputs:
    """A continuous recording -> ModelInputs (the path of CSV/BIDS tasks, `finetune predict` and the server).

    Args:
        raw: an opened recording (any MNE reader; not necessarily preloaded), or a `data.arrays.ArrayRecording`
            (a signal in memory: the server's requests).
        prep: the task's preprocessing.
        name: how items and errors name the recording.
        segments: optional [start_s, stop_s) intervals in seconds of ``raw.times``; each gives the windows
            described in the module docstring and ``source_index`` = its position in this list. None: the
            whole recording in consecutive windows (``source_index`` 0).
        chunk_s: input seconds per processing chunk (default: the data stage's memory budget).

    Returns:
        ModelInputs; windows with NaN/Inf samples are dropped (with a warning).

    Raises:
        TaskFormatError: a segment outside the recording or with stop <= start (names its index).
        data.errors.BrainforgeDataError: no sensor channels, sampling rate too low, recording shorter than T.
    """
    if prep.input_kind == "epochs":
        return _epochs_from_raw(raw, prep, name, segments)
    warnings: list[str] = []
    with _captured_warnings(warnings):
        pipe = RecordingPipeline(raw, prep.spec, name=name, chunk_s=chunk_s)
        cal = pipe.calibration
    layout = pipe.layout
    if cal["bad_reasons"]:
        warnings.append(f"{name}: bad channels excluded: " + ", ".join(f"{k} ({v})" for k, v in cal["bad_reasons"].items()))
    if segments is None:
        stats: dict[str, int] = {}
        ws = list(pipe.windows(stats))
        if stats:
            warnings.append(f"{name}: windows dropped: {stats}")
        if not ws:
            raise NoUsableWindowsError(f"{name}: no usable window (rejected: {stats or 'none'})")
        t0 = np.array([w.t0_s for w in ws], dtype=np.float64)
        return ModelInputs(_items(layout, [w.signal for w in ws], t0, name), t0, layout, np.zeros(len(ws), np.int64), warnings)

    starts, src = _segment_window_starts(segments, pipe, prep, name, warnings)
    out_sig, out_t0, out_src = [], [], []
    for i, span in zip(src, pipe.spans(starts, prep.window_samples), strict=True):
        if span.nonfinite.any():
            warnings.append(f"{name}: segment {i}: window at {span.start / pipe.sfreq_out:.3f} s has NaN/Inf samples; dropped")
            continue
        out_sig.append(pipe.scale(span.filtered))
        out_t0.append(span.start / pipe.sfreq_out)
        out_src.append(i)
    if not out_sig:
        raise NoUsableWindowsError(f"{name}: no usable window in the {len(segments)} segment(s)")
    t0 = np.array(out_t0, dtype=np.float64)
    return ModelInputs(_items(layout, out_sig, t0, name), t0, layout, np.array(out_src, np.int64), warnings)


def _segment_window_starts(
    segments: Sequence[tuple[float, float]], pipe: RecordingPipeline, prep: TaskPreprocessing, name: str,
    warnings: list[str],
) -> tuple[list[int], list[int]]:
    """Output-grid start samples of every window of every segment (sorted), and the segment of each."""
    sf, t, n_out = pipe.sfreq_out, prep.window_samples, pipe.n_out
    stride = min(prep.spec.stride_samples, t)
    duration = pipe.n_in / pipe.sfreq_in
    pairs = []
    for i, (a_s, b_s) in enumerate(segments):
        if not (np.isfinite(a_s) and np.isfinite(b_s)) or b_s <= a_s:
            raise TaskFormatError(f"{name}: segment {i}: stop_s ({b_s}) must be greater than start_s ({a_s})")
        if a_s < 0 or a_s >= duration:
            raise TaskFormatError(
                f"{name}: segment {i}: [{a_s}, {b_s}) s starts outside the recording (0 to {duration:.3f} s of raw.times)"
            )
        if b_s > duration + 1.0 / pipe.sfreq_in:
            warnings.append(f"{name}: segment {i}: [{a_s}, {b_s}) s ends after the recording ({duration:.3f} s); cut there")
        a, b = int(round(a_s * sf)), min(int(round(b_s * sf)), n_out)
        if b - a <= t:
            s = int(round((a + b) / 2 - t / 2))
            pairs.append((min(max(s, 0), n_out - t), i))
        else:
            pairs.extend((s, i) for s in range(a, b - t + 1, stride))
    pairs.sort()
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _epochs_from_raw(
    raw: mne.io.BaseRaw, prep: TaskPreprocessing, name: str, segments: Sequence[tuple[float, float]] | None
) -> ModelInputs:
    """A continuous recording for an epochs model: consecutive pieces of T samples at 256 Hz (or one piece per
    segment, starting at its start_s) go through the epochs preprocessing."""
    sfreq = float(raw.info["sfreq"])
    n = int(round(prep.window_s * sfreq))
    if segments is None:
        if raw.n_times < n:
            raise RecordingTooShortError(f"{name}: {raw.n_times / sfreq:.3f} s of data is shorter than one {prep.window_s:g} s epoch")
        starts = list(range(0, raw.n_times - n + 1, n))
        src = [0] * len(starts)
    else:
        starts, src = [], []
        for i, (a_s, b_s) in enumerate(segments):
            a = int(round(a_s * sfreq))
            if a_s < 0 or b_s <= a_s or a + n > raw.n_times:
                raise TaskFormatError(f"{name}: segment {i}: [{a_s}, {b_s}) s does not hold a {prep.window_s:g} s epoch inside the recording")
            starts.append(a)
            src.append(i)
    _, picks = _model_channels(raw.info, name)
    info = mne.pick_info(raw.info, picks)
    parts = []
    for k in range(0, len(starts), EPOCHS_PER_BATCH):  # bounded memory for long recordings
        batch = starts[k : k + EPOCHS_PER_BATCH]
        data = np.stack([raw.get_data(picks=picks, start=a, stop=a + n) for a in batch])
        rw = windows_from_epoch_array(info, data, np.array(batch) / sfreq, prep, name)
        rw.source_index = np.asarray(src[k : k + EPOCHS_PER_BATCH], np.int64)
        parts.append(rw)
    return _concat(parts, name)
