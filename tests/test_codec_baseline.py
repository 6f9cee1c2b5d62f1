"""The tokenizer's trivial baseline (`bench/_codec_baseline.py`): a DCT codec that keeps to its bit budget."""

from __future__ import annotations

import sys
from pathlib import Path

import mne
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _codec_baseline import VALUE_BITS, bits_used, dct_codec  # noqa: E402


@pytest.fixture(scope="module")
def eeg_window(fixtures) -> np.ndarray:
    """512 samples (about 0.85 s at 600 Hz) of the 60 real EEG channels of the MNE sample recording, unit RMS."""
    raw = mne.io.read_raw_fif(fixtures / "sample_audvis_5s_raw.fif", verbose="error").pick("eeg")
    x = raw.get_data(start=0, stop=512)
    x = x - x.mean(axis=1, keepdims=True)
    return x / x.std(axis=1, keepdims=True)


def _pcc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    return float(((a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))).mean())


@pytest.mark.parametrize("budget", [10, 19, 40, 80, 160, 333, 1000, 9000])
def test_never_spends_more_than_its_budget(budget) -> None:
    for value_bits in VALUE_BITS:
        assert bits_used(512, budget, value_bits) <= budget


@pytest.mark.parametrize("budget", [40, 80, 160, 333])
def test_the_reconstruction_holds_no_more_coefficients_than_the_budget_pays_for(eeg_window, budget) -> None:
    """Counted on the codec's output, not on its formula: a channel-window's reconstruction has at most as many
    non-zero DCT coefficients as the cheapest value width (2 bits) could send within the budget."""
    from scipy.fft import dct

    sent = np.abs(dct(dct_codec(eeg_window, budget).astype(np.float64), norm="ortho", axis=-1)) > 1e-6
    most = (budget - 16 - 3) // (9 + min(VALUE_BITS))
    assert sent.sum(axis=-1).max() <= most, (sent.sum(axis=-1).max(), most)
    assert sent.sum(axis=-1).min() >= 1


def test_error_falls_as_the_budget_grows_and_nothing_is_sent_below_the_overhead(eeg_window) -> None:
    errors = [float(((dct_codec(eeg_window, b) - eeg_window) ** 2).mean()) for b in (40, 80, 160, 320, 1280)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert _pcc(dct_codec(eeg_window, 1280), eeg_window) > 0.95
    assert not dct_codec(eeg_window, 18).any()  # scale + choice bits alone do not fit: zeros, not overspending


def test_coding_blocks_apart_costs_quality_at_equal_bits(eeg_window) -> None:
    """The same bits spent block by block (as a frame-by-frame coder must) reconstruct worse than over the window."""
    whole = _pcc(dct_codec(eeg_window, 160), eeg_window)  # 160 bits: the tokens' rate on a 32-channel window
    blocks = _pcc(dct_codec(eeg_window, 160, block=128), eeg_window)
    assert blocks < whole - 0.03, (blocks, whole)
    assert np.array_equal(dct_codec(eeg_window[:, :128], 40), dct_codec(eeg_window, 160, block=128)[:, :128])
