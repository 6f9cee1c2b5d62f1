"""The tokenizer benchmark's hold-out in time (`bench/tokenizer_quality.py`: `cut_in_time`): the only Neuromag
recording is split into a head that trains and a tail that is held out, with nothing shared and nothing lost."""

from __future__ import annotations

import sys
from pathlib import Path

import mne
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from tokenizer_quality import cut_in_time  # noqa: E402


def test_head_and_tail_partition_the_recording_with_its_sensors(fixtures, tmp_path):
    src = fixtures / "sample_audvis_5s_raw.fif"
    raw = mne.io.read_raw_fif(src, verbose="error")
    head, tail = cut_in_time(src, 2.0, tmp_path)
    h = mne.io.read_raw_fif(head, verbose="error")
    t = mne.io.read_raw_fif(tail, verbose="error")
    assert h.ch_names == t.ch_names == raw.ch_names
    assert t.times[-1] == pytest.approx(2.0, abs=2 / raw.info["sfreq"])
    assert h.n_times + t.n_times == raw.n_times  # no sample in both, none dropped
    np.testing.assert_allclose(np.hstack([h.get_data(), t.get_data()]), raw.get_data(), rtol=1e-6, atol=0)
    assert [ch["loc"].tolist() for ch in t.info["chs"]] == [ch["loc"].tolist() for ch in raw.info["chs"]]


def test_a_tail_longer_than_the_recording_is_refused_by_name(fixtures, tmp_path):
    with pytest.raises(SystemExit, match="sample_audvis_5s_raw.fif.*cannot hold out its last 60"):
        cut_in_time(fixtures / "sample_audvis_5s_raw.fif", 60.0, tmp_path)
