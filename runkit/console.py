"""Console noise: third-party tips, adverts and known-harmless warnings are hidden by default in our CLIs.

`quiet_third_party` is applied once at CLI entry. ``--verbose`` on the command line, or the environment variable
``BRAINFORGE_LOG_LEVEL=DEBUG`` (or ``INFO``), shows everything (and tracebacks of user errors). Our own output,
progress bars and warnings are untouched.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import warnings

LOG_LEVEL_ENV = "BRAINFORGE_LOG_LEVEL"
VERBOSE_FLAG = "--verbose"

#: lines that third-party libraries print to stdout (litdata) or log (Lightning) that tell the user nothing
NOISE_LINES = (
    r"Create an account on https://lightning\.ai/",
    r"Setting multiprocessing start_method to ",
    r"💡 Tip: For seamless cloud logging",
)
#: (message regex, category) of known-harmless third-party warnings
NOISE_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"Your `IterableDataset` has `__len__` defined", UserWarning),
    (r"Length of IterableDataset .* was reported to be", UserWarning),
    (r"Found \d+ module\(s\) in eval mode", UserWarning),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning),
)
#: loggers that emit `NOISE_LINES` (a logger's filters see only its own records, not its children's)
NOISE_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning.pytorch",
                 "lightning.fabric", "litdata")

_NOISE = re.compile("|".join(NOISE_LINES))


def verbose_requested(argv: list[str] | None = None) -> bool:
    """``--verbose`` in ``argv``, or ``BRAINFORGE_LOG_LEVEL`` at INFO or below."""
    if argv is not None and VERBOSE_FLAG in argv:
        return True
    level = logging.getLevelName(os.environ.get(LOG_LEVEL_ENV, "WARNING").strip().upper())
    return isinstance(level, int) and level <= logging.INFO


def strip_verbose(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``; when it was there, child processes (DDP ranks, workers) inherit it through
    ``BRAINFORGE_LOG_LEVEL=DEBUG``."""
    if VERBOSE_FLAG not in argv:
        return argv
    os.environ[LOG_LEVEL_ENV] = "DEBUG"
    return [a for a in argv if a != VERBOSE_FLAG]


class _NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _NOISE.search(record.getMessage())


class NoiseFilteredStream(io.TextIOBase):
    """A text stream that drops whole lines matching `NOISE_LINES` and passes everything else through."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            if not _NOISE.search(line):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending and not _NOISE.search(self._pending):
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def quiet_third_party(verbose: bool = False) -> None:
    """Hide `NOISE_LINES` on stdout and in the third-party loggers, and `NOISE_WARNINGS` (no-op when ``verbose``)."""
    if verbose:
        return
    for pattern, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoiseFilter) for f in logger.filters):
            logger.addFilter(_NoiseFilter())
    if not isinstance(sys.stdout, NoiseFilteredStream):
        sys.stdout = NoiseFilteredStream(sys.stdout)
