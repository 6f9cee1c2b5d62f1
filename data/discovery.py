"""`discover`: expand files, folders and BIDS roots into `RecordingSource` entry points, skipping companion files."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mne

from .formats import _COMPANION_HINTS, _FORMATS, _IGNORED_SUFFIXES, _stem, _suffix
from .readers import (
    _NOTES_ATTR,
    _brainvision_header_for,
    _brainvision_refs,
    _bti_role,
    _call_reader,
    _check_path,
    _check_raw,
    _is_bti_pdf,
    open_raw,
)

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
