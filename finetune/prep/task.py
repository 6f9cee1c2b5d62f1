"""`TaskPreprocessing` (what turns inputs into model inputs, saved as ``preprocessing.json``), its fitting, and
`ModelInputs` (the scaled model inputs cut from one recording or epochs file). See `finetune.preprocessing`."""

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

from data.errors import NoSensorChannelsError, NoUsableWindowsError
from data.preprocess import PreprocessingSpec
from data.sensors import SensorLayout, SensorType, layout_from_info
from runkit.config import DictConfig
from tokenizer.config import TokenizerConfig

log = logging.getLogger("brainforge.finetune")

TASK_PREP_VERSION = 1
HOP = TokenizerConfig.hop  # the tokenizer's default hop: every model input has T a multiple of it
INPUT_KINDS = ("recordings", "epochs")
EPOCHS_PER_BATCH = 256  # pieces of a continuous recording read at once for an epochs model
STAT_SAMPLES = 200_000  # values per channel that the offset / scale statistics look at (evenly spaced)


@dataclass
class TaskPreprocessing(DictConfig):
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

    @classmethod
    def _from_json(cls, d: dict) -> dict:
        return {**d, "spec": PreprocessingSpec.from_dict(d["spec"])}


@dataclass
class ModelInputs:
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


#: The signal-path fields of the tokenizer's spec that a task's inputs take over (window and stride stay the task's).
SIGNAL_FIELDS = ("sfreq", "l_freq", "h_freq_max", "h_freq_fraction", "line_freq", "notch", "min_sfreq",
                 "bad_z_threshold", "flat_window_fraction", "clip", "signal_positions")


def tokenizer_spec(package: str | Path) -> PreprocessingSpec | None:
    """The base spec for fitting a task to a tokenizer: the `SIGNAL_FIELDS` of the ``preprocessing.json`` of a
    tokenizer package, or of the tokenizer package that a backbone package's ``config.json`` names; window and
    stride are `PreprocessingSpec`'s defaults. None when no spec is recorded (an empty or absent file)."""
    root = Path(package)
    if not (root / "preprocessing.json").is_file() and (root / "config.json").is_file():
        named = json.loads((root / "config.json").read_text()).get("tokenizer")
        if not (isinstance(named, dict) and named.get("path")):
            return None
        root = Path(named["path"])
    f = root / "preprocessing.json"
    recorded = json.loads(f.read_text()) if f.is_file() else {}
    if not isinstance(recorded, dict) or not recorded:
        return None
    trained = PreprocessingSpec.from_dict(recorded)
    return dataclasses.replace(PreprocessingSpec(), **{k: getattr(trained, k) for k in SIGNAL_FIELDS})


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
# Shared by the epochs and recordings paths


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


def _items(layout: SensorLayout, signals: np.ndarray, t0_s: np.ndarray, name: str) -> list[dict]:
    types = layout.types.astype(np.int8)
    pos, ori = layout.positions.astype(np.float32), layout.orientations.astype(np.float32)
    return [
        {"signal": s, "types": types, "positions": pos, "orientations": ori, "channels": layout.names,
         "recording": name, "t0_s": float(t)}
        for s, t in zip(signals, t0_s, strict=True)
    ]


def _concat(parts: list[ModelInputs], name: str) -> ModelInputs:
    if not parts:
        raise NoUsableWindowsError(f"{name}: no windows")
    items = [it for p in parts for it in p.items]
    return ModelInputs(
        items,
        np.concatenate([p.t0_s for p in parts]),
        parts[0].layout,
        np.concatenate([p.source_index for p in parts]),
        [w for p in parts for w in p.warnings],
    )
