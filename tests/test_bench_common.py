"""The benchmarks' measuring harness (`bench/_common.py`): it must not tax what it measures, nor stop measuring."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _common  # noqa: E402


class _CountingStop:
    """A stop event that records the poller's waits instead of sleeping, and stops after ``n`` polls."""

    def __init__(self, n: int) -> None:
        self.n, self.waits = n, []

    def is_set(self) -> bool:
        return len(self.waits) >= self.n

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_poller_backs_off_to_once_a_second_and_keeps_polling_for_hours(monkeypatch):
    """50 ms polls at first, doubling every 20, capped at 1 s; 30,000 polls (over 8 h at the cap) go on
    without error (an interval computed as 0.05 * 2 ** (polls // 20) overflowed a float after ~21,500)."""
    monkeypatch.setattr(_common, "_descendants", lambda launcher: [])
    out, stop = {"rss": 0, "pss": 0, "n": 0, "samples": 0}, _CountingStop(30_000)
    _common._poll_peaks(None, stop, out, interval_s=0.05)
    assert out["samples"] == 30_000
    assert stop.waits[:19] == [0.05] * 19 and stop.waits[19] == 0.1
    assert max(stop.waits) == 1.0 and stop.waits[-1] == 1.0


def test_run_measured_times_a_real_child_and_reads_its_memory():
    run = _common.run_measured([sys.executable, "-c", "import time; x = bytearray(50_000_000); time.sleep(1.5)"])
    assert run.returncode == 0 and 1.5 <= run.wall_s < 10
    assert run.peak_rss_max_process >= 50_000_000 and run.samples >= 20


def test_command_line_quotes_arguments_for_a_shell():
    """A report's command can be pasted into a shell: JSON overrides stay one quoted argument."""
    import shlex

    line = _common.command_line(["bench/x.py", "--overrides", '{"n_latent": 16}', "--out", "runs/a b"])
    assert shlex.split(line)[-4:] == ["--overrides", '{"n_latent": 16}', "--out", "runs/a b"]
