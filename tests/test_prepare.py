"""`python -m data prepare` end to end: real recordings to litdata shards, bad inputs, atomicity."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from data import PreprocessingSpec, RecordingPipeline, WindowDataModule, open_raw, prepare, window_dataset
from data.errors import BrainforgeDataError, OutputExistsError
from data.shards import verify_shards

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, check=True, **kw):
    kw.setdefault("timeout", 300)
    res = subprocess.run([sys.executable, "-m", "data", *args], cwd=REPO, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"exit {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def good_shards(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "out"
    prepare([fixtures / "sample_audvis_5s_raw.fif", fixtures / "test.edf"], out, progress=False)
    return out


def test_shards_equal_windows_within_float16(good_shards, fixtures):
    ds = window_dataset(good_shards)
    m = json.loads((good_shards / "manifest.json").read_text())
    assert len(ds) == m["n_windows"] == sum(r["n_windows"] for r in m["recordings"])
    items = [ds[i] for i in range(len(ds))]
    by_rec = {}
    for it in items:
        by_rec.setdefault(it["recording"], []).append(it)
    rec = next(r for r in m["recordings"] if r["path"].endswith("sample_audvis_5s_raw.fif"))
    pipe = RecordingPipeline(open_raw(fixtures / "sample_audvis_5s_raw.fif"), PreprocessingSpec())
    expected = list(pipe.windows())
    got = sorted(by_rec[rec["recording"]], key=lambda it: it["t0_s"])
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected, strict=True):
        assert g["signal"].dtype == np.float16 and g["signal"].shape == e.signal.shape
        np.testing.assert_allclose(g["signal"].astype(np.float32), e.signal, rtol=1e-3, atol=1e-3)
        assert g["t0_s"] == pytest.approx(e.t0_s)
        assert g["types"].dtype == np.int8 and g["positions"].dtype == np.float32
        assert g["positions"].shape == (e.signal.shape[0], 3)
    assert rec["channels"]["grad"] + rec["channels"]["mag"] + rec["channels"]["eeg"] == got[0]["signal"].shape[0]
    assert verify_shards(good_shards) == []


def test_manifest_contents(good_shards):
    m = json.loads((good_shards / "manifest.json").read_text())
    assert m["schema_version"] == 2
    assert PreprocessingSpec.from_dict(m["preprocessing"]) == PreprocessingSpec()
    for r in m["recordings"]:
        assert len(r["sha256"]) == 64 and r["n_windows"] > 0 and r["scales"]
        assert sum(r["all_channel_types"].values()) >= sum(r["channels"].values())
    assert m["shard_sha256"] and all(len(h) == 64 for h in m["shard_sha256"].values())
    assert m["skipped"] == []


def test_datamodule_mixed_channel_counts(good_shards):
    dm = WindowDataModule(str(good_shards), batch_size=4, max_channels=64)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["signal"].shape[0] == 4 and batch["signal"].shape[1] <= 64 and batch["signal"].shape[2] == 512
    assert batch["channel_mask"].dtype == torch.bool
    n_real = batch["channel_mask"].sum(1)
    assert (n_real >= 1).all()
    # padded rows are zero, real rows are not
    for i, n in enumerate(n_real.tolist()):
        assert batch["signal"][i, n:].abs().sum() == 0
        assert batch["signal"][i, :n].abs().sum(-1).min() > 0
    assert dm.preprocessing["sfreq"] == 256.0


def _bad_inputs(tmp: Path, fixtures: Path) -> dict[str, Path]:
    bad = {}
    (tmp / "garbage.edf").write_bytes(os.urandom(3000))
    bad["garbage"] = tmp / "garbage.edf"
    (tmp / "empty_raw.fif").write_bytes(b"")
    bad["empty"] = tmp / "empty_raw.fif"
    data = (fixtures / "sample_audvis_5s_raw.fif").read_bytes()
    (tmp / "truncated_raw.fif").write_bytes(data[: len(data) // 3])
    bad["truncated"] = tmp / "truncated_raw.fif"
    (tmp / "notes.xyz").write_text("not a recording")
    bad["unsupported"] = tmp / "notes.xyz"
    info = mne.create_info(["STI 001", "MISC 1"], 256.0, ["stim", "misc"])
    mne.io.RawArray(np.zeros((2, 2560)), info, verbose="error").save(tmp / "nosensors_raw.fif", verbose="error")
    bad["nosensors"] = tmp / "nosensors_raw.fif"
    info = mne.create_info(["Cz", "Pz"], 256.0, "eeg")
    mne.io.RawArray(np.random.default_rng(0).standard_normal((2, 300)) * 1e-5, info, verbose="error").save(
        tmp / "short_raw.fif", verbose="error"
    )
    bad["short"] = tmp / "short_raw.fif"
    info = mne.create_info(["Cz", "Pz"], 32.0, "eeg")
    mne.io.RawArray(np.random.default_rng(0).standard_normal((2, 3200)) * 1e-5, info, verbose="error").save(
        tmp / "lowrate_raw.fif", verbose="error"
    )
    bad["lowrate"] = tmp / "lowrate_raw.fif"
    info = mne.create_info(["Cz", "Pz"], 256.0, "eeg")
    mne.io.RawArray(np.full((2, 2560), np.nan), info, verbose="error").save(tmp / "allnan_raw.fif", verbose="error")
    bad["allnan"] = tmp / "allnan_raw.fif"
    return bad


def test_bad_inputs_are_skipped_with_reasons(fixtures, tmp_path):
    (tmp_path / "in").mkdir()
    bad = _bad_inputs(tmp_path / "in", fixtures)
    good = fixtures / "test.edf"
    res = _cli("prepare", str(good), *map(str, bad.values()), "--out", str(tmp_path / "out"), "--quiet")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["path"] for r in m["recordings"]] == [str(good)]
    reasons = {Path(s["path"]).name: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {p.name for p in bad.values()}, reasons
    expect = {
        "nosensors": "no EEG, magnetometer or gradiometer",
        "short": "shorter than one 2 s window",
        "lowrate": "sampling rate 32 Hz is below",
        "allnan": "NaN",
        "unsupported": ".xyz",
    }
    for key, text in expect.items():
        assert text in reasons[bad[key].name], (key, reasons[bad[key].name])
    for key in ("garbage", "empty", "truncated"):
        assert bad[key].name in reasons[bad[key].name] or str(bad[key]) in reasons[bad[key].name]
    for p in bad.values():
        assert f"skipped {p}" in res.stdout
    assert "Traceback" not in res.stderr


def test_nothing_prepared_exits_nonzero_and_strict_fails_first(fixtures, tmp_path):
    (tmp_path / "in").mkdir()
    bad = _bad_inputs(tmp_path / "in", fixtures)
    res = _cli("prepare", str(bad["garbage"]), str(bad["short"]), "--out", str(tmp_path / "o1"), "--quiet", check=False)
    assert res.returncode == 1 and "nothing could be prepared" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o1").exists()
    res = _cli("prepare", str(fixtures / "test.edf"), str(bad["short"]), "--out", str(tmp_path / "o2"), "--strict", "--quiet", check=False)
    assert res.returncode == 1 and "short_raw.fif" in res.stderr
    assert not (tmp_path / "o2").exists()
    assert not list(tmp_path.glob(".o2.partial-*"))


def test_existing_output_not_overwritten(fixtures, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare([fixtures / "test.edf"], out, progress=False)
    res = _cli("prepare", str(fixtures / "test.edf"), "--out", str(out), "--quiet", check=False)
    assert res.returncode == 1 and "--overwrite" in res.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    _cli("prepare", str(fixtures / "test.edf"), "--out", str(out), "--quiet", "--overwrite")
    assert not (out / "precious.txt").exists() and (out / "manifest.json").is_file()


def test_killed_prepare_leaves_nothing_valid_and_rerun_completes(fixtures, tmp_path):
    inputs = [str(fixtures / "test_subsecond.edf"), str(fixtures / "test.edf"), str(fixtures / "sample_audvis_5s_raw.fif")]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "data", "prepare", *inputs, "--out", str(out), "--quiet", "--chunk-s", "20"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any((p / "reports").glob("*.json") for p in tmp_path.glob(".out.partial-*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed prepare must not leave a valid-looking output"
    with pytest.raises(BrainforgeDataError):
        window_dataset(out)
    _cli("prepare", *inputs, "--out", str(out), "--quiet")
    ref = tmp_path / "ref"
    prepare(inputs, ref, progress=False)
    a, b = window_dataset(out), window_dataset(ref)
    assert len(a) == len(b) > 300
    m = json.loads((out / "manifest.json").read_text())
    assert [r["n_windows"] for r in m["recordings"]] == [
        r["n_windows"] for r in json.loads((ref / "manifest.json").read_text())["recordings"]
    ]
    assert not list(tmp_path.glob(".out.partial-*"))
    shutil.rmtree(ref)


def test_cli_help_and_inspect(fixtures, good_shards):
    h = _cli("prepare", "--help").stdout
    for opt in ("--out", "--window-s", "--stride-s", "--workers", "--overwrite", "--strict"):
        assert opt in h
    rec = _cli("inspect", str(fixtures / "sample_audvis_5s_raw.fif")).stdout
    assert "grad 204" in rec and "mag 102" in rec and "eeg 60" in rec and "sfreq 600.615" in rec
    sh = _cli("inspect", str(good_shards)).stdout
    assert "windows" in sh and "brainforge shards" in sh
    js = json.loads(_cli("inspect", str(good_shards), "--json").stdout)
    assert js["n_windows"] == len(window_dataset(good_shards))
    err = _cli("inspect", str(fixtures / "nope.edf"), check=False)
    assert err.returncode == 1 and "nope.edf" in err.stderr and "Traceback" not in err.stderr


def test_stride_overlap(fixtures, tmp_path):
    m = prepare([fixtures / "test.edf"], tmp_path / "o", PreprocessingSpec(window_s=2.0, stride_s=1.0), progress=False)
    assert m["recordings"][0]["n_windows"] == 5  # 6 s, 2 s windows every 1 s


def test_every_shared_entry_point_prepares_or_is_skipped(shared_recordings, tmp_path):
    """Every entry point of ../shared/data/recordings/MANIFEST.md either yields windows or a precise reason."""
    from data import discover

    sources, _ = discover([shared_recordings])
    m = prepare([shared_recordings], tmp_path / "all", workers=2, progress=False)
    done = {r["path"] for r in m["recordings"]}
    skipped = {s["path"]: s["reason"] for s in m["skipped"]}
    assert {str(s.path) for s in sources} == done | set(skipped)
    assert not done & set(skipped)
    assert len(done) >= 30
    fif = next(r for r in m["recordings"] if r["path"].endswith("fif/test_raw.fif"))
    assert sum(fif["channels"].values()) + len(fif["bad_channels"]) == 204 + 102 + 60
    assert "outlier" in fif["bad_channels"]["MEG 2443"]  # the known-bad sensor of the MNE sample data
    for path, reason in skipped.items():
        assert Path(path).name in reason, reason
        assert any(k in reason for k in ("shorter than one", "annotations only", "epoched", "missing", "truncated", "cannot be read")), reason
    # the Neuroscan CNT files whose read_raw segfaults are opened by brainforge itself
    assert sum(p.endswith(".cnt") for p in done) == 3
