"""`prepare` across cores (a long-lived worker pool) and across nodes (per-rank parts + `merge`), against one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from data import merge, prepare, window_dataset
from data.__main__ import main as data_main
from data.errors import BrainforgeDataError
from data.shard_writer import worker_blas_threads
from data.shards import verify_shards


@pytest.fixture(scope="module")
def inputs(fixtures):
    return [fixtures / "test.edf", fixtures / "sample_audvis_5s_raw.fif",
            fixtures / "test.bdf"]  # test.bdf is too short: skipped, and reported once


@pytest.fixture(scope="module")
def one_node(inputs, tmp_path_factory):
    return prepare(inputs, tmp_path_factory.mktemp("one") / "out", progress=False)


def _per_recording(m: dict) -> dict[str, tuple[int, str]]:
    return {r["recording"]: (r["n_windows"], r["windows_sha256"]) for r in m["recordings"]}


def test_two_simulated_nodes_merge_to_the_same_windows(inputs, one_node, tmp_path, monkeypatch):
    """Two SLURM array tasks (ranks from the environment, as on a cluster) write parts; `merge` joins them."""
    parts = []
    for rank in (0, 1):
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(rank))
        part = tmp_path / f"part-{rank}"
        assert data_main(["prepare", *map(str, inputs), "--out", str(part), "--quiet"]) == 0
        parts.append(part)
    mans = [json.loads((p / "manifest.json").read_text()) for p in parts]
    assert [m["node"]["rank"] for m in mans] == [0, 1]
    assert all(m["n_recordings"] >= 1 for m in mans)  # the work was really split
    assert not set(_per_recording(mans[0])) & set(_per_recording(mans[1]))
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert data_main(["merge", *map(str, parts), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    assert merged["n_windows"] == one_node["n_windows"] == len(window_dataset(tmp_path / "merged"))
    assert _per_recording(merged) == _per_recording(one_node)  # same count and same window hashes per recording
    assert [s["path"] for s in merged["skipped"]] == [s["path"] for s in one_node["skipped"]]
    assert verify_shards(tmp_path / "merged") == []
    items = window_dataset(tmp_path / "merged")
    assert sum(1 for i in range(len(items)) if items[i]["recording"] == "test.edf") == _per_recording(one_node)["test.edf"][0]


def test_merge_refuses_an_incomplete_or_doubled_set_of_parts(inputs, tmp_path):
    p0 = tmp_path / "p0"
    prepare(inputs[:2], p0, progress=False, num_nodes=2, node_rank=0)
    with pytest.raises(BrainforgeDataError, match="every rank"):
        merge([p0], tmp_path / "m")
    with pytest.raises(BrainforgeDataError, match="every rank"):
        merge([p0, p0], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with pytest.raises(BrainforgeDataError, match="node rank 2"):
        prepare(inputs, tmp_path / "bad", num_nodes=2, node_rank=2, progress=False)


def test_worker_pool_writes_the_same_windows(inputs, one_node, tmp_path):
    m = prepare(inputs, tmp_path / "w2", workers=2, progress=False)
    # bit-identical windows (same hashes) to one process at the workers' BLAS thread count: some CPUs' BLAS round the
    # resampler's products differently with the thread count (one float16 step on the AMD EPYC of 2026-12-01)
    with threadpool_limits(worker_blas_threads(2)):
        reference = prepare(inputs, tmp_path / "w1", progress=False)
    assert _per_recording(m) == _per_recording(reference)
    # and at any thread count the same windows to that rounding
    assert {r: n for r, (n, _) in _per_recording(m).items()} == {r: n for r, (n, _) in _per_recording(one_node).items()}
    prepare(inputs, tmp_path / "w0", progress=False)  # all cores, as `one_node`
    ours, theirs = window_dataset(tmp_path / "w2"), window_dataset(tmp_path / "w0")
    for i in range(len(ours)):
        a, b = ours[i], theirs[i]
        assert a["recording"] == b["recording"]
        np.testing.assert_allclose(np.asarray(a["signal"], float), np.asarray(b["signal"], float), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(np.asarray(a["positions"], float), np.asarray(b["positions"], float), atol=1e-6)
    assert m["run"]["workers"] == 2 and all(s is not None and s > 0 for s in m["run"]["worker_startup_s"])
    assert m["run"]["worker_imported_torch"] == [False, False]  # workers import the data stage only
    assert verify_shards(tmp_path / "w2") == []
    assert len(window_dataset(tmp_path / "w2")) == one_node["n_windows"]


def test_worker_pool_strict_fails_on_the_bad_input(inputs, tmp_path):
    with pytest.raises(BrainforgeDataError, match="test.bdf"):
        prepare([inputs[1], inputs[2], inputs[0]], tmp_path / "s", workers=2, strict=True, progress=False)
    assert not (tmp_path / "s").exists()
