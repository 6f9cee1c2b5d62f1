"""`data.filters.resample_reflected` (block-matrix polyphase) against scipy's `resample_poly` it replaces (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

import data.preprocess as preprocess
from data.filters import filter_reflected, resample_filter, resample_reflected
from data.preprocess import PreprocessingSpec, RecordingPipeline
from data.readers import open_raw


def _scipy(x, up, down):
    return resample_poly(x, up, down, axis=1, window=resample_filter(max(up, down)), padtype="reflect")


def _rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(((a - b) ** 2).sum() / (b**2).sum()))


@pytest.mark.parametrize(
    "name",
    ["sample_audvis_5s_raw.fif", "test.edf", "test.bdf", "brainvision/test_old_layout_latin1_software_filter.vhdr",
     "test_subsecond.edf"],
)
def test_real_recording_matches_resample_poly_after_band_pass(fixtures, name):
    """Same FIR, same reflected edges: float32 round-off only. Against scipy in float64, ours is as close as scipy's
    float32 result; after the band-pass, the two float32 results agree to 1e-3 relative RMS (test.bdf's 0.26 V
    offsets under 1e-5 V of signal make its round-off the largest: 2e-4)."""
    pipe = RecordingPipeline(open_raw(fixtures / name), PreprocessingSpec(window_s=1.0))
    x = np.asarray(pipe.raw.get_data(picks=pipe.picks), dtype=np.float32)
    ours, ref = resample_reflected(x, pipe.up, pipe.down), _scipy(x, pipe.up, pipe.down)
    exact = resample_poly(x.astype(np.float64), pipe.up, pipe.down, axis=1,
                          window=resample_filter(max(pipe.up, pipe.down)).astype(np.float64), padtype="reflect")
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert _rel_rms(ours, exact) < 2 * _rel_rms(ref, exact) + 1e-12
    assert _rel_rms(ours, ref) < 1e-6
    assert _rel_rms(filter_reflected(ours, pipe._band_key), filter_reflected(ref, pipe._band_key)) < 1e-3


@pytest.mark.parametrize("up, down", [(26, 61), (2, 1), (1, 2), (256, 125), (128, 125), (3, 7), (1, 8)])
@pytest.mark.parametrize("n", [2, 5, 30, 61, 200, 1001])
def test_any_ratio_and_length(up, down, n):
    """Every output sample, edges included; short signals (reflections longer than the signal) too."""
    x = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32) + 5.0
    ours, ref = resample_reflected(x, up, down), _scipy(x, up, down)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_pipeline_windows_agree_with_resample_poly(fixtures, monkeypatch):
    """The MEG fixture (600.615 Hz -> 256 Hz, ratio 26/61, two chunks): same windows, same times, same values to
    round-off, as with scipy's resampler."""
    path, spec = fixtures / "sample_audvis_5s_raw.fif", PreprocessingSpec(window_s=1.0, stride_s=1.0)
    ours = list(RecordingPipeline(open_raw(path), spec, chunk_s=2.0).windows())
    monkeypatch.setattr(preprocess, "resample_reflected", _scipy)
    ref = list(RecordingPipeline(open_raw(path), spec, chunk_s=2.0).windows())
    assert [w.t0_s for w in ours] == [w.t0_s for w in ref] and len(ours) >= 4
    assert _rel_rms(np.concatenate([w.signal for w in ours], 1), np.concatenate([w.signal for w in ref], 1)) < 1e-4
