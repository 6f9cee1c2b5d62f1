"""Preprocessing: a versioned, JSON-serialisable `PreprocessingSpec` and a streaming pipeline.

Order per chunk (input samples, all channels of the layout):
  resample to ``spec.sfreq`` (polyphase, rational ratio) -> band-pass (FIR, zero phase)
  -> notch at the line frequency and its harmonics below the low-pass.
The band-pass and notch are MNE's own FIR designs (`mne.filter.create_filter`, as `filter_data` and
`notch_filter` make them), built once per recording, combined into one filter and applied to all
channels in one FFT convolution. Long recordings stream through in chunks read with
``raw.get_data(start, stop)``; each chunk carries margins longer than the filter, so the stitched
output equals filtering the whole recording at once and peak memory does not grow with duration.

Bad channels (flat, or robust-z outliers of log-MAD within a sensor type, or in ``info["bads"]``),
judged on the first chunk, are excluded. Each sensor type is divided by one robust scale (median over its good channels of
the per-channel median absolute deviation), so amplitude ratios between channels of one type
survive. Scales are measured per recording and returned, not stored in the spec.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import mne
import numpy as np

from runkit.config import DictConfig

from .errors import NoSensorChannelsError, NoUsableWindowsError, RecordingTooShortError, SamplingRateError
from .filters import (  # noqa: F401  (band_filter, resample_filter, filter_valid: re-exported, data.preprocess API)
    _design_band_filter,
    band_filter,
    filter_reflected,
    filter_valid,
    resample_filter,
    resample_reflected,
    row_medians,
)
from .sensors import SensorLayout, SensorType, layout_from_info
from .signal_positions import with_signal_positions

log = logging.getLogger("brainforge.data")

SPEC_VERSION = 1
CHUNK_SAMPLES = 2_000_000  # input values (channels x samples) per chunk when chunk_s is not given
MAD_SAMPLES = 10_000  # samples per channel the calibration statistics look at (evenly spaced); 30,000 before
# issue 14: scales moved by at most 0.32% and the same bad channels were found on the bench recordings, for a third of the median cost


#: the sampling rate every model input is resampled to (Hz); the tokenizer's config takes it from here
MODEL_SFREQ = 256.0


@dataclass
class PreprocessingSpec(DictConfig):
    """Everything needed to repeat the preprocessing exactly at fine-tuning and serving time."""

    version: int = SPEC_VERSION
    sfreq: float = MODEL_SFREQ
    l_freq: float | None = 0.1
    h_freq_max: float = 100.0
    h_freq_fraction: float = 0.45
    line_freq: float | None = None  # None: info["line_freq"], else both 50 and 60 Hz
    notch: bool = True
    min_sfreq: float = 64.0
    window_s: float = 2.0
    stride_s: float = 2.0
    bad_z_threshold: float = 5.0
    flat_window_fraction: float = 0.5  # drop a window when more of its channels than this are flat
    clip: float = 60000.0  # scaled units; float16 tops out at 65504
    # place EEG channels that no label rule places from their signal's correlations (`data.signal_positions`);
    # specs recorded before this field existed read as False, so their models keep the inputs they were trained on
    signal_positions: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.version > SPEC_VERSION:
            raise ValueError(f"PreprocessingSpec version {self.version} is newer than this brainforge ({SPEC_VERSION})")
        if self.window_s <= 0 or self.stride_s <= 0:
            raise ValueError(f"window_s and stride_s must be > 0, got {self.window_s}, {self.stride_s}")

    @classmethod
    def _from_json(cls, d: dict) -> dict:
        return {"signal_positions": False, **d}

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sfreq))

    @property
    def stride_samples(self) -> int:
        return int(round(self.stride_s * self.sfreq))

    def low_pass(self, sfreq_in: float) -> float:
        return min(self.h_freq_max, self.h_freq_fraction * sfreq_in)

    def notch_freqs(self, sfreq_in: float, line_freq: float | None) -> list[float]:
        if not self.notch:
            return []
        base = [self.line_freq or line_freq] if (self.line_freq or line_freq) else [50.0, 60.0]
        top = min(self.low_pass(sfreq_in), self.sfreq / 2)
        return sorted({float(f * k) for f in base for k in range(1, 50) if f * k < top})


@dataclass
class Span:
    """A stretch of a recording after filtering, before scaling (`RecordingPipeline.spans`).

    start: first output sample (at ``sfreq_out``); filtered: [C_good, n] float32, SI units; nonfinite: [n] bool, a
    NaN/Inf input sample under each output sample; flat: [C_good, n] bool, the input did not change there.
    """

    start: int
    filtered: np.ndarray
    nonfinite: np.ndarray
    flat: np.ndarray


@dataclass
class Window:
    """One window: ``signal`` [C, T] float32 in scaled units, ``t0_s`` seconds from the data start."""

    t0_s: float
    signal: np.ndarray


def rational_ratio(sfreq_out: float, sfreq_in: float) -> tuple[int, int]:
    """(up, down) with ``up / down`` ~ ``sfreq_out / sfreq_in`` (denominator at most 2000): the polyphase resampling ratio."""
    frac = Fraction(sfreq_out / sfreq_in).limit_denominator(2000)
    return frac.numerator, frac.denominator




class RecordingPipeline:
    """Streams one opened recording through a spec into windows.

    >>> pipe = RecordingPipeline(raw, PreprocessingSpec(), name="sub-01.fif")
    >>> for w in pipe.windows(): ...  # w.signal: [C_good, 512] float32
    """

    def __init__(self, raw: mne.io.BaseRaw, spec: PreprocessingSpec, name: str = "", chunk_s: float | None = None):
        self.raw, self.spec, self.name = raw, spec, name or str(raw.filenames[0] if raw.filenames else "recording")
        self.sfreq_in = float(raw.info["sfreq"])
        full_layout, self.picks = layout_from_info(raw.info, name=self.name)
        if len(full_layout) == 0:
            raise NoSensorChannelsError(
                f"{self.name}: no EEG, magnetometer or gradiometer channel "
                f"(types present: {sorted(set(raw.get_channel_types()))}); set channel types with raw.set_channel_types"
            )
        self.full_layout = full_layout
        if self.sfreq_in < spec.min_sfreq:
            raise SamplingRateError(
                f"{self.name}: sampling rate {self.sfreq_in:g} Hz is below the {spec.min_sfreq:g} Hz the "
                f"preprocessing spec needs (band-pass up to {spec.h_freq_max:g} Hz)"
            )
        low = spec.low_pass(self.sfreq_in)
        if spec.l_freq is not None and low <= spec.l_freq:
            raise SamplingRateError(f"{self.name}: low-pass {low:g} Hz is not above high-pass {spec.l_freq:g} Hz")
        self.n_in = raw.n_times
        duration = self.n_in / self.sfreq_in
        if duration < spec.window_s:
            raise RecordingTooShortError(
                f"{self.name}: {duration:.3f} s of data is shorter than one {spec.window_s:g} s window"
            )
        self.up, self.down = rational_ratio(spec.sfreq, self.sfreq_in)
        self.sfreq_out = self.sfreq_in * self.up / self.down  # equals spec.sfreq up to the rational approximation
        self.notch_freqs = spec.notch_freqs(self.sfreq_in, raw.info.get("line_freq"))
        self._band_key = (spec.sfreq, spec.l_freq, low, tuple(self.notch_freqs))
        self.fir = band_filter(*self._band_key)
        self.half = (len(self.fir) - 1) // 2
        self.resample_fir = resample_filter(max(self.up, self.down))
        self.margin_in = self._round_up(int(np.ceil((self.half + 64) * self.down / self.up)) + 10 * self.down)
        if chunk_s is None:  # a sample budget: a few minutes of EEG, bounded memory for big MEG arrays
            chunk_s = max(60.0, CHUNK_SAMPLES / (len(full_layout) * self.sfreq_in))
        self.chunk_in = self._round_up(max(int(chunk_s * self.sfreq_in), 4 * self.down))

    # --- geometry of the stream -------------------------------------------------------------
    def _round_up(self, n: int) -> int:
        return -(-n // self.down) * self.down

    def _design_fir(self) -> np.ndarray:
        """The combined band-pass and notch FIR of this recording (float64, as designed)."""
        return _design_band_filter(self.spec.sfreq, self.spec.l_freq, self.spec.low_pass(self.sfreq_in),
                                   tuple(self.notch_freqs))

    @property
    def n_out(self) -> int:
        return (self.n_in * self.up) // self.down

    def _chunk_bounds(self) -> list[tuple[int, int]]:
        """Input-sample [a, b) of each processing chunk, in order."""
        return [(a, min(a + self.chunk_in, self.n_in)) for a in range(0, self.n_in, self.chunk_in)]

    def _out_index(self, a_in: int) -> int:
        """The output-grid sample an input sample boundary maps to (the recording's end maps to `n_out`)."""
        return self.n_out if a_in == self.n_in else a_in * self.up // self.down

    def _chunk(self, k: int, bounds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`process_chunk` of chunk ``k``; the first chunk is taken once from the calibration's cache."""
        cached, self._first_chunk = getattr(self, "_first_chunk", None), None
        return cached if (k == 0 and cached is not None) else self.process_chunk(*bounds[k])

    # --- processing ------------------------------------------------------------------------
    def process_chunk(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input samples [a, b) -> (filtered [C, n] float64, nonfinite [n] bool, flat [C, n] bool).

        Output samples cover ``[a*up/down, b*up/down)`` of the whole-recording output grid.
        """
        lo, hi = max(0, a - self.margin_in), min(self.n_in, b + self.margin_in)
        # float32 halves memory and FFT time (an `ArrayRecording` of float32 gives its values without a conversion)
        x = np.asarray(self.raw.get_data(picks=self.picks, start=lo, stop=hi), dtype=np.float32)
        bad = ~np.isfinite(x)
        nonfinite_in = bad.any(axis=0)
        if bad.any():
            med = np.nanmedian(np.where(bad, np.nan, x), axis=1, keepdims=True)
            x = np.where(bad, np.nan_to_num(med), x)
        flat_in = np.zeros_like(x, dtype=bool)
        np.equal(x[:, 1:], x[:, :-1], out=flat_in[:, 1:])  # np.diff(x) == 0 (x is finite here), without the diff
        flat_in[:, 0] = flat_in[:, 1] if x.shape[1] > 1 else True
        if self.resample_fir is not None:
            y = resample_reflected(x, self.up, self.down)  # resample_poly's output (padtype="reflect"), faster
        else:
            y = x
        # zero-phase FIR: point-reflect at the recording's own edges, real data (margins) elsewhere
        pad_l, pad_r = (self.half if lo == 0 else 0), (self.half if hi == self.n_in else 0)
        if pad_l and pad_r:  # the whole recording in one chunk (a request to the server): no padded copy
            y = filter_reflected(y, self._band_key)
        else:
            y = np.pad(y, ((0, 0), (pad_l, pad_r)), mode="reflect", reflect_type="odd")  # as MNE's reflect_limited
            y = filter_valid(y, self._band_key)
        out_lo, out_a, out_b = lo * self.up // self.down, a * self.up // self.down, self._out_index(b)
        first = out_lo + self.half - pad_l  # output index of y[:, 0]
        y = y[:, out_a - first : out_b - first]
        if self.up == self.down:  # output sample t sits on input sample t: views, no gather
            return y, nonfinite_in[out_a - lo : out_b - lo], flat_in[:, out_a - lo : out_b - lo]
        # map each output sample to the input sample it sits on (within the read segment)
        src = np.minimum((np.arange(out_a, out_b) * self.down) // self.up - lo, x.shape[1] - 1)
        return y, nonfinite_in[src], flat_in[:, src]

    @cached_property
    def calibration(self) -> dict:
        """Bad channels and per-type scales, judged on the first chunk (which windows() then reuses).

        Returns {"good": bool[C], "bad_reasons": {name: reason}, "scales": {type: float}, "layout": SensorLayout}.
        """
        self._first_chunk = self.process_chunk(*self._chunk_bounds()[0])
        finite = np.flatnonzero(~self._first_chunk[1])
        # a copy of the samples looked at, row-major (a[:, idx] is column-major: partitions along rows 2x slower)
        y = np.take(self._first_chunk[0], finite[:: max(1, finite.size // MAD_SAMPLES)], axis=1)
        if y.shape[1] == 0:
            raise NoUsableWindowsError(f"{self.name}: every sample is NaN or Inf")
        unplaced = (self.full_layout.types == SensorType.EEG) & ~self.full_layout.position_known
        placing = self.spec.signal_positions and bool(unplaced.any())
        y_placing = y.copy() if placing else None  # row_medians below reorders the rows of y
        # np.median(|y - np.median(y)|) per channel; row_medians reorders each row of y in place, which changes
        # neither median (issue 14: 3.5 ms -> 0.5 ms on a 64-channel 10 s request)
        centre = row_medians(y)
        mad = row_medians(np.abs(y - centre[:, None]))
        types, names = self.full_layout.types, self.full_layout.names
        reasons = {n: "marked bad in the recording" for n in names if n in self.raw.info["bads"]}
        for t in SensorType:
            idx = np.flatnonzero(types == t)
            if idx.size == 0:
                continue
            ref = np.median(mad[idx])
            for i in idx:
                if mad[i] <= max(ref, 1e-30) * 1e-6:
                    reasons.setdefault(names[i], "flat")
            live = idx[mad[idx] > max(ref, 1e-30) * 1e-6]
            if live.size >= 3:
                logm = np.log(mad[live])
                spread = 1.4826 * np.median(np.abs(logm - np.median(logm)))
                if spread > 0:
                    z = (logm - np.median(logm)) / spread
                    for i, zi in zip(live, z, strict=True):
                        if abs(zi) > self.spec.bad_z_threshold:
                            reasons.setdefault(names[i], f"amplitude outlier (robust z = {zi:+.1f})")
        good = np.array([n not in reasons for n in names])
        if not good.any():
            raise NoUsableWindowsError(f"{self.name}: every channel is bad ({len(reasons)} channels: flat or outliers)")
        scales = {}
        for t in SensorType:
            idx = np.flatnonzero((types == t) & good)
            if idx.size:
                scales[t.name.lower()] = float(np.median(mad[idx]))
        if reasons:
            log.info("%s: excluding %d bad channel(s): %s", self.name, len(reasons), ", ".join(reasons))
        layout = self.full_layout.select(good)
        if placing:
            layout = with_signal_positions(layout, y_placing[good], self.name)
        return {"good": good, "bad_reasons": reasons, "scales": scales, "layout": layout}

    @property
    def layout(self) -> SensorLayout:
        """Layout of the channels that appear in the windows: bad channels excluded, and EEG channels without a
        position placed from the signal when ``spec.signal_positions`` (`data.signal_positions`)."""
        return self.calibration["layout"]

    @cached_property
    def channel_scales(self) -> np.ndarray:
        """Per window channel (bad ones excluded), its sensor type's robust scale: [C_good, 1] float64, SI units."""
        cal = self.calibration
        types = self.full_layout.types[cal["good"]]
        return np.array([cal["scales"][SensorType(int(t)).name.lower()] for t in types], dtype=np.float64)[:, None]

    def scale(self, filtered: np.ndarray) -> np.ndarray:
        """Filtered signal [C_good, n] (SI units) -> model input: divided by `channel_scales`, clipped to
        ``spec.clip``, float32."""
        scaled = filtered / self.channel_scales
        np.clip(scaled, -self.spec.clip, self.spec.clip, out=scaled)
        return scaled.astype(np.float32)

    def spans(self, starts: Iterable[int], length: int) -> Iterator[Span]:
        """Filtered stretches of ``length`` output samples at each of ``starts`` (ascending output-grid samples at
        `sfreq_out`, each with ``0 <= start <= n_out - length``), bad channels excluded, before scaling.

        Only the chunks that hold a stretch are processed, in order; memory stays within one chunk plus one
        stretch whatever the recording's length. The first chunk is reused from `calibration`.
        """
        good = self.calibration["good"]
        bounds = self._chunk_bounds()
        out_edges = [(self._out_index(a), self._out_index(b)) for a, b in bounds]
        n_good = int(good.sum())
        buf_y = np.empty((n_good, 0), np.float32)
        buf_bad, buf_flat = np.empty(0, bool), np.empty((n_good, 0), bool)
        buf_start, k = 0, 0
        for start in starts:
            while buf_start + buf_y.shape[1] < start + length:
                if k >= len(bounds):
                    raise ValueError(f"{self.name}: span [{start}, {start + length}) ends after the {self.n_out} output samples")
                out_a, out_b = out_edges[k]
                if out_b <= start:  # a chunk wholly before this stretch: skip it
                    if k == 0:
                        self._first_chunk = None
                    k += 1
                    buf_y, buf_bad, buf_flat, buf_start = buf_y[:, :0], buf_bad[:0], buf_flat[:, :0], out_b
                    continue
                y, nonfinite, flat = self._chunk(k, bounds)
                if not good.all():
                    y, flat = y[good], flat[good]
                if buf_start + buf_y.shape[1] != out_a:  # a gap after skipped chunks: restart the buffer here
                    buf_y, buf_bad, buf_flat, buf_start = buf_y[:, :0], buf_bad[:0], buf_flat[:, :0], out_a
                if buf_y.shape[1]:  # a leftover: join it to the new chunk
                    y, nonfinite, flat = (np.concatenate(p, axis=-1)
                                          for p in ((buf_y, y), (buf_bad, nonfinite), (buf_flat, flat)))
                buf_y, buf_bad, buf_flat = y, nonfinite, flat
                k += 1
            i = start - buf_start
            if i < 0:
                raise ValueError(f"{self.name}: span starts must ascend ({start} after {buf_start})")
            yield Span(start, buf_y[:, i : i + length], buf_bad[i : i + length], buf_flat[:, i : i + length])
            buf_y, buf_bad, buf_flat, buf_start = buf_y[:, i:], buf_bad[i:], buf_flat[:, i:], start
        self._first_chunk = None

    def windows(self, stats: dict | None = None) -> Iterator[Window]:
        """Yield `Window`s (``spec.window_s`` long, every ``spec.stride_s``) in time order. ``stats`` (a dict)
        receives counts of rejected windows: ``nonfinite`` (a NaN/Inf sample), ``flat`` (too many flat channels)."""
        stats = stats if stats is not None else {}
        length, stride = self.spec.window_samples, self.spec.stride_samples
        for span in self.spans(range(0, self.n_out - length + 1, stride), length):
            if span.nonfinite.any():
                stats["nonfinite"] = stats.get("nonfinite", 0) + 1
                continue
            flat_share = np.count_nonzero(span.flat, axis=1) / span.flat.shape[1]  # = span.flat.mean(axis=1)
            if (flat_share > 0.9).mean() > self.spec.flat_window_fraction:
                stats["flat"] = stats.get("flat", 0) + 1
                continue
            yield Window(t0_s=span.start / self.sfreq_out, signal=self.scale(span.filtered))
