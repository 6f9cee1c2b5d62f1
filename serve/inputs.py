"""Turn request inputs into what the preprocessing reads: v2 tensors / JSON arrays -> `ArrayRecording` (one
recording) or EpochsArray, uploads -> files.

Uploads are written into a per-request temporary directory (`request_tmpdir`, removed after the request, also
on errors; folders left by a killed server are removed at the next start, `sweep_stale_uploads`). A ``.zip``
(e.g. BrainVision's .vhdr/.vmrk/.eeg) is unpacked there after checking every member: no absolute paths, no
``..``, no links, at most `MAX_ZIP_MEMBERS` members; before anything is unpacked, the declared sizes must fit
``max_bytes`` and the upload disk budget, and the declared compression ratios ``max_ratio`` (zip bombs); while
unpacking, the bytes written are counted against the same limits (a member cannot yield more than it declares:
`zipfile` stops there and checks the CRC). The recording inside is found with `data.discover`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import mne
import numpy as np

from data.arrays import ArrayRecording
from data.atomic import process_alive
from serve.errors import BadInput, LimitExceeded, PayloadTooLarge

MAX_ZIP_MEMBERS = 64
UPLOAD_PREFIX = "brainforge-upload-"
RATIO_MIN_BYTES = 1 << 20  # members smaller than this are not held to the compression-ratio limit
CH_TYPES = {"eeg", "mag", "grad", "eog", "ecg", "emg", "stim", "misc", "resp", "bio", "seeg", "ecog", "dbs", "ref_meg"}
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --- arrays -------------------------------------------------------------------------------------------
def as_str_list(value: Any, field: str) -> list[str] | None:
    """A list of strings, a comma-separated string, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [s.strip() for s in value.split(",")]
    if isinstance(value, list | tuple | np.ndarray) and all(isinstance(v, str | bytes) for v in value):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    raise BadInput(f"{field} must be a list of strings or a comma-separated string")


def make_info(names: Sequence[str], types: Sequence[str] | None, sfreq: float,
              positions: np.ndarray | None, orientations: np.ndarray | None = None) -> mne.Info:
    """MNE info for C channels; types default to EEG; positions [C, 3] metres (NaN rows: unknown)."""
    n = len(names)
    if n == 0:
        raise BadInput("channel_names is empty")
    if len(set(names)) != n:
        dup = sorted({x for x in names if list(names).count(x) > 1})
        raise BadInput(f"channel_names has duplicates: {dup[:5]}")
    if any(not x or len(x) > 64 for x in names):
        raise BadInput("channel names must be 1 to 64 characters")
    types = [t.lower() for t in (types or ["eeg"] * n)]
    if len(types) != n:
        raise BadInput(f"channel_types has {len(types)} entries for {n} channel names")
    for name, t in zip(names, types, strict=True):
        if t not in CH_TYPES:
            raise BadInput(f"channel {name!r}: unknown channel type {t!r} (use one of {sorted(CH_TYPES)})")
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise BadInput(f"sfreq must be a positive number of Hz, got {sfreq}")
    info = mne.create_info(list(names), float(sfreq), types, verbose="error")
    for key, arr in (("positions", positions), ("orientations", orientations)):
        if arr is None:
            continue
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != (n, 3):
            raise BadInput(f"{key} has shape {list(arr.shape)}, expected [{n}, 3]")
        if np.isinf(arr).any():
            raise BadInput(f"{key} holds Inf")
        if key == "positions" and np.nanmax(np.abs(arr), initial=0) > 1.0:
            raise BadInput("positions must be in metres (head frame); a coordinate above 1 m looks like mm or cm")
    for c, ch in enumerate(info["chs"]):
        if positions is not None:
            ch["loc"][:3] = np.asarray(positions, dtype=np.float64)[c]
        if orientations is not None:  # planar gradiometers: loc[3:6]; magnetometers: loc[9:12] (DESIGN.md 2)
            o = np.asarray(orientations, dtype=np.float64)[c]
            if types[c] == "grad":
                ch["loc"][3:6] = o
            elif types[c] == "mag":
                ch["loc"][9:12] = o
    return info


def check_signal(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise BadInput(f"{what} must be [C, T] or [N, C, T], got shape {list(x.shape)}")
    if 0 in x.shape:
        raise BadInput(f"{what} is empty (shape {list(x.shape)})")
    if not np.isfinite(x).all():
        raise BadInput(f"{what} contains NaN or Inf")
    return x


def mne_input(x: np.ndarray, info: mne.Info) -> ArrayRecording | mne.EpochsArray:
    """[C, T] -> `data.arrays.ArrayRecording` (the array itself, read as an MNE Raw is: no RawArray, no float64
    copy), [N, C, T] -> EpochsArray (tmin 0). ``info`` is shared, not copied (`cached_info` gives it read-only)."""
    if x.shape[-2] != len(info["ch_names"]):
        raise BadInput(f"signal has {x.shape[-2]} channels but {len(info['ch_names'])} channel names were given")
    if x.ndim == 2:
        return ArrayRecording(x, info)
    data = x.astype(np.float64)
    # verbose="error" makes MNE set and reset its logger's level, and each logging.setLevel clears the cache of every
    # logger in the process (thousands with torch loaded): skip it when MNE is quiet already
    verbose = None if mne.utils.logger.level >= logging.ERROR else "error"
    n, _, t = x.shape  # epochs laid end to end on one clock: epoch i starts at i * T / sfreq
    events = np.c_[np.arange(n) * t, np.zeros(n, int), np.ones(n, int)].astype(int)
    return mne.EpochsArray(data, info, events=events, tmin=0.0, verbose=verbose)


def decode_tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> np.ndarray:
    """A v2 JSON tensor (row-major, flat or nested ``data``) -> numpy array of ``shape``."""
    if any((not isinstance(s, int)) or s < 0 for s in shape):
        raise BadInput(f"input {name!r}: shape {shape} must hold non-negative integers")
    dtypes = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT32": np.int32, "INT64": np.int64}
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).ravel()
        if not all(isinstance(v, str) for v in flat):
            raise BadInput(f"input {name!r}: BYTES data must be strings")
    elif datatype in dtypes:
        try:
            flat = np.asarray(data, dtype=dtypes[datatype]).ravel()
        except (ValueError, TypeError, OverflowError) as e:
            raise BadInput(f"input {name!r}: data is not {datatype} numbers ({e})") from e
    else:
        raise BadInput(f"input {name!r}: datatype {datatype!r} is not supported (use FP32)")
    expected = int(np.prod(shape)) if shape else 1
    if flat.size != expected:
        raise BadInput(f"input {name!r}: {flat.size} values do not fill shape {shape} ({expected} values)")
    return flat.reshape(shape)


# --- uploads ----------------------------------------------------------------------------------------
@contextmanager
def request_tmpdir(base: Path | None = None) -> Iterator[Path]:
    """A fresh ``brainforge-upload-<pid>-*`` directory under ``base`` (default: the system temp dir), always removed."""
    path = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale_uploads(base: Path | None = None, legacy_age_s: float = 3600.0) -> list[str]:
    """Remove upload folders whose server process is gone (killed with -9 mid-request); returns their names.
    Folders of the older naming (no pid) are removed once older than ``legacy_age_s``."""
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(UPLOAD_PREFIX) or not p.is_dir() or p.is_symlink():
            continue
        m = re.match(rf"^{UPLOAD_PREFIX}(\d+)-", p.name)
        try:
            stale = not process_alive(int(m.group(1))) if m else time.time() - p.stat().st_mtime > legacy_age_s
        except OSError:
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def safe_filename(filename: str | None) -> str:
    """The basename with only [A-Za-z0-9._-]; the extension (which picks the reader) is kept."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = SAFE_NAME.sub("_", base).lstrip(".")
    if not base:
        raise BadInput("the uploaded file has no usable filename (its extension tells the format: .edf, .fif, .zip, ...)")
    return base[-200:]


def _check_member(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name) or not name.strip("/"):
        raise BadInput(f"zip member {info.filename!r}: absolute or parent-relative path")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BadInput(f"zip member {info.filename!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise BadInput(f"zip member {info.filename!r} is encrypted")
    return PurePosixPath(*[SAFE_NAME.sub("_", part) for part in p.parts])


def unpack_zip(archive: Path, dest: Path, max_bytes: int, max_ratio: float | None = None,
               reserve: Callable[[int, str], None] | None = None) -> None:
    """Unpack ``archive`` into ``dest`` with the checks above; BadInput / PayloadTooLarge on failure.

    ``max_ratio``: the largest unpacked/packed ratio of the whole archive and of any member over 1 MB.
    ``reserve(n, what)``: called once with the declared unpacked size before anything is written (the upload
    disk budget; it raises when the space is not there)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise BadInput(f"{archive.name} is not a valid zip file: {e}") from e
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise BadInput(f"{archive.name} has {len(members)} members (limit {MAX_ZIP_MEMBERS})")
        files = [m for m in members if not m.is_dir()]
        declared = sum(m.file_size for m in files)
        limit_mb = max_bytes / 2**20
        if declared > max_bytes:
            raise PayloadTooLarge(f"{archive.name} declares {declared / 2**20:.1f} MB unpacked, more than the "
                                  f"{limit_mb:g} MB limit; nothing was unpacked")
        if max_ratio is not None:
            packed = max(1, sum(m.compress_size for m in files))
            worst = max(files, key=lambda m: m.file_size / max(1, m.compress_size), default=None)
            if declared > RATIO_MIN_BYTES and declared / packed > max_ratio:
                raise PayloadTooLarge(f"{archive.name} unpacks to {declared / packed:.0f}x its packed size (limit "
                                      f"{max_ratio:g}x): refused as a zip bomb; nothing was unpacked")
            if worst is not None and worst.file_size > RATIO_MIN_BYTES and worst.file_size / max(1, worst.compress_size) > max_ratio:
                raise PayloadTooLarge(f"{archive.name}: member {worst.filename!r} unpacks to "
                                      f"{worst.file_size / max(1, worst.compress_size):.0f}x its packed size (limit "
                                      f"{max_ratio:g}x): refused as a zip bomb; nothing was unpacked")
        if reserve is not None:
            reserve(declared, f"unpacking {archive.name}")
        max_bytes = min(max_bytes, declared)  # never more than declared, whatever the members yield
        total = 0
        for info in members:
            rel = _check_member(info)
            if info.is_dir():
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(out, "wb") as dst:
                    while block := src.read(1 << 20):
                        total += len(block)
                        if total > max_bytes:
                            raise PayloadTooLarge(f"{archive.name} unpacks to more than {max_bytes / 2**20:g} MB")
                        dst.write(block)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                raise BadInput(f"{archive.name}: member {info.filename!r} cannot be unpacked: {e}") from e


def find_recording(folder: Path, what: str) -> Path:
    """The one recording entry point under ``folder`` (via `data.discover`)."""
    from data.readers import discover

    sources, skipped = discover([folder])
    if len(sources) == 1:
        return Path(sources[0].path)
    if not sources:
        why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:5]) or "no file with a recording extension"
        raise LimitExceeded(f"{what}: no readable recording inside ({why})")
    names = sorted(Path(s.path).name for s in sources)
    raise BadInput(f"{what} holds {len(sources)} recordings ({', '.join(names[:5])}); send one per request")
