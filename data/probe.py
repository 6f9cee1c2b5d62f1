"""Crash isolation: readers that can crash the interpreter (every ``.cnt``: antio segfaults on Neuroscan files)
are tried in child processes first (`probe_readers`); `data.readers.open_raw` then uses only the call that worked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np

from .errors import UnreadableRecordingError


@dataclass(frozen=True)
class ReaderCall:
    """One MNE reader call: ``mne.io.<func>(path, preload=..., **kwargs)``."""

    func: str
    kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"mne.io.{self.func}({'path' + (', ' + args if args else '')})"

    def __call__(self, path: Path, preload: bool) -> mne.io.BaseRaw:
        reader = getattr(mne.io, self.func)
        return reader(str(path), preload=preload, verbose="warning", **self.kwargs)


# ----------------------------------------------------------------------------------------------------
# Crash isolation: probe crash-prone readers in a child process

#: Seconds one probe child may run before it counts as hung.
PROBE_TIMEOUT_S = 300.0

# The child imports only mne, tries each candidate in order and prints one JSON line per step,
# flushed, so the parent knows which call was running if the child dies.
_PROBE_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
path, candidates = sys.argv[1], json.loads(sys.argv[2])
import mne
import numpy as np
mne.set_log_level("ERROR")
for i, (func, kwargs) in enumerate(candidates):
    print(json.dumps({"try": i}), flush=True)
    try:
        raw = getattr(mne.io, func)(path, preload=False, verbose="error", **kwargs)
        n = raw.n_times
        if n <= 0 or len(raw.ch_names) == 0:
            raise ValueError(f"{len(raw.ch_names)} channels, {n} samples")
        head = raw.get_data(start=0, stop=min(n, 1000))
        tail = raw.get_data(start=max(0, n - 1000), stop=n)
        if not (np.isfinite(head).all() and np.isfinite(tail).all()):
            raise ValueError("non-finite samples")
        print(json.dumps({"ok": i}), flush=True)
        sys.exit(0)
    except Exception as e:
        text = " ".join(f"{type(e).__name__}: {e}".split())
        print(json.dumps({"error": i, "message": text[:300]}), flush=True)
print(json.dumps({"done": True}), flush=True)
"""


@dataclass
class ProbeResult:
    """Outcome of probing candidate reader calls on one file in child processes."""

    working: ReaderCall | None
    failures: list[tuple[ReaderCall, str]]  # (call, why: exception text or "crashed with signal 11 (SIGSEGV)")


_probe_cache: dict[tuple[str, int, int, tuple], ProbeResult] = {}
_probe_lock = threading.Lock()


def probe_readers(path: str | Path, candidates: Sequence[ReaderCall], timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Find the first candidate call that opens ``path`` and reads its first and last samples, in a child.

    A child that crashes (signal) or hangs costs only the call it was running: the next child resumes
    with the following candidate. Results are cached per (path, size, mtime, candidates) in-process.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple((c.func, repr(c.kwargs)) for c in candidates))
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    result = ProbeResult(working=None, failures=[])
    start = 0
    while start < len(candidates) and result.working is None:
        start = _run_probe_child(path, list(candidates), start, timeout_s, result)
    with _probe_lock:
        _probe_cache[key] = result
    return result


def _run_probe_child(path: Path, candidates: list[ReaderCall], start: int, timeout_s: float, result: ProbeResult) -> int:
    """Run one child on ``candidates[start:]``; record outcomes in ``result``; return where to resume."""
    todo = candidates[start:]
    cmd = [sys.executable, "-c", _PROBE_SCRIPT, str(path), json.dumps([[c.func, c.kwargs] for c in todo])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=_child_env())
        stdout, death = proc.stdout, _describe_exit(proc.returncode, proc.stderr)
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        stdout = out.decode(errors="replace") if isinstance(out, bytes) else out
        death = f"hung (no answer within {timeout_s:g} s)"
    running: int | None = None
    answered = 0
    for line in stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue  # something a reader printed
        if not isinstance(msg, dict):
            continue
        if "try" in msg:
            running = msg["try"]
        elif "ok" in msg:
            result.working = todo[msg["ok"]]
            return len(candidates)
        elif "error" in msg:
            result.failures.append((todo[msg["error"]], msg["message"]))
            running, answered = None, msg["error"] + 1
        elif "done" in msg:
            return len(candidates)
    if running is None:  # died outside any reader call (e.g. importing mne failed): give up
        result.failures.extend((call, f"probe process {death}") for call in todo[answered:])
        return len(candidates)
    result.failures.append((todo[running], death))
    return start + running + 1


def _describe_exit(rc: int | None, stderr: str) -> str:
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown signal"
        return f"crashed the interpreter with signal {-rc} ({name})"
    tail = " ".join(stderr.strip().splitlines()[-1:])[:200]
    return f"exited with code {rc}" + (f": {tail}" if tail else "")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MNE_LOGGING_LEVEL"] = "ERROR"
    return env


# ----------------------------------------------------------------------------------------------------
# .cnt: Neuroscan or ANT Neuro

_CNT_NCHANNELS_OFFSET = 370  # Neuroscan SETUP header: uint16 channel count
_CNT_DATA_OFFSET = 900  # SETUP header size; then 75 bytes per channel (ELECTLOC)
_CNT_CHANNEL_BYTES = 75


def _cnt_candidates(path: Path) -> list[ReaderCall]:
    """Reader calls to try for a .cnt file, most likely first.

    ANT Neuro files are RIFF/RF64 containers: read_raw_ant first, Neuroscan as a fallback. Anything else
    is Neuroscan; read_raw_ant is NOT tried on it (antio segfaults on Neuroscan files). Neuroscan's own
    'auto' data format needs a consistent header, so int16/int32 follow, ordered by `_guess_neuroscan_format`.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    first, second = _guess_neuroscan_format(path)
    neuroscan = [
        ReaderCall("read_raw_cnt", {"data_format": "auto"}),
        ReaderCall("read_raw_cnt", {"data_format": first}),
        ReaderCall("read_raw_cnt", {"data_format": second}),
    ]
    if magic in (b"RIFF", b"RF64"):
        return [ReaderCall("read_raw_ant", {}), *neuroscan]
    return neuroscan


def _guess_neuroscan_format(path: Path, n_bytes: int = 65536) -> tuple[str, str]:
    """('int16', 'int32') or the reverse: the sample width under which the first data block is smoother.

    EEG is smooth at its sampling rate, so under the right width successive samples of a channel differ
    little relative to their spread; under the wrong one the values are scrambled.
    """
    try:
        with open(path, "rb") as f:
            f.seek(_CNT_NCHANNELS_OFFSET)
            n_ch = int(np.frombuffer(f.read(2), dtype="<u2")[0])
            f.seek(_CNT_DATA_OFFSET + _CNT_CHANNEL_BYTES * n_ch)
            block = f.read(n_bytes)
        rough = {fmt: _roughness(block, dtype, n_ch) for fmt, dtype in (("int16", "<i2"), ("int32", "<i4"))}
    except (OSError, IndexError, ValueError):
        return ("int16", "int32")
    return ("int32", "int16") if rough["int32"] < rough["int16"] else ("int16", "int32")


def _roughness(block: bytes, dtype: str, n_ch: int) -> float:
    """Median over channels of mean |first difference| / std of ``block`` read as [T, n_ch] ``dtype``."""
    width = np.dtype(dtype).itemsize
    n_t = len(block) // (width * max(n_ch, 1))
    if n_ch <= 0 or n_t < 3:
        return np.inf
    x = np.frombuffer(block[: n_t * n_ch * width], dtype=dtype).reshape(n_t, n_ch).astype(np.float64)
    sd = x.std(axis=0)
    live = sd > 0
    if not live.any():
        return np.inf
    return float(np.median(np.abs(np.diff(x[:, live], axis=0)).mean(axis=0) / sd[live]))


def _crash_isolated_call(path: Path, fmt: str) -> ReaderCall:
    """The reader call that a child process proved safe for ``path``, or an explicit error."""
    candidates = _cnt_candidates(path)
    result = probe_readers(path, candidates)
    if result.working is not None:
        return result.working
    tried = "; ".join(f"{call.describe()}: {why}" for call, why in result.failures)
    raise UnreadableRecordingError(
        f"{path}: no reader could open this {fmt} file (each was tried in a separate process, so a crash "
        f"costs only this file) — {tried}. Convert it to EDF/FIF with the vendor's software"
    )
