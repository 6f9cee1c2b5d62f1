"""open_raw / discover on every real recording of ../shared/data/recordings (MANIFEST.md), and BIDS."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest

from data import probe
from data.errors import BrainforgeDataError, UnreadableRecordingError, UnsupportedInputError
from data.readers import ReaderCall, RecordingSource, discover, open_raw, probe_readers

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "recordings"


def _manifest_entry_points() -> list[str]:
    """Entry points listed in MANIFEST.md, section 'How to open each entry point' (empty when absent)."""
    manifest = RECORDINGS / "MANIFEST.md"
    if not manifest.is_file():
        return []
    section = manifest.read_text(encoding="utf-8").split("## How to open each entry point", 1)[-1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


ENTRY_POINTS = _manifest_entry_points()

# Entry points that must fail, with the error type and words their message must hold.
EXPECTED_ERRORS: dict[str, tuple[type[BrainforgeDataError], str]] = {
    "edf/SC4001EC-Hypnogram.edf": (UnsupportedInputError, "annotations only"),
    "eeglab/test_epochs.set": (UnsupportedInputError, "epoched data"),
    "broken/test_subsecond_header_only.edf": (UnreadableRecordingError, "header only"),
    "broken/test_raw_truncated_raw.fif": (UnreadableRecordingError, "truncated"),
    "broken/test.vhdr": (UnreadableRecordingError, "test.eeg"),
    "broken/test_subsecond_truncated.edf": (UnreadableRecordingError, "truncated"),  # 10 s of a declared 698 s
}
CNT_FILES = ["cnt/scan41_short.cnt", "cnt/test_CNT_events_mne_JWoess_clipped.cnt", "ant/test_CA_208.cnt"]


@pytest.fixture(scope="module")
def recordings() -> Path:
    if not RECORDINGS.is_dir():
        pytest.skip(f"shared recordings not found at {RECORDINGS}")
    return RECORDINGS


# ----------------------------------------------------------------------------------------------------
# Every MANIFEST entry point


@pytest.mark.shared
def test_manifest_lists_entry_points(recordings: Path) -> None:
    assert len(ENTRY_POINTS) >= 40
    assert set(EXPECTED_ERRORS) <= set(ENTRY_POINTS)


@pytest.mark.shared
@pytest.mark.parametrize("entry", ENTRY_POINTS or ["(MANIFEST.md absent)"])
def test_entry_point_opens_or_raises_named_error(recordings: Path, entry: str) -> None:
    path = recordings / entry
    if entry in EXPECTED_ERRORS:
        error_type, words = EXPECTED_ERRORS[entry]
        with pytest.raises(error_type) as info:
            open_raw(path)
        message = str(info.value)
        assert str(path) in message and words in message
        return
    raw = open_raw(path)
    assert isinstance(raw, mne.io.BaseRaw)
    assert len(raw.ch_names) > 0 and raw.info["sfreq"] > 0 and raw.n_times > 0


@pytest.mark.shared
@pytest.mark.parametrize("entry", CNT_FILES)
def test_cnt_never_kills_the_process(recordings: Path, entry: str) -> None:
    """Each .cnt either opens or raises UnreadableRecordingError; a reader crash stays in the child."""
    try:
        raw = open_raw(recordings / entry, preload=True)
    except UnreadableRecordingError as e:
        assert entry in str(e)
    else:
        assert np.isfinite(raw.get_data()).all()


@pytest.mark.shared
def test_neuroscan_sample_width_is_guessed(recordings: Path) -> None:
    """'auto' fails on both Neuroscan files; the probe picks the width MANIFEST documents."""
    scan41 = open_raw(recordings / "cnt" / "scan41_short.cnt")  # int16: 7.68 s at 400 Hz
    assert (len(scan41.ch_names), scan41.info["sfreq"], scan41.n_times) == (128, 400.0, 3070)
    calls = probe_readers(recordings / "cnt" / "test_CNT_events_mne_JWoess_clipped.cnt",
                          probe._cnt_candidates(recordings / "cnt" / "test_CNT_events_mne_JWoess_clipped.cnt"))  # fmt: skip
    assert calls.working == ReaderCall("read_raw_cnt", {"data_format": "int32"})


@pytest.mark.shared
def test_probe_survives_a_crashing_reader(recordings: Path) -> None:
    """read_raw_ant segfaults on Neuroscan files (antio): the probe reports it and moves on."""
    path = recordings / "cnt" / "scan41_short.cnt"
    crashing = ReaderCall("read_raw_ant", {})
    working = ReaderCall("read_raw_cnt", {"data_format": "int16"})
    result = probe_readers(path, [crashing, working])
    assert result.working == working
    assert [call for call, _ in result.failures] == [crashing]
    assert probe_readers(path, [crashing, working]) is result  # cached per (path, size, mtime)


@pytest.mark.shared
def test_crash_only_costs_the_file(recordings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = recordings / "cnt" / "scan41_short.cnt"
    monkeypatch.setattr(probe, "_cnt_candidates", lambda p: [ReaderCall("read_raw_ant", {})])
    with pytest.raises(UnreadableRecordingError) as info:
        open_raw(path)
    message = str(info.value)
    assert str(path) in message and "read_raw_ant" in message


# ----------------------------------------------------------------------------------------------------
# Specific behaviour


@pytest.mark.shared
def test_edf_type_prefixes_become_types(recordings: Path) -> None:
    """infer_types: 'EEG Fp1' -> Fp1 (eeg), 'ECG ECG1' -> ECG1 (ecg), 'EOG VEOG_I' -> VEOG_I (eog)."""
    raw = open_raw(recordings / "edf" / "test_edf_stim_channel.edf")
    types = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    assert types["Fp1"] == "eeg" and types["ECG1"] == "ecg" and types["VEOG_I"] == "eog"
    assert not any(name.startswith("EEG ") for name in raw.ch_names)


@pytest.mark.shared
def test_mne_warnings_are_logged_not_printed(recordings: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = recordings / "broken" / "test_subsecond_truncated.edf"
    with caplog.at_level(logging.INFO, logger="brainforge.data"):
        raw = open_raw(path, allow_truncated=True)  # refused by default (tests/test_hardening_data.py)
    assert raw.n_times == 1280  # the 10 s that are there
    assert any(r.levelno == logging.WARNING and str(path) in r.getMessage() and "file size" in r.getMessage()
               for r in caplog.records)  # fmt: skip


@pytest.mark.shared
@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("brainvision/test.vmrk", "open test.vhdr"),
        ("brainvision/test.eeg", "test.vhdr"),
        ("eeglab/test_raw.fdt", "open test_raw.set"),
        ("nihonkohden/MB0400FU.PNT", "open MB0400FU.EEG"),
        ("bti/test_config_linux", "companion"),
        ("fif/test-eve.eve", "unsupported file type '.eve'"),
        ("MANIFEST.md", "unsupported file type '.md'"),
    ],
)
def test_companions_and_other_files_are_refused(recordings: Path, entry: str, words: str) -> None:
    with pytest.raises(UnreadableRecordingError) as info:
        open_raw(recordings / entry)
    assert str(recordings / entry) in str(info.value) and words in str(info.value)


def test_missing_empty_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(UnreadableRecordingError, match="no such file"):
        open_raw(tmp_path / "nope.edf")
    (tmp_path / "empty.edf").write_bytes(b"")
    with pytest.raises(UnreadableRecordingError, match="empty file"):
        open_raw(tmp_path / "empty.edf")
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(UnreadableRecordingError, match=r"unsupported file type '\.xyz'.*\.edf"):
        open_raw(tmp_path / "x.xyz")
    with pytest.raises(UnreadableRecordingError, match="is a folder"):
        open_raw(tmp_path)


def test_garbage_with_a_known_extension(tmp_path: Path) -> None:
    path = tmp_path / "noise.fif"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnreadableRecordingError, match="noise.fif"):
        open_raw(path)


def test_epoched_fif_is_refused(tmp_path: Path) -> None:
    info = mne.create_info(["Cz", "Pz"], 100.0, "eeg")
    epochs = mne.EpochsArray(np.zeros((3, 2, 50)), info, verbose="error")
    epochs.save(tmp_path / "task-epo.fif", verbose="error")
    with pytest.raises(UnsupportedInputError, match="epoched data: use it as a labelled task in finetune"):
        open_raw(tmp_path / "task-epo.fif")
    shutil.copy(tmp_path / "task-epo.fif", tmp_path / "renamed_raw.fif")
    with pytest.raises(UnsupportedInputError, match="renamed_raw.fif.*no continuous raw data"):
        open_raw(tmp_path / "renamed_raw.fif")


# ----------------------------------------------------------------------------------------------------
# discover


@pytest.fixture(scope="module")
def discovered(recordings: Path) -> tuple[list[RecordingSource], list[tuple[str, str]]]:
    return discover([recordings])


@pytest.mark.shared
def test_discover_finds_exactly_the_entry_points(
    recordings: Path, discovered: tuple[list[RecordingSource], list[tuple[str, str]]]
) -> None:
    sources, skipped = discovered
    found = [s.recording_id for s in sources]
    assert sorted(found) == sorted(ENTRY_POINTS)
    assert skipped == []
    assert [str(s.path) for s in sources] == sorted(str(s.path) for s in sources)  # deterministic order
    for included in ["nihonkohden/MB0400FU.EEG", "bti/test_pdf_linux", "ctf/testdata_ctf_short_discontinuous.ds",
                     "egi/test_egi_multiepoch_paused.mff", "curry/test_bdf_stim_channel Curry 8.cdt"]:  # fmt: skip
        assert included in found
    for excluded in ["brainvision/test.eeg", "brainvision/test.vmrk", "eeglab/test_raw.fdt", "ant/test_CA_208.evt",
                     "bti/test_config_linux", "bti/test_hs_linux", "nicolet/test_nicolet_raw.head",
                     "curry/test_bdf_stim_channel Curry 8.cdt.dpa", "kit/test_mrk.sqd", "kit/test.elp",
                     "fif/test-eve.fif", "fif/test-eve.eve", "nihonkohden/MB0400FU.PNT", "MANIFEST.md",
                     "persyst/sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.dat", "SHA256SUMS"]:  # fmt: skip
        assert excluded not in found
    assert not any(".ds/" in f or ".mff/" in f for f in found)


@pytest.mark.shared
def test_discover_subjects(discovered: tuple[list[RecordingSource], list[tuple[str, str]]]) -> None:
    by_id = {s.recording_id: s for s in discovered[0]}
    persyst = by_id["persyst/sub-pt1_ses-02_task-monitor_acq-ecog_run-01_clip2.lay"]
    assert (persyst.subject, persyst.session) == ("pt1", "02")  # sub-/ses- in the name win
    assert by_id["edf/test.edf"].subject == "edf"  # parent folder below the input root


@pytest.mark.shared
def test_discover_files_and_missing_paths(recordings: Path, tmp_path: Path) -> None:
    sources, skipped = discover([recordings / "edf" / "test.edf", recordings / "brainvision" / "test.vmrk",
                                 tmp_path / "missing"])  # fmt: skip
    assert [(s.recording_id, s.subject) for s in sources] == [("test.edf", "test")]  # file given: stem
    reasons = dict(skipped)
    assert reasons[str(tmp_path / "missing")] == "does not exist"
    assert "companion" in reasons[str(recordings / "brainvision" / "test.vmrk")]


@pytest.mark.shared
def test_discover_gives_unique_ids(recordings: Path, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(recordings / "edf" / "test_uneven_samp.edf", tmp_path / sub / "x.edf")
    (tmp_path / "a" / "notes.xyz").write_text("not a recording")
    sources, skipped = discover([tmp_path / "a" / "x.edf", tmp_path / "b" / "x.edf", tmp_path / "a"])
    assert sorted(s.recording_id for s in sources) == ["a/x.edf", "b/x.edf"]  # the repeat of a/x.edf dropped
    assert skipped == [] or all("unsupported" in why for _, why in skipped)
    sources, skipped = discover([tmp_path])
    assert [s.recording_id for s in sources] == ["a/x.edf", "b/x.edf"]
    assert [Path(p).name for p, _ in skipped] == ["notes.xyz"]


# ----------------------------------------------------------------------------------------------------
# BIDS


@pytest.mark.shared
def test_bids_root_discover_and_open(recordings: Path, tmp_path: Path) -> None:
    from mne_bids import BIDSPath, write_raw_bids

    raw = mne.io.read_raw_bdf(recordings / "bdf" / "test_bdf_stim_channel.bdf", verbose="error")
    root = tmp_path / "study" / "bids"
    bids_path = BIDSPath(subject="01", session="a", task="rest", run="1", datatype="eeg", root=root)
    write_raw_bids(raw, bids_path, verbose="error")

    for inputs in ([root], [tmp_path / "study"]):  # the root itself, and a folder holding it
        sources, skipped = discover(inputs)
        assert skipped == []
        assert len(sources) == 1
        src = sources[0]
        assert (src.subject, src.session) == ("01", "a")
        assert src.recording_id == "sub-01_ses-a_task-rest_run-1_eeg.bdf"
        opened = src.open(preload=True)
        assert len(opened.ch_names) > 0 and opened.info["sfreq"] == 500.0 and opened.n_times == 5000
