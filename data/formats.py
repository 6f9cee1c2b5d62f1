"""The recording formats the data stage opens: file extensions, MNE reader functions, companion files, and the
file-name rules (`is_epochs_file`) that `data.readers` and `data.discovery` share."""

from __future__ import annotations

import re
from pathlib import Path

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

# Files `discover` passes over silently: metadata and text.
_IGNORED_SUFFIXES = frozenset(
    {".txt", ".md", ".rst", ".json", ".tsv", ".csv", ".eve", ".xml", ".yaml", ".yml", ".html", ".sha256",
     ".md5", ".py", ".sh", ".ipynb", ".png", ".jpg", ".jpeg", ".svg", ".rtf", ".plist", ".lch"}
)  # fmt: skip


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
