"""Open recordings in any format MNE reads, and find the recordings in files, folders and BIDS roots.

`open_raw` is the one way the data stage opens a file. It

- dispatches to the right MNE reader, including the ones ``mne.io.read_raw`` cannot reach alone
  (EGI ``.raw``, BTi/4D pdf files without extension, Nicolet ``.data``, Neuroscan vs ANT ``.cnt``);
- probes readers that can crash the interpreter (every ``.cnt``: antio segfaults on Neuroscan files)
  in a child process first, and then uses only the call that worked there;
- turns every failure into a `data.errors` exception whose message names the file and what to do;
- keeps MNE quiet: its warnings are captured and re-logged on the "brainforge.data" logger (data-integrity
  ones at WARNING, the rest at INFO).

`discover` expands inputs into `RecordingSource` entry points and skips companion files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np

from .errors import (
    BrainforgeDataError,
    TruncatedRecordingError,
    UnreadableRecordingError,
    UnsupportedInputError,
)

logger = logging.getLogger("brainforge.data")

# ----------------------------------------------------------------------------------------------------
# Formats

#: Entry-point extensions `open_raw` and `discover` accept (lower case), mapped to a format key.
#: ``.ds`` (CTF) and ``.mff`` (EGI) are folders. BTi/4D pdf files have no extension of their own: any
#: file with a 4D ``config`` file beside it (see `_is_bti_pdf`).
_FORMATS: dict[str, str] = {
    ".fif": "fif",
    ".fif.gz": "fif",
    ".edf": "edf",
    ".bdf": "bdf",
    ".gdf": "gdf",
    ".vhdr": "brainvision",
    ".ahdr": "brainvision",
    ".set": "eeglab",
    ".cnt": "cnt",  # Neuroscan or ANT Neuro, told apart by content
    ".sqd": "kit",
    ".con": "kit",
    ".ds": "ctf",
    ".raw": "egi",
    ".mff": "egi",
    ".data": "nicolet",
    ".lay": "persyst",
    ".eeg": "nihon",  # unless it is the data file of a BrainVision header
    ".cdt": "curry",
    ".dat": "dat",  # Curry 7 or BCI2000 (mne.io.read_raw decides); Persyst data when a .lay is beside it
    ".nxe": "eximia",
    ".nedf": "nedf",
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_FORMATS)

#: format key -> (mne.io function name, extra keyword arguments). EDF/BDF use ``infer_types=True``: a
#: label "ECG ECG1" becomes channel "ECG1" of type ecg and "EEG Fp1" becomes "Fp1" (eeg); labels
#: without a known type prefix stay eeg and keep their name (MNE >= 1.0 behaviour).
_READERS: dict[str, tuple[str, dict]] = {
    "fif": ("read_raw_fif", {}),
    "edf": ("read_raw_edf", {"infer_types": True}),
    "bdf": ("read_raw_bdf", {"infer_types": True}),
    "gdf": ("read_raw_gdf", {}),
    "brainvision": ("read_raw_brainvision", {}),
    "eeglab": ("read_raw_eeglab", {}),
    "kit": ("read_raw_kit", {}),
    "ctf": ("read_raw_ctf", {}),
    "egi": ("read_raw_egi", {}),
    "nicolet": ("read_raw_nicolet", {"ch_type": "eeg", "eog": "auto", "ecg": "auto", "emg": "auto"}),
    "persyst": ("read_raw_persyst", {}),
    "nihon": ("read_raw_nihon", {}),
    "curry": ("read_raw_curry", {}),
    "dat": ("read_raw", {}),
    "eximia": ("read_raw_eximia", {}),
    "nedf": ("read_raw_nedf", {}),
}

#: Formats whose readers can kill the interpreter (segfault): probed in a child process first.
_CRASH_PRONE = frozenset({"cnt"})

# Companion files given where an entry point is expected: suffix -> what to open instead.
_COMPANION_HINTS: dict[str, str] = {
    ".vmrk": "the .vhdr header",
    ".amrk": "the .ahdr header",
    ".fdt": "the .set file",
    ".evt": "the .cnt file",
    ".head": "the .data file",
    ".dpa": "the .cdt file",
    ".cef": "the .cdt file",
    ".ceo": "the .cdt file",
    ".dap": "the .dat file",
    ".rs3": "the .dat file",
    ".11d": "the .EEG file",
    ".21e": "the .EEG file",
    ".cmt": "the .EEG file",
    ".cn2": "the .EEG file",
    ".pnt": "the .EEG file",
    ".log": "the .EEG file",
    ".elp": "the .sqd/.con file",
    ".hsp": "the .sqd/.con file",
    ".mrk": "the .sqd/.con file",
    ".meg4": "the .ds folder",
    ".res4": "the .ds folder",
    ".hc": "the .ds folder",
    ".infods": "the .ds folder",
    ".acq": "the .ds folder",
}

# MNE warnings that say something about data integrity: re-logged at WARNING (the rest at INFO).
_IMPORTANT_WARNING = re.compile(
    r"does not match the file size|Invalid tag|Inconsistent|not found|not unique|No info on DataPoints|"
    r"truncat|corrupt|larger than file size",
    re.IGNORECASE,
)


# MNE warnings meaning that the reader guessed how much data there is: the file is truncated (or its header lies).
# They fail `open_raw` unless ``allow_truncated`` (then they become a note on the Raw, see `integrity_notes`).
_TRUNCATION_WARNING = re.compile(
    r"does not match the file size|larger than file size|incorrect for record length", re.IGNORECASE
)
_NOTES_ATTR = "_brainforge_integrity_notes"


def integrity_notes(raw: mne.io.BaseRaw) -> list[str]:
    """What `open_raw(..., allow_truncated=True)` let through (truncation reasons); empty for a sound file."""
    return list(getattr(raw, _NOTES_ATTR, []))


_EPOCHS_FILE = re.compile(r"[-_]epo\.fif(\.gz)?$", re.IGNORECASE)


def is_epochs_file(path: str | Path) -> bool:
    """True for an MNE epochs file name: ``*-epo.fif`` or ``*_epo.fif``, optionally ``.gz`` (any case)."""
    return bool(_EPOCHS_FILE.search(Path(path).name))


def _suffix(path: Path) -> str:
    """Lower-case extension, with ``.fif.gz`` kept whole."""
    name = path.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    """File name without its (possibly double) extension."""
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


# ----------------------------------------------------------------------------------------------------
# Reader calls and MNE warnings


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


@contextmanager
def _quiet_mne(path: Path) -> Iterator[None]:
    """Keep MNE (and the libraries it calls) quiet inside; re-log what they said for ``path``.

    MNE's log level is WARNING inside; its warnings are captured and logged on "brainforge.data"
    (data-integrity ones at WARNING, the rest at INFO), and what readers print to stdout at INFO, also
    when the reader fails. Note: warning capture and stdout redirection are process-wide; open
    recordings from one thread at a time (worker processes are fine).
    """
    printed = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            mne.utils.use_log_level("WARNING"),
            redirect_stdout(printed),
        ):
            warnings.simplefilter("always")
            yield caught
    finally:
        for w in caught:
            msg = " ".join(str(w.message).split())
            level = logging.WARNING if _IMPORTANT_WARNING.search(msg) else logging.INFO
            logger.log(level, "%s: %s", path, msg)
        for line in printed.getvalue().splitlines():
            if line.strip():
                logger.info("%s: %s", path, line.strip())


def _call_reader(path: Path, fmt: str, open_fn: Callable[[], mne.io.BaseRaw],
                 notes: list[str] | None = None) -> mne.io.BaseRaw:
    """Run ``open_fn`` and turn whatever it raises into a `data.errors` exception naming ``path``.

    MNE warnings saying the file is truncated raise `TruncatedRecordingError`, or, when a ``notes`` list is
    given (``allow_truncated``), are appended to it."""
    try:
        with _quiet_mne(path) as caught:
            result = open_fn()
        for w in caught:
            msg = " ".join(str(w.message).split())
            if _TRUNCATION_WARNING.search(msg):
                if notes is None:
                    raise TruncatedRecordingError(
                        f"{path}: truncated or inconsistent file: MNE says '{msg[:200]}'; re-copy or re-export it "
                        f"(`prepare --allow-truncated` keeps the readable part)")
                if msg not in notes:
                    notes.append(f"MNE: {msg[:200]}")
        return result
    except BrainforgeDataError:
        raise
    except ImportError as e:
        raise UnreadableRecordingError(
            f"{path}: reading {fmt} files needs the Python package '{e.name or e}', which is not installed "
            f"(pip install {e.name or '<package>'})"
        ) from e
    except FileNotFoundError as e:
        missing = e.filename or str(e)
        raise UnreadableRecordingError(
            f"{path}: the file {missing} it needs is missing; copy the recording together with all its "
            f"companion files"
        ) from e
    except (TypeError, ValueError) as e:
        text = str(e)
        if "number of trials" in text.lower():
            raise _epoched_error(path) from e
        if fmt == "fif" and text.startswith("No raw data in"):
            raise UnsupportedInputError(
                f"{path}: contains no continuous raw data (an epochs, evoked or other FIF object); if it is "
                f"epoched data, use it as a labelled task in finetune"
            ) from e
        raise _corrupt_error(path, fmt, e) from e
    except Exception as e:  # noqa: BLE001 - every reader failure becomes one explicit error type
        raise _corrupt_error(path, fmt, e) from e


def _corrupt_error(path: Path, fmt: str, e: BaseException) -> UnreadableRecordingError:
    detail = " ".join(f"{type(e).__name__}: {e}".split())[:400]
    return UnreadableRecordingError(
        f"{path}: cannot be read as {fmt} ({detail}); the file may be truncated, corrupt or not really "
        f"{fmt}: re-copy or re-export it"
    )


def _epoched_error(path: Path) -> UnsupportedInputError:
    return UnsupportedInputError(
        f"{path}: epoched data: use it as a labelled task in finetune (it is not a continuous recording)"
    )


# ----------------------------------------------------------------------------------------------------
# Pre-checks that give a clear message before MNE gives an unclear one


def _check_path(path: Path) -> None:
    if not path.exists():
        raise UnreadableRecordingError(f"{path}: no such file or folder")
    if path.is_dir():
        if _suffix(path) not in (".ds", ".mff"):
            raise UnreadableRecordingError(
                f"{path}: is a folder, not a recording (only CTF .ds and EGI .mff folders are recordings); "
                f"use discover() to find the recordings inside it"
            )
        return
    if path.stat().st_size == 0:
        raise UnreadableRecordingError(f"{path}: empty file (0 bytes); re-copy or re-export it")


def _format_of(path: Path) -> str:
    """Format key of an entry point, or an explicit error for companions and unknown types."""
    suffix = _suffix(path)
    header = _brainvision_header_for(path) if suffix == ".eeg" else None
    if header is not None:
        raise UnreadableRecordingError(
            f"{path}: is the binary data of the BrainVision recording {header.name}; open that header instead"
        )
    if suffix == ".dat" and path.with_suffix(".lay").exists():
        raise UnreadableRecordingError(f"{path}: is the data of the Persyst recording {path.stem}.lay; open that")
    if suffix in _FORMATS:
        return _FORMATS[suffix]
    if _is_bti_pdf(path):
        return "bti"
    if suffix in _COMPANION_HINTS or _bti_role(path.name) is not None:
        target = _companion_target(path)
        hint = target.name if target else _COMPANION_HINTS.get(suffix, "the 4D pdf file beside it")
        raise UnreadableRecordingError(f"{path}: is a companion file, not a recording; open {hint} instead")
    raise UnreadableRecordingError(
        f"{path}: unsupported file type '{suffix or '(no extension)'}'; supported: "
        f"{', '.join(SUPPORTED_EXTENSIONS)}, and BTi/4D pdf files with their 'config' file beside them"
    )


def _companion_target(path: Path) -> Path | None:
    """The entry point beside a companion file that shares its stem ('x.vmrk' -> 'x.vhdr'), if any."""
    stripped = path.with_suffix("")  # 'x.cdt.dpa' -> 'x.cdt'
    cands = [stripped] if _suffix(stripped) in _FORMATS else []
    preferred = re.findall(r"\.\w+", _COMPANION_HINTS.get(_suffix(path), ""))  # '.EEG' for Nihon Kohden files
    for ext in [*preferred, *SUPPORTED_EXTENSIONS]:
        cands += [path.with_suffix(ext), path.with_suffix(ext.upper())]
    return next((c for c in cands if c != path and c.exists()), None)


_EDF_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")


def _edf_number(field: bytes) -> float | None:
    try:
        return float(field.decode("latin-1").strip())
    except ValueError:
        return None


def _check_edf_header(path: Path, fmt: str, notes: list[str] | None) -> None:
    """Reject EDF/BDF files with a truncated header, annotation channels only, a record duration of 0, or (unless
    ``notes`` is given: ``allow_truncated``) fewer data bytes than the header declares or a record count of -1."""
    with open(path, "rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise UnreadableRecordingError(
                f"{path}: EDF/BDF header truncated ({len(head)} of at least 256 bytes); re-copy or re-export it"
            )
        try:
            n_signals = int(head[252:256].decode("latin-1").strip() or "0")
        except ValueError as e:
            raise UnreadableRecordingError(f"{path}: not a valid EDF/BDF file (bad signal count in header)") from e
        labels = [f.read(16).decode("latin-1").strip() for _ in range(max(min(n_signals, 4096), 0))]
        f.seek(256 + max(n_signals, 0) * 216)
        samples = [_edf_number(f.read(8)) for _ in range(max(min(n_signals, 4096), 0))]
    if n_signals <= 0 or all(label in _EDF_ANNOTATION_LABELS for label in labels):
        raise UnsupportedInputError(
            f"{path}: contains annotations only, no signal channels; read it with mne.read_annotations"
        )
    header_bytes = 256 * (1 + n_signals)
    size = path.stat().st_size
    if size <= header_bytes:
        raise UnreadableRecordingError(
            f"{path}: EDF/BDF header only ({size} bytes, header {header_bytes} bytes), no data "
            f"records; the file is truncated: re-copy or re-export it"
        )
    duration = _edf_number(head[244:252])
    if duration is None or not duration > 0:
        raise UnreadableRecordingError(
            f"{path}: the header declares a data record duration of {head[244:252].decode('latin-1').strip()!r} s; "
            f"without a positive record duration the sampling rate is unknown: re-export the file"
        )
    n_records = _edf_number(head[236:244])
    problem = None
    if n_records is None or n_records < 0:
        problem = (f"the header declares {head[236:244].decode('latin-1').strip()!r} data records (the recording "
                   f"was not closed properly)")
    elif None not in samples and all(x >= 0 for x in samples):
        record_bytes = int(sum(samples)) * (3 if fmt == "bdf" else 2)
        expected = int(n_records) * record_bytes
        if record_bytes and size - header_bytes < expected:
            have = (size - header_bytes) / record_bytes
            problem = (f"truncated: the header declares {int(n_records)} data records "
                       f"({n_records * duration:g} s), the file holds {have:.1f} ({have * duration:.1f} s)")
    if problem is None:
        return
    if notes is None:
        raise TruncatedRecordingError(
            f"{path}: {problem}; re-copy or re-export it (`prepare --allow-truncated` keeps the readable part)")
    notes.append(problem)


_VHDR_FIELD = re.compile(r"^\s*(DataFile|MarkerFile)\s*=\s*(.*?)\s*$", re.MULTILINE | re.IGNORECASE)


def _brainvision_refs(header: Path) -> dict[str, str]:
    """{'datafile': name, 'markerfile': name} from a .vhdr/.ahdr header (missing keys left out)."""
    try:
        text = header.read_bytes()[:65536].decode("latin-1")
    except OSError:
        return {}
    return {key.lower(): value for key, value in _VHDR_FIELD.findall(text) if value}


def _check_brainvision(path: Path) -> None:
    data_name = _brainvision_refs(path).get("datafile")
    if data_name and not (path.parent / data_name).exists():
        raise UnreadableRecordingError(
            f"{path}: its data file {data_name} (DataFile= in the header) is missing from {path.parent}; "
            f"copy the .vhdr, .vmrk and .eeg files together"
        )


def _brainvision_header_for(eeg: Path) -> Path | None:
    """The BrainVision header in the same folder that uses ``eeg`` as data, if any."""
    for ext in (".vhdr", ".ahdr", ".VHDR", ".AHDR"):
        cand = eeg.with_suffix(ext)
        if cand.exists():
            return cand
    try:
        headers = [p for p in eeg.parent.iterdir() if p.suffix.lower() in (".vhdr", ".ahdr")]
    except OSError:
        return None
    for header in sorted(headers):
        if _brainvision_refs(header).get("datafile") == eeg.name:
            return header
    return None


# ----------------------------------------------------------------------------------------------------
# BTi / 4D: pdf file + 'config' + head shape file in one folder

_BTI_CONFIG = re.compile(r"(^|[_.,-])config([_.,-]|$)", re.IGNORECASE)
_BTI_HS = re.compile(r"(^|[_.,-])(hs|hs_file|headshape)([_.,-]|$)", re.IGNORECASE)


def _bti_role(name: str) -> str | None:
    """'config' or 'hs' when a file name is a 4D companion ('config', 'hs_file', 'test_config_linux')."""
    if _BTI_CONFIG.search(name):
        return "config"
    if _BTI_HS.search(name):
        return "hs"
    return None


def _tokens(name: str) -> set[str]:
    return set(re.split(r"[_.,-]+", name.lower())) - {""}


def _bti_companion(pdf: Path, role: str) -> Path | None:
    """The ``role`` file beside ``pdf`` that shares most name tokens with it ('_linux' pairs)."""
    try:
        cands = [p for p in pdf.parent.iterdir() if p.is_file() and _bti_role(p.name) == role]
    except OSError:
        return None
    if not cands:
        return None
    return max(sorted(cands), key=lambda p: len(_tokens(p.name) & _tokens(pdf.name)))


def _is_bti_pdf(path: Path) -> bool:
    """A file with no known extension, not itself a 4D companion, with a 4D config file beside it."""
    suffix = _suffix(path)
    if not path.is_file() or suffix in _FORMATS or suffix in _COMPANION_HINTS or suffix in _IGNORED_SUFFIXES:
        return False
    return _bti_role(path.name) is None and _bti_companion(path, "config") is not None


def _bti_call(path: Path) -> ReaderCall:
    config = _bti_companion(path, "config")
    if config is None:
        raise UnreadableRecordingError(f"{path}: a BTi/4D pdf needs its 'config' file beside it; none found")
    hs = _bti_companion(path, "hs")
    return ReaderCall("read_raw_bti", {"config_fname": str(config), "head_shape_fname": str(hs) if hs else None})


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


# ----------------------------------------------------------------------------------------------------
# open_raw


def open_raw(path: str | Path, preload: bool = False, allow_truncated: bool = False) -> mne.io.BaseRaw:
    """Open one recording (file, or CTF ``.ds`` / EGI ``.mff`` folder) as an MNE Raw.

    Args:
        path: the entry point of the recording (see `SUPPORTED_EXTENSIONS`).
        preload: load the data into memory now (else it is read on demand).
        allow_truncated: open a truncated file (fewer data than its header declares) anyway; the reasons are
            logged and kept on the Raw (`integrity_notes`). Default: `TruncatedRecordingError`.

    Returns:
        The Raw, with at least one channel and one sample.

    Raises:
        UnreadableRecordingError: missing/empty/truncated/corrupt file, missing companion file, missing
            optional package, unsupported file type, or a reader that crashed in the probe process.
        UnsupportedInputError: readable but not a continuous recording (EDF with annotations only,
            epoched EEGLAB/FIF data).
    """
    path = Path(path)
    _check_path(path)
    fmt = _format_of(path)
    if fmt == "fif" and is_epochs_file(path):
        raise _epoched_error(path)
    if fmt == "fif" and re.search(r"[-_]ave\.fif(\.gz)?$", path.name, re.IGNORECASE):
        raise UnsupportedInputError(f"{path}: evoked (averaged) data, not a continuous recording")
    notes: list[str] | None = [] if allow_truncated else None
    if fmt in ("edf", "bdf"):
        _check_edf_header(path, fmt, notes)
    elif fmt == "brainvision":
        _check_brainvision(path)

    if fmt == "bti":
        call = _bti_call(path)
    elif fmt in _CRASH_PRONE:
        call = _crash_isolated_call(path, fmt)
    else:
        func, kwargs = _READERS[fmt]
        call = ReaderCall(func, kwargs)
    raw = _call_reader(path, fmt, lambda: call(path, preload), notes)
    _check_raw(raw, path, fmt, preload)
    if notes:
        logger.warning("%s: opened although truncated: %s", path, "; ".join(notes))
        setattr(raw, _NOTES_ATTR, notes)
    return raw


def _check_raw(raw: mne.io.BaseRaw, path: Path, fmt: str, preload: bool) -> None:
    """Reject Raws with no channels or samples; read first and last samples when not preloaded."""
    if len(raw.ch_names) == 0:
        raise UnreadableRecordingError(f"{path}: the file has no signal channels")
    if raw.n_times <= 0 or not raw.info["sfreq"] > 0:
        raise UnreadableRecordingError(
            f"{path}: no samples (n_times={raw.n_times}, sfreq={raw.info['sfreq']}); the file is truncated "
            f"or holds a header only"
        )
    if not preload:
        # Catch a truncated data section now rather than halfway through preprocessing.
        last = raw.n_times - 1
        _call_reader(path, fmt, lambda: (raw.get_data(start=0, stop=1), raw.get_data(start=last, stop=last + 1)))


# ----------------------------------------------------------------------------------------------------
# Recording sources and discovery


@dataclass
class RecordingSource:
    """One recording entry point.

    path: the file (or .ds/.mff folder); subject: subject label; session: session label or None;
    bids_path: an ``mne_bids.BIDSPath`` when it came from a BIDS root; root: the input folder it was
    found under (gives `recording_id`).
    """

    path: Path
    subject: str
    session: str | None = None
    bids_path: object | None = None
    root: Path | None = None

    @property
    def recording_id(self) -> str:
        """Stable, readable id: the BIDS basename, else the path relative to ``root``, else the path."""
        if self.bids_path is not None:
            return str(self.bids_path.basename)
        if self.root is not None:
            try:
                return Path(self.path).relative_to(self.root).as_posix()
            except ValueError:
                pass
        return Path(self.path).as_posix()

    def open(self, preload: bool = False, allow_truncated: bool = False) -> mne.io.BaseRaw:
        """Open the recording (`open_raw`, or ``mne_bids.read_raw_bids`` for BIDS); same errors as `open_raw`."""
        if self.bids_path is None:
            return open_raw(self.path, preload=preload, allow_truncated=allow_truncated)
        from mne_bids import read_raw_bids

        path = Path(self.path)
        _check_path(path)
        notes: list[str] | None = [] if allow_truncated else None
        raw = _call_reader(path, "BIDS", lambda: read_raw_bids(self.bids_path, verbose="warning"), notes)
        if notes:
            setattr(raw, _NOTES_ATTR, notes)
        if preload:
            _call_reader(path, "BIDS", raw.load_data)
        _check_raw(raw, path, "BIDS", preload)
        return raw


# Files `discover` passes over silently: metadata and text.
_IGNORED_SUFFIXES = frozenset(
    {".txt", ".md", ".rst", ".json", ".tsv", ".csv", ".eve", ".xml", ".yaml", ".yml", ".html", ".sha256",
     ".md5", ".py", ".sh", ".ipynb", ".png", ".jpg", ".jpeg", ".svg", ".rtf", ".plist", ".lch"}
)  # fmt: skip
_IGNORED_NAMES = frozenset({"sha256sums", "md5sums", "readme", "license", "licence", "changes", "makefile"})
# FIF files that are companions (silent) or other MNE objects (reported).
_FIF_COMPANION = re.compile(r"[-_](eve|annot|trans)\.fif(\.gz)?$|[-_]raw-\d+\.fif(\.gz)?$", re.IGNORECASE)
_FIF_NOT_RAW = re.compile(r"[-_](ave|cov|fwd|inv|src|sol|proj|ica|bem|dip)\.fif(\.gz)?$", re.IGNORECASE)
_BIDS_SPLIT_CONT = re.compile(r"_split-0*([2-9]|\d{2,})_", re.IGNORECASE)
_SUB_RE = re.compile(r"(?:^|[_/])sub-([A-Za-z0-9]+)")
_SES_RE = re.compile(r"(?:^|[_/])ses-([A-Za-z0-9]+)")


def _classify(path: Path, brainvision_data: set[str]) -> tuple[str, str]:
    """('entry' | 'companion' | 'skip', reason) for a file met while walking a folder.

    ``brainvision_data``: names in the same folder that a BrainVision header names as DataFile/MarkerFile.
    'companion' files are passed over silently, 'skip' ones are reported with the reason.
    """
    name, suffix = path.name, _suffix(path)
    low = name.lower()
    if name.startswith(".") or low in _IGNORED_NAMES or suffix in _IGNORED_SUFFIXES or low == "manifest.md":
        return "companion", "metadata"
    if name in brainvision_data or suffix in (".vmrk", ".amrk"):
        return "companion", "BrainVision data/markers"
    if suffix == ".eeg" and _brainvision_header_for(path) is not None:
        return "companion", "BrainVision data"
    if suffix == ".dat" and path.with_suffix(".lay").exists():
        return "companion", "Persyst data"
    if suffix in (".fif", ".fif.gz"):
        if _FIF_COMPANION.search(name) or _BIDS_SPLIT_CONT.search(name):
            return "companion", "FIF events/transform/continuation"
        if _FIF_NOT_RAW.search(name):
            return "skip", "not a raw recording (an MNE evoked/covariance/forward/... FIF file)"
    if suffix in (".sqd", ".con") and re.search(r"mrk|marker", low):
        return "companion", "KIT marker-coil file"
    if suffix in _FORMATS:
        return "entry", ""
    if suffix in _COMPANION_HINTS or _bti_role(name) is not None:
        return "companion", "companion file"
    if _is_bti_pdf(path):
        return "entry", ""
    what = f"'{suffix}'" if suffix else "(no extension, and no BTi/4D config file beside it)"
    return "skip", f"unsupported file type {what}"


def _subject_session(path: Path, root: Path) -> tuple[str, str | None]:
    """Subject and session for a non-BIDS entry point.

    Rule: a BIDS-style ``sub-<label>`` (and ``ses-<label>``) in the file name or in a folder between
    ``root`` and the file wins; else the name of the file's parent folder when the file lies in a
    subfolder of ``root``; else (file directly in ``root``, or given by itself) the file stem.
    """
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    text = rel.as_posix()
    sub, ses = _SUB_RE.findall(text), _SES_RE.findall(text)
    session = ses[-1] if ses else None
    if sub:
        return sub[-1], session
    if len(rel.parts) > 1:
        return rel.parts[-2], session
    return _stem(path), session


def _source(path: Path, root: Path) -> RecordingSource:
    subject, session = _subject_session(path, root)
    return RecordingSource(path=path, subject=subject, session=session, root=root)


def _is_bids_root(path: Path) -> bool:
    return (path / "dataset_description.json").is_file()


def _discover_bids(root: Path) -> list[RecordingSource]:
    """EEG/MEG recordings of a BIDS dataset (first split only), via ``mne_bids.find_matching_paths``."""
    from mne_bids import find_matching_paths

    try:
        from mne_bids.config import ALLOWED_DATATYPE_EXTENSIONS as allowed

        extensions = sorted(set(allowed["eeg"]) | set(allowed["meg"]))
    except ImportError:  # older/newer mne-bids layout
        extensions = [".vhdr", ".edf", ".bdf", ".set", ".fif", ".ds", ".sqd", ".con", ".pdf"]
    paths = find_matching_paths(
        root, datatypes=["eeg", "meg"], suffixes=["eeg", "meg"], extensions=extensions,
        ignore_json=True, ignore_nosub=True,
    )  # fmt: skip
    out = []
    for bp in paths:
        if bp.split is not None and int(bp.split) != 1:
            continue  # read_raw_bids reads the continuation splits with the first one
        out.append(RecordingSource(path=Path(bp.fpath), subject=str(bp.subject), session=bp.session,
                                   bids_path=bp, root=root))  # fmt: skip
    return out


def _walk(root: Path, skipped: list[tuple[str, str]]) -> list[RecordingSource]:
    """Entry points under ``root`` (recursive, sorted); nested BIDS roots go through mne-bids."""
    out: list[RecordingSource] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith(".") or d == "__pycache__":
                continue
            if _suffix(sub) in (".ds", ".mff"):
                out.append(_source(sub, root))  # the folder is the entry point; its files are internals
            elif _is_bids_root(sub):
                out.extend(_discover_bids(sub))
            else:
                keep.append(d)
        dirnames[:] = keep
        bv_data = _brainvision_names(here, filenames)
        for name in sorted(filenames):
            p = here / name
            kind, reason = _classify(p, bv_data)
            if kind == "entry":
                out.append(_source(p, root))
            elif kind == "skip":
                skipped.append((str(p), reason))
    return out


def _brainvision_names(folder: Path, filenames: list[str]) -> set[str]:
    """Names that the BrainVision headers in ``folder`` reference as DataFile or MarkerFile."""
    names: set[str] = set()
    for name in filenames:
        if name.lower().endswith((".vhdr", ".ahdr")):
            names.update(_brainvision_refs(folder / name).values())
    return names


def discover(inputs: Sequence[str | Path]) -> tuple[list[RecordingSource], list[tuple[str, str]]]:
    """Expand files, folders (recursively) and BIDS roots into recording entry points.

    - A BIDS root (a folder holding ``dataset_description.json``): its eeg/meg recordings through mne-bids;
      subject/session are the BIDS entities and `recording_id` the BIDS basename.
    - A folder: every entry point below it; companion files (BrainVision .eeg/.vmrk, EEGLAB .fdt, ANT .evt,
      4D config/head shape, Nicolet .head, Curry .dpa/.cef, Nihon Kohden .PNT/.LOG/.21E/..., Persyst .dat,
      KIT marker/digitisation files, FIF events) and metadata (.json, .tsv, .txt, .md, checksums) are
      passed over silently; CTF ``.ds`` and EGI ``.mff`` folders are single entry points.
    - A file: itself if it is an entry point, else it is reported as skipped.

    Subjects outside BIDS follow `_subject_session`: ``sub-<label>`` in the path, else the parent folder
    name (for files in subfolders of an input folder), else the file stem.

    Returns:
        (sources sorted by path, skipped as (path, reason) sorted by path). Each source's
        `recording_id` is unique among the sources.
    """
    sources: list[RecordingSource] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item).expanduser()
        if not p.exists():
            skipped.append((str(p), "does not exist"))
        elif p.is_dir() and _is_bids_root(p):
            sources.extend(_discover_bids(p))
        elif p.is_dir() and _suffix(p) in (".ds", ".mff"):
            sources.append(_source(p, p.parent))
        elif p.is_dir():
            sources.extend(_walk(p, skipped))
        else:
            kind, reason = _classify(p, _brainvision_names(p.parent, [q.name for q in p.parent.iterdir()]))
            if kind == "entry":
                sources.append(_source(p, p.parent))
            else:
                skipped.append((str(p), reason if kind == "skip" else f"companion file ({reason}), not a recording"))
    sources = _unique(sources)
    return sorted(sources, key=lambda s: str(s.path)), sorted(skipped)


def _unique(sources: list[RecordingSource]) -> list[RecordingSource]:
    """Drop repeats of one path; give sources whose ids collide a common root so their ids differ."""
    seen: set[Path] = set()
    out = []
    for s in sources:
        key = Path(s.path).resolve()
        if key not in seen:
            seen.add(key)
            out.append(s)
    by_id: dict[str, list[RecordingSource]] = {}
    for s in out:
        by_id.setdefault(s.recording_id, []).append(s)
    for group in by_id.values():
        if len(group) > 1 and all(s.bids_path is None for s in group):
            common = Path(os.path.commonpath([str(Path(s.path).resolve().parent) for s in group]))
            for s in group:
                s.path, s.root = Path(s.path).resolve(), common
    return out
