"""Helpers shared by the scripts in ``bench/``: machine description, timing, child-process memory, markdown.

Nothing here prints a number it did not measure. Import from a bench script with
``sys.path.insert(0, str(Path(__file__).parent))`` then ``import _common``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

MB = 1024 * 1024


# ----------------------------------------------------------------------------------------------------
# Machine


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return str(importlib.import_module(name).__version__)
    except Exception as e:  # a missing package is reported, not fatal
        return f"not importable ({type(e).__name__})"


def machine_description(packages: Sequence[str] = ("numpy", "scipy", "torch", "mne")) -> dict[str, str]:
    """CPU, cores, RAM, load, OS, Python and package versions, and the date, as display strings."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    desc = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cores": f"{psutil.cpu_count(logical=True)} logical ({psutil.cpu_count(logical=False)} physical)",
        "ram": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    desc.update({name: package_version(name) for name in packages})
    return desc


# ----------------------------------------------------------------------------------------------------
# Timing


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Wall seconds of ``repeats`` calls of each fn, run round-robin so that background load hits every
    side alike; with ``warmup`` each fn first runs once untimed."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------------------------------------------
# Peak memory of a child process tree


@dataclass
class ChildRun:
    """A finished child command and its memory, in bytes.

    ``peak_rss_sum``: the largest sum of RSS over the child and all its descendants at one poll
    (shared library pages count once per process, so this overstates what the tree really holds).
    ``peak_pss_sum``: the same with PSS, where a shared page is split between the processes mapping it.
    ``peak_rss_max_process``: the largest RSS any single process of the tree reached, from the kernel
    (``ru_maxrss`` of the finished tree, exact, not polled).
    """

    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_sum: int
    peak_pss_sum: int
    peak_rss_max_process: int
    max_processes: int
    output_tail: str = ""
    samples: int = 0


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _tree_memory(procs: list[psutil.Process]) -> tuple[int, int, int]:
    """(sum RSS, sum PSS, number of live processes) of some processes right now."""
    rss = pss = n = 0
    for p in procs:
        try:
            m = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += m.rss
        pss += getattr(m, "pss", m.rss)
        n += 1
    return rss, pss, n


def _poll_peaks(launcher: psutil.Process, stop: threading.Event, out: dict, interval_s: float,
                max_interval_s: float = 1.0) -> None:
    """Poll every ``interval_s``, doubling the interval every 20 polls up to ``max_interval_s``: reading a
    process's PSS (/proc/PID/smaps) every 50 ms took about a fifth of a core from a 1.5 GB training process on
    the 2-core machine, which the benchmark would then have measured as slower training."""
    wait_s = interval_s
    while not stop.is_set():
        rss, pss, n = _tree_memory(_descendants(launcher))
        out["rss"], out["pss"] = max(out["rss"], rss), max(out["pss"], pss)
        out["n"], out["samples"] = max(out["n"], n), out["samples"] + 1
        if out["samples"] % 20 == 0:
            wait_s = min(2 * wait_s, max_interval_s)
        stop.wait(wait_s)


# A small interpreter between us and the measured command. On Linux a process's ru_maxrss starts from
# its parent's RSS at fork time, so a command forked straight from a big benchmark process would report
# at least the benchmark's own size; forked from this launcher it starts from a few MB.
_LAUNCHER = """
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "maxrss": kb if sys.platform == "darwin" else kb * 1024}, f)
"""


def run_measured(
    cmd: Sequence[str], cwd: str | Path | None = None, env: dict | None = None, interval_s: float = 0.05
) -> ChildRun:
    """Run ``cmd`` in a fresh child process; return its wall time and peak memory (see `ChildRun`).

    The command's process tree is polled every ``interval_s`` seconds at first, then less often (up to once
    a second; a peak shorter than the interval can be missed by the sums, never by ``peak_rss_max_process``).
    Its output goes to a temporary file, not a pipe, so that a chatty child can never block; the last 4000
    characters are kept.
    """
    with tempfile.TemporaryDirectory(prefix="bench_run_") as d:
        result, log_path = Path(d) / "result.json", Path(d) / "output.log"
        with open(log_path, "w") as log:
            t0 = time.perf_counter()
            launcher = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(result), *cmd], cwd=cwd, env=env,
                stdout=log, stderr=subprocess.STDOUT,
            )
            peaks = {"rss": 0, "pss": 0, "n": 0, "samples": 0}
            stop = threading.Event()
            poller = threading.Thread(
                target=_poll_peaks, args=(psutil.Process(launcher.pid), stop, peaks, interval_s)
            )
            poller.start()
            try:
                launcher.wait()
            finally:
                stop.set()
                poller.join()
            wall = time.perf_counter() - t0
        tail = log_path.read_text(errors="replace")[-4000:]
        if not result.exists():
            raise RuntimeError(f"measurement launcher failed (rc {launcher.returncode}):\n{tail}")
        res = json.loads(result.read_text())
    return ChildRun(
        cmd=list(cmd), returncode=res["rc"], wall_s=wall, peak_rss_sum=peaks["rss"], peak_pss_sum=peaks["pss"],
        peak_rss_max_process=res["maxrss"], max_processes=peaks["n"], output_tail=tail, samples=peaks["samples"],
    )


# ----------------------------------------------------------------------------------------------------
# Output


def fmt_mb(n_bytes: float) -> str:
    return f"{n_bytes / MB:,.0f} MB"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (also readable as plain text in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def machine_table(desc: dict[str, str]) -> str:
    return table(["", "value"], list(desc.items()))


def write_markdown(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write ``# title`` then one ``## heading`` + body per section; atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n{body.strip()}" for h, body in sections) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this script was run, relative to the repository root, e.g. ``.venv/bin/python bench/x.py --quick``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    root = Path(__file__).resolve().parents[1]
    exe = Path(sys.executable)
    exe_s = str(exe.relative_to(root)) if exe.is_relative_to(root) else "python"
    script_s = str(script.relative_to(root)) if script.is_relative_to(root) else str(script)
    return " ".join([exe_s, script_s, *map(shlex.quote, argv[1:])])  # quoted: the line can be pasted into a shell


# ----------------------------------------------------------------------------------------------------
# A server in its own process (the serving benches)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m serve --registry REGISTRY --port FREE FLAGS...`` in its own process, started from the repository
    root and ready (``/v2/health/ready`` answers 200) when the constructor returns. Its output goes to a file, never
    an undrained pipe (which would block the server once 64 KB of log lines piled up)."""

    def __init__(self, registry: Path, *flags: str, env: dict | None = None, ready_timeout_s: float = 300) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "serve", "--registry", str(registry), "--port", str(self.port), *flags]
        self.log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log, cwd=Path(__file__).resolve().parents[1],
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log_tail()}")
            time.sleep(0.3)
        self.ps = psutil.Process(self.proc.pid)

    def log_tail(self, n: int = 2000) -> str:
        return Path(self.log.name).read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL if it is not gone within a minute. Returns the exit status."""
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


# ----------------------------------------------------------------------------------------------------
# Child commands of the quality benches, run and measured


REPO = Path(__file__).resolve().parents[1]


def rel(path: Path | str) -> str:
    """A path as written in the commands: relative to the repository root when possible."""
    try:
        return os.path.relpath(Path(path), REPO)
    except ValueError:
        return str(path)


class Step:
    """One child command ``python ARGS`` from the repository root, run and measured (wall time, peak RSS of its
    largest process) and appended to ``log`` (default: `Step.log`, every step of this process, in order) for the
    report. ``record`` (a `to_dict` saved in a ``steps.json``) replays a step without running it. A failed command
    ends the bench with its output's tail."""

    log: list[Step] = []

    def __init__(self, name: str, args: list, log: list | None = None, record: dict | None = None) -> None:
        self.name, self.args = name, [str(a) for a in args]
        self.output_tail, returncode = "", 0
        if record is not None:
            self.wall_s, self.peak_rss = record["wall_s"], record["peak_rss"]
            self.output_tail = record.get("output_tail", "")
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {self.command}", flush=True)
            run = run_measured([sys.executable, *self.args], cwd=REPO)
            self.wall_s, self.peak_rss, self.output_tail = run.wall_s, run.peak_rss_max_process, run.output_tail
            returncode = run.returncode
            print(f"    {run.wall_s / 60:.1f} min, rc {returncode}, peak RSS {fmt_mb(self.peak_rss)}", flush=True)
        (Step.log if log is None else log).append(self)
        if returncode != 0:
            raise SystemExit(f"{name} failed (rc {returncode}):\n{self.output_tail}")

    @property
    def command(self) -> str:
        import shlex

        return " ".join([".venv/bin/python", *map(shlex.quote, self.args)])

    def to_dict(self) -> dict:
        return {"name": self.name, "args": self.args, "command": self.command, "wall_s": self.wall_s,
                "peak_rss": self.peak_rss, "output_tail": self.output_tail[-1500:]}

    @classmethod
    def replay(cls, steps_file: Path) -> dict:
        """``--analyse-only``: the saved run of ``steps_file`` (a ``steps.json``), its steps put back in `Step.log`
        without running them, and its machine description marked as a rebuilt report."""
        if not steps_file.is_file():
            raise SystemExit(f"--analyse-only: no {steps_file}; run without it first")
        saved = json.loads(steps_file.read_text())
        for rec in saved["steps"]:
            cls(rec["name"], rec["args"], record=rec)
        saved["machine"] = {**saved["machine"], "report rebuilt (--analyse-only)": time.strftime("%Y-%m-%d %H:%M %Z")}
        return saved
