"""Where EEG positions come from (issue 11): name variants, old 10-20 aliases, offsets, bipolar midpoints,
and `SensorLayout.position_sources`, which records the rule behind each position."""

from __future__ import annotations

import json
import logging

import mne
import numpy as np
import pytest

import data.montage as montage
from data.describe import describe, position_lines
from data.sensors import (
    DIRECTIONAL_OFFSET_M,
    SensorLayout,
    SensorType,
    layout_from_info,
    montage_positions,
    resolve_montage_position,
)

SCP1_NAMES = ["A1-Cz", "A2-Cz", "C3-front", "C3-pariet", "C4-front", "C4-pariet"]


def _eeg_layout(names: list[str], montage: str = "auto") -> SensorLayout:
    return layout_from_info(mne.create_info(names, 100.0, "eeg"), montage)[0]


def _std(name: str) -> np.ndarray:
    return montage_positions("standard_1005")[name.lower()]


# ----------------------------------------------------------------------------------------------------
# 1. standard names with decorations


@pytest.mark.parametrize(
    "label", ["EEG Fp1-REF", "FP1", "Fp1.", "EEG-Fp1", "Fp1 ", "fp1", "EEG FP1-LE", "Fp1-A2", "EEG:Fp1", "Fp1-Ref-0"]
)
def test_decorated_standard_names_get_the_montage_position(label: str) -> None:
    layout = _eeg_layout([label, "Cz"])
    np.testing.assert_allclose(layout.positions[0], _std("Fp1"), atol=1e-6)
    assert layout.position_sources == ("montage:standard_1005", "montage:standard_1005")


def test_referential_a1_a2_suffix_keeps_the_electrode() -> None:
    """"C3-A2" is C3 referred to the ear, not a bipolar pair (A1/A2/M1/M2/Ref... are reference suffixes)."""
    layout = _eeg_layout(["C3-A2", "O1-M1", "Cz-Ref"])
    for i, el in enumerate(["C3", "O1", "Cz"]):
        np.testing.assert_allclose(layout.positions[i], _std(el), atol=1e-6)
    assert set(layout.position_sources) == {"montage:standard_1005"}


# ----------------------------------------------------------------------------------------------------
# 2. old 10-20 aliases


def test_old_names_are_in_standard_1005_itself() -> None:
    """MNE's 10-05 montage has T3..T6 (at T7/T8/P7/P8): they are plain montage hits, no alias needed."""
    layout = _eeg_layout(["T3", "T4", "T5", "T6"])
    assert set(layout.position_sources) == {"montage:standard_1005"}
    for i, new in enumerate(["T7", "T8", "P7", "P8"]):
        np.testing.assert_allclose(layout.positions[i], _std(new), atol=1e-6)


@pytest.mark.parametrize(("old", "new"), [("T3", "T7"), ("T4", "T8"), ("T5", "P7"), ("T6", "P8")])
def test_alias_when_the_montage_lacks_the_old_name(old: str, new: str) -> None:
    """BioSemi caps name only T7/T8/P7/P8: T3..T6 (with any decoration) get those positions."""
    table = montage_positions("biosemi64")
    assert old.lower() not in table
    layout = _eeg_layout([old, f"EEG {old.upper()}-REF", "Cz"], montage="biosemi64")
    for i in (0, 1):
        np.testing.assert_allclose(layout.positions[i], table[new.lower()], atol=1e-6)
        assert layout.position_sources[i] == f"alias:{old}->{new}"
    assert layout.position_sources[2] == "montage:biosemi64"


def test_alias_in_both_directions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A montage that lacks T3..T6 serves them from T7..P8, one that lacks T7 serves it from T3."""
    full = dict(montage_positions("standard_1005"))
    no_old = {k: v for k, v in full.items() if k not in {"t3", "t4", "t5", "t6"}}
    no_new = {k: v for k, v in full.items() if k not in {"t7"}}
    monkeypatch.setattr(montage, "montage_positions", lambda m: no_old if m == "standard_1005" else no_new)
    pos, src = resolve_montage_position("T5", "standard_1005")
    np.testing.assert_allclose(pos, full["p7"], atol=1e-6)
    assert src == "alias:T5->P7"
    pos, src = resolve_montage_position("t7", "other")
    np.testing.assert_allclose(pos, full["t3"], atol=1e-6)
    assert src == "alias:T7->T3"


# ----------------------------------------------------------------------------------------------------
# 3. bipolar midpoints


@pytest.mark.parametrize(
    ("label", "a", "b", "pair"),
    [("Fp1-F3", "Fp1", "F3", "Fp1-F3"), ("F3-C3", "F3", "C3", "F3-C3"), ("A1-Cz", "A1", "Cz", "A1-Cz"),
     ("EEG FP1-F7", "Fp1", "F7", "FP1-F7"), ("EEG Fp1-F3-REF", "Fp1", "F3", "Fp1-F3"), ("C3 - Cz", "C3", "Cz", "C3-Cz")],
)
def test_bipolar_derivation_is_the_midpoint(label: str, a: str, b: str, pair: str) -> None:
    layout = _eeg_layout([label])
    np.testing.assert_allclose(layout.positions[0], (_std(a) + _std(b)) / 2, atol=1e-6)
    assert layout.position_sources == (f"bipolar:{pair}",)


def test_bipolar_needs_both_electrodes_and_uses_aliases() -> None:
    layout = _eeg_layout(["Fp1-XYZ", "T3-C3", "Fp1", "Cz"], montage="biosemi64")
    assert not layout.position_known[0] and layout.position_sources[0] == "unknown"
    table = montage_positions("biosemi64")
    np.testing.assert_allclose(layout.positions[1], (table["t7"] + table["c3"]) / 2, atol=1e-6)
    assert layout.position_sources[1] == "bipolar:T3-C3"


# ----------------------------------------------------------------------------------------------------
# 4. directional offsets


@pytest.mark.parametrize(
    ("label", "el", "sign", "source"),
    [("C3-front", "C3", 1, "offset:C3+2cm-anterior"), ("C3-pariet", "C3", -1, "offset:C3+2cm-posterior"),
     ("C4 frontal", "C4", 1, "offset:C4+2cm-anterior"), ("Cz_parietal", "Cz", -1, "offset:Cz+2cm-posterior"),
     ("EEG Pz-ant.", "Pz", 1, "offset:Pz+2cm-anterior"), ("T3-posterior", "T3", -1, "offset:T3+2cm-posterior")],
)
def test_directional_offset_moves_along_y(label: str, el: str, sign: int, source: str) -> None:
    layout = _eeg_layout([label])
    expected = _std(el) + np.array([0.0, sign * DIRECTIONAL_OFFSET_M, 0.0])
    np.testing.assert_allclose(layout.positions[0], expected, atol=1e-6)
    assert layout.position_sources == (source,)


def test_scp1_names_all_get_distinct_positions() -> None:
    """BCI Competition II Ia (SCP1): ear-to-Cz derivations are midpoints, C3/C4 front/pariet are offsets."""
    layout = _eeg_layout(SCP1_NAMES)
    assert layout.position_known.all()
    assert len({tuple(np.round(p, 6)) for p in layout.positions}) == 6
    assert layout.position_sources == (
        "bipolar:A1-Cz", "bipolar:A2-Cz", "offset:C3+2cm-anterior", "offset:C3+2cm-posterior",
        "offset:C4+2cm-anterior", "offset:C4+2cm-posterior",
    )
    np.testing.assert_allclose(layout.positions[0], (_std("A1") + _std("Cz")) / 2, atol=1e-6)
    np.testing.assert_allclose(layout.positions[2] - layout.positions[3], [0, 0.04, 0], atol=1e-6)


@pytest.mark.shared
def test_scp1_task_file_gets_positions(shared_tasks) -> None:
    info = mne.read_epochs(shared_tasks / "self_regulation_scp1-epo.fif", preload=False, verbose="error").info
    layout, _ = layout_from_info(info, name="scp1")
    assert list(layout.names) == SCP1_NAMES
    assert layout.position_known.all()
    assert len({tuple(np.round(p, 6)) for p in layout.positions}) == 6
    assert [s.split(":")[0] for s in layout.position_sources] == ["bipolar"] * 2 + ["offset"] * 4


# ----------------------------------------------------------------------------------------------------
# names that fit no rule


def test_numbered_channels_stay_unknown(caplog: pytest.LogCaptureFixture) -> None:
    names = [f"EEG {i:03d}" for i in range(32)]
    with caplog.at_level(logging.WARNING, logger="brainforge.data"):
        layout = _eeg_layout(names)
    assert not layout.position_known.any()
    assert layout.position_sources == ("unknown",) * 32
    msg = " ".join(r.getMessage() for r in caplog.records if r.name == "brainforge.data")
    assert "EEG 031" in msg and "identified by name" in msg


@pytest.mark.shared
def test_eeglab_numbered_channels_stay_unknown(shared_recordings) -> None:
    info = mne.io.read_raw_eeglab(shared_recordings / "eeglab" / "test_raw.set", verbose="error").info
    layout, _ = layout_from_info(info)
    assert layout.names == tuple(f"EEG {i:03d}" for i in range(32))
    assert not layout.position_known.any() and set(layout.position_sources) == {"unknown"}


def test_nihon_kohden_aux_inputs_do_not_block_the_montage() -> None:
    """'POL ...' inputs are left out of the auto-montage coverage: 5 scalp names among 12 POL still fit."""
    layout = _eeg_layout(["FP1", "FP2", "CZ", "O1", "O2"] + [f"POL X{i}" for i in range(12)])
    assert layout.position_known.tolist() == [True] * 5 + [False] * 12


# ----------------------------------------------------------------------------------------------------
# 5. SensorLayout.position_sources


def _meg_info() -> mne.Info:
    info = mne.create_info(["MEG0111", "Cz"], 100.0, ["mag", "eeg"])
    with info._unlock():
        info["chs"][0]["loc"][:3] = [0.01, 0.02, 0.1]
        info["chs"][0]["loc"][9:12] = [0.0, 0.0, 1.0]
        info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    return info


def test_sources_file_for_meg_and_loc() -> None:
    info = _meg_info()
    with info._unlock():
        info["chs"][1]["loc"][:3] = [0.0, 0.0, 0.09]
    layout, _ = layout_from_info(info)
    assert layout.position_sources == ("file", "file")
    assert layout.types.tolist() == [SensorType.MAG, SensorType.EEG]


def test_position_sources_default_select_and_json() -> None:
    layout = _eeg_layout(["Cz", "A1-Cz", "XYZ"])
    bare = SensorLayout(layout.names, layout.types, layout.positions, layout.orientations)
    assert bare.position_sources is None and "position_sources" not in bare.to_dict()
    assert SensorLayout.from_dict(bare.to_dict()).position_sources is None  # old dicts: not recorded
    back = SensorLayout.from_dict(json.loads(json.dumps(layout.to_dict(), allow_nan=False)))
    assert back.position_sources == ("montage:standard_1005", "bipolar:A1-Cz", "unknown")
    assert layout.select([2, 0]).position_sources == ("unknown", "montage:standard_1005")
    assert layout.select(np.array([False, True, False])).position_sources == ("bipolar:A1-Cz",)
    assert bare.select([1]).position_sources is None
    with pytest.raises(ValueError, match="position_sources"):
        SensorLayout(layout.names, layout.types, layout.positions, layout.orientations, ("file",))


# ----------------------------------------------------------------------------------------------------
# 6. inspect


def test_inspect_reports_the_rule_of_each_position(tmp_path) -> None:
    names = ["Cz", "T3", *SCP1_NAMES, "EEG 000", "EEG 001"]
    raw = mne.io.RawArray(np.zeros((len(names), 256)), mne.create_info(names, 128.0, "eeg"), verbose="error")
    raw.save(tmp_path / "rules_raw.fif", verbose="error")
    out = describe(tmp_path / "rules_raw.fif")
    text = out["text"]
    assert "positions: 8 found, 2 missing; by rule: 2 montage:standard_1005, 2 bipolar, 4 offset, 2 unknown" in text
    assert "bipolar: A1-Cz (A1+Cz), A2-Cz (A2+Cz)" in text
    assert "C3-front (C3+2cm-anterior)" in text and "C4-pariet (C4+2cm-posterior)" in text
    assert "unknown (identified by name only): EEG 000, EEG 001" in text
    assert out["position_sources"]["A1-Cz"] == "bipolar:A1-Cz"
    assert out["positions_missing"] == ["EEG 000", "EEG 001"]


def test_position_lines_without_sources() -> None:
    layout = _eeg_layout(["Cz", "XYZ"])
    bare = SensorLayout(layout.names, layout.types, layout.positions, layout.orientations)
    assert position_lines(bare) == ["  positions: 1 found, 1 missing (XYZ)"]
