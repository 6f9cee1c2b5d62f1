"""Hardening benchmark of the model server (issue 13): large JSON bodies, a wrong-key flood, zip bombs, and
schemathesis over the whole schema with and without keys. Writes ``bench/results/serve_hardening.md``.

Run from the repository root::

    .venv/bin/python bench/serve_hardening.py                         # builds a test registry if none is given
    .venv/bin/python bench/serve_hardening.py --registry runs/demo/registry --fuzz-examples 30

Every server is ``python -m serve`` in its own process on a free 127.0.0.1 port, with its defaults unless said:

1. **Large JSON bodies**: ``--clients`` (8) concurrent ``/v2/models/M/infer`` bodies of ``--json-mb`` (94) MB
   each (64-channel FP32 signal as JSON numbers), while a prober sends a small infer and a health check every
   0.25 s. Reported: the server's peak RSS (VmHWM) against the 2.5 GB aim, the status of every big request
   (200 when admitted, 429 when the memory budget is spent), and whether every probe was answered.
2. **Wrong-key flood**: the p50 latency of ``GET /v2`` with a valid key, quiet and while ``--flooders`` (16)
   processes send a known key id with wrong secrets as fast as they are answered (keep-alive raw HTTP); once with
   the default tarpit (``--key-failure-delay-s 1``) and once without it (``0``: HMAC checks alone).
3. **Zip bombs**: ``--bombs`` (4) concurrent uploads of a zip declaring ``--bomb-gb`` (1) GB of zeros, on a
   server with ``--max-upload-space-mb 64``; its TMPDIR and upload folder are private, and their disk use is
   sampled every 10 ms (peak reported against the budget).
4. **schemathesis**: ``tests/test_serve_fuzz.py`` with ``BRAINFORGE_FUZZ_EXAMPLES`` examples per operation, once
   with API keys and once without; every case's status is recorded (5xx and schema violations fail the run).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve_hardening.md"
NAMES = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1",
         "Oz", "O2", "AF3", "AF4", "FC5", "FC1", "FC2", "FC6", "CP5", "CP1", "CP2", "CP6", "PO3", "PO4"]


class Server(_common.ServerProcess):
    """``python -m serve`` in its own process; ``rss_mb`` / ``peak_mb`` from /proc."""

    def _status(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        return self._status("VmHWM")


def ensure_registry(path: str | None) -> tuple[Path, str]:
    if path:
        reg = Path(path)
        return reg, sorted(p.name for p in reg.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    cached = ROOT / "runs" / "bench" / "serve_hardening" / "registry"
    if not (cached / "demo" / "1").is_dir():
        sys.path.insert(0, str(ROOT / "tests"))
        from finetune_support import build_registry

        tmp = Path(tempfile.mkdtemp(prefix="bf-hardening-"))
        built = build_registry(tmp)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(built["registry"], cached, dirs_exist_ok=True)
    return cached, "demo"


def signal_json(n_channels: int, n_samples: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = (np.cumsum(rng.standard_normal((n_channels, n_samples), dtype=np.float32), axis=1) * 1e-7).astype(np.float32)
    names = (NAMES + [f"E{i}" for i in range(512)])[:n_channels]
    data = ",".join(np.char.mod("%.4e", x.ravel()))
    head = json.dumps({"parameters": {"sfreq": 256.0, "channel_names": names}, "inputs": [
        {"name": "signal", "shape": [n_channels, n_samples], "datatype": "FP32", "data": [0]}]})
    return head.replace('"data": [0]', '"data": [' + data + "]").encode()


def big_body(mb: float) -> bytes:
    per_value = len(signal_json(64, 256)) / (64 * 256)
    n = int(mb * 1e6 / per_value / 64)
    return signal_json(64, n)


# --- 1. large JSON bodies ---------------------------------------------------------------------------------------
def large_json(registry: Path, model: str, clients: int, mb: float) -> dict:
    body = big_body(mb)
    small = signal_json(4, 1024)
    srv = Server(registry)
    try:
        base = srv.rss_mb()
        probes: list[tuple[str, int | str, float]] = []
        stop = threading.Event()

        def prober():
            with httpx.Client(base_url=srv.url, timeout=300) as c:
                while not stop.is_set():
                    for what, call in (("health", lambda: c.get("/v2/health/live")),
                                       ("small infer", lambda: c.post(f"/v2/models/{model}/infer", content=small,
                                                                      headers={"content-type": "application/json"}))):
                        t0 = time.perf_counter()
                        try:
                            status: int | str = call().status_code
                        except httpx.HTTPError as e:
                            status = type(e).__name__
                        probes.append((what, status, time.perf_counter() - t0))
                    time.sleep(0.25)

        def big(i: int):
            t0 = time.perf_counter()
            try:
                r = httpx.post(f"{srv.url}/v2/models/{model}/infer", content=body,
                               headers={"content-type": "application/json"}, timeout=1800)
                return r.status_code, time.perf_counter() - t0, r.text[:160] if r.status_code != 200 else ""
            except httpx.HTTPError as e:
                return type(e).__name__, time.perf_counter() - t0, str(e)[:160]

        t = threading.Thread(target=prober, daemon=True)
        t.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            bigs = list(pool.map(big, range(clients)))
        wall = time.perf_counter() - t0
        stop.set()
        t.join(60)
        return {"body_mb": len(body) / 1e6, "clients": clients, "base_rss_mb": base, "peak_rss_mb": srv.peak_mb(),
                "big": bigs, "probes": probes, "wall_s": wall, "cmd": " ".join(srv.cmd[1:])}
    finally:
        srv.stop()


# --- 2. wrong-key flood -----------------------------------------------------------------------------------------
def _flood(url: str, wrong: str, path: str, stop_at: float, counter) -> None:
    host, port = url.removeprefix("http://").split(":")
    req = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {wrong}\r\n\r\n").encode()
    n = 0
    while time.time() < stop_at:
        try:
            with socket.create_connection((host, int(port)), timeout=30) as s:
                while time.time() < stop_at:
                    s.sendall(req)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        part = s.recv(65536)
                        if not part:
                            raise ConnectionError
                        data += part
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), 0)
                    while len(rest) < length:
                        rest += s.recv(65536)
                    n += 1
        except (OSError, ConnectionError):
            time.sleep(0.01)
    with counter.get_lock():
        counter.value += n


def _p50(url: str, key: str, n: int) -> tuple[float, float]:
    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get("/v2")
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            time.sleep(0.01)
    return statistics.median(times) * 1000, float(np.percentile(times, 99)) * 1000


def key_flood(registry: Path, flooders: int, seconds: float, n: int, delay_s: float = 1.0) -> dict:
    from serve.auth import add_key

    keys = Path(tempfile.mkdtemp(prefix="bf-keys-")) / "keys.json"
    key, _ = add_key(keys, "bench")
    srv = Server(registry, "--api-keys", str(keys), "--key-failure-delay-s", str(delay_s))
    try:
        _p50(srv.url, key, 20)  # warm-up
        quiet = _p50(srv.url, key, n)
        wrong = f"bf_{key.split('_')[1]}_" + "x" * 43
        counter = mp.Value("l", 0)
        stop_at = time.time() + seconds
        procs = [mp.Process(target=_flood, args=(srv.url, wrong, "/v2", stop_at, counter)) for _ in range(flooders)]
        for p in procs:
            p.start()
        time.sleep(2)  # let the flood ramp up
        t0 = time.perf_counter()
        flooded = _p50(srv.url, key, n)
        measured_s = time.perf_counter() - t0
        for p in procs:
            p.join(seconds + 60)
        statuses = {}
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for _ in range(3):
                r = c.get("/v2", headers={"Authorization": f"Bearer {wrong}"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        return {"quiet_p50_ms": quiet[0], "quiet_p99_ms": quiet[1], "flood_p50_ms": flooded[0], "flood_p99_ms": flooded[1],
                "flood_requests": counter.value, "flood_seconds": seconds, "measured_s": measured_s, "n": n,
                "flooders": flooders, "after_flood_statuses": statuses, "delay_s": delay_s, "cmd": " ".join(srv.cmd[1:])}
    finally:
        srv.stop()


# --- 3. zip bombs -----------------------------------------------------------------------------------------------
def bomb_bytes(gb: float) -> bytes:
    buf = io.BytesIO()
    zero = b"\0" * (1 << 24)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("recording/test.vhdr", b"Brain Vision Data Exchange Header File Version 1.0\n")
        with zf.open("recording/test.eeg", "w", force_zip64=True) as f:
            for _ in range(int(gb * 1024 / 16)):
                f.write(zero)
    return buf.getvalue()


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def zip_bombs(registry: Path, model: str, bombs: int, gb: float, space_mb: float) -> dict:
    bomb = bomb_bytes(gb)
    scratch = Path(tempfile.mkdtemp(prefix="bf-bombs-"))
    uploads = scratch / "uploads"
    uploads.mkdir()
    srv = Server(registry, "--upload-dir", str(uploads), "--max-upload-space-mb", str(space_mb), "--max-body-mb", "8",
                 env={"TMPDIR": str(scratch)})
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _du(scratch))
            time.sleep(0.01)

    try:
        t = threading.Thread(target=sample, daemon=True)
        t.start()

        def send(i: int):
            r = httpx.post(f"{srv.url}/v1/models/{model}/predict", files={"file": (f"bomb{i}.zip", bomb)}, timeout=600)
            return r.status_code, r.json().get("error", "")[:200]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(bombs) as pool:
            answers = list(pool.map(send, range(bombs)))
        wall = time.perf_counter() - t0
        time.sleep(0.2)
        stop.set()
        t.join(10)
        left = _du(scratch)
        return {"bombs": bombs, "declared_gb": gb, "packed_kb": len(bomb) / 1024, "answers": answers,
                "peak_disk_mb": peak[0] / 2**20, "left_mb": left / 2**20, "space_mb": space_mb, "wall_s": wall,
                "cmd": " ".join(srv.cmd[1:]) + f"  (TMPDIR={scratch})"}
    finally:
        srv.stop()
        shutil.rmtree(scratch, ignore_errors=True)


# --- 4. schemathesis --------------------------------------------------------------------------------------------
def fuzz(examples: int, auth: str) -> dict:
    stats = Path(tempfile.mkdtemp(prefix="bf-fuzz-")) / "cases.jsonl"
    env = {**os.environ, "BRAINFORGE_FUZZ_EXAMPLES": str(examples), "BRAINFORGE_FUZZ_AUTH": auth,
           "BRAINFORGE_FUZZ_STATS": str(stats)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_serve_fuzz.py"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    cases = [json.loads(ln) for ln in stats.read_text().splitlines()] if stats.exists() else []
    statuses: dict[str, int] = {}
    for c in cases:
        statuses[str(c["status"])] = statuses.get(str(c["status"]), 0) + 1
    return {"auth": auth, "examples": examples, "rc": p.returncode, "cases": len(cases), "statuses": statuses,
            "server_errors": sum(v for k, v in statuses.items() if k.startswith("5")),
            "failures": p.stdout.count("FAILED") + p.stdout.count("ERROR"), "tail": p.stdout.strip().splitlines()[-1:],
            "wall_s": time.perf_counter() - t0,
            "cmd": f"BRAINFORGE_FUZZ_EXAMPLES={examples} BRAINFORGE_FUZZ_AUTH={auth} " + " ".join(cmd[1:])}


def _relative(text: str) -> str:
    """No machine paths in the committed results: the repository root becomes '.', temporary folders $TMP."""
    import re

    text = text.replace(str(ROOT) + "/", "").replace(sys.executable, "python")
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s`)/]+", "$TMP", text)


# --- report -----------------------------------------------------------------------------------------------------
def report(args, model: str, res: dict, wall: float) -> str:
    load = os.getloadavg()
    out = ["# Server hardening benchmark (`bench/serve_hardening.py`)", "",
           "Command (repository root):", "", "```bash", ".venv/bin/python bench/serve_hardening.py " + " ".join(args.argv),
           "```", "",
           f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
           f"{load[0]:.1f} at the end), CPU only; client and server on the same cores. Model `{model}`. "
           f"Total wall time {wall / 60:.1f} min. Aims from issue 13 in the headings.", ""]
    if "json" in res:
        r = res["json"]
        codes = [b[0] for b in r["big"]]
        answered = all(isinstance(p[1], int) for p in r["probes"])
        probe_codes: dict[str, dict] = {}
        for what, status, _ in r["probes"]:
            probe_codes.setdefault(what, {})
            probe_codes[what][status] = probe_codes[what].get(status, 0) + 1
        worst = max((p[2] for p in r["probes"]), default=float("nan"))
        ok = r["peak_rss_mb"] < 2560 and answered and all(isinstance(c, int) for c in codes)
        out += [f"## 1. {r['clients']} concurrent {r['body_mb']:.0f} MB JSON infer bodies: peak RSS under 2.5 GB, every other request answered: **{'met' if ok else 'NOT met'}**", "",
                f"Server: `{r['cmd']}` (defaults: `--max-json-mb 100`, `--max-inflight-mb 1024`, a JSON body reserving 10x its size).", "",
                f"- Server RSS after start-up {r['base_rss_mb']:.0f} MB; **peak RSS (VmHWM) {r['peak_rss_mb']:.0f} MB** "
                f"(was 6.0 GB from 1.5 GB before the fix, issue 13).",
                "- Big requests: " + ", ".join(f"{c}" for c in codes) + f" (200 = admitted and answered, 429 = memory budget "
                f"spent, with Retry-After); wall {r['wall_s']:.0f} s.",
                f"- Probes every 0.25 s during the flood: {len(r['probes'])} requests, statuses {probe_codes}, all answered: "
                f"{answered}; slowest {worst * 1000:.0f} ms.", ""]
        for c, s, text in r["big"]:
            if text:
                out.append(f"  - {c} after {s:.1f} s: `{text}`")
        out.append("")
    floods = [res[k] for k in ("flood", "flood_no_tarpit") if k in res]
    if floods:
        worst = max(r["flood_p50_ms"] / r["quiet_p50_ms"] for r in floods)
        out += [f"## 2. Wrong-secret flood ({floods[0]['flooders']} clients): a valid key's p50 within 2x of quiet: "
                f"**{'met' if worst <= 2 else 'NOT met'}** (worst {worst:.2f}x)", "",
                f"{floods[0]['flooders']} processes send `GET /v2` with the valid key's id and a wrong secret, keep-alive, "
                f"each as fast as it is answered; the valid key is measured over {floods[0]['n']} sequential requests "
                "(10 ms apart), quiet and during the flood. Keys are checked with HMAC-SHA-256 (microseconds, no lock); "
                "a client over its failure budget (20 a minute) gets 429, after `--key-failure-delay-s` (a tarpit). "
                "The row without the tarpit is what many source addresses would get (no per-client limit applies).", "",
                "| server | quiet p50 (ms) | quiet p99 (ms) | flood p50 (ms) | flood p99 (ms) | p50 ratio | wrong-key requests answered |",
                "|---|---|---|---|---|---|---|"]
        for r in floods:
            out.append(f"| `{r['cmd']}` | {r['quiet_p50_ms']:.2f} | {r['quiet_p99_ms']:.2f} | {r['flood_p50_ms']:.2f} | "
                       f"{r['flood_p99_ms']:.2f} | {r['flood_p50_ms'] / r['quiet_p50_ms']:.2f}x | {r['flood_requests']} in "
                       f"{r['flood_seconds']:.0f} s |")
        out += ["", f"- After the flood the same wrong key from the bench client gets {floods[0]['after_flood_statuses']} "
                "(429: over the per-client failure limit).",
                "- Before the fix (issue 13): 3.6 ms quiet, 1,060 ms under 16 wrong-secret clients (scrypt under a global lock).", ""]
    if "bombs" in res:
        r = res["bombs"]
        ok = r["peak_disk_mb"] < r["space_mb"]
        out += [f"## 3. {r['bombs']} concurrent zip bombs: upload disk use under budget: **{'met' if ok else 'NOT met'}**", "",
                f"Server: `{r['cmd']}`.", "",
                f"- Each bomb: {r['packed_kb']:.0f} kB packed, {r['declared_gb']:g} GB of zeros declared unpacked.",
                "- Answers: " + "; ".join(f"{c} `{e}`" for c, e in r["answers"]),
                f"- **Peak disk use of the server's TMPDIR and upload folder: {r['peak_disk_mb']:.1f} MB** (budget "
                f"{r['space_mb']:g} MB); left after the requests: {r['left_mb']:.1f} MB; wall {r['wall_s']:.1f} s.", ""]
    for key in ("fuzz_keys", "fuzz_none"):
        if key in res:
            r = res[key]
            ok = r["rc"] == 0 and r["server_errors"] == 0
            out += [f"## 4. schemathesis, {'with API keys' if r['auth'] == 'keys' else 'without keys'}: 0 x 5xx, 0 schema violations: **{'met' if ok else 'NOT met'}**", "",
                    f"Command: `{r['cmd']}` ({r['wall_s'] / 60:.1f} min).", "",
                    f"- {r['cases']} cases sent to the real server; statuses {dict(sorted(r['statuses'].items()))}; "
                    f"5xx: {r['server_errors']}; failed checks (status code, content type, headers, response schema): "
                    f"{r['failures']}; pytest: {' '.join(r['tail'])}.", ""]
    out += ["Not measured here: the Open Inference Protocol binary tensor extension (large signals without JSON) is "
            "being added to the request parsing separately; these figures are for JSON bodies and multipart uploads.", ""]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registry", default=None, help="registry with a fine-tuned package (default: build the tests' one)")
    p.add_argument("--only", nargs="+", default=["json", "flood", "bombs", "fuzz"], choices=["json", "flood", "bombs", "fuzz"])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--json-mb", type=float, default=94.0)
    p.add_argument("--flooders", type=int, default=16)
    p.add_argument("--flood-s", type=float, default=25.0)
    p.add_argument("--latency-n", type=int, default=200)
    p.add_argument("--bombs", type=int, default=4)
    p.add_argument("--bomb-gb", type=float, default=0.9, help="declared unpacked size (under --max-zip-mb 1000: the ratio check refuses it)")
    p.add_argument("--space-mb", type=float, default=64.0)
    p.add_argument("--fuzz-examples", type=int, default=100)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args()
    args.argv = sys.argv[1:]
    t0 = time.perf_counter()
    registry, model = ensure_registry(args.registry)
    res: dict = {}
    if "json" in args.only:
        res["json"] = large_json(registry, model, args.clients, args.json_mb)
        print(json.dumps({k: v for k, v in res["json"].items() if k != "probes"}), flush=True)
    if "flood" in args.only:
        res["flood"] = key_flood(registry, args.flooders, args.flood_s, args.latency_n, delay_s=1.0)
        print(json.dumps(res["flood"]), flush=True)
        res["flood_no_tarpit"] = key_flood(registry, args.flooders, args.flood_s, args.latency_n, delay_s=0.0)
        print(json.dumps(res["flood_no_tarpit"]), flush=True)
    if "bombs" in args.only:
        res["bombs"] = zip_bombs(registry, model, args.bombs, args.bomb_gb, args.space_mb)
        print(json.dumps(res["bombs"]), flush=True)
    if "fuzz" in args.only:
        for auth in ("keys", "none"):
            res[f"fuzz_{auth}"] = fuzz(args.fuzz_examples, auth)
            print(json.dumps(res[f"fuzz_{auth}"]), flush=True)
    text = _relative(report(args, model, res, time.perf_counter() - t0))
    Path(args.results).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
