"""`prepare`: recordings -> litdata window shards + ``manifest.json``, written atomically.

Output layout (``OUT/``): ``index.json`` and ``chunk-*.bin`` from ``litdata.optimize`` and
``manifest.json``. Everything is written into a hidden sibling ``.OUT.partial-<id>/`` and renamed
into place at the end, so a killed run never leaves a directory that reads as valid shards.
Each item: ``signal`` float16 [C, T], ``types`` int8 [C], ``positions`` float32 [C, 3] (NaN =
unknown), ``orientations`` float32 [C, 3], ``channel_ids`` int64 [C] (`data.sensors.channel_identity` of each
name), ``recording`` str, ``subject`` str, ``t0_s`` float,
``label`` str ("" when unlabelled).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_directory, content_hash, write_json_atomic
from .errors import BrainforgeDataError, NoUsableWindowsError, OutputExistsError, UnsafeShardError
from .preprocess import PreprocessingSpec, RecordingPipeline
from .readers import RecordingSource, discover, integrity_notes
from .sensors import channel_type_counts

log = logging.getLogger("brainforge.data")

SCHEMA_VERSION = 2  # 2: items carry channel_ids
CHUNK_BYTES = "64MB"
MANIFEST = "manifest.json"
# litdata serializers that only read bytes into arrays, strings and numbers. Anything else ("pickle", "file",
# "video", "PIL", ...) is refused: "pickle" runs arbitrary code when an item is read.
SAFE_FORMATS = ("numpy", "no_header_numpy", "tensor", "no_header_tensor", "str", "int", "float", "bool", "bytes")


def check_item_fields(item: dict, what: str) -> dict:
    """``item`` unchanged when every field is an array, str, int or float (litdata then never pickles it)."""
    for key, value in item.items():
        ok = isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
        ok = ok or (isinstance(value, str | int | float) and not isinstance(value, bool))
        if not ok:
            raise TypeError(f"{what}: field {key!r} is a {type(value).__name__}; shards store only numeric arrays, "
                            "str, int and float (anything else would be pickled)")
    return item


def _leaf_names(spec) -> list[str]:
    """Field names of the leaves of litdata's serialised pytree spec, in data_format order."""
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        children = node.get("children_spec") or []
        if not children and node.get("type") is None:
            names.append(prefix or "<item>")
            return
        keys = None
        if node.get("context") not in (None, "null"):
            try:
                ctx = json.loads(node["context"]) if isinstance(node["context"], str) else node["context"]
                keys = [str(k) for k in ctx] if isinstance(ctx, list) else None
            except (ValueError, TypeError):
                keys = None
        for i, child in enumerate(children):
            key = keys[i] if keys and i < len(keys) else str(i)
            walk(child, f"{prefix}.{key}" if prefix else key)

    walk(spec[1] if isinstance(spec, list) and len(spec) == 2 else spec, "")
    return names


def check_shard_index(path: str | Path) -> None:
    """Refuse a litdata shard folder (window or token shards) whose ``index.json`` declares a field format other
    than arrays, strings and numbers: reading such an item could unpickle attacker-controlled bytes."""
    index = Path(path) / "index.json"
    if not index.is_file():
        return  # litdata reports the missing index itself
    try:
        config = json.loads(index.read_text()).get("config") or {}
        formats = list(config.get("data_format") or [])
    except (ValueError, AttributeError) as e:
        raise UnsafeShardError(f"{index}: not a litdata index ({e})") from e
    try:
        spec = config.get("data_spec")
        names = _leaf_names(json.loads(spec)) if isinstance(spec, str) else []
    except (ValueError, TypeError, AttributeError):
        names = []
    if len(names) != len(formats):
        names = [f"field {i}" for i in range(len(formats))]
    for name, fmt in zip(names, formats, strict=True):
        base = str(fmt).split(":", 1)[0]
        if base not in SAFE_FORMATS:
            raise UnsafeShardError(
                f"{path}: shard field {name!r} is stored as {fmt!r}; only arrays, str, int and float are read "
                f"({'pickled fields could run code when loaded' if base == 'pickle' else 'other formats are refused'}). "
                "Re-create the shards with `python -m data prepare`."
            )


@dataclass
class _Job:
    source: RecordingSource
    spec: PreprocessingSpec
    reports: str
    strict: bool
    chunk_s: float | None
    allow_truncated: bool = False
    parent_pid: int = 0  # the prepare process: worker processes exit when it is gone

    def __setstate__(self, state: dict) -> None:
        """Unpickled in a worker process as it starts: from then on it dies with the prepare process."""
        self.__dict__.update(state)
        _die_with_parent(self.parent_pid)


_WATCHED: set[int] = set()


def _die_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """In a litdata worker process: exit as soon as the prepare process that started it is gone (killed with -9,
    it cannot stop its workers itself; they would run on as orphans). A daemon thread polls the parent pid."""
    if not parent_pid or os.getpid() == parent_pid or parent_pid in _WATCHED:
        return
    _WATCHED.add(parent_pid)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        log.error("prepare process %d is gone: worker %d exits", parent_pid, os.getpid())
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _recording_items(job: _Job):
    """litdata ``fn``: yields the window items of one recording and leaves a report JSON."""
    _die_with_parent(job.parent_pid)
    src = job.source
    report = {"recording": src.recording_id, "path": str(src.path), "subject": src.subject}
    t_start = time.perf_counter()
    try:
        raw = src.open(preload=False, allow_truncated=job.allow_truncated)
        notes = integrity_notes(raw)
        report["all_channel_types"] = channel_type_counts(raw.info)
        pipe = RecordingPipeline(raw, job.spec, name=str(src.path), chunk_s=job.chunk_s)
        layout = pipe.layout
        stats: dict[str, int] = {}
        n = 0
        base = {
            "types": layout.types.astype(np.int8),
            "positions": layout.positions.astype(np.float32),
            "orientations": layout.orientations.astype(np.float32),
            "channel_ids": layout.channel_ids,
        }
        for w in pipe.windows(stats):
            n += 1
            yield check_item_fields({
                "signal": w.signal.astype(np.float16),
                **base,
                "recording": str(src.recording_id),
                "subject": str(src.subject),
                "t0_s": float(w.t0_s),
                "label": "",
            }, str(src.path))
        if n == 0:
            raise NoUsableWindowsError(f"{src.path}: no usable window (rejected: {stats or 'none'})")
        report.update(
            status="ok",
            n_windows=n,
            rejected_windows=stats,
            sfreq_in=pipe.sfreq_in,
            duration_s=pipe.n_in / pipe.sfreq_in,
            channels=layout.counts(),
            positions_missing=int((~layout.position_known).sum()),
            bad_channels=pipe.calibration["bad_reasons"],
            scales=pipe.calibration["scales"],
            sha256=content_hash(Path(src.path)),
        )
        if notes:
            report["truncated"] = notes  # kept under --allow-truncated: the readable part only
    except Exception as e:  # one bad input never stops the run; --strict re-raises
        if job.strict:
            raise
        reason = str(e) if isinstance(e, BrainforgeDataError) else f"{type(e).__name__}: {e}"
        report.update(status="skipped", reason=reason)
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    name = hashlib.sha1(src.recording_id.encode()).hexdigest()[:16]
    write_json_atomic(Path(job.reports) / f"{name}.json", report)


def skip_message(entry: dict) -> str:
    """'PATH: reason' for a manifest ``skipped`` entry (reasons usually name the path already)."""
    return entry["reason"] if entry["reason"].startswith(entry["path"]) else f"{entry['path']}: {entry['reason']}"


def _write_in_process(jobs: list[_Job], shards: Path, progress: bool) -> None:
    """One process: litdata's own chunk writer, without starting a worker (and a second torch)."""
    from litdata.streaming.writer import BinaryWriter
    from tqdm import tqdm

    shards.mkdir()
    writer, index = BinaryWriter(str(shards), chunk_bytes=CHUNK_BYTES), 0
    bar = tqdm(jobs, desc="prepare", unit="recording", disable=not progress)
    for job in bar:
        bar.set_postfix_str(Path(job.source.path).name)
        for item in _recording_items(job):
            writer[index] = item
            index += 1
    if index:  # merge() would wait forever for an index that an empty writer never writes
        writer.done()
        writer.merge()


def prepare(
    inputs: list[str | Path],
    out: str | Path,
    spec: PreprocessingSpec | None = None,
    workers: int = 1,
    overwrite: bool = False,
    strict: bool = False,
    chunk_s: float | None = None,
    progress: bool = True,
    allow_truncated: bool = False,
) -> dict:
    """Prepare window shards from recordings, folders or BIDS roots. Returns the manifest dict.

    Raises `OutputExistsError` when ``out`` exists and ``overwrite`` is False, and
    `BrainforgeDataError` when nothing could be prepared (or on the first bad input if ``strict``).
    Truncated recordings (less data than their header declares) are skipped, or with ``allow_truncated`` kept
    with a ``truncated`` note in their manifest entry.
    """
    import litdata  # heavy (torch): only when shards are written

    spec = spec or PreprocessingSpec()
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    sources, skipped = discover([Path(p) for p in inputs])
    if strict and skipped:
        raise BrainforgeDataError(f"{skipped[0][0]}: {skipped[0][1]}")
    with atomic_directory(out, overwrite) as tmp:
        shards, reports = tmp / "shards", tmp / "reports"
        reports.mkdir()
        jobs = [_Job(s, spec, str(reports), strict, chunk_s, allow_truncated, os.getpid()) for s in sources]
        if len(jobs) > 1 and workers > 1:
            litdata.optimize(
                fn=_recording_items, inputs=jobs, output_dir=str(shards), chunk_bytes=CHUNK_BYTES,
                num_workers=min(workers, len(jobs)), reorder_files=False, verbose=progress,
            )
        elif jobs:
            _write_in_process(jobs, shards, progress)
        recs = sorted((json.loads(p.read_text()) for p in reports.glob("*.json")), key=lambda r: r["recording"])
        ok = [r for r in recs if r["status"] == "ok"]
        reported = {r["path"] for r in recs}
        skipped_all = (
            [{"path": p, "reason": r} for p, r in skipped]
            + [{"path": r["path"], "reason": r["reason"]} for r in recs if r["status"] != "ok"]
            + [{"path": str(s.path), "reason": f"{s.path}: the worker process died while preparing it (crash or out of memory)"}
               for s in sources if str(s.path) not in reported]
        )
        if strict and skipped_all:
            raise BrainforgeDataError(skip_message(skipped_all[0]))
        for s in skipped_all:
            log.warning("skipped %s", skip_message(s))
        if not ok:
            raise BrainforgeDataError(
                "nothing could be prepared: " + ("; ".join(map(skip_message, skipped_all)) or "no recordings found")
            )
        manifest = _manifest(spec, ok, skipped_all, shards)
        for f in shards.iterdir():
            os.replace(f, tmp / f.name)
        shutil.rmtree(shards)
        shutil.rmtree(reports)
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def _manifest(spec: PreprocessingSpec, ok: list[dict], skipped: list[dict], shards: Path) -> dict:
    files = sorted(p for p in shards.iterdir() if p.is_file())
    totals: dict[str, int] = {}
    for r in ok:
        for k, v in r["channels"].items():
            totals[k] = totals.get(k, 0) + v
    return {
        "schema_version": SCHEMA_VERSION,
        "created_unix": time.time(),
        "preprocessing": spec.to_dict(),
        "n_windows": sum(r["n_windows"] for r in ok),
        "n_recordings": len(ok),
        "channels_by_type_summed": totals,
        "recordings": ok,
        "skipped": skipped,
        "shard_sha256": {p.name: content_hash(p) for p in files},
    }


def read_manifest(path: str | Path) -> dict:
    """The manifest of a shard directory, with a clear error if it is not one."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise BrainforgeDataError(f"{path} is not a brainforge shard directory (no {MANIFEST}); run `python -m data prepare`")
    return json.loads(p.read_text())


def verify_shards(path: str | Path) -> list[str]:
    """Names of shard files whose sha256 differs from the manifest (empty list: all intact)."""
    m = read_manifest(path)
    return [n for n, h in m["shard_sha256"].items() if content_hash(Path(path) / n) != h]
