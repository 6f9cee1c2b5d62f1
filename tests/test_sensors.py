"""Sensor layouts from real recordings (../shared/data/recordings) and from small generated infos."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from data.sensors import (
    EEG_POSITION_SCALE_M,
    MEG_POSITION_SCALE_M,
    SensorLayout,
    SensorType,
    channel_type_counts,
    layout_from_info,
    montage_name_keys,
    montage_positions,
    normalised_positions,
)

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "recordings"


@pytest.fixture(scope="module")
def recordings() -> Path:
    if not RECORDINGS.is_dir():
        pytest.skip(f"shared recordings not found at {RECORDINGS}")
    return RECORDINGS


@pytest.fixture(scope="module")
def sample_info(recordings: Path) -> mne.Info:
    """Info of the MNE sample recording: 204 grad, 102 mag, 60 eeg, 1 eog, 9 stim."""
    return mne.io.read_raw_fif(recordings / "fif" / "test_raw.fif", verbose="error").info


def _eeg_info(names: list[str]) -> mne.Info:
    return mne.create_info(names, 100.0, "eeg")


# ----------------------------------------------------------------------------------------------------
# Real MEG + EEG


@pytest.mark.shared
def test_sample_meg_eeg_layout(sample_info: mne.Info) -> None:
    layout, picks = layout_from_info(sample_info)
    assert layout.counts() == {"eeg": 60, "mag": 102, "grad": 204}
    meg = layout.types != SensorType.EEG
    norms = np.linalg.norm(layout.orientations, axis=1)
    assert np.all(np.abs(norms[meg] - 1.0) < 1e-5)
    assert np.all(layout.orientations[~meg] == 0.0)
    assert layout.position_known.all()
    assert np.all(np.linalg.norm(layout.positions, axis=1) < 0.2)
    assert layout.positions.dtype == np.float32 and layout.orientations.dtype == np.float32
    assert layout.types.dtype == np.int8


@pytest.mark.shared
def test_layout_order_matches_picks(sample_info: mne.Info) -> None:
    layout, picks = layout_from_info(sample_info)
    assert picks.dtype.kind == "i" and len(picks) == len(layout)
    assert list(layout.names) == [sample_info["ch_names"][i] for i in picks]
    mne_types = sample_info.get_channel_types()
    expected = {"eeg": SensorType.EEG, "mag": SensorType.MAG, "grad": SensorType.GRAD}
    assert [int(t) for t in layout.types] == [int(expected[mne_types[i]]) for i in picks]
    assert np.all(np.diff(picks) > 0)  # info order


@pytest.mark.shared
def test_meg_positions_are_in_head_frame(sample_info: mne.Info) -> None:
    """MEG positions are loc[:3] moved by dev_head_t, planar GRAD orientation is loc[3:6] rotated."""
    layout, picks = layout_from_info(sample_info)
    trans = sample_info["dev_head_t"]["trans"]
    i = int(np.flatnonzero(layout.types == SensorType.GRAD)[0])
    loc = sample_info["chs"][picks[i]]["loc"]
    np.testing.assert_allclose(layout.positions[i], trans[:3, :3] @ loc[:3] + trans[:3, 3], atol=1e-6)
    ori = trans[:3, :3] @ loc[3:6]
    np.testing.assert_allclose(layout.orientations[i], ori / np.linalg.norm(ori), atol=1e-6)
    j = int(np.flatnonzero(layout.types == SensorType.MAG)[0])
    normal = trans[:3, :3] @ sample_info["chs"][picks[j]]["loc"][9:12]
    np.testing.assert_allclose(layout.orientations[j], normal / np.linalg.norm(normal), atol=1e-6)


@pytest.mark.shared
def test_missing_dev_head_t_warns_once(sample_info: mne.Info, caplog: pytest.LogCaptureFixture) -> None:
    info = sample_info.copy()
    with info._unlock():
        info["dev_head_t"] = None
    with caplog.at_level(logging.WARNING, logger="brainforge.data"):
        layout, picks = layout_from_info(info, name="no-trans.fif")
    assert len([r for r in caplog.records if "dev_head_t" in r.getMessage()]) == 1
    i = int(np.flatnonzero(layout.types == SensorType.MAG)[0])
    np.testing.assert_allclose(layout.positions[i], info["chs"][picks[i]]["loc"][:3], atol=1e-6)


@pytest.mark.shared
def test_ctf_axial_gradiometers_stay_mag(recordings: Path) -> None:
    info = mne.io.read_raw_fif(recordings / "fif" / "test_ctf_comp_raw.fif", verbose="error").info
    layout, _ = layout_from_info(info)
    assert layout.counts() == {"eeg": 0, "mag": 274, "grad": 0}  # 29 ref_meg dropped
    assert np.allclose(np.linalg.norm(layout.orientations, axis=1), 1.0, atol=1e-5)


@pytest.mark.shared
def test_channel_type_counts(sample_info: mne.Info) -> None:
    assert channel_type_counts(sample_info) == {"eeg": 60, "eog": 1, "grad": 204, "mag": 102, "stim": 9}


# ----------------------------------------------------------------------------------------------------
# EEG positions from the standard montage


@pytest.mark.shared
def test_edf_dotted_names_get_montage_positions(recordings: Path) -> None:
    """BCI2000 labels like 'Fc5.' and 'Iz..' have no positions in the file: the montage supplies them."""
    raw = mne.io.read_raw_edf(recordings / "edf" / "test_edf_overlapping_annotations.edf", verbose="error")
    assert "Fc5." in raw.ch_names
    layout, _ = layout_from_info(raw.info)
    assert len(layout) == 64
    assert layout.position_known.sum() >= 60
    fc5 = layout.names.index("Fc5.")
    np.testing.assert_allclose(layout.positions[fc5], montage_positions("standard_1005")["fc5"], atol=1e-6)
    assert np.all(np.linalg.norm(layout.positions[layout.position_known], axis=1) < 0.2)


def test_montage_positions_match_set_montage() -> None:
    """Montage positions are in the head frame, as info.set_montage would place them."""
    info = _eeg_info(["Cz", "Fp1", "O2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MNE 1.13 renamed standard_1005 -> colin27_1005
        info.set_montage("standard_1005")
    table = montage_positions("standard_1005")
    for ch in info["chs"]:
        np.testing.assert_allclose(ch["loc"][:3], table[ch["ch_name"].lower()], atol=1e-6)


def test_unknown_name_gets_nan_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    info = _eeg_info(["EEG Fp1-REF", "XYZ1", "C3-sideways", "O1-A2"])
    with caplog.at_level(logging.WARNING, logger="brainforge.data"):
        layout, _ = layout_from_info(info, name="odd.edf")
    known = layout.position_known
    assert known.tolist() == [True, False, False, True]
    assert layout.position_sources == ("montage:standard_1005", "unknown", "unknown", "montage:standard_1005")
    assert np.isnan(layout.positions[~known]).all()
    assert not np.any(np.all(layout.positions == 0.0, axis=1))  # never a silent (0, 0, 0)
    warnings_ = [r for r in caplog.records if r.name == "brainforge.data" and r.levelno == logging.WARNING]
    assert len(warnings_) == 1
    msg = warnings_[0].getMessage()
    assert "odd.edf" in msg and "XYZ1" in msg and "C3-sideways" in msg and "Fp1" not in msg
    assert "identified by name" in msg and "unknown position" not in msg


def test_file_positions_win_over_montage() -> None:
    info = _eeg_info(["Cz", "Pz"])
    with info._unlock():
        info["chs"][0]["loc"][:3] = [0.01, 0.02, 0.09]
    layout, _ = layout_from_info(info)
    np.testing.assert_allclose(layout.positions[0], [0.01, 0.02, 0.09], atol=1e-7)
    np.testing.assert_allclose(layout.positions[1], montage_positions("standard_1005")["pz"], atol=1e-6)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Fc5.", "fc5"),
        ("Iz..", "iz"),
        ("EEG Fp1", "fp1"),
        ("EEG Fp1-REF", "fp1"),
        ("T3-LE", "t3"),
        ("O1-A2", "o1"),
        ("EEG F1-Ref-1", "f1"),
        ("Cz", "cz"),
    ],
)
def test_montage_name_keys_find_the_electrode(label: str, expected: str) -> None:
    assert expected in montage_name_keys(label)


@pytest.mark.parametrize("label", ["C3-front", "Fp1-F3", "C3-Cz", "POL E"])
def test_bipolar_and_unknown_labels_do_not_match(label: str) -> None:
    """Name keys alone never turn a pair into one electrode; `resolve_montage_position` handles pairs and
    offsets (tests/test_positions.py)."""
    table = montage_positions("standard_1005")
    assert not any(k in table for k in montage_name_keys(label))


def test_non_model_channels_are_dropped() -> None:
    info = mne.create_info(["Cz", "EOG1", "STI", "ECG"], 100.0, ["eeg", "eog", "stim", "ecg"])
    layout, picks = layout_from_info(info)
    assert layout.names == ("Cz",) and picks.tolist() == [0]


def test_bads_are_kept() -> None:
    info = _eeg_info(["Cz", "Pz"])
    info["bads"] = ["Pz"]
    layout, _ = layout_from_info(info)
    assert layout.names == ("Cz", "Pz")


# ----------------------------------------------------------------------------------------------------
# Normalisation and JSON


def _layout() -> SensorLayout:
    return SensorLayout(
        names=("Cz", "MEG0111", "X"),
        types=np.array([SensorType.EEG, SensorType.MAG, SensorType.EEG], dtype=np.int8),
        positions=np.array([[0.0, 0.0, 0.1], [0.0, 0.12, 0.0], [np.nan] * 3], dtype=np.float32),
        orientations=np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32),
    )


def test_normalised_positions_per_modality() -> None:
    out = normalised_positions(_layout())
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out[0], [0, 0, 0.1 / EEG_POSITION_SCALE_M], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0, 0.12 / MEG_POSITION_SCALE_M, 0], rtol=1e-6)
    assert np.isnan(out[2]).all()


def test_layout_dict_round_trip_is_json_safe() -> None:
    layout = _layout()
    d = layout.to_dict()
    text = json.dumps(d, allow_nan=False)  # NaN became None
    back = SensorLayout.from_dict(json.loads(text))
    assert back.names == layout.names
    np.testing.assert_array_equal(back.types, layout.types)
    np.testing.assert_array_equal(back.positions, layout.positions)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(back.orientations, layout.orientations)
    assert back.positions.dtype == np.float32 and back.types.dtype == np.int8


def test_auto_montage_picks_the_cap_that_fits_the_names(fixtures):
    """EGI E1..E256 get GSN HydroCel positions; BioSemi bank labels (A1..H16), which fit no built-in cap,
    stay unknown instead of borrowing 10-05 positions for the few that collide (A1, C1, ...)."""
    from data import open_raw

    egi, _ = layout_from_info(open_raw(fixtures / "egi" / "test_egi.raw").info)
    assert egi.position_known.all()
    table = montage_positions("GSN-HydroCel-257")
    np.testing.assert_allclose(egi.positions[egi.names.index("E1")], table["e1"], atol=1e-6)
    bank, _ = layout_from_info(open_raw(fixtures / "test.edf").info)
    assert not bank.position_known[[bank.names.index(n) for n in ("A1", "C1", "C3")]].any()
