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
