"""Fine-tuning task data: (a) epochs files, (b) CSV manifests, (c) BIDS roots, (d) braindecode windows, splits.

Every fixture is built at test time from the bundled BSD recordings in tests/data (sample_audvis_5s_raw.fif:
the MNE sample MEG+EEG at 600.615 Hz; test.edf: 512 Hz EEG), so no new fixture file is needed.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from finetune.data import TaskData, load_task, task_from_braindecode
from finetune.errors import LabelError, TaskFormatError
from finetune.preprocessing import TaskPreprocessing, fit_preprocessing, windows_from_epochs, windows_from_raw
from finetune.splits import make_splits, write_splits

FIXTURES = Path(__file__).resolve().parent / "data"
SAMPLE = FIXTURES / "sample_audvis_5s_raw.fif"
EDF = FIXTURES / "test.edf"


def _sample_raw(picks=("eeg",)) -> mne.io.BaseRaw:
    raw = mne.io.read_raw_fif(SAMPLE, verbose="error").load_data()
    return raw.pick(list(picks))


def _epochs(raw: mne.io.BaseRaw, onsets_s, codes, metadata: pd.DataFrame | None = None, dur_s: float = 0.5):
    """Real epochs of ``dur_s`` at the given onsets (seconds of raw.times), labelled a (1) / b (2)."""
    sf = raw.info["sfreq"]
    events = np.c_[np.round(np.asarray(onsets_s) * sf).astype(int) + raw.first_samp, np.zeros(len(onsets_s), int), codes]
    event_id = {k: v for k, v in {"a": 1, "b": 2}.items() if v in set(codes)}
    return mne.Epochs(raw, events, event_id, tmin=0.0, tmax=dur_s - 1 / sf, baseline=None, preload=True,
                      metadata=metadata, verbose="error")  # fmt: skip


ONSETS = np.arange(0.1, 4.4, 0.36)  # 12 epochs of 0.5 s in the 5 s recording


@pytest.fixture(scope="module")
def epochs_dir(tmp_path_factory) -> Path:
    """Two epochs files (subjects s1, s2) of the MNE sample recording, 12 epochs each, split in metadata."""
    out = tmp_path_factory.mktemp("epochs")
    raw = _sample_raw(("eeg", "meg"))
    codes = 1 + np.arange(len(ONSETS)) % 2
    for sub in ("s1", "s2"):
        md = pd.DataFrame({"subject": [sub] * len(ONSETS), "split": ["train"] * 8 + ["test"] * 4})
        _epochs(raw, ONSETS, codes, md).save(out / f"{sub}-epo.fif", verbose="error")
    return out


# ----------------------------------------------------------------------------------------------------
# (a) epochs


def test_epochs_files_labels_subjects_splits_and_predict_path(epochs_dir: Path):
    task = load_task(epochs_dir)
    assert task.source["kind"] == "epochs" and len(task.source["hash"]) == 64
    assert len(task) == 24 and task.classes == ["a", "b"]
    assert task.class_counts() == {"a": 12, "b": 12}
    assert task.labels.tolist() == [0, 1] * 12  # event codes 1, 2 alternate in each file
    assert set(task.subjects) == {"s1", "s2"} and task.splits.count("test") == 8
    prep = task.preprocessing
    # 0.5 s at 600.615 Hz -> 128 samples at 256 Hz
    assert prep.input_kind == "epochs" and prep.window_samples == 128 and prep.spec.l_freq is None
    assert set(prep.scales) == {"eeg", "mag", "grad"}
    it = task.items[0]
    c = it["signal"].shape[0]
    assert it["signal"].shape == (c, 128) and it["signal"].dtype == np.float32 and c == 366  # every MEG + EEG channel
    assert it["types"].dtype == np.int8 and it["positions"].shape == (c, 3) and np.isfinite(it["positions"]).all()
    assert all(np.isfinite(x["signal"]).all() for x in task.items)
    # scales are robust: the scaled training data has a median absolute value of order 1 per type
    train = np.concatenate([task.items[i]["signal"] for i, s in enumerate(task.splits) if s == "train"], axis=1)
    assert 0.3 < np.median(np.abs(train[it["types"] == 0])) < 3

    # preprocessing.json round trip, and the predict path gives the very same inputs
    prep2 = TaskPreprocessing.from_dict(json.loads(json.dumps(prep.to_dict())))
    assert prep2 == prep
    ep = mne.read_epochs(epochs_dir / "s2-epo.fif", verbose="error")
    rw = windows_from_epochs(ep, prep2, str(epochs_dir / "s2-epo.fif"))
    np.testing.assert_array_equal(np.stack([x["signal"] for x in rw.items]), np.stack([x["signal"] for x in task.items[12:]]))
    raw = mne.io.read_raw_fif(SAMPLE, verbose="error")
    clock = ONSETS + raw.first_samp / raw.info["sfreq"]  # epochs keep the recording's sample clock (events)
    np.testing.assert_allclose(rw.t0_s, clock, atol=1 / 600)
    np.testing.assert_allclose(task.t0_s[12:], clock, atol=1 / 600)
    assert it["channels"] == tuple(ep.ch_names) and len(rw.layout) == c

    # a continuous recording given to an epochs model: consecutive 0.5 s pieces, same steps
    raw = _sample_raw(("eeg", "meg"))
    cont = windows_from_raw(raw, prep, "sample")
    assert len(cont) == raw.n_times // round(0.5 * raw.info["sfreq"]) == 10
    assert all(x["signal"].shape == (366, 128) for x in cont.items)
    np.testing.assert_allclose(np.diff(cont.t0_s), 0.5, atol=1 / 600)


def test_epochs_keep_dc_level_and_resample_like_mne(tmp_path: Path):
    """No per-epoch demeaning: a DC shift of some epochs survives; resampling matches MNE's polyphase."""
    ep = _epochs(_sample_raw(), ONSETS, 1 + np.arange(len(ONSETS)) % 2)
    data = ep.get_data()
    data[1::2] += 20e-6  # class b sits 20 uV higher on every EEG channel
    arr = mne.EpochsArray(data, ep.info, events=ep.events, event_id=ep.event_id, tmin=0.0, verbose="error")
    arr.save(tmp_path / "dc-epo.fif", verbose="error")
    task = load_task(tmp_path / "dc-epo.fif")
    scale = task.preprocessing.scales["eeg"]
    means = np.array([x["signal"].mean() for x in task.items])
    shift = means[task.labels == 1].mean() - means[task.labels == 0].mean()
    original = (data[1::2].mean() - data[::2].mean()) / scale
    assert shift == pytest.approx(original, rel=0.02)
    assert original > 1.0  # the shift is large in scaled units, so the check above can fail

    # fit_on: offsets and scales refitted on the given training items only (here: class a)
    before = np.median(np.stack([task.items[i]["signal"] for i in np.flatnonzero(task.labels == 0)]), axis=(0, 2))
    task.fit_on(np.flatnonzero(task.labels == 0))
    after = np.stack([task.items[i]["signal"] for i in np.flatnonzero(task.labels == 0)])
    assert np.abs(np.median(before)) > 0.3 and np.abs(np.median(after, axis=(0, 2))).max() < 1e-3
    mad = np.median(np.abs(after - np.median(after, axis=(0, 2), keepdims=True)), axis=(0, 2))
    assert np.median(mad) == pytest.approx(1.0, rel=1e-3)

    ref = arr.copy().pick("eeg", exclude="bads").resample(256.0, method="polyphase", verbose="error").get_data()
    ours = np.stack([x["signal"] for x in task.items])
    assert ours.shape == (len(arr), ref.shape[1], 128)
    mid = slice(16, 112)  # away from the edges, where padding choices differ
    a, b = ours[:, :, mid], ref[:, :, :128][:, :, mid]
    a, b = a - a.mean(axis=(0, 2), keepdims=True), b - b.mean(axis=(0, 2), keepdims=True)  # offsets differ
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert r > 0.98


# ----------------------------------------------------------------------------------------------------
# (b) CSV


def _sample_events_s() -> np.ndarray:
    raw = mne.io.read_raw_fif(SAMPLE, verbose="error")
    ev = mne.find_events(raw, stim_channel="STI 014", verbose="error")
    return (ev[:, 0] - raw.first_samp) / raw.info["sfreq"]


def _write_csv(tmp_path: Path, lines: list[str], header: str = "path,label,subject,start_s,stop_s") -> Path:
    path = tmp_path / "task.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_csv_segments_and_whole_recordings(tmp_path: Path):
    rel_sample = os.path.relpath(SAMPLE, tmp_path)
    rel_edf = os.path.relpath(EDF, tmp_path)
    stim = _sample_events_s()  # 3 real stimuli in the first 5 s
    lines = [f"{rel_sample},stimulus,s1,{t - 0.1:.4f},{t + 0.5:.4f}" for t in stim]
    lines += [f"{rel_sample},baseline,s1,{a},{a + 0.6}" for a in (0.5, 1.3, 2.2)]
    lines += [f"{rel_edf},baseline,s2,,"]  # a label for the whole recording
    task = load_task(_write_csv(tmp_path, lines))
    assert task.source["kind"] == "csv" and task.classes == ["baseline", "stimulus"]
    prep = task.preprocessing
    assert prep.input_kind == "recordings" and prep.window_samples == 192  # 0.6 s -> 153.6 -> up to 192
    # 6 segments -> one window each; test.edf (6 s) -> 1536 samples at 256 Hz -> 8 windows of 192
    assert len(task) == 6 + 8
    assert task.labels[:3].tolist() == [1, 1, 1] and task.labels[3:].tolist() == [0] * 11
    assert task.subjects[:6] == ["s1"] * 6 and task.subjects[6:] == ["s2"] * 8
    assert all(x["signal"].shape[1] == 192 for x in task.items)
    # a short segment is widened around its centre with real data (the last one is moved inside the recording)
    centres = np.r_[stim + 0.2, 0.8, 1.6, 2.5]
    np.testing.assert_allclose(task.t0_s[:2] + 0.375, centres[:2], atol=0.01)
    np.testing.assert_allclose(task.t0_s[3:6] + 0.375, centres[3:], atol=0.01)
    assert any("ends after the recording" in w for w in task.warnings)
    assert len(set(task.groups[6:])) == 1 and len(set(task.groups[:6])) == 6  # windows of one unit stay together


def test_segment_windows_equal_the_whole_recording_stream():
    """Segment windows (streamed chunk by chunk, skipping unneeded chunks) equal the whole-recording windows."""
    raw = _sample_raw()
    prep = fit_preprocessing("recordings", [0.75])
    assert prep.window_samples == 192
    t = prep.window_samples / 256.0
    for chunk_s in (None, 1.0):  # one chunk for the 5 s, or 1 s chunks (scales come from the first chunk)
        whole = windows_from_raw(raw, prep, "sample", chunk_s=chunk_s)
        picks = [1, 3, len(whole) - 1]
        segs = [(float(whole.t0_s[k]), float(whole.t0_s[k]) + t) for k in picks]
        seg = windows_from_raw(raw, prep, "sample", segments=segs, chunk_s=chunk_s)
        assert seg.source_index.tolist() == [0, 1, 2]
        np.testing.assert_allclose(seg.t0_s, whole.t0_s[picks], atol=1e-9)
        for k, it in zip(picks, seg.items, strict=True):
            np.testing.assert_allclose(it["signal"], whole.items[k]["signal"], atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------
# (c) BIDS


@pytest.fixture(scope="module")
def bids_root(tmp_path_factory) -> Path:
    """Two subjects, each the MNE sample recording with 8 'left'/'right' events, written by mne_bids."""
    import mne_bids

    root = tmp_path_factory.mktemp("bids")
    raw = mne.io.read_raw_fif(SAMPLE, verbose="error")
    sf = raw.info["sfreq"]
    for k, sub in enumerate(["01", "02"]):
        onsets = np.arange(0.3 + 0.1 * k, 4.3, 0.5)
        events = np.c_[(onsets * sf).astype(int) + raw.first_samp, np.zeros(len(onsets), int), 1 + np.arange(len(onsets)) % 2]
        bp = mne_bids.BIDSPath(subject=sub, task="audvis", root=root, datatype="meg")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mne_bids.write_raw_bids(raw, bp, events=events, event_id={"left": 1, "right": 2}, overwrite=True, verbose="error")
    return root


def test_bids_root_labels_from_trial_type_subjects_from_entities(bids_root: Path):
    task = load_task(bids_root)
    assert task.source["kind"] == "bids" and task.classes == ["left", "right"]
    assert len(task) == 16 and task.class_counts() == {"left": 8, "right": 8}
    assert sorted(set(task.subjects)) == ["01", "02"] and task.subjects.count("01") == 8
    assert task.preprocessing.window_samples == 128  # events without duration: 0 to 0.5 s
    assert all(x["signal"].shape[1] == 128 for x in task.items)
    wide = load_task(bids_root, event_window_s=(-0.1, 0.5))
    assert wide.preprocessing.window_samples == 192
    with pytest.raises(TaskFormatError, match=r"trial type\(s\) \['up'\].*present: \['left', 'right'\]"):
        load_task(bids_root, trial_types=["left", "up"])
    with pytest.raises(LabelError, match="only one class"):
        load_task(bids_root, trial_types=["left"])


# ----------------------------------------------------------------------------------------------------
# (d) braindecode


def _braindecode_windows(n_subjects: int = 3):
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_windows_from_events

    raw = _sample_raw()
    parts = []
    for k in range(n_subjects):
        r = raw.copy()
        on = np.arange(0.2 + 0.05 * k, 4.0, 0.4)
        r.set_annotations(mne.Annotations(on, 0.5, ["left" if i % 2 == 0 else "right" for i in range(len(on))]))
        parts.append(RawDataset(r, pd.Series({"subject": f"sub{k}"})))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_windows_from_events(BaseConcatDataset(parts), trial_start_offset_samples=0,
                                          trial_stop_offset_samples=0, mapping={"left": 0, "right": 1}, preload=True)  # fmt: skip


def test_braindecode_windows_and_subject_wise_splits(tmp_path: Path):
    ds = _braindecode_windows(4)
    task = task_from_braindecode(ds, classes=["left", "right"])
    assert task.source["kind"] == "braindecode" and len(task) == len(ds)
    assert task.classes == ["left", "right"] and task.class_counts() == {"left": 20, "right": 20}
    assert sorted(set(task.subjects)) == ["sub0", "sub1", "sub2", "sub3"]
    assert task.preprocessing.window_samples == 128  # 0.5 s windows at 600.615 Hz -> 128 at 256 Hz
    assert np.stack([x["signal"] for x in task.items]).shape == (40, 60, 128)  # 60 EEG
    np.testing.assert_array_equal(task.labels, [ds[i][1] for i in range(len(ds))])
    sp = make_splits(task, seed=0)
    assert sp.strategy == "subject-wise"
    subs = {k: {task.subjects[i] for i in v} for k, v in sp.items()}
    assert all(subs[k] for k in subs) and not (subs["train"] & subs["val"] or subs["train"] & subs["test"] or subs["val"] & subs["test"])


# ----------------------------------------------------------------------------------------------------
# Splits


@pytest.fixture(scope="module")
def many_subjects(tmp_path_factory) -> TaskData:
    """One epochs file with 6 subjects in its metadata (2 epochs per class each)."""
    out = tmp_path_factory.mktemp("subjects")
    onsets = ONSETS[:24] if len(ONSETS) >= 24 else np.arange(0.1, 4.4, 0.18)[:24]
    codes = 1 + np.arange(len(onsets)) % 2
    md = pd.DataFrame({"subject": [f"p{i // 4}" for i in range(len(onsets))]})
    _epochs(_sample_raw(), onsets, codes, md, dur_s=0.25).save(out / "many-epo.fif", verbose="error")
    return load_task(out / "many-epo.fif")


def test_no_subject_in_two_splits(many_subjects: TaskData, tmp_path: Path):
    task = many_subjects
    assert len(set(task.subjects)) == 6 and len(task) == 24
    seen = set()
    for seed in range(5):
        sp = make_splits(task, seed=seed)
        assert sp.strategy == "subject-wise"
        assert sorted(np.concatenate(list(sp.values())).tolist()) == list(range(len(task)))
        subs = {k: {task.subjects[i] for i in v} for k, v in sp.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not subs[a] & subs[b], (seed, subs)
        assert all(len(v) > 0 for v in sp.values())
        seen.add(tuple(sorted(subs["test"])))
        again = make_splits(task, seed=seed)
        assert all(np.array_equal(again[k], sp[k]) for k in sp)  # seeded
    assert len(seen) > 1  # the seed matters
    path = write_splits(sp, task, tmp_path)
    js = json.loads(path.read_text())
    assert path.name == "splits.json" and js["strategy"] == "subject-wise"
    assert js["test"]["indices"] == sp["test"].tolist() and js["test"]["subjects"] == sorted(subs["test"])


def test_given_split_wins_and_val_comes_from_train_only(epochs_dir: Path):
    task = load_task(epochs_dir)
    given_test = [i for i, s in enumerate(task.splits) if s == "test"]
    sp = make_splits(task, seed=3)
    assert sp["test"].tolist() == given_test
    assert sp.strategy == "given; val carved subject-wise from train"
    assert {task.subjects[i] for i in sp["val"]}.isdisjoint({task.subjects[i] for i in sp["train"]})
    assert not set(sp["val"].tolist()) & set(given_test)


def test_stratified_split_keeps_windows_of_one_recording_together(tmp_path: Path):
    # no subjects: recording-level labels, every recording's windows must stay in one split
    lines = [f"{os.path.relpath(SAMPLE, tmp_path)},meg,", f"{os.path.relpath(EDF, tmp_path)},eeg,"]
    lines += [f"{os.path.relpath(FIXTURES / 'test_subsecond.edf', tmp_path)},eeg,"]
    task = load_task(_write_csv(tmp_path, lines, header="path,label,subject"))
    assert task.subjects == [None] * len(task)
    for seed in range(3):
        sp = make_splits(task, seed=seed, val_fraction=0.0, test_fraction=0.5)
        assert sp.strategy == "stratified by label"
        where = {}
        for k, idx in sp.items():
            for i in idx:
                assert where.setdefault(task.groups[i], k) == k


# ----------------------------------------------------------------------------------------------------
# Bad input


def test_epochs_with_one_class_is_a_label_error(tmp_path: Path):
    ep = _epochs(_sample_raw(), ONSETS[:4], [1, 1, 1, 1])
    ep.save(tmp_path / "one-epo.fif", verbose="error")
    with pytest.raises(LabelError, match=r"one-epo\.fif: only one class \(a\) in 4"):
        load_task(tmp_path / "one-epo.fif")


def test_epochs_with_nan_name_epoch_and_channel(tmp_path: Path):
    ep = _epochs(_sample_raw(), ONSETS[:4], [1, 2, 1, 2])
    data = ep.get_data()
    data[2, 5, 10:20] = np.nan
    mne.EpochsArray(data, ep.info, events=ep.events, event_id=ep.event_id, verbose="error").save(tmp_path / "nan-epo.fif", verbose="error")
    with pytest.raises(TaskFormatError, match=rf"nan-epo\.fif: NaN or Inf in epoch 2 .*channel {ep.ch_names[5]}"):
        load_task(tmp_path / "nan-epo.fif")


def test_epochs_unknown_trial_type(epochs_dir: Path):
    with pytest.raises(TaskFormatError, match=r"trial type\(s\) \['c'\] not in the epochs' event_id"):
        load_task(epochs_dir, trial_types=["a", "c"])


def test_predict_on_a_sensor_type_never_seen(tmp_path: Path):
    eeg = _epochs(_sample_raw(), ONSETS, 1 + np.arange(len(ONSETS)) % 2)
    eeg.save(tmp_path / "eeg-epo.fif", verbose="error")
    prep = load_task(tmp_path / "eeg-epo.fif").preprocessing
    mag = _epochs(_sample_raw(("mag",)), ONSETS[:2], [1, 2])
    with pytest.raises(TaskFormatError, match=r"mag\.fif: channel MEG \d+ is MAG, a sensor type the model was not trained on"):
        windows_from_epochs(mag, prep, "mag.fif")


def test_csv_missing_files_and_malformed_rows_are_named(tmp_path: Path):
    rel = os.path.relpath(SAMPLE, tmp_path)
    bad = _write_csv(tmp_path, header="path,label,subject,start_s,stop_s,split", lines=[f"{rel},a,s1,0.5,1.1,", "nothere.edf,b,s1,0.5,1.1,", f"{rel},b,s1", f"{rel},b,s1,abc,1.0,",
                                f"{rel},b,s1,2.0,1.0,", f"{rel},,s1,1,2,", f"{rel},b,s1,1.0,,"])  # fmt: skip
    with bad.open("a") as f:
        f.write(f"{rel},b,s1,1,2,later\n")
    with pytest.raises(TaskFormatError) as e:
        load_task(bad)
    msg = str(e.value)
    assert "7 bad row(s)" in msg
    assert "line 3: recording 'nothere.edf' does not exist" in msg
    assert "line 4: 3 field(s), the header has 6" in msg
    assert "line 5: start_s 'abc' is not a number" in msg
    assert "line 6: segment [2.0, 1.0) s: need 0 <= start_s < stop_s" in msg
    assert "line 7: empty label" in msg
    assert "line 8: give both start_s and stop_s" in msg
    assert "line 9: split 'later' is not one of train, val, test" in msg
    with pytest.raises(TaskFormatError, match=r"line 1: missing column\(s\) \['label'\]"):
        load_task(_write_csv(tmp_path, [f"{rel},s1"], header="path,subject"))
    with pytest.raises(TaskFormatError, match=r"line 3 \(path .*sample_audvis_5s_raw\.fif\): .*segment 1: \[7\.0, 7\.5\) s starts outside the recording"):
        load_task(_write_csv(tmp_path, [f"{rel},a,s1,0.5,1.0", f"{rel},b,s1,7.0,7.5"]))
    with pytest.raises(LabelError, match="only one class"):
        load_task(_write_csv(tmp_path, [f"{rel},a,s1,0.5,1.0", f"{rel},a,s1,1.5,2.0"]))


# ----------------------------------------------------------------------------------------------------
# The real task files in ../shared/data/tasks


def test_shared_task_files_match_their_readme(shared_tasks: Path):
    scp = load_task(shared_tasks / "self_regulation_scp1-epo.fif")
    assert (scp.splits.count("train"), scp.splits.count("test")) == (268, 293)
    assert scp.classes == ["negativity", "positivity"] and scp.preprocessing.window_samples == 896  # 3.5 s
    assert scp.items[0]["signal"].shape == (6, 896) and np.isfinite(scp.items[0]["positions"]).all()  # positions from the labels
    assert len({tuple(p) for p in scp.items[0]["positions"].round(4)}) == 6  # A1-Cz, A2-Cz bipolar; C3/C4 offsets
    sp = make_splits(scp, seed=0)
    assert sorted(sp["test"].tolist()) == [i for i, s in enumerate(scp.splits) if s == "test"]

    eyes = load_task(shared_tasks / "eyes_open_shut-epo.fif")
    assert (eyes.splits.count("train"), eyes.splits.count("test")) == (56, 42)
    assert eyes.classes == ["0", "1"] and eyes.preprocessing.window_samples == 256  # 128 Hz, 1 s
    assert np.isfinite(eyes.items[0]["positions"]).all()  # 10-20 names -> montage positions
    # the ~4.3 mV headset offset is removed by the fixed training offsets
    assert abs(np.median(np.stack([x["signal"] for x in eyes.items]))) < 2

    audvis = load_task(shared_tasks / "mne_sample_audvis.csv")
    assert len(audvis) == 29 and len(set(audvis.groups)) == 29 and audvis.n_classes == 4
    assert audvis.items[0]["signal"].shape[1] == 192 and audvis.class_counts()["visual/right"] == 6


def test_warnings_are_collected_per_thread():
    """The server preprocesses requests on several threads: each ModelInputs gets only its own warnings."""
    import logging
    import threading

    from finetune.preprocessing import _captured_warnings

    log = logging.getLogger("brainforge.data")
    mine, theirs, go = [], [], threading.Event()

    def other():
        with _captured_warnings(theirs):
            go.wait(5)
            log.warning("from the other thread")

    t = threading.Thread(target=other)
    t.start()
    with _captured_warnings(mine):
        log.warning("from this thread")
        go.set()
        t.join(5)
    assert mine == ["from this thread"] and theirs == ["from the other thread"]


def test_tokenizer_rate_and_hop_must_agree():
    from finetune.preprocessing import check_tokenizer_agrees, fit_preprocessing

    prep = fit_preprocessing("recordings")  # 512 samples at 256 Hz
    check_tokenizer_agrees(prep, 256.0, 64, "tok", {"sfreq": 256.0})
    with pytest.raises(ValueError, match=r"resamples to 256 Hz but the tokenizer's config.json says 200 Hz"):
        check_tokenizer_agrees(prep, 200.0, 64, "tok")
    with pytest.raises(ValueError, match=r"preprocessing.json says 128 Hz"):
        check_tokenizer_agrees(prep, 256.0, 64, "tok", {"sfreq": 128})
    with pytest.raises(ValueError, match=r"512 samples is not a multiple of the tokenizer's hop of 96"):
        check_tokenizer_agrees(prep, 256.0, 96, "tok")


def test_tokenizer_spec_flows_from_the_tokenizer_or_backbone_package(tmp_path: Path):
    from data.preprocess import PreprocessingSpec
    from finetune.preprocessing import tokenizer_spec

    tok, bb = tmp_path / "tok", tmp_path / "bb"
    tok.mkdir(), bb.mkdir()
    (tok / "preprocessing.json").write_text(json.dumps({**PreprocessingSpec().to_dict(), "sfreq": 200.0, "l_freq": 0.5,
                                                        "window_s": 4.0, "stride_s": 1.0}))
    (bb / "config.json").write_text(json.dumps({"tokenizer": {"path": str(tok)}}))
    for pkg in (tok, bb):
        spec = tokenizer_spec(pkg)
        assert (spec.sfreq, spec.l_freq) == (200.0, 0.5)  # the tokenizer's signal path
        assert (spec.window_s, spec.stride_s) == (PreprocessingSpec.window_s, PreprocessingSpec.stride_s)  # the task's
    (tok / "preprocessing.json").write_text("{}")
    assert tokenizer_spec(bb) is None and tokenizer_spec(tmp_path / "nothing") is None
