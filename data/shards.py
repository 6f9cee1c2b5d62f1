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

import json
import logging
import os
import shutil
import time
from pathlib import Path

from .atomic import atomic_directory, content_hash, write_json_atomic
from .discovery import RecordingSource, discover
from .errors import BrainforgeDataError, OutputExistsError, UnsafeShardError
from .preprocess import PreprocessingSpec
from .shard_writer import (  # noqa: F401  (re-exported: data.shards API)
    CHUNK_BYTES,
    _input_bytes,
    _Job,
    _Sink,
    _write_in_process,
    _write_with_workers,
    check_item_fields,
)

log = logging.getLogger("brainforge.data")

SCHEMA_VERSION = 2  # 2: items carry channel_ids
MANIFEST = "manifest.json"
# litdata serializers that only read bytes into arrays, strings and numbers. Anything else ("pickle", "file",
# "video", "PIL", ...) is refused: "pickle" runs arbitrary code when an item is read.
SAFE_FORMATS = ("numpy", "no_header_numpy", "tensor", "no_header_tensor", "str", "int", "float", "bool", "bytes")


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


def skip_message(entry: dict) -> str:
    """'PATH: reason' for a manifest ``skipped`` entry (reasons usually name the path already)."""
    return entry["reason"] if entry["reason"].startswith(entry["path"]) else f"{entry['path']}: {entry['reason']}"


def select_for_node(sources: list[RecordingSource], num_nodes: int, node_rank: int) -> list[RecordingSource]:
    """This node's share of ``sources``: every node computes the same split from the same inputs.

    Recordings are ordered by size (largest first, then by id) and dealt out in a snake order (0,1,..,n-1,n-1,..,0),
    so the nodes get similar amounts of data.
    """
    if not 0 <= node_rank < num_nodes:
        raise BrainforgeDataError(f"node rank {node_rank} is outside 0..{num_nodes - 1}")
    order = sorted(sources, key=lambda s: (-_input_bytes(s.path), s.recording_id))
    mine = []
    for i, s in enumerate(order):
        lap, k = divmod(i, num_nodes)
        if (k if lap % 2 == 0 else num_nodes - 1 - k) == node_rank:
            mine.append(s)
    return sorted(mine, key=lambda s: s.recording_id)


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
    num_nodes: int = 1,
    node_rank: int = 0,
) -> dict:
    """Prepare window shards from recordings, folders or BIDS roots. Returns the manifest dict.

    ``workers`` > 1 starts that many worker processes once; each takes recordings from a shared queue until
    none is left. ``num_nodes`` > 1 prepares only this ``node_rank``'s share of the inputs (`select_for_node`)
    into ``out``, a complete shard directory of its own; `merge` joins the nodes' directories into one dataset.

    Raises `OutputExistsError` when ``out`` exists and ``overwrite`` is False, and
    `BrainforgeDataError` when nothing could be prepared (or on the first bad input if ``strict``).
    Truncated recordings (less data than their header declares) are skipped, or with ``allow_truncated`` kept
    with a ``truncated`` note in their manifest entry.
    """
    t_start = time.perf_counter()
    spec = spec or PreprocessingSpec()
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    sources, skipped = discover([Path(p) for p in inputs])
    if num_nodes > 1:
        sources = select_for_node(sources, num_nodes, node_rank)
        skipped = skipped if node_rank == 0 else []  # inputs refused before any work: reported once, by rank 0
    if strict and skipped:
        raise BrainforgeDataError(f"{skipped[0][0]}: {skipped[0][1]}")
    with atomic_directory(out, overwrite) as tmp:
        shards, reports = tmp / "shards", tmp / "reports"
        reports.mkdir()
        jobs = [_Job(s, spec, str(reports), strict, chunk_s, allow_truncated, os.getpid()) for s in sources]
        n_workers = min(workers, len(jobs))
        if n_workers > 1:
            run = _write_with_workers(jobs, lambda: _Sink(shards), n_workers, progress)
            sink = run.pop("sink")
        else:
            sink = _Sink(shards)
            run = _write_in_process(jobs, sink, progress)
        hashes = sink.close()
        recs = sorted((json.loads(p.read_text()) for p in reports.glob("*.json")), key=lambda r: r["recording"])
        for r in recs:
            if r["status"] == "ok":
                r["windows_sha256"] = hashes.get(r["recording"], "")
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
        if not ok and num_nodes == 1:
            raise BrainforgeDataError(
                "nothing could be prepared: " + ("; ".join(map(skip_message, skipped_all)) or "no recordings found")
            )
        shards.mkdir(exist_ok=True)
        manifest = _manifest(spec, ok, skipped_all, shards)
        run["wall_s"] = round(time.perf_counter() - t_start, 3)
        manifest["run"] = run
        if num_nodes > 1:
            manifest["node"] = {"rank": node_rank, "num_nodes": num_nodes, "inputs": sorted(str(s.path) for s in sources)}
        for f in shards.iterdir():
            os.replace(f, tmp / f.name)
        shutil.rmtree(shards)
        shutil.rmtree(reports)
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def merge(parts: list[str | Path], out: str | Path, overwrite: bool = False) -> dict:
    """Join the shard directories of a multi-node prepare (one per ``--node-rank``) into one dataset at ``out``.

    Checks that the parts share one schema and one PreprocessingSpec, that they are the ranks 0..n-1 of one
    ``num_nodes`` (when they say so), and that no recording appears twice. Chunk files are hard-linked
    (copied across file systems) under new names; ``index.json`` lists them all; ``manifest.json`` holds every
    part's recordings and skipped inputs and fresh shard hashes. Written atomically, like `prepare`.
    """
    parts = [Path(p).resolve() for p in parts]
    if not parts:
        raise BrainforgeDataError("merge: no input directories")
    mans = [read_manifest(p) for p in parts]
    for p, m in zip(parts, mans, strict=True):
        if m["schema_version"] != mans[0]["schema_version"] or m["preprocessing"] != mans[0]["preprocessing"]:
            raise BrainforgeDataError(f"{p}: its schema or preprocessing differs from {parts[0]}'s; it cannot be merged")
    nodes = [m.get("node") for m in mans]
    if any(nodes):
        n = {x["num_nodes"] for x in nodes if x}
        ranks = sorted(x["rank"] for x in nodes if x)
        if None in nodes or len(n) != 1 or ranks != list(range(n.pop())):
            raise BrainforgeDataError(f"merge: the parts are node ranks {ranks} of num_nodes {sorted({x['num_nodes'] for x in nodes if x})};"
                                      " every rank 0..num_nodes-1 is needed exactly once")
    seen: dict[str, Path] = {}
    for p, m in zip(parts, mans, strict=True):
        for r in m["recordings"]:
            if r["recording"] in seen:
                raise BrainforgeDataError(f"recording {r['recording']} is in both {seen[r['recording']]} and {p}")
            seen[r["recording"]] = p
    if not seen:
        raise BrainforgeDataError("merge: nothing was prepared in any part: "
                                  + "; ".join(skip_message(s) for m in mans for s in m["skipped"]))
    out = Path(out).resolve()
    with atomic_directory(out, overwrite) as tmp:
        shards = tmp / "shards"
        shards.mkdir()
        config, chunks = None, []
        for k, p in enumerate(parts):
            index_file = p / "index.json"
            if not index_file.is_file():
                continue  # a node with no usable recording
            index = json.loads(index_file.read_text())
            if config is not None and {x: index["config"].get(x) for x in ("data_format", "compression")} != \
                    {x: config.get(x) for x in ("data_format", "compression")}:
                raise BrainforgeDataError(f"{p}: its chunk format differs from the other parts'")
            config = config or index["config"]
            for c in index["chunks"]:
                name = f"chunk-{k}-{len(chunks)}.bin"
                try:
                    os.link(p / c["filename"], shards / name)
                except OSError:
                    shutil.copyfile(p / c["filename"], shards / name)
                chunks.append({**c, "filename": name})
        write_json_atomic(shards / "index.json", {"chunks": chunks, "config": config, "updated_at": str(time.time())})
        ok = sorted((r for m in mans for r in m["recordings"]), key=lambda r: r["recording"])
        skipped = [s for m in mans for s in m["skipped"]]
        manifest = _manifest(PreprocessingSpec.from_dict(mans[0]["preprocessing"]), ok, skipped, shards)
        manifest["merged_from"] = [{"path": p.name, "node": m.get("node", {}).get("rank"), "n_windows": m["n_windows"],
                                    "run": m.get("run")} for p, m in zip(parts, mans, strict=True)]
        for f in shards.iterdir():
            os.replace(f, tmp / f.name)
        shutil.rmtree(shards)
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def _manifest(spec: PreprocessingSpec, ok: list[dict], skipped: list[dict], shards: Path) -> dict:
    files = sorted(p for p in shards.iterdir() if p.is_file()) if shards.is_dir() else []
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
