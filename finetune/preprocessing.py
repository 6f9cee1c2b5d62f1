"""Task preprocessing: what turns a recording or epochs into model inputs, repeated exactly at predict time.

A `TaskPreprocessing` (saved as ``preprocessing.json`` in runs and model packages) wraps the data stage's
`PreprocessingSpec` and adds what labelled tasks need. Two input kinds:

``"recordings"`` (continuous data: CSV and BIDS tasks, uploaded recordings)
    The data stage's `RecordingPipeline` as in pretraining: polyphase resampling to 256 Hz, 0.1 Hz
    high-pass + low-pass at min(100 Hz, 0.45 x sfreq_in) + notch (one FIR over the whole recording,
    streamed in chunks), bad channels excluded, each sensor type divided by the recording's own robust
    scale (median of per-channel MAD), as the tokenizer saw in pretraining.
    - A label per recording: the recording is cut into ``spec.window_s`` windows (2 s, 512 samples).
    - A label per segment ``[start_s, stop_s)``: the window length T is the shortest segment rounded UP
      to a multiple of 64 samples (the tokenizer hop), at most ``spec.window_s``. A segment shorter than T
      is widened symmetrically with the real filtered signal around it (moved inwards at the recording's
      edges), never zero-padded; a longer segment gives every window of T that fits in it (stride
      ``min(spec.stride_s, T)``). E.g. the 0.6 s segments of ``mne_sample_audvis.csv`` (154 samples at
      256 Hz) become one 192-sample (0.75 s) window each, centred on the segment.

``"epochs"`` (``*-epo.fif``, braindecode windows)
    Epochs are short (0.5-4.5 s): the 0.1 Hz high-pass (a ~33 s FIR) and the 1 Hz-wide notch (a ~3.3 s FIR)
    of continuous recordings cannot be applied to them, and per-epoch demeaning would remove slow cortical
    potentials (the SCP task lives in the DC level). So for epochs:
    1. channels: EEG/MAG/GRAD, ``info["bads"]`` dropped; NaN/Inf samples are an error (no silent repair);
    2. polyphase resampling to 256 Hz (``scipy.signal.resample_poly``, ``padtype="line"`` so the DC level
       and slope do not ring at the epoch edges);
    3. low-pass only, MNE's FIR at min(100 Hz, 0.45 x sfreq_in) when that is below the new Nyquist
       (zero phase, odd reflection at the edges); no high-pass, no notch, no per-epoch baseline;
    4. length: T = the median training epoch length rounded to the NEAREST multiple of 64 samples; each
       epoch is cropped at its end or padded by holding its last value (``length_rule="tail"``),
       so time zero stays the epoch's first sample (SCP1: 895 -> 896, EyesOpenShut: 254 -> 256);
    5. a constant per-channel offset (``offsets``: the channel's median over the TRAINING epochs) is
       subtracted: it removes an amplifier DC offset (EyesOpenShut carries ~4.3 mV) but keeps every
       difference between epochs, so slow potentials survive;
    6. each sensor type is divided by one robust scale fixed on the TRAINING epochs (``scales``: median over
       channels of the per-channel MAD), then clipped to ``spec.clip``.
    A continuous recording given to an epochs model (predict, the server) is cut into consecutive
    non-overlapping pieces of T samples at 256 Hz, which then go through the same steps.

Items are dicts in the `data.dataset.WindowCollator` format: ``signal`` [C, T] float32 scaled units,
``types`` [C] int8, ``positions`` [C, 3] float32 metres (NaN unknown), ``orientations`` [C, 3] float32,
plus ``channels`` (the C channel names, a tuple), ``recording`` and ``t0_s``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np
from scipy.signal import oaconvolve, resample_poly

from data.errors import NoSensorChannelsError, NoUsableWindowsError, RecordingTooShortError
from data.preprocess import PreprocessingSpec, RecordingPipeline, rational_ratio
from data.sensors import SensorLayout, SensorType, layout_from_info
from tokenizer.config import TokenizerConfig

from .errors import TaskFormatError

log = logging.getLogger("brainforge.finetune")

TASK_PREP_VERSION = 1
HOP = TokenizerConfig.hop  # the tokenizer's default hop: every model input has T a multiple of it
INPUT_KINDS = ("recordings", "epochs")
EPOCHS_PER_BATCH = 256  # pieces of a continuous recording read at once for an epochs model
STAT_SAMPLES = 200_000  # values per channel that the offset / scale statistics look at (evenly spaced)


@dataclass
class TaskPreprocessing:
    """What to repeat exactly at predict/serve time (JSON-able: ``preprocessing.json``).

    spec: the data stage's spec (256 Hz; for epochs ``l_freq=None``, ``notch=False``); ``spec.window_s`` is
        ``window_samples / spec.sfreq``.
    input_kind: "recordings" (continuous, `RecordingPipeline`) or "epochs".
    window_samples: T of every model input, a multiple of 64.
    scales: epochs: {"eeg"|"mag"|"grad": robust scale in SI units} fixed on the training data; None for
        recordings (scaled per recording, as in pretraining).
    offsets: epochs: {channel name: offset in SI units} subtracted before scaling (training medians).
    length_rule: epochs: "tail" = crop the end / hold the last value to reach T.
    low_pass: epochs: apply the spec's low-pass.
    segment_rule: recordings with segment labels: "centre" = widen short segments around their centre.
    """

    spec: PreprocessingSpec
    input_kind: str
    window_samples: int
    scales: dict[str, float] | None = None
    offsets: dict[str, float] | None = None
    length_rule: str = "tail"
    low_pass: bool = True
    segment_rule: str = "centre"
    version: int = TASK_PREP_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"TaskPreprocessing.input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.window_samples <= 0 or self.window_samples % HOP:
            raise ValueError(f"TaskPreprocessing.window_samples must be a positive multiple of {HOP}, got {self.window_samples}")
        if self.version > TASK_PREP_VERSION:
            raise ValueError(f"TaskPreprocessing version {self.version} is newer than this brainforge ({TASK_PREP_VERSION})")

    @property
    def window_s(self) -> float:
        return self.window_samples / self.spec.sfreq

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TaskPreprocessing:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["spec"] = PreprocessingSpec.from_dict(d["spec"])
        return cls(**known)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> TaskPreprocessing:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class RawWindows:
    """Model inputs cut from one recording or epochs file.

    items: WindowCollator items (signal [C, T] float32 scaled, types [C] int8, positions [C, 3],
        orientations [C, 3], channels (names), recording, t0_s); t0_s: [N] float64 seconds (recordings: from the data start,
        ``raw.times``; epochs: the epoch's first sample on the original recording's clock, i.e.
        ``events[:, 0] / sfreq + tmin``); source_index: [N] int64, the epoch / segment each item came from
        (0 for windows of a whole recording); layout: the channels in the items; warnings: what was
        repaired or guessed (unknown positions, dropped windows, ...).
    """

    items: list[dict]
    t0_s: np.ndarray
    layout: SensorLayout
    source_index: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def check_tokenizer_agrees(prep: TaskPreprocessing, sfreq: float | None, hop: int | None, where: str,
                           tokenizer_spec: dict | None = None) -> None:
    """Raise ValueError (naming both values) unless the task's inputs are what the tokenizer was trained on.

    Args:
        prep: the task's preprocessing.
        sfreq: the tokenizer's sampling rate in Hz (its config); None: not known, not checked.
        hop: the tokenizer's hop in samples; every window length must be a multiple of it (None: not checked).
        where: how the error names the model (package path).
        tokenizer_spec: the tokenizer package's ``preprocessing.json`` (a `PreprocessingSpec` dict; may be empty).
    """
    for rate, source in ((sfreq, "config.json"), ((tokenizer_spec or {}).get("sfreq"), "preprocessing.json")):
        if rate is not None and abs(float(rate) - prep.spec.sfreq) > 1e-6:
            raise ValueError(f"{where}: the task's preprocessing resamples to {prep.spec.sfreq:g} Hz but the tokenizer's "
                             f"{source} says {float(rate):g} Hz: its inputs must be at the rate it was trained on")
    if hop is not None and prep.window_samples % hop:
        raise ValueError(f"{where}: the task's window of {prep.window_samples} samples is not a multiple of the "
                         f"tokenizer's hop of {hop} samples")


# ----------------------------------------------------------------------------------------------------
# Fitting


def round_to_hop(n: float, mode: str = "nearest") -> int:
    """A sample count -> a positive multiple of `HOP` ("nearest", "up" or "down")."""
    f = {"nearest": round, "up": math.ceil, "down": math.floor}[mode]
    return max(HOP, HOP * int(f(n / HOP - 1e-9 if mode == "up" else n / HOP)))


def fit_preprocessing(
    input_kind: str,
    lengths_s: Sequence[float] | None = None,
    *,
    spec: PreprocessingSpec | None = None,
) -> TaskPreprocessing:
    """Choose ``window_samples`` (and the spec) from the training part of a task.

    Args:
        input_kind: "recordings" or "epochs".
        lengths_s: epochs: durations of the training epochs (n_times / sfreq); recordings: durations of
            the labelled segments (None: a label per recording, windows of ``spec.window_s``).
        spec: base spec (default `PreprocessingSpec()`); for epochs its high-pass and notch are switched off.

    Returns:
        A TaskPreprocessing; for epochs ``scales``/``offsets`` are still None: call `fit_scales` with the
        training epochs (`epochs_volts`) next.
    """
    spec = spec or PreprocessingSpec()
    if input_kind == "epochs":
        if not lengths_s:
            raise ValueError("fit_preprocessing('epochs') needs the training epoch lengths")
        t = round_to_hop(float(np.median(lengths_s)) * spec.sfreq, "nearest")
        spec = dataclasses.replace(spec, l_freq=None, notch=False, window_s=t / spec.sfreq, stride_s=t / spec.sfreq)
    elif input_kind == "recordings":
        if lengths_s:
            t = min(spec.window_samples, round_to_hop(min(lengths_s) * spec.sfreq, "up"))
            t = max(HOP, t - t % HOP)
        else:
            t = round_to_hop(spec.window_samples, "down")
        w = t / spec.sfreq
        spec = dataclasses.replace(spec, window_s=w, stride_s=min(spec.stride_s, w))
    else:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    return TaskPreprocessing(spec=spec, input_kind=input_kind, window_samples=t)


def fit_scales(prep: TaskPreprocessing, train: Iterable[tuple[SensorLayout, np.ndarray]]) -> TaskPreprocessing:
    """Fix per-channel offsets and per-type scales on training epochs.

    Args:
        prep: an "epochs" TaskPreprocessing.
        train: (layout, volts [E, C, T]) pairs from `epochs_volts` (resampled, low-passed, length-fitted,
            in SI units).

    Returns:
        A copy of ``prep`` with ``offsets`` (channel name -> median, SI units) and ``scales`` (sensor type ->
        median over channels of the per-channel median absolute deviation).
    """
    per_channel: dict[str, list[np.ndarray]] = {}
    ch_type: dict[str, str] = {}
    for layout, x in train:
        for c, name in enumerate(layout.names):
            v = x[:, c, :].ravel()
            per_channel.setdefault(name, []).append(v[:: max(1, v.size // STAT_SAMPLES)])
            ch_type[name] = SensorType(int(layout.types[c])).name.lower()
    if not per_channel:
        raise ValueError("fit_scales: no training epochs")
    offsets, mads = {}, {}
    for name, parts in per_channel.items():
        v = np.concatenate(parts).astype(np.float64)
        offsets[name] = float(np.median(v))
        mads[name] = float(np.median(np.abs(v - offsets[name])))
    scales = {}
    for t in sorted(set(ch_type.values())):
        m = [mads[n] for n in mads if ch_type[n] == t and mads[n] > 0]
        if m:
            scales[t] = float(np.median(m))
    return dataclasses.replace(prep, offsets=offsets, scales=scales)


# ----------------------------------------------------------------------------------------------------
# Epochs


@contextmanager
def _captured_warnings(sink: list[str]) -> Iterator[None]:
    """Collect warnings the data stage logs (e.g. unknown positions) into ``sink`` as well.

    Only this thread's records: the server preprocesses several requests at once on worker threads."""
    me = threading.get_ident()

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me:
                sink.append(record.getMessage())

    h = _H(level=logging.WARNING)
    loggers = [logging.getLogger("brainforge.data"), log]
    for lg in loggers:
        lg.addHandler(h)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(h)


def _model_channels(info: mne.Info, name: str) -> tuple[SensorLayout, np.ndarray]:
    layout, picks = layout_from_info(info, name=name)
    keep = np.array([n not in info["bads"] for n in layout.names], dtype=bool)
    if not keep.any():
        raise NoSensorChannelsError(
            f"{name}: no usable EEG, magnetometer or gradiometer channel "
            f"(types present: {sorted(set(info.get_channel_types()))}, bads: {list(info['bads'])})"
        )
    return layout.select(keep), picks[keep]


def _low_pass(x: np.ndarray, sfreq_in: float, prep: TaskPreprocessing, warnings: list[str], name: str) -> np.ndarray:
    h_freq = prep.spec.low_pass(sfreq_in)
    if not prep.low_pass or h_freq >= prep.spec.sfreq / 2:
        return x
    h = mne.filter.create_filter(None, prep.spec.sfreq, None, h_freq, verbose="error").astype(np.float32)
    half = (len(h) - 1) // 2
    if half >= x.shape[-1]:
        warnings.append(f"{name}: epochs of {x.shape[-1]} samples are shorter than the {h_freq:g} Hz low-pass filter; not low-passed")
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(half, half)]
    y = np.pad(x, pad, mode="reflect", reflect_type="odd")
    return oaconvolve(y, h.reshape((1,) * (x.ndim - 1) + (-1,)), mode="valid", axes=-1).astype(np.float32)


def _fit_length(x: np.ndarray, t: int) -> np.ndarray:
    """[..., n] -> [..., t]: crop the tail or hold the last value."""
    n = x.shape[-1]
    if n >= t:
        return x[..., :t]
    return np.concatenate([x, np.repeat(x[..., -1:], t - n, axis=-1)], axis=-1)


def epochs_volts(
    info: mne.Info, data: np.ndarray, prep: TaskPreprocessing, name: str, warnings: list[str] | None = None
) -> tuple[SensorLayout, np.ndarray, np.ndarray]:
    """Steps 1-4 of the epochs preprocessing (see the module docstring), before offsets and scales.

    Args:
        info: the epochs' info (sfreq, channel types, positions, bads).
        data: [E, C_all, n] float in SI units, all channels of ``info``.
        prep: an "epochs" TaskPreprocessing (its ``window_samples`` is T).
        name: how errors name the input (file path).
        warnings: a list that receives warnings.

    Returns:
        (layout, volts [E, C, T] float32 SI units, picks [C] indices into ``info["ch_names"]``).

    Raises:
        TaskFormatError: NaN or Inf in the data (names the epoch and channel).
        NoSensorChannelsError: no EEG/MEG channel.
    """
    warnings = warnings if warnings is not None else []
    with _captured_warnings(warnings):
        layout, picks = _model_channels(info, name)
    x = np.asarray(data)[:, picks, :]
    bad = ~np.isfinite(x)
    if bad.any():
        e, c, s = np.argwhere(bad)[0]
        n_ep = int(bad.any(axis=(1, 2)).sum())
        raise TaskFormatError(
            f"{name}: NaN or Inf in epoch {e} (0-based), channel {layout.names[c]}, sample {s} "
            f"({n_ep} of {x.shape[0]} epochs affected); drop or repair those epochs first"
        )
    x = x.astype(np.float32)
    sfreq_in = float(info["sfreq"])
    up, down = rational_ratio(prep.spec.sfreq, sfreq_in)
    if (up, down) != (1, 1):
        x = resample_poly(x, up, down, axis=-1, padtype="line").astype(np.float32)
    x = _low_pass(x, sfreq_in, prep, warnings, name)
    t = prep.window_samples
    if abs(x.shape[-1] - t) > 0.25 * t:
        warnings.append(f"{name}: epochs of {x.shape[-1]} samples at {prep.spec.sfreq:g} Hz fitted to {t} samples")
    return layout, _fit_length(x, t), picks


def scale_epochs(layout: SensorLayout, volts: np.ndarray, prep: TaskPreprocessing, name: str, warnings: list[str]) -> np.ndarray:
    """Steps 5-6: subtract the training offsets and divide by the training scales -> [E, C, T] float32 clipped."""
    if prep.scales is None or prep.offsets is None:
        raise ValueError("TaskPreprocessing has no scales/offsets yet: call fit_scales on the training epochs first")
    off = np.empty(len(layout), np.float32)
    scale = np.empty(len(layout), np.float32)
    unseen = []
    for c, ch in enumerate(layout.names):
        if ch in prep.offsets:
            off[c] = prep.offsets[ch]
        else:
            off[c] = np.median(volts[:, c, :])
            unseen.append(ch)
        t = SensorType(int(layout.types[c])).name.lower()
        if t not in prep.scales:
            raise TaskFormatError(
                f"{name}: channel {ch} is {t.upper()}, a sensor type the model was not trained on "
                f"(trained on: {', '.join(sorted(prep.scales))})"
            )
        scale[c] = prep.scales[t]
    if unseen:
        warnings.append(
            f"{name}: {len(unseen)} channel(s) not in the training data ({', '.join(unseen[:8])}"
            f"{', ...' if len(unseen) > 8 else ''}): offset taken from this input's own median"
        )
    y = (volts - off[None, :, None]) / scale[None, :, None]
    return np.clip(y, -prep.spec.clip, prep.spec.clip).astype(np.float32)


def _items(layout: SensorLayout, signals: np.ndarray, t0_s: np.ndarray, name: str) -> list[dict]:
    types = layout.types.astype(np.int8)
    pos, ori = layout.positions.astype(np.float32), layout.orientations.astype(np.float32)
    return [
        {"signal": s, "types": types, "positions": pos, "orientations": ori, "channels": layout.names,
         "recording": name, "t0_s": float(t)}
        for s, t in zip(signals, t0_s, strict=True)
    ]


def windows_from_epoch_array(
    info: mne.Info, data: np.ndarray, t0_s: np.ndarray, prep: TaskPreprocessing, name: str
) -> RawWindows:
    """Epochs given as an array [E, C_all, n] (SI units) with their info -> RawWindows (steps 1-6)."""
    if prep.input_kind != "epochs":
        raise ValueError(f"windows_from_epoch_array needs an 'epochs' TaskPreprocessing, got {prep.input_kind!r}")
    warnings: list[str] = []
    layout, volts, _ = epochs_volts(info, data, prep, name, warnings)
    sig = scale_epochs(layout, volts, prep, name, warnings)
    t0 = np.asarray(t0_s, dtype=np.float64)
    return RawWindows(_items(layout, sig, t0, name), t0, layout, np.arange(len(sig), dtype=np.int64), warnings)


def windows_from_epochs(epochs: mne.BaseEpochs, prep: TaskPreprocessing, name: str) -> RawWindows:
    """MNE Epochs -> RawWindows, one item per epoch (epochs preprocessing, steps 1-6).

    For a "recordings" TaskPreprocessing each epoch is treated as a short recording segment: it must be at
    least T samples long after resampling, and is windowed like one (see `windows_from_raw`).
    """
    data = epochs.get_data()
    t0 = epochs.events[:, 0] / epochs.info["sfreq"] + epochs.tmin
    if prep.input_kind == "epochs":
        return windows_from_epoch_array(epochs.info, data, t0, prep, name)
    parts = []
    for e in range(len(data)):
        raw = mne.io.RawArray(data[e], epochs.info, verbose="error")
        rw = windows_from_raw(raw, prep, f"{name} epoch {e}")
        rw.t0_s = rw.t0_s + t0[e]
        rw.source_index[:] = e
        parts.append(rw)
    return _concat(parts, name)


def _concat(parts: list[RawWindows], name: str) -> RawWindows:
    if not parts:
        raise NoUsableWindowsError(f"{name}: no windows")
    items = [it for p in parts for it in p.items]
    return RawWindows(
        items,
        np.concatenate([p.t0_s for p in parts]),
        parts[0].layout,
        np.concatenate([p.source_index for p in parts]),
        [w for p in parts for w in p.warnings],
    )


# ----------------------------------------------------------------------------------------------------
# Continuous recordings


def windows_from_raw(
    raw: mne.io.BaseRaw,
    prep: TaskPreprocessing,
    name: str,
    segments: Sequence[tuple[float, float]] | None = None,
    chunk_s: float | None = None,
) -> RawWindows:
    """A continuous recording -> RawWindows (the path of CSV/BIDS tasks, `finetune predict` and the server).

    Args:
        raw: an opened recording (any MNE reader; not necessarily preloaded).
        prep: the task's preprocessing.
        name: how items and errors name the recording.
        segments: optional [start_s, stop_s) intervals in seconds of ``raw.times``; each gives the windows
            described in the module docstring and ``source_index`` = its position in this list. None: the
            whole recording in consecutive windows (``source_index`` 0).
        chunk_s: input seconds per processing chunk (default: the data stage's memory budget).

    Returns:
        RawWindows; windows with NaN/Inf samples are dropped (with a warning).

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
        return RawWindows(_items(layout, [w.signal for w in ws], t0, name), t0, layout, np.zeros(len(ws), np.int64), warnings)

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
    return RawWindows(_items(layout, out_sig, t0, name), t0, layout, np.array(out_src, np.int64), warnings)


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
) -> RawWindows:
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
