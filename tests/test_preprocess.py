"""The streaming preprocessing against MNE's own filtering and resampling of the whole recording."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from data.preprocess import PreprocessingSpec, RecordingPipeline
from data.readers import open_raw


def test_spec_json_round_trip(tmp_path):
    spec = PreprocessingSpec(window_s=4.0, stride_s=1.0, line_freq=60.0)
    spec.save(tmp_path / "p.json")
    assert PreprocessingSpec.load(tmp_path / "p.json") == spec
    assert json.loads((tmp_path / "p.json").read_text())["version"] == 1
    with pytest.raises(ValueError, match="newer"):
        PreprocessingSpec.from_dict({**spec.to_dict(), "version": 99})


def test_notch_frequencies_follow_line_and_lowpass():
    spec = PreprocessingSpec()
    assert spec.notch_freqs(1000.0, 50.0) == [50.0]  # 100 Hz is the low-pass itself
    assert spec.notch_freqs(1000.0, None) == [50.0, 60.0]
    assert spec.notch_freqs(128.0, None) == [50.0]  # low-pass 57.6 Hz
    assert spec.low_pass(128.0) == pytest.approx(57.6)


def test_chunked_stream_matches_mne_whole_recording(fixtures):
    """698 s of real EEG, processed in 60 s chunks, equals MNE filtering the whole recording."""
    path = fixtures / "test_subsecond.edf"
    spec = PreprocessingSpec()
    pipe = RecordingPipeline(open_raw(path), spec, chunk_s=60.0)
    assert (pipe.up, pipe.down) == (2, 1)
    ours = {round(w.t0_s, 6): w.signal for w in pipe.windows()}
    scale = pipe.calibration["scales"]["eeg"]

    raw = mne.io.read_raw_edf(path, preload=True, verbose="error").pick("eeg")
    raw.resample(256.0, method="polyphase", verbose="error")
    raw.filter(spec.l_freq, spec.low_pass(128.0), verbose="error")
    raw.notch_filter(spec.notch_freqs(128.0, None), verbose="error")
    ref = raw.get_data()
    rms = ref.std()
    # windows at the start, across chunk boundaries (60 s = 15360 samples) and at the end
    t0s = sorted(ours)
    checked = 0
    for t0 in [t0s[0], 58.0, 60.0, 120.0, 300.0, t0s[-1]]:
        s = int(round(t0 * 256))
        err = np.abs(ours[t0] * scale - ref[:, s : s + 512]).max()
        assert err < 1e-3 * rms, f"window at {t0} s differs from MNE by {err / rms:.2e} RMS"
        checked += 1
    assert checked == 6
    assert len(ours) == int(698 // 2)


def test_scaling_is_robust_unit_mad(fixtures):
    pipe = RecordingPipeline(open_raw(fixtures / "test.edf"), PreprocessingSpec())
    x = np.concatenate([w.signal for w in pipe.windows()], axis=1)
    mad = np.median(np.abs(x - np.median(x, axis=1, keepdims=True)), axis=1)
    assert 0.5 < np.median(mad) < 2.0


def test_nan_stretch_drops_only_its_windows():
    rng = np.random.default_rng(0)
    info = mne.create_info([f"EEG{i}" for i in range(4)], 256.0, "eeg")
    x = rng.standard_normal((4, 256 * 20)) * 1e-5
    x[:, 256 * 7 : 256 * 8] = np.nan
    x[2, 256 * 15] = np.inf
    pipe = RecordingPipeline(mne.io.RawArray(x, info, verbose="error"), PreprocessingSpec(), name="nan.fif")
    stats: dict = {}
    wins = list(pipe.windows(stats))
    t0 = [w.t0_s for w in wins]
    assert stats == {"nonfinite": 2}
    assert 6.0 not in t0 and 14.0 not in t0 and 8.0 in t0
    assert all(np.isfinite(w.signal).all() for w in wins)


def test_flat_stretch_windows_dropped(fixtures):
    """test_edf_stim_channel.edf: the EEG is exactly constant from about 6 s to the end."""
    pipe = RecordingPipeline(open_raw(fixtures / "test_edf_stim_channel.edf"), PreprocessingSpec())
    stats: dict = {}
    t0 = [w.t0_s for w in pipe.windows(stats)]
    assert stats.get("flat", 0) >= 1
    assert max(t0) < 6.0


def test_bad_channel_detection():
    rng = np.random.default_rng(1)
    info = mne.create_info([f"EEG{i}" for i in range(8)], 256.0, "eeg")
    x = rng.standard_normal((8, 256 * 10)) * 1e-5
    x[3] = 0.0  # flat
    x[5] *= 1e4  # outlier
    pipe = RecordingPipeline(mne.io.RawArray(x, info, verbose="error"), PreprocessingSpec(), name="bads")
    reasons = pipe.calibration["bad_reasons"]
    assert set(reasons) == {"EEG3", "EEG5"}
    assert reasons["EEG3"] == "flat" and "outlier" in reasons["EEG5"]
    assert len(pipe.layout) == 6 and next(pipe.windows()).signal.shape == (6, 512)


def test_spans_at_any_starts_equal_one_chunk_processing(fixtures):
    """`RecordingPipeline.spans`: stretches at arbitrary ascending starts (chunks skipped, a stretch across a chunk
    border) equal the same stretches of the recording processed as one chunk; `windows` is built on it."""
    path = fixtures / "sample_audvis_5s_raw.fif"
    whole = RecordingPipeline(open_raw(path), PreprocessingSpec(), chunk_s=60.0)
    chunked = RecordingPipeline(open_raw(path), PreprocessingSpec(), chunk_s=1.0)
    starts, length = [3, 200, 250, 700, 1000], 192  # output samples at 256 Hz; 1 s chunks hold ~256
    ref = {sp.start: sp for sp in whole.spans(starts, length)}
    got = list(chunked.spans(starts, length))
    assert [sp.start for sp in got] == starts
    for sp in got:
        assert sp.filtered.shape == (len(chunked.layout), length) and sp.flat.shape == sp.filtered.shape
        np.testing.assert_allclose(sp.filtered, ref[sp.start].filtered, rtol=0, atol=1e-6 * np.abs(sp.filtered).max())
    w = next(chunked.windows())
    np.testing.assert_array_equal(w.signal, chunked.scale(next(chunked.spans([0], w.signal.shape[1])).filtered))
