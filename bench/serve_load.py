"""Load benchmark of the model server (``python -m serve``) on loopback: dynamic batching on vs off.

Run from the repository root (a registry with a fine-tuned package is needed, e.g. after ``make demo``)::

    .venv/bin/python bench/serve_load.py --registry runs/demo/registry            # ~6-10 min on 2 cores
    .venv/bin/python bench/serve_load.py --registry REG --seconds 5 --soak 500     # quick look

For each mode the server runs as its own process on a free 127.0.0.1 port:
  * batching on:  ``--max-batch 32 --max-delay-ms 10`` (the defaults: up to 32 windows per forward pass);
  * batching off: ``--max-batch 1`` (every request gets its own forward pass).
An asyncio/httpx client keeps C = 1, 8, 32 requests in flight for ``--seconds`` each, every request an Open
Inference Protocol v2 ``/infer`` of a 10 s x 64-channel EEG signal at 256 Hz (FP32 JSON, 5 windows), and
records latency (p50, p99), throughput and errors. Then, on the batching server, a soak of ``--soak`` requests
(default 5,000) at concurrency 32 with ``--soak-shape`` inputs measures the server's RSS before (after a
warm-up) and after. The client runs on the same cores as the server. Writes ``bench/results/serve_load.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, registry: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "serve", "--registry", str(registry), "--port", str(self.port),
                    "--max-queue", "4096", "--log-level", "WARNING", *flags]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        self.ps = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


async def load(url: str, body: bytes, concurrency: int, seconds: float | None = None, total: int | None = None) -> dict:
    """Keep ``concurrency`` requests in flight for ``seconds`` (or until ``total`` are done)."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    stop_at = time.perf_counter() + seconds if seconds else None
    headers = {"content-type": "application/json"}
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
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    a = np.asarray(lat) * 1000
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "seconds": elapsed,
            "throughput": len(lat) / elapsed, "p50_ms": float(np.percentile(a, 50)) if len(a) else float("nan"),
            "p99_ms": float(np.percentile(a, 99)) if len(a) else float("nan")}


MODEL = ""
FACTS: dict = {}


def scrape(url: str) -> dict[str, float]:
    """Totals over all label sets of the server's batch metrics."""
    out = {"passes": 0.0, "busy_s": 0.0, "windows": 0.0, "requests": 0.0}
    names = {"brainforge_inference_seconds_count": "passes", "brainforge_inference_seconds_sum": "busy_s",
             "brainforge_batch_size_sum": "windows", "brainforge_batch_requests_sum": "requests"}
    for line in httpx.get(f"{url}/metrics", timeout=60).text.splitlines():
        key = line.split("{", 1)[0]
        if key in names:
            out[names[key]] += float(line.rsplit(" ", 1)[1])
    return out


def _shape(text: str) -> tuple[int, float]:
    ch, sec = text.lower().split("x")
    return int(ch), float(sec)


def main() -> int:
    global MODEL  # noqa: PLW0603
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", type=Path, default=ROOT / "runs" / "demo" / "registry")
    p.add_argument("--model", default=None, help="model name (default: the registry's first)")
    p.add_argument("--seconds", type=float, default=20.0, help="duration of each (mode, concurrency) run")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--soak", type=int, default=5000, help="requests of the RSS soak (0: skip)")
    p.add_argument("--soak-shape", default="8x2", help="CHANNELSxSECONDS of the soak inputs (default 8x2: one window)")
    p.add_argument("--soak-max-s", type=float, default=360, help="stop the soak after this long even if short of --soak")
    p.add_argument("--small-shape", default="8x2", help="CHANNELSxSECONDS of the extra small-input rows at C=32 ('' to skip)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if not args.registry.is_dir():
        sys.exit(f"no registry at {args.registry}: run `make demo` or pass --registry")
    MODEL = args.model or sorted(d.name for d in args.registry.iterdir() if d.is_dir() and not d.name.startswith("."))[0]
    body = infer_body(64, 10.0)
    load_before = os.getloadavg()
    started = time.time()
    rows: list[dict] = []
    soak: dict = {}
    for mode, flags in (("on", ["--max-batch", "32", "--max-delay-ms", "10"]), ("off", ["--max-batch", "1"])):
        srv = Server(args.registry, *flags)
        try:
            if not FACTS:
                listed = {m["name"]: m for m in httpx.get(f"{srv.url}/v1/models", timeout=60).json()["models"]}
                FACTS.update(listed.get(MODEL, {}).get("latest") or {})
            asyncio.run(load(srv.url, body, 4, total=8))  # warm-up: model, allocator, filter caches
            runs = [(c, body, "64x10") for c in args.concurrency]
            if args.small_shape:
                runs.append((32, infer_body(*_shape(args.small_shape), seed=2), args.small_shape))
            for c, b, shape in runs:
                m0 = scrape(srv.url)
                r = asyncio.run(load(srv.url, b, c, seconds=args.seconds))
                m1 = scrape(srv.url)
                d = {k: m1[k] - m0[k] for k in m0}
                r |= {"mode": mode, "shape": shape, "passes": int(d["passes"]),
                      "windows_per_pass": d["windows"] / max(1, d["passes"]), "busy": d["busy_s"] / r["seconds"]}
                rows.append(r)
                print(f"batching {mode:3} {shape:>5} C={c:2}: {r['throughput']:.2f} req/s  p50 {r['p50_ms']:.0f} ms  "
                      f"p99 {r['p99_ms']:.0f} ms  ({r['requests']} ok, errors {r['errors'] or 0})", flush=True)
            if mode == "on" and args.soak:
                soak_body = infer_body(*_shape(args.soak_shape), seed=1)
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
            print(f"server ({mode}) stopped, exit {rc}")
    write_results(args, rows, soak, load_before, time.time() - started)
    return 0


def write_results(args, rows: list[dict], soak: dict, load_before, wall_s: float) -> None:
    by = {(r["mode"], r["concurrency"], r["shape"]): r for r in rows}
    lines = [
        "# Serving load benchmark (`bench/serve_load.py`)", "",
        "Command (repository root):", "",
        "```bash", f".venv/bin/python bench/serve_load.py {' '.join(sys.argv[1:])}".rstrip(), "```", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores (shared with other jobs: load average "
        f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), CPU only. Client and server on the "
        f"same cores. Model: `{MODEL}` version {FACTS.get('version')} ({FACTS.get('kind')}, {FACTS.get('arch')}, labels "
        f"{FACTS.get('labels')}) from `{args.registry}`. Total wall time {wall_s / 60:.1f} min.", "",
        f"Requests: Open Inference Protocol v2 `POST /v2/models/{MODEL}/infer`, 10 s x 64 channels at 256 Hz, FP32 JSON "
        f"(5 windows of 2 s each), {args.seconds:g} s per row.", "",
        "| batching | input (ch x s) | concurrency | requests | errors | throughput (req/s) | p50 latency (ms) | p99 latency (ms) "
        "| forward passes | windows per pass | inference thread busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['shape']} | {r['concurrency']} | {r['requests']} | {sum(r['errors'].values())} | "
                     f"{r['throughput']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['passes']} | "
                     f"{r['windows_per_pass']:.1f} | {100 * r['busy']:.0f}% |")
    lines += ["", "Forward passes, windows per pass and the share of the row's wall time the model's inference thread was "
              "busy come from the server's own `/metrics` (deltas over the row).", "",
              "Throughput ratio, batching on / off (on = `--max-batch 32 --max-delay-ms 10`, off = `--max-batch 1`):", ""]
    for (mode, c, shape), on in by.items():
        off = by.get(("off", c, shape))
        if mode == "on" and off and off["throughput"] > 0:
            lines.append(f"- {shape} inputs, concurrency {c}: **{on['throughput'] / off['throughput']:.2f}x**")
    if soak:
        lines += ["", f"Memory soak (batching on, concurrency 32, capped at {args.soak_max_s:g} s): {soak['requests']} requests of {soak['shape']} "
                  f"(channels x seconds) in {soak['seconds']:.0f} s, errors {sum(soak['errors'].values())}; server RSS "
                  f"{soak['rss_before_mb']:.0f} MB before (after 200 warm-up requests) and {soak['rss_after_mb']:.0f} MB "
                  f"after: **{100 * soak['growth']:+.1f}%**."]
    lines += ["", "Aims: batching >= 3x the unbatched throughput at concurrency 32, zero errors, RSS growth < 10%.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
