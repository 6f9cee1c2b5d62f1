"""EEG channels without a position are placed from the signal's correlations (`data.signal_positions`), on real EEG
(the MNE sample recording's 60 EEG channels, whose true positions are known, so the placement can be scored)."""

from __future__ import annotations

import logging

import mne
import numpy as np
import pytest
import torch

from data.dataset import WindowCollator
from data.preprocess import PreprocessingSpec, RecordingPipeline
from data.signal_positions import positions_from_signal


@pytest.fixture(scope="module")
def eeg_raw(fixtures) -> mne.io.BaseRaw:
    return mne.io.read_raw_fif(fixtures / "sample_audvis_5s_raw.fif", preload=True, verbose="error").pick("eeg")


def _hidden(raw: mne.io.BaseRaw, idx) -> mne.io.BaseRaw:
    out = raw.copy()
    for i in idx:
        out.info["chs"][i]["loc"][:3] = np.nan
    return out


def _pairwise(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(len(x), 1)]


def test_channels_among_placed_ones_land_near_their_true_position(eeg_raw) -> None:
    """6 of 60 channels lose their position: each is placed from the 3 known channels it correlates with most,
    within a few cm of where it really is (a random electrode of the cap is ~10 cm away on average)."""
    true = np.array([ch["loc"][:3] for ch in eeg_raw.info["chs"]])
    hide = np.arange(0, 60, 10)
    layout = RecordingPipeline(_hidden(eeg_raw, hide), PreprocessingSpec(), name="hidden").layout
    rows = [layout.names.index(eeg_raw.ch_names[i]) for i in hide]
    assert [layout.position_sources[r] for r in rows] == ["signal:neighbours"] * len(hide)
    assert layout.position_inferred.sum() == len(hide)
    error = np.linalg.norm(layout.positions[rows] - true[hide], axis=1)
    chance = _pairwise(true).mean()
    assert np.median(error) < 0.04 and error.max() < 0.06, f"errors {np.round(error * 100, 1)} cm"
    assert chance > 0.08


def test_a_recording_without_any_position_gets_a_map_that_keeps_its_distances(eeg_raw, caplog) -> None:
    """No channel has a position: MDS of the correlations gives a map whose inter-electrode distances rank like
    the true ones (orientation is arbitrary, so only distances are compared)."""
    from scipy.stats import spearmanr

    true = np.array([ch["loc"][:3] for ch in eeg_raw.info["chs"]])
    with caplog.at_level(logging.INFO, logger="brainforge.data"):
        layout = RecordingPipeline(_hidden(eeg_raw, range(60)), PreprocessingSpec(), name="anonymous").layout
    assert set(layout.position_sources) == {"signal:mds"} and np.isfinite(layout.positions).all()
    assert any("placed from the signal (signal:mds)" in r.getMessage() for r in caplog.records)
    keep = [eeg_raw.ch_names.index(n) for n in layout.names]
    rho = spearmanr(_pairwise(layout.positions.astype(np.float64)), _pairwise(true[keep])).correlation
    assert rho > 0.4, f"Spearman {rho:.2f} between inferred and true inter-electrode distances"


def test_specs_recorded_before_the_field_keep_channels_unplaced(eeg_raw) -> None:
    old = PreprocessingSpec.from_dict({k: v for k, v in PreprocessingSpec().to_dict().items() if k != "signal_positions"})
    assert not old.signal_positions and PreprocessingSpec().signal_positions
    layout = RecordingPipeline(_hidden(eeg_raw, range(60)), old, name="old").layout
    assert not layout.position_known.any() and set(layout.position_sources) == {"unknown"}


def test_too_few_channels_or_no_correlate_stay_unknown() -> None:
    rng = np.random.default_rng(0)
    two = positions_from_signal(rng.normal(size=(2, 500)), np.full((2, 3), np.nan), np.ones(2, bool))
    assert np.isnan(two[0]).all() and two[1] == [None, None]  # MDS needs 3 channels
    known = np.array([[0.05, 0, 0.08], [-0.05, 0, 0.08], [0, 0.05, 0.08]])
    noise = rng.normal(size=(4, 2000))  # the unknown channel correlates with none of the known ones
    pos, rules = positions_from_signal(noise, np.vstack([np.full((1, 3), np.nan), known]), np.ones(4, bool))
    assert np.isnan(pos[0]).all() and rules[0] is None


def test_collated_batches_say_which_positions_were_inferred() -> None:
    item = {"signal": np.zeros((3, 64), np.float32), "types": np.zeros(3, np.int8),
            "positions": np.zeros((3, 3), np.float32), "orientations": np.zeros((3, 3), np.float32),
            "channel_ids": np.arange(1, 4), "position_inferred": np.array([0, 1, 0], np.uint8)}
    old = {k: v for k, v in item.items() if k != "position_inferred"}
    batch = WindowCollator(None)([item, old])
    assert batch["position_inferred"].tolist() == [[False, True, False], [False, False, False]]
    assert batch["position_inferred"].dtype == torch.bool
