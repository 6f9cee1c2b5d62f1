"""The cheap request path of issue 14: `filter_reflected` and `row_medians` against what they replace, an
`ArrayRecording` against an `mne.io.RawArray`, and the cached `layout_from_info`. No model needed."""

from __future__ import annotations

import logging
import re

import mne
import numpy as np
import pytest

import data.preprocess as preprocess
from data.arrays import ArrayRecording
from data.filters import band_filter, filter_reflected, filter_valid, row_medians
from data.preprocess import PreprocessingSpec
from data.sensors import layout_from_info
from finetune.preprocessing import TaskPreprocessing, windows_from_raw

NAMES = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4"]


def _eeg(n_channels: int, seconds: float, sfreq: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = np.cumsum(rng.standard_normal((n_channels, n)), axis=1) * 1e-7 + 2e-5 * np.sin(2 * np.pi * 10 * t)
    return (x - x.mean(axis=1, keepdims=True)).astype(np.float32)


def _reference_filter(y: np.ndarray, band_key: tuple) -> np.ndarray:
    half = (len(band_filter(*band_key)) - 1) // 2
    return filter_valid(np.pad(y, ((0, 0), (half, half)), mode="reflect", reflect_type="odd"), band_key)


def _prep(window_s: float = 1.0) -> TaskPreprocessing:
    spec = PreprocessingSpec(window_s=window_s, stride_s=window_s)
    return TaskPreprocessing(spec=spec, input_kind="recordings", window_samples=int(window_s * spec.sfreq))


@pytest.mark.parametrize("n", [2, 3, 64, 256, 700, 2560, 5000, 12000])
def test_filter_reflected_is_padding_then_filtering(n):
    """Padding longer than the signal (numpy repeats the odd reflection) and shorter (the padded path is taken)."""
    from scipy.signal import fftconvolve

    spec = PreprocessingSpec()
    key = (spec.sfreq, spec.l_freq, spec.low_pass(256.0), tuple(spec.notch_freqs(256.0, None)))
    y = _eeg(5, n / 256.0, 256.0, seed=n) + np.float32(3e-5)  # an offset: the line through the edges matters
    half = (len(band_filter(*key)) - 1) // 2
    padded = np.pad(y.astype(np.float64), ((0, 0), (half, half)), mode="reflect", reflect_type="odd")
    exact = fftconvolve(padded, band_filter(*key).astype(np.float64)[None], mode="valid", axes=-1)
    got = filter_reflected(y, key)
    assert got.shape == y.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    if n >= 64:  # float32 round-off of two FFT convolutions (the padded one loses more for a few samples)
        want = _reference_filter(y, key)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_filter_reflected_low_pass_only():
    """The epochs' spec (no high-pass, no notch): the filter's sum is 1, so the line through the edges is kept."""
    key = (256.0, None, 90.0, ())
    y = _eeg(3, 4.0, 256.0) + np.linspace(0, 1e-4, 1024, dtype=np.float32)
    want = _reference_filter(y, key)
    np.testing.assert_allclose(filter_reflected(y, key), want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("shape", [(64, 2560), (3, 7), (5, 1), (2, 2), (4, 10001)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_medians_equal_numpy_median_to_the_bit(shape, dtype):
    a = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    a[0, : shape[1] // 2] = 0.25  # ties
    want = np.median(a, axis=1)
    got = row_medians(a[:, np.arange(shape[1])])  # a column-major copy, as fancy indexing gives
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    a[-1, -1] = np.nan  # NaN rows: NaN, as np.median
    np.testing.assert_array_equal(row_medians(a.copy()), np.median(a, axis=1))


def test_array_recording_reads_as_a_raw_array():
    x = _eeg(4, 2.0, 256.0)
    info = mne.create_info(NAMES[:3] + ["EOG"], 256.0, ["eeg"] * 3 + ["eog"])
    rec, raw = ArrayRecording(x, info), mne.io.RawArray(x.astype(np.float64), info, verbose="error")
    assert (rec.n_times, len(rec), rec.ch_names, rec.get_channel_types()) == (raw.n_times, len(raw), raw.ch_names,
                                                                               raw.get_channel_types())
    np.testing.assert_allclose(rec.times, raw.times)
    for picks, start, stop in ((None, 0, None), (np.array([2, 0]), 10, 300), ([1], 500, 10_000), (["Fp2", "EOG"], 0, 5)):
        got = rec.get_data(picks=picks, start=start, stop=stop)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, raw.get_data(picks=picks, start=start, stop=stop).astype(np.float32))
    with pytest.raises(ValueError):  # read-only: the pipeline never writes into a request's samples
        rec.get_data()[0, 0] = 1.0
    with pytest.raises(ValueError, match="no channel named"):
        rec.get_data(picks=["Cz"])
    with pytest.raises(ValueError, match="3 channels of data but 4 in info"):
        ArrayRecording(x[:3], info)


@pytest.mark.parametrize("sfreq", [256.0, 500.0])
def test_array_recording_gives_a_raw_arrays_model_inputs(sfreq):
    x = _eeg(16, 10.0, sfreq)
    x[5] = 0.0  # a flat channel: excluded, with a warning
    info = mne.create_info(NAMES, sfreq, "eeg")
    want = windows_from_raw(mne.io.RawArray(x.astype(np.float64), info, verbose="error"), _prep(), "rec")
    got = windows_from_raw(ArrayRecording(x, info), _prep(), "rec")
    assert got.warnings == want.warnings and any("F4 (flat)" in w for w in got.warnings)
    assert got.layout.names == want.layout.names and got.layout.position_sources == want.layout.position_sources
    np.testing.assert_array_equal(got.t0_s, want.t0_s)
    for a, b in zip(got.items, want.items, strict=True):
        for k in ("signal", "types", "positions", "orientations"):
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("sfreq", [256.0, 500.0])
def test_model_inputs_match_the_padded_filter_and_numpy_medians(sfreq, monkeypatch):
    """What the model receives from one request equals, up to float32 round-off, what the pipeline gave before
    issue 14 (np.pad + filter_valid over the whole recording, np.median for the calibration)."""
    x = _eeg(16, 10.0, sfreq, seed=3)
    x[7] *= 50  # an amplitude outlier: the calibration must exclude the same channel
    info = mne.create_info(NAMES, sfreq, "eeg")
    got = windows_from_raw(ArrayRecording(x, info), _prep(), "rec")
    monkeypatch.setattr(preprocess, "filter_reflected", _reference_filter)
    monkeypatch.setattr(preprocess, "row_medians", lambda a: np.median(a, axis=1))
    want = windows_from_raw(ArrayRecording(x, info), _prep(), "rec")
    # the same channels excluded; an outlier's robust z may differ in its last printed digit
    assert [re.sub(r"z = [-+][\d.]+", "z", w) for w in got.warnings] == [re.sub(r"z = [-+][\d.]+", "z", w) for w in want.warnings]
    assert any("T7 (amplitude outlier" in w for w in got.warnings)
    assert got.layout.names == want.layout.names and len(got.items) == len(want.items) == 10
    np.testing.assert_array_equal(got.t0_s, want.t0_s)
    sig, ref = np.stack([it["signal"] for it in got.items]), np.stack([it["signal"] for it in want.items])
    np.testing.assert_allclose(sig, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_layout_is_remembered_with_its_warnings(caplog):
    info = mne.create_info(["Cz", "Pz", "Nowhere1", "Nowhere2"], 256.0, "eeg")
    with caplog.at_level(logging.WARNING, logger="brainforge.data"):
        first, picks = layout_from_info(info, name="a.edf")
        first.positions[0] = 99.0  # the caller's copy: the cache keeps its own
        second, picks2 = layout_from_info(info, name="b.edf")
    msgs = [r.getMessage() for r in caplog.records if "no known position" in r.getMessage()]
    assert len(msgs) == 2 and msgs[0].startswith("a.edf: 2 channel(s)") and msgs[1].startswith("b.edf: 2 channel(s)")
    assert msgs[0][len("a.edf"):] == msgs[1][len("b.edf"):]
    assert np.isfinite(second.positions[:2]).all() and np.isnan(second.positions[2:]).all()
    assert second.positions[0, 0] != 99.0 and second.position_sources == first.position_sources
    np.testing.assert_array_equal(picks, picks2)

    moved = mne.create_info(["Cz", "Pz", "Nowhere1", "Nowhere2"], 256.0, "eeg")
    moved["chs"][2]["loc"][:3] = [0.01, 0.02, 0.03]  # a position from the file: a different layout
    third, _ = layout_from_info(moved)
    np.testing.assert_allclose(third.positions[2], [0.01, 0.02, 0.03])
    assert third.position_sources[2] == "file"
