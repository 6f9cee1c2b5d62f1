"""How `data.shards.prepare` turns recordings into shard items: one job per recording (`_Job`), its windows as items,
and the writers: in this process, or a pool of worker processes that send windows back to the one shard writer."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import content_hash, process_alive, write_json_atomic
from .discovery import RecordingSource
from .errors import BrainforgeDataError, NoUsableWindowsError
from .preprocess import PreprocessingSpec, RecordingPipeline
from .readers import integrity_notes
from .sensors import channel_type_counts

log = logging.getLogger("brainforge.data")

CHUNK_BYTES = "64MB"


def check_item_fields(item: dict, what: str) -> dict:
    """``item`` unchanged when every field is an array, str, int or float (litdata then never pickles it)."""
    for key, value in item.items():
        ok = isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
        ok = ok or (isinstance(value, str | int | float) and not isinstance(value, bool))
        if not ok:
            raise TypeError(f"{what}: field {key!r} is a {type(value).__name__}; shards store only numeric arrays, "
                            "str, int and float (anything else would be pickled)")
    return item


def _input_bytes(path: str | Path) -> int:
    p = Path(path)
    try:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    except OSError:
        return 0


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
        # the prepare process need not be the direct parent (forkserver workers are the server's children)
        while process_alive(parent_pid):
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
            "position_inferred": layout.position_inferred.astype(np.uint8),
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


class _Sink:
    """litdata's own chunk writer in this process, plus a sha256 per recording over its windows in order
    (``t0_s`` and the float16 signal bytes), so two runs can be compared window for window."""

    def __init__(self, shards: Path) -> None:
        from litdata.streaming.writer import BinaryWriter  # heavy (torch): only in the writing process

        shards.mkdir()
        self.writer, self.index, self.hashes = BinaryWriter(str(shards), chunk_bytes=CHUNK_BYTES), 0, {}

    def put(self, item: dict) -> None:
        h = self.hashes.get(item["recording"])
        if h is None:
            h = self.hashes[item["recording"]] = hashlib.sha256()
        h.update(np.float64(item["t0_s"]).tobytes())
        h.update(np.ascontiguousarray(item["signal"]).tobytes())
        self.writer[self.index] = item
        self.index += 1

    def close(self) -> dict[str, str]:
        if self.index:  # merge() would wait forever for an index that an empty writer never writes
            self.writer.done()
            self.writer.merge()
        return {k: h.hexdigest() for k, h in self.hashes.items()}


def _write_in_process(jobs: list[_Job], sink: _Sink, progress: bool) -> dict:
    """One process: no worker to start (and no second torch)."""
    from tqdm import tqdm

    bar = tqdm(jobs, desc="prepare", unit="recording", disable=not progress)
    for job in bar:
        bar.set_postfix_str(Path(job.source.path).name)
        for item in _recording_items(job):
            sink.put(item)
    return {"workers": 1}


# --- worker pool ----------------------------------------------------------------------------------
# Workers start once (forked from one forkserver that has imported only this package's numpy/scipy/MNE
# code, never torch or litdata), then take recordings from a queue until it is empty. Windows come back to the
# parent in batches through a bounded queue and the parent alone writes the shards, so a long recording
# never sits whole in memory and the workers need no chunk writer.
_BATCH_ITEMS = 32
_RESULT_QUEUE = 16  # batches in flight: bounds the parent's memory whatever the recording length


def worker_blas_threads(n_workers: int) -> int:
    """BLAS threads of each of ``n_workers`` prepare workers: the cores shared out. Windows are bit-identical to a
    single process's only at the same BLAS thread count (some CPUs' BLAS round matrix products differently with it)."""
    return max(1, (os.cpu_count() or 1) // n_workers)


def _worker_main(wid: int, tasks, results, started: float, blas_threads: int) -> None:
    import multiprocessing as mp
    import queue
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(blas_threads)  # the resampler's matrix products: N workers x all cores would oversubscribe
    results.put(("ready", wid, (time.time() - started, "torch" in sys.modules)))
    parent = mp.parent_process()
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if task is None:
            results.put(("exit", wid, None))
            return
        idx, job = task
        batch: list[dict] = []
        try:
            for item in _recording_items(job):
                batch.append(item)
                if len(batch) >= _BATCH_ITEMS:
                    results.put(("items", idx, batch))
                    batch = []
            results.put(("items", idx, batch))
            results.put(("done", idx, wid))
        except Exception as e:  # only with --strict: _recording_items skips bad inputs otherwise
            msg = str(e) if isinstance(e, BrainforgeDataError) else f"{type(e).__name__}: {e}"
            results.put(("error", idx, msg))


def _context():
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["data.shard_writer"])
    return ctx


def _write_with_workers(jobs: list[_Job], sink_factory, n: int, progress: bool) -> dict:
    """``n`` long-lived worker processes over all ``jobs``; the parent writes. Returns run statistics."""
    import queue

    from tqdm import tqdm

    ctx = _context()
    tasks, results = ctx.Queue(), ctx.Queue(maxsize=_RESULT_QUEUE)
    t0 = time.time()
    blas_threads = worker_blas_threads(n)
    procs = [ctx.Process(target=_worker_main, args=(w, tasks, results, t0, blas_threads), daemon=True,
                         name=f"prepare-{w}") for w in range(n)]
    for p in procs:
        p.start()
    # biggest inputs first: with a shared queue this keeps the workers busy until the end
    order = sorted(range(len(jobs)), key=lambda i: -_input_bytes(jobs[i].source.path))
    for i in order:
        tasks.put((i, jobs[i]))
    for _ in procs:
        tasks.put(None)
    sink = sink_factory()  # imports litdata (torch) while the workers start
    startup: dict[int, float] = {}
    torch_in: dict[int, bool] = {}
    exited: set[int] = set()
    bar = tqdm(total=len(jobs), desc=f"prepare ({n} workers)", unit="recording", disable=not progress)
    try:
        while len(exited) < n:
            try:
                kind, a, b = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w, p in enumerate(procs) if w not in exited and not p.is_alive()]
                if dead:  # a crash (segfault, OOM kill): its recordings end up reported as not prepared
                    log.warning("worker(s) %s died; their current recordings are skipped", dead)
                    exited.update(dead)
                continue
            if kind == "items":
                for item in b:
                    sink.put(item)
            elif kind == "done":
                bar.update(1)
            elif kind == "ready":
                startup[a] = round(b[0], 3)
                torch_in[a] = b[1]
            elif kind == "exit":
                exited.add(a)
            elif kind == "error":
                raise BrainforgeDataError(b)
    finally:
        bar.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()
    return {"workers": n, "worker_startup_s": [startup.get(w) for w in range(n)],
            "worker_imported_torch": [torch_in.get(w) for w in range(n)], "sink": sink}
