"""Load benchmark of the model server (``python -m serve``) on loopback: dynamic batching on vs off, JSON vs binary.

Run from the repository root (a registry with a fine-tuned package is needed, e.g. after ``make demo``)::

    .venv/bin/python bench/serve_load.py --registry runs/demo/registry            # ~10 min on 2 cores
    .venv/bin/python bench/serve_load.py --registry REG --seconds 5 --soak 500     # quick look

First, in this process, the model-compute limit: the package's forward pass (one torch thread, as the server's
inference thread) on the windows of one 64-channel request, at batch sizes 1 to 128; the best time per window
bounds the server's windows per second. Then for each mode the server runs as its own process on a free
127.0.0.1 port:
  * batching on:  ``--max-batch B --max-delay-ms 10`` (B = ``--max-batch``, default 32 windows per forward pass);
  * batching off: ``--max-batch 1`` (every request whole in its own forward pass).
An asyncio/httpx client keeps C requests in flight for ``--seconds`` each, every request an Open Inference
Protocol v2 ``/infer`` of a 10 s x 64-channel EEG signal at 256 Hz, sent as JSON (FP32 ``data``) and as the binary
tensor extension (JSON header + raw little-endian float32, ``Inference-Header-Content-Length``); it records latency
(p50, p99), throughput and errors, and from the server's ``/metrics`` the per-request stage times (parse,
preprocess, queue wait, forward), the windows per forward pass, and the inference thread's CPU time in forward
passes against the whole server process's CPU time (psutil). Then, on the batching server, a soak of ``--soak``
requests (default 5,000) at concurrency 32 with ``--soak-shape`` binary inputs measures the server's RSS before (after
a warm-up) and after. The client runs on the same cores as the server. Writes ``bench/results/serve_load.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve_load.md"
NAMES_10_20 = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4",
               "P8", "O1", "Oz", "O2", "AF3", "AF4", "FC5", "FC1", "FC2", "FC6", "CP5", "CP1", "CP2", "CP6", "PO3", "PO4",
               "AF7", "AF8", "F5", "F1", "F2", "F6", "FT7", "FC3", "FCz", "FC4", "FT8", "C5", "C1", "C2", "C6", "TP7",
               "CP3", "CPz", "CP4", "TP8", "P5", "P1", "P2", "P6", "PO7", "POz", "PO8", "Fpz", "AFz", "TP9", "TP10", "Iz"]


def infer_body(n_channels: int, seconds: float, sfreq: float = 256.0, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = np.cumsum(rng.standard_normal((n_channels, n)), axis=1) * 1e-7 + 2e-5 * np.sin(2 * np.pi * 10 * t)
    x = (x - x.mean(axis=1, keepdims=True)).astype(np.float32)
    names = (NAMES_10_20 + [f"E{i}" for i in range(200)])[:n_channels]
    return json.dumps({"inputs": [{"name": "signal", "shape": [n_channels, n], "datatype": "FP32",
                                   "data": [float(f"{v:.4g}") for v in x.ravel()]}],
                       "parameters": {"sfreq": sfreq, "channel_names": names}}).encode()


def binary_body(n_channels: int, seconds: float, sfreq: float = 256.0, seed: int = 0) -> tuple[bytes, dict]:
    """The same signal as `infer_body`, as the binary tensor extension: (body, headers)."""
    payload = json.loads(infer_body(n_channels, seconds, sfreq, seed))
    sig = payload["inputs"][0]
    raw = np.asarray(sig.pop("data"), dtype="<f4").tobytes()
    sig["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(payload).encode()
    return header + raw, {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}


class Server(_common.ServerProcess):
    """The server under load: a deep queue, warnings only in its log."""

    def __init__(self, registry: Path, *flags: str) -> None:
        super().__init__(registry, "--max-queue", "4096", "--log-level", "WARNING", *flags)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20


async def load(url: str, body: bytes | tuple[bytes, dict], concurrency: int, seconds: float | None = None,
               total: int | None = None) -> dict:
    """Keep ``concurrency`` requests in flight for ``seconds`` (or until ``total`` are done)."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    error_log: list[str] = []
    done = 0
    t_start = time.perf_counter()
    stop_at = time.perf_counter() + seconds if seconds else None
    body, headers = body if isinstance(body, tuple) else (body, {"content-type": "application/json"})
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker():
            nonlocal done
            while True:
                if stop_at and time.perf_counter() >= stop_at:
                    return
                if total is not None:
                    if done >= total:
                        return
                    done += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
                    ok = r.status_code == 200
                    key = str(r.status_code)
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                    error_log.append(f"{time.perf_counter() - t_start:.1f} s after the start, after "
                                     f"{time.perf_counter() - t0:.2f} s: {type(e).__name__}: {e!r}"[:240])
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    a = np.asarray(lat) * 1000
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "error_log": error_log, "seconds": elapsed,
            "throughput": len(lat) / elapsed, "p50_ms": float(np.percentile(a, 50)) if len(a) else float("nan"),
            "p99_ms": float(np.percentile(a, 99)) if len(a) else float("nan")}


MODEL = ""
FACTS: dict = {}


STAGES = ("parse", "preprocess", "queue_wait", "forward")


def scrape(url: str) -> dict[str, float]:
    """Totals over all label sets of the server's batch and stage metrics."""
    out = {"passes": 0.0, "busy_s": 0.0, "windows": 0.0, "requests": 0.0, "forward_cpu_s": 0.0}
    out |= {f"{st}_{k}": 0.0 for st in STAGES for k in ("sum", "count")}
    names = {"brainforge_inference_seconds_count": "passes", "brainforge_inference_seconds_sum": "busy_s",
             "brainforge_batch_size_sum": "windows", "brainforge_batch_requests_sum": "requests",
             "brainforge_forward_cpu_seconds_total": "forward_cpu_s"}
    for line in httpx.get(f"{url}/metrics", timeout=60).text.splitlines():
        key = line.split("{", 1)[0]
        if key in names:
            out[names[key]] += float(line.rsplit(" ", 1)[1])
        elif key in ("brainforge_stage_seconds_sum", "brainforge_stage_seconds_count"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[f"{stage}_{key.rsplit('_', 1)[1]}"] += float(line.rsplit(" ", 1)[1])
    return out


def compute_limit(registry: Path, model: str, sizes=(1, 2, 5, 10, 20, 40, 80, 128), rounds: int = 8) -> dict:
    """Forward time per window of the package at each batch size, one torch thread (the server's inference thread)."""
    import torch

    from finetune.package import load_model_package, resolve_version
    from finetune.predict import Predictor
    from serve.pipeline import prepare_v2
    from serve.settings import Settings

    torch.set_num_threads(1)
    pred = Predictor(load_model_package(resolve_version(registry, model)), batch_size=max(sizes))
    windows, _ = prepare_v2(pred, Settings(registry=registry), infer_body(64, 10.0))
    per_request = len(windows.items)
    out = {"windows_per_request": per_request, "ms_per_window": {}}
    batches = {n: (windows.items * (n // per_request + 1))[:n] for n in sizes}
    best = {n: float("inf") for n in sizes}
    for _ in range(rounds):  # sizes interleaved, so a burst of other jobs' load hits every size alike; best of rounds
        for n, items in batches.items():
            t0 = time.perf_counter()
            pred.predict_items(items)
            best[n] = min(best[n], time.perf_counter() - t0)
    out["ms_per_window"] = {n: 1000 * t / n for n, t in best.items()}
    best = min(out["ms_per_window"], key=out["ms_per_window"].get)
    out |= {"best_batch": best, "best_ms": out["ms_per_window"][best], "load": os.getloadavg()[0]}
    return out


def _shape(text: str) -> tuple[int, float]:
    ch, sec = text.lower().split("x")
    return int(ch), float(sec)


def main() -> int:
    global MODEL  # noqa: PLW0603
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", type=Path, default=ROOT / "runs" / "demo" / "registry")
    p.add_argument("--model", default=None, help="model name (default: the registry's first)")
    p.add_argument("--seconds", type=float, default=15.0, help="duration of each (mode, body, concurrency) run")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--max-batch", type=int, default=32, help="windows per forward pass with batching on")
    p.add_argument("--soak", type=int, default=5000, help="requests of the RSS soak (0: skip)")
    p.add_argument("--soak-shape", default="8x2", help="CHANNELSxSECONDS of the soak inputs (binary bodies)")
    p.add_argument("--soak-max-s", type=float, default=480, help="stop the soak after this long even if short of --soak")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if not args.registry.is_dir():
        sys.exit(f"no registry at {args.registry}: run `make demo` or pass --registry")
    MODEL = args.model or sorted(d.name for d in args.registry.iterdir() if d.is_dir() and not d.name.startswith("."))[0]
    bodies = {"json": infer_body(64, 10.0), "binary": binary_body(64, 10.0)}
    load_before = os.getloadavg()
    started = time.time()
    limit = compute_limit(args.registry, MODEL)
    print(f"compute limit: {limit}", flush=True)
    rows: list[dict] = []
    soak: dict = {}
    for mode, flags in (("on", ["--max-batch", str(args.max_batch), "--max-delay-ms", "10"]), ("off", ["--max-batch", "1"])):
        srv = Server(args.registry, *flags)
        try:
            if not FACTS:
                listed = {m["name"]: m for m in httpx.get(f"{srv.url}/v1/models", timeout=60).json()["models"]}
                FACTS.update(listed.get(MODEL, {}).get("latest") or {})
            for b in bodies.values():
                asyncio.run(load(srv.url, b, 4, total=8))  # warm-up: model, allocator, filter and Info caches
            for c in args.concurrency:
                for kind, b in bodies.items():
                    m0, cpu0 = scrape(srv.url), srv.ps.cpu_times()
                    r = asyncio.run(load(srv.url, b, c, seconds=args.seconds))
                    m1, cpu1 = scrape(srv.url), srv.ps.cpu_times()
                    d = {k: m1[k] - m0[k] for k in m0}
                    server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                    r |= {"mode": mode, "body": kind, "shape": "64x10", "passes": int(d["passes"]),
                          "windows_per_pass": d["windows"] / max(1, d["passes"]), "busy": d["busy_s"] / r["seconds"],
                          "windows_per_s": d["windows"] / r["seconds"], "server_cpu_s": server_cpu,
                          "forward_cpu_share": d["forward_cpu_s"] / server_cpu if server_cpu > 0 else float("nan"),
                          "stages_ms": {st: 1000 * d[f"{st}_sum"] / d[f"{st}_count"] if d[f"{st}_count"] else float("nan")
                                        for st in STAGES}, "load": os.getloadavg()[0]}
                    rows.append(r)
                    print(f"batching {mode:3} {kind:6} C={c:2}: {r['throughput']:.2f} req/s  p50 {r['p50_ms']:.0f} ms  "
                          f"p99 {r['p99_ms']:.0f} ms  ({r['requests']} ok, errors {r['errors'] or 0}) "
                          f"stages {', '.join(f'{k} {v:.0f}' for k, v in r['stages_ms'].items())} ms; "
                          f"forward {100 * r['forward_cpu_share']:.1f}% of server CPU; load {r['load']:.1f}", flush=True)
            if mode == "on" and args.soak:
                soak_body = binary_body(*_shape(args.soak_shape), seed=1)
                asyncio.run(load(srv.url, soak_body, 32, total=200))  # warm-up at the soak's shape
                soak = {"rss_before_mb": srv.rss_mb(), "shape": args.soak_shape}
                r = asyncio.run(load(srv.url, soak_body, 32, seconds=args.soak_max_s, total=args.soak))
                soak |= {"rss_after_mb": srv.rss_mb(), **r}
                soak["growth"] = soak["rss_after_mb"] / soak["rss_before_mb"] - 1
                print(f"soak: {r['requests']} requests ({args.soak_shape}) at C=32 in {r['seconds']:.0f} s, errors "
                      f"{r['errors'] or 0}; RSS {soak['rss_before_mb']:.0f} -> {soak['rss_after_mb']:.0f} MB "
                      f"({100 * soak['growth']:+.1f}%)", flush=True)
        finally:
            rc = srv.stop()
            print(f"server ({mode}) stopped, exit {rc}; last log lines:\n{srv.log_tail(1500)}")
    write_results(args, rows, soak, load_before, time.time() - started, limit)
    return 0


def write_results(args, rows: list[dict], soak: dict, load_before, wall_s: float, limit: dict) -> None:
    by = {(r["mode"], r["concurrency"], r["body"]): r for r in rows}
    per_req = limit["windows_per_request"]
    lines = [
        "# Serving load benchmark (`bench/serve_load.py`)", "",
        "Command (repository root):", "",
        "```bash", f".venv/bin/python bench/serve_load.py {' '.join(sys.argv[1:])}".rstrip(), "```", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores (shared with other jobs: load average "
        f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; each row's own is in the table), CPU "
        f"only. Client and server on the same cores. Model: `{MODEL}` version {FACTS.get('version')} "
        f"({FACTS.get('kind')}, {FACTS.get('arch')}, labels {FACTS.get('labels')}). Total wall time {wall_s / 60:.1f} min.", "",
        f"Requests: Open Inference Protocol v2 `POST /v2/models/{MODEL}/infer`, 10 s x 64 channels at 256 Hz "
        f"({per_req} windows per request), {args.seconds:g} s per row; `json` = FP32 `data` in the JSON body (1.9 MB), "
        "`binary` = the binary tensor extension (JSON header + 655 KB of float32).", "",
        "## Model-compute limit", "",
        "The package's forward pass in the benchmark process, one torch thread (as the server's inference thread), on "
        f"the windows of one request, best of 8 rounds with the sizes interleaved (load average {limit['load']:.1f}):", "",
        "| windows per pass | " + " | ".join(str(k) for k in limit["ms_per_window"]) + " |",
        "|---|" + "---|" * len(limit["ms_per_window"]),
        "| ms per window | " + " | ".join(f"{v:.2f}" for v in limit["ms_per_window"].values()) + " |", "",
        f"Best: **{limit['best_ms']:.2f} ms per window at {limit['best_batch']} windows per pass**, so one inference thread "
        f"can serve at most {1000 / limit['best_ms']:.0f} windows/s = {1000 / limit['best_ms'] / per_req:.1f} requests/s "
        "of this shape.", "",
        "## Throughput, latency and where the time goes", "",
        "| batching | body | concurrency | requests | errors | req/s | p50 ms | p99 ms | windows per pass | windows/s "
        "(% of limit) | parse ms | preprocess ms | queue wait ms | forward ms | forward CPU / server CPU | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r["stages_ms"]
        lines.append(
            f"| {r['mode']} | {r['body']} | {r['concurrency']} | {r['requests']} | {sum(r['errors'].values())} | "
            f"{r['throughput']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['windows_per_pass']:.1f} | "
            f"{r['windows_per_s']:.0f} ({100 * r['windows_per_s'] * limit['best_ms'] / 1000:.0f}%) | {st['parse']:.1f} | "
            f"{st['preprocess']:.1f} | {st['queue_wait']:.0f} | {st['forward']:.0f} | {100 * r['forward_cpu_share']:.1f}% | "
            f"{r['load']:.1f} |")
    lines += ["", "Stage times are per request, means over the row, from the server's `brainforge_stage_seconds` "
              "histograms (deltas of `_sum` / `_count`): parse = body to arrays and channel info; preprocess = MNE "
              "object, filters, calibration, windows; queue wait = time from submit to answer not spent in the "
              "request's own forward passes; forward = the passes that held its windows (shared with the requests "
              "batched with it). Forward CPU / server CPU = `brainforge_forward_cpu_seconds_total` (the inference "
              "thread's `time.thread_time()` in forward passes) over the server process's user + system CPU time "
              "(psutil), both deltas over the row.", "",
              f"Throughput ratio, batching on / off (on = `--max-batch {args.max_batch} --max-delay-ms 10`, off = "
              "`--max-batch 1`), same body and concurrency:", ""]
    for (mode, c, kind), on in by.items():
        off = by.get(("off", c, kind))
        if mode == "on" and off and off["throughput"] > 0:
            lines.append(f"- {kind}, concurrency {c}: **{on['throughput'] / off['throughput']:.2f}x**")
    if soak:
        lines += ["", f"Memory soak (batching on, binary bodies, concurrency 32, capped at {args.soak_max_s:g} s): "
                  f"{soak['requests']} requests of {soak['shape']} (channels x seconds) in {soak['seconds']:.0f} s, errors "
                  f"{sum(soak['errors'].values())}; server RSS {soak['rss_before_mb']:.0f} MB before (after 200 warm-up "
                  f"requests) and {soak['rss_after_mb']:.0f} MB after: **{100 * soak['growth']:+.1f}%**."]
        if soak["error_log"]:
            lines += ["", "Soak errors (client side, as httpx raised them):", ""] + [f"- {e}" for e in soak["error_log"][:10]]
    lines += ["", "Aims: at concurrency 32 with 64 ch x 10 s requests, throughput >= 3x the unbatched figure of the same "
              "run OR forward pass >= 60% of the server's busy CPU time; zero errors in a 5,000-request soak with RSS "
              "growth < 10%.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
