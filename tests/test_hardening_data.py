"""Hardening of the data stage (issue 13): shards never unpickle, truncated recordings are not silently 'ok'."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from data.errors import UnsafeShardError
from data.shards import check_item_fields


class _Payload:
    """Pickles to a call of os.system: what a crafted shard folder would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_shards(folder: Path, marker: Path, kind: str = "windows") -> Path:
    from litdata.streaming.writer import BinaryWriter

    folder.mkdir()
    writer = BinaryWriter(str(folder), chunk_bytes="1MB")
    writer[0] = {"signal": np.zeros((2, 8), np.float16), "types": np.zeros(2, np.int8),
                 "positions": np.zeros((2, 3), np.float32), "orientations": np.zeros((2, 3), np.float32),
                 "recording": "r", "subject": "s", "t0_s": 0.0, "label": _Payload(marker)}
    writer.done()
    writer.merge()
    fmt = json.loads((folder / "index.json").read_text())["config"]["data_format"]
    assert "pickle" in fmt  # the crafted folder really declares a pickled field
    manifest = {"schema_version": 1, "n_windows": 1, "recordings": [], "shard_sha256": {}}
    if kind == "tokens":
        manifest |= {"kind": "tokens", "token_shape": [1, 1, 1], "codebook_size": 4,
                     "recordings": [{"recording": "r", "subject": "s", "start": 0, "stop": 1, "t0_s": [0.0]}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_window_shards_with_a_pickled_field_are_refused_before_any_item_is_read(tmp_path):
    from data import window_dataset

    marker = tmp_path / "pwned"
    shards = _crafted_shards(tmp_path / "shards", marker)
    with pytest.raises(UnsafeShardError, match="'label'.*pickle"):
        window_dataset(shards)[0]
    assert not marker.exists()


def test_token_shards_with_a_pickled_field_are_refused(tmp_path):
    from pretrain.data import SegmentDataset

    marker = tmp_path / "pwned"
    shards = _crafted_shards(tmp_path / "tokens", marker, kind="tokens")
    with pytest.raises(UnsafeShardError, match="'label'"):
        SegmentDataset(shards, segment_windows=1)[0]
    assert not marker.exists()


def test_items_written_to_shards_hold_only_arrays_strings_and_numbers():
    ok = {"signal": np.zeros((2, 2), np.float16), "recording": "r", "t0_s": 0.5, "n": 3}
    assert check_item_fields(ok, "x") is ok
    for bad in (None, {"a": 1}, [1.0], np.array(["a"], dtype=object), True):
        with pytest.raises(TypeError, match="field 'label'"):
            check_item_fields({**ok, "label": bad}, "x")


# --- 6: truncated recordings ---------------------------------------------------------------------------------
def _edf_variants(fixtures: Path, folder: Path) -> dict[str, Path]:
    """tests/data/test.edf (6 records of 1 s) cut mid-data, or with a header declaring -1 or 99,999,999 records,
    or a record duration of 0."""
    data = (fixtures / "test.edf").read_bytes()
    n_signals = int(data[252:256])
    header = 256 * (1 + n_signals)
    record = (len(data) - header) // 6

    def put(offset: int, value: str) -> bytes:
        return data[:offset] + value.ljust(8).encode() + data[offset + 8:]

    variants = {"cut_mid_data": data[: header + int(record * 3.5)], "records_minus_1": put(236, "-1"),
                "records_99999999": put(236, "99999999"), "duration_0": put(244, "0")}
    folder.mkdir(exist_ok=True)
    out = {}
    for name, content in variants.items():
        out[name] = folder / f"{name}.edf"
        out[name].write_bytes(content)
    return out


def test_truncated_or_lying_edf_headers_are_refused_with_the_reason(fixtures, tmp_path):
    from data import open_raw
    from data.errors import TruncatedRecordingError, UnreadableRecordingError
    from data.readers import integrity_notes

    files = _edf_variants(fixtures, tmp_path)
    for name, words in (("cut_mid_data", "declares 6 data records"), ("records_minus_1", "'-1' data records"),
                        ("records_99999999", "declares 99999999 data records")):
        with pytest.raises(TruncatedRecordingError, match=words):
            open_raw(files[name])
        raw = open_raw(files[name], allow_truncated=True)
        assert integrity_notes(raw) and raw.n_times > 0
    with pytest.raises(UnreadableRecordingError, match="record duration of '0'"):
        open_raw(files["duration_0"], allow_truncated=True)
    assert integrity_notes(open_raw(fixtures / "test.edf")) == []


@pytest.mark.shared
def test_the_shared_truncated_edf_is_refused(shared_recordings):
    from data import open_raw
    from data.errors import TruncatedRecordingError

    with pytest.raises(TruncatedRecordingError, match=r"698 data records \(698 s\), the file holds 10.5"):
        open_raw(shared_recordings / "broken" / "test_subsecond_truncated.edf")


def test_prepare_skips_truncated_recordings_unless_allowed_and_keeps_the_spec_window(fixtures, tmp_path):
    from data import PreprocessingSpec, prepare
    from data.__main__ import main

    files = _edf_variants(fixtures, tmp_path / "in")
    m = prepare([fixtures / "test.edf", files["records_99999999"]], tmp_path / "default", progress=False)
    assert [r["path"] for r in m["recordings"]] == [str(fixtures / "test.edf")]
    (skip,) = [s for s in m["skipped"] if "records_99999999" in s["path"]]
    assert "truncated" in skip["reason"] and "99999999" in skip["reason"]

    # 17: --spec FILE keeps the spec's window_s (no --window-s given); --allow-truncated keeps the file with a note
    spec = PreprocessingSpec(window_s=1.0, stride_s=1.0)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    out = tmp_path / "allowed"
    assert main(["prepare", str(files["records_99999999"]), "--out", str(out), "--spec", str(tmp_path / "spec.json"),
                 "--allow-truncated", "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["preprocessing"]["window_s"] == 1.0 and m["preprocessing"]["stride_s"] == 1.0
    (rec,) = m["recordings"]
    assert rec["n_windows"] == 6 and any("99999999" in n for n in rec["truncated"])


# --- 10: prepare workers die with their parent ------------------------------------------------------------------
_PARENT = """
import multiprocessing as mp, os, pickle, sys, time
from data.shards import _Job

def worker(blob):
    pickle.loads(blob)  # as a litdata worker receives its jobs: unpickling arms the watchdog
    time.sleep(600)

if __name__ == "__main__":
    job = _Job(source=None, spec=None, reports="", strict=False, chunk_s=None, parent_pid=os.getpid())
    p = mp.get_context(sys.argv[1]).Process(target=worker, args=(pickle.dumps(job),))
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_prepare_workers_exit_when_the_prepare_process_is_killed(tmp_path):
    """A `prepare --workers N` worker gets its `_Job`s pickled; once unpickled it polls its parent and exits when
    the prepare process is gone (kill -9 left the workers of a real run alive; checked by hand with
    `python -m data prepare ... --workers 2` and `kill -9`: both workers exit, here a forked stand-in is used)."""
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    proc = subprocess.Popen([sys.executable, str(script), "fork"], cwd=repo, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        worker = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    deadline = time.monotonic() + 30
    alive = lambda: Path(f"/proc/{worker}").exists() and Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # noqa: E731
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"worker {worker} outlived its killed parent")
