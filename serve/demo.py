"""``python -m serve demo --registry DIR RECORDING...``: start the server as a real process on a free loopback
port, upload each recording to ``/v1/models/NAME/predict``, print the predictions, stop the server (SIGTERM).

NAME defaults to the registry's first model (its latest version is served).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")


def _print_prediction(result: dict) -> None:
    labels = result["labels"]
    print(f"\n{result['recording']}: model {result['model']} v{result['version']}, {len(result['windows'])} windows")
    print(f"  {'t0_s':>8} {'t1_s':>8}  {'label':<14}" + "".join(f"{c[:10]:>12}" for c in labels))
    for w in result["windows"][:20]:
        print(f"  {w['t0_s']:8.2f} {w['t1_s']:8.2f}  {w['label']:<14}" + "".join(f"{w['probabilities'][c]:12.3f}" for c in labels))
    if len(result["windows"]) > 20:
        print(f"  ... {len(result['windows']) - 20} more windows")
    s = result["summary"]
    print(f"  recording: {s['label']}  (" + ", ".join(f"{c} {p:.3f}" for c, p in s["probabilities"].items()) + ")")
    for w in result.get("warnings", [])[:3]:
        print(f"  note: {w[:200]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", required=True, type=Path)
    p.add_argument("--model", default=None, help="model name (default: the registry's first model)")
    p.add_argument("--timeout-s", type=float, default=180, help="how long to wait for the server to be ready")
    p.add_argument("recordings", nargs="+", type=Path)
    args = p.parse_args(argv)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="brainforge-demo-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "serve", "--registry", str(args.registry), "--port", str(port)]
    print(f"starting: {' '.join(cmd)}  (log: {log.name})")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_ready(url, proc, args.timeout_s)
        with httpx.Client(base_url=url, timeout=300) as client:
            models = client.get("/v1/models").json()["models"]
            name = args.model or (models[0]["name"] if models else None)
            if not name:
                raise RuntimeError(f"the registry {args.registry} holds no model")
            print(f"serving {', '.join(m['name'] + ' v' + '/'.join(m['versions']) for m in models)}; asking {name}")
            for rec in args.recordings:
                with open(rec, "rb") as f:
                    r = client.post(f"/v1/models/{name}/predict", files={"file": (rec.name, f)})
                if r.status_code != 200:
                    raise RuntimeError(f"{rec}: HTTP {r.status_code}: {r.json().get('error', r.text)}")
                _print_prediction(r.json())
    except (RuntimeError, httpx.HTTPError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        log.seek(0)
        print(log.read()[-3000:], file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(f"\nserver stopped (exit {proc.returncode})")
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
