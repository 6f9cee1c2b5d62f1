"""Open recordings in any format MNE reads (`open_raw`).

`open_raw` is the one way the data stage opens a file. It

- dispatches to the right MNE reader, including the ones ``mne.io.read_raw`` cannot reach alone
  (EGI ``.raw``, BTi/4D pdf files without extension, Nicolet ``.data``, Neuroscan vs ANT ``.cnt``);
- probes readers that can crash the interpreter (every ``.cnt``: antio segfaults on Neuroscan files)
  in a child process first, and then uses only the call that worked there;
- turns every failure into a `data.errors` exception whose message names the file and what to do;
- keeps MNE quiet: its warnings are captured and re-logged on the "brainforge.data" logger (data-integrity
  ones at WARNING, the rest at INFO).

Beside it: `data.formats` (extensions, reader table, `is_epochs_file`), `data.probe` (the child-process probing)
and `data.discovery` (`discover` expands inputs into `RecordingSource` entry points and skips companion files);
their public names are re-exported here.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import mne

from .errors import (
    BrainforgeDataError,
    TruncatedRecordingError,
    UnreadableRecordingError,
    UnsupportedInputError,
)
from .formats import (
    _COMPANION_HINTS,
    _CRASH_PRONE,
    _FORMATS,
    _IGNORED_SUFFIXES,
    _READERS,
    SUPPORTED_EXTENSIONS,
    _suffix,
    is_epochs_file,
)
from .probe import PROBE_TIMEOUT_S, ProbeResult, ReaderCall, _crash_isolated_call, probe_readers

logger = logging.getLogger("brainforge.data")

# ----------------------------------------------------------------------------------------------------
# Formats

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


# ----------------------------------------------------------------------------------------------------
# Reader calls and MNE warnings


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


def __getattr__(name: str):
    """``data.readers.discover`` / ``RecordingSource``: re-exported lazily from `data.discovery` (which imports
    from this module)."""
    if name in ("RecordingSource", "discover"):
        import importlib

        return getattr(importlib.import_module("data.discovery"), name)
    raise AttributeError(f"module 'data.readers' has no attribute {name!r}")

__all__ = ["PROBE_TIMEOUT_S", "ProbeResult", "ReaderCall", "SUPPORTED_EXTENSIONS",
           "integrity_notes", "is_epochs_file", "open_raw", "probe_readers"]
