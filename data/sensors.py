"""Sensor geometry: one `SensorLayout` per recording, built from ``info["chs"]``.

Types are EEG, MAG (magnetometers and axial gradiometers) and GRAD (planar gradiometers).
Positions are metres in the MNE head frame; unknown positions are NaN (never a silent zero).
Orientations are unit coil normals for MAG, the gradient direction for GRAD, zeros for EEG.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from types import MappingProxyType

import mne
import numpy as np
from mne.io.constants import FIFF

logger = logging.getLogger("brainforge.data")

#: One shared scale per modality for `normalised_positions` (metres): about a head radius for EEG,
#: about the helmet radius for MEG, so normalised coordinates are O(1).
EEG_POSITION_SCALE_M = 0.1
MEG_POSITION_SCALE_M = 0.12


class SensorType(IntEnum):
    EEG = 0
    MAG = 1
    GRAD = 2


#: MNE channel type -> model sensor type; every other type (ref_meg, eog, ecg, stim, misc, ...) is dropped.
#: CTF/KIT/4D axial gradiometers are typed 'mag' by MNE and stay MAG.
MODEL_CHANNEL_TYPES: dict[str, SensorType] = {"eeg": SensorType.EEG, "mag": SensorType.MAG, "grad": SensorType.GRAD}


@dataclass(frozen=True)
class SensorLayout:
    """Model-input channels of one recording.

    names: C channel names; types: [C] int8 (SensorType); positions: [C, 3] float32 metres,
    head frame, NaN rows where unknown; orientations: [C, 3] float32 (zeros for EEG).
    """

    names: tuple[str, ...]
    types: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.types.shape != (n,) or self.positions.shape != (n, 3) or self.orientations.shape != (n, 3):
            raise ValueError(
                f"SensorLayout: {n} names but types {self.types.shape}, positions {self.positions.shape}, "
                f"orientations {self.orientations.shape}"
            )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def position_known(self) -> np.ndarray:
        """[C] bool: True where the channel has a real position."""
        return ~np.isnan(self.positions).any(axis=1)

    def select(self, idx) -> SensorLayout:
        """A layout of the channels at ``idx`` (indices or boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return SensorLayout(
            names=tuple(self.names[i] for i in idx),
            types=self.types[idx],
            positions=self.positions[idx],
            orientations=self.orientations[idx],
        )

    def counts(self) -> dict[str, int]:
        """Channel counts by sensor type, e.g. {"eeg": 60, "mag": 102, "grad": 204}."""
        return {t.name.lower(): int((self.types == t).sum()) for t in SensorType}

    def to_dict(self) -> dict[str, list]:
        """JSON-friendly form for manifests: lists of names/ints/floats, NaN written as None."""
        return {
            "names": list(self.names),
            "types": [int(t) for t in self.types],
            "positions": _rows_to_json(self.positions),
            "orientations": _rows_to_json(self.orientations),
        }

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> SensorLayout:
        """Inverse of `to_dict` (None becomes NaN)."""
        names = tuple(str(n) for n in d["names"])
        n = len(names)
        return cls(
            names=names,
            types=np.asarray(d["types"], dtype=np.int8).reshape(n),
            positions=_rows_from_json(d["positions"], n),
            orientations=_rows_from_json(d["orientations"], n),
        )


def _rows_to_json(a: np.ndarray) -> list[list[float | None]]:
    """[C, 3] float → nested lists with None for NaN (JSON has no NaN)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]


def _rows_from_json(rows: list, n: int) -> np.ndarray:
    """Nested lists with None → [n, 3] float32 with NaN."""
    out = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    return out.reshape(n, 3)


# ----------------------------------------------------------------------------------------------------
# Layout from an mne.Info


MIN_AUTO_COVERAGE = 0.5  # "auto" uses a montage only if it names at least this share of the channels
AUTO_MONTAGES = ("standard_1005", "biosemi128", "biosemi64", "biosemi32", "GSN-HydroCel-257", "GSN-HydroCel-129")


def layout_from_info(
    info: mne.Info, montage: str = "auto", *, name: str | None = None
) -> tuple[SensorLayout, np.ndarray]:
    """The model channels of a recording and where they sit in ``info``.

    Keeps EEG, MAG and GRAD channels (MNE types 'eeg', 'mag', 'grad') in ``info`` order; bad channels
    are kept (preprocessing decides about them).

    - MEG: position ``loc[:3]`` and orientation (``loc[9:12]`` coil normal for MAG, ``loc[3:6]`` gradient
      direction for planar GRAD) go from the device to the head frame with ``info['dev_head_t']``
      (identity plus one warning when it is missing); orientations are unit length.
    - EEG: position ``loc[:3]`` (head frame). When it is all zeros or not finite, the position comes
      from a built-in montage, matched by cleaned, case-insensitive name (see `montage_name_keys`);
      with ``montage="auto"`` the one of `AUTO_MONTAGES` that names the most of those channels wins
      (10-05 names, BioSemi A1..D32 caps, EGI E1..E256 nets), and only if it names at least half of
      them: a cap whose labels fit no montage (e.g. BioSemi banks A1..H16) keeps unknown positions
      rather than getting 10-05's C1 for its own C1.
      Orientations are zeros.
    - Channels whose position stays unknown get NaN rows and one logged warning for the recording.

    Args:
        info: the recording's measurement info.
        montage: a built-in MNE montage used to fill missing EEG positions, or "auto" (see above).
        name: how log messages name the recording (e.g. its path).

    Returns:
        (layout, picks): layout with C channels (positions/orientations [C, 3] float32, metres, head
        frame); picks: [C] int64 indices into ``info['ch_names']``, layout row i = channel picks[i].
    """
    label = name or "recording"
    ch_types = info.get_channel_types()
    picks = np.array([i for i, t in enumerate(ch_types) if t in MODEL_CHANNEL_TYPES], dtype=np.int64)
    chs = [info["chs"][i] for i in picks]
    names = tuple(ch["ch_name"] for ch in chs)
    types = np.array([MODEL_CHANNEL_TYPES[ch_types[i]] for i in picks], dtype=np.int8)
    locs = np.array([ch["loc"] for ch in chs], dtype=np.float64).reshape(len(chs), 12)

    positions = locs[:, :3].copy()
    unknown = ~np.isfinite(positions).all(axis=1) | np.all(positions == 0.0, axis=1)
    positions[unknown] = np.nan
    orientations = np.zeros_like(positions)

    meg = types != SensorType.EEG
    if meg.any():
        _meg_to_head(info, chs, types, locs, meg, positions, orientations, label)

    eeg_missing = unknown & (types == SensorType.EEG)
    if eeg_missing.any():
        if montage == "auto":
            counts = {m: _count_matches(names, eeg_missing, m) for m in AUTO_MONTAGES}
            montage = max(counts, key=counts.get)
            if counts[montage] < MIN_AUTO_COVERAGE * eeg_missing.sum():
                montage = None  # names that fit no cap well: a partial match would be a wrong position
        if montage is not None:
            _fill_from_montage(names, eeg_missing, positions, montage)

    still = ~np.isfinite(positions).all(axis=1)
    if still.any():
        missing = [names[i] for i in np.flatnonzero(still)]
        listed = ", ".join(missing[:_MAX_LISTED])
        if len(missing) > _MAX_LISTED:
            listed += f", ... ({len(missing) - _MAX_LISTED} more)"
        logger.warning(
            "%s: %d channel(s) have no known position (not in the file, no match in montage %s): %s; "
            "they get the 'unknown position' embedding",
            label, len(missing), repr(montage) if montage else "(none of the built-in caps fits these names)", listed,
        )
    layout = SensorLayout(
        names=names,
        types=types,
        positions=positions.astype(np.float32),
        orientations=orientations.astype(np.float32),
    )
    return layout, picks


_MAX_LISTED = 64  # channel names listed in one warning


def _meg_to_head(
    info: mne.Info,
    chs: list[dict],
    types: np.ndarray,
    locs: np.ndarray,
    meg: np.ndarray,
    positions: np.ndarray,
    orientations: np.ndarray,
    label: str,
) -> None:
    """Fill MEG rows of ``positions``/``orientations`` [C, 3] in place: device frame -> head frame."""
    dev_head_t = info.get("dev_head_t")
    if dev_head_t is None:
        logger.warning("%s: no device->head transform (dev_head_t); MEG positions stay in the device frame", label)
        trans = np.eye(4)
    else:
        trans = np.asarray(dev_head_t["trans"], dtype=np.float64)
    rot, shift = trans[:3, :3], trans[:3, 3]
    # Channels already stored in the head frame are not transformed again.
    in_device = meg & np.array([ch["coord_frame"] != FIFF.FIFFV_COORD_HEAD for ch in chs])
    positions[in_device] = positions[in_device] @ rot.T + shift  # NaN rows stay NaN

    normal = np.where((types == SensorType.GRAD)[:, None], locs[:, 3:6], locs[:, 9:12])
    normal = np.where(in_device[:, None], normal @ rot.T, normal)
    norm = np.linalg.norm(normal, axis=1)
    ok = meg & np.isfinite(norm) & (norm > 0)
    orientations[ok] = normal[ok] / norm[ok, None]
    if (meg & ~ok).any():
        bad = [chs[i]["ch_name"] for i in np.flatnonzero(meg & ~ok)]
        logger.warning("%s: MEG channel(s) without a coil orientation (left as zeros): %s", label, ", ".join(bad))


# Label decorations around an electrode name. Only *reference* suffixes are removed, so referential
# derivations ("Fp1-Ref", "C3-A2", "O1-LE") find their electrode, while bipolar ones ("Fp1-F3", "C3-front")
# never match a single electrode and stay unknown. Cz is not treated as a reference: "C3-Cz" is ambiguous.
_PREFIX_RE = re.compile(r"^EEG[\s_:\-]+", re.IGNORECASE)  # "EEG Fp1", "EEG-Fp1"
_REF_SUFFIX_RE = re.compile(
    r"[\s_\-/]+(?:REF|LE|RE|AR|AVG|AV|CAR|LER|A1A2|M1M2|A1|A2|M1|M2)$", re.IGNORECASE
)  # "-Ref", "-REF", "-LE", "-A1"
_DUP_SUFFIX_RE = re.compile(r"-\d+$")  # MNE's running numbers for duplicate labels: "F1-Ref-0"


def montage_name_keys(name: str) -> list[str]:
    """Lower-case montage look-up keys for a channel label, most literal first.

    "EEG Fc5." -> ["eeg fc5.", "fc5"]; "EEG F1-Ref-1" -> [..., "f1-ref-1", "f1"]; "C3-front" -> ["c3-front"].
    Rules: strip whitespace, an "EEG" type prefix and trailing dots (BCI2000 pads names with dots);
    then drop one reference suffix (REF, LE, RE, AR, AVG, CAR, A1, A2, M1, M2, ...); last, MNE's
    "-N" duplicate counter followed by a reference suffix.
    """
    raw = name.strip()
    base = _PREFIX_RE.sub("", raw).rstrip(".").strip()
    keys = [raw, base, _REF_SUFFIX_RE.sub("", base)]
    undup = _DUP_SUFFIX_RE.sub("", base)
    if undup != base:
        keys.append(_REF_SUFFIX_RE.sub("", undup))
    out: list[str] = []
    for k in keys:
        k = k.lower()
        if k and k not in out:
            out.append(k)
    return out


# Montage names MNE deprecated (1.13) and will remove; use the new name when this MNE has it.
_MONTAGE_ALIASES = {
    "standard_1005": "colin27_1005",
    "standard_1020": "colin27_1020",
    "standard_alphabetic": "colin27_alphabetic",
    "standard_postfixed": "colin27_postfixed",
    "standard_prefixed": "colin27_prefixed",
    "standard_primed": "colin27_primed",
}


@lru_cache(maxsize=8)
def montage_positions(montage: str) -> Mapping[str, np.ndarray]:
    """Lower-cased channel name -> [3] float64 head-frame position (metres) of a built-in montage.

    Positions are what ``info.set_montage(montage)`` would give: the montage moved to the head frame
    defined by its fiducials (`mne.channels.transform_to_head`). Cached per montage name.
    """
    builtin = set(mne.channels.get_builtin_montages())
    kind = _MONTAGE_ALIASES.get(montage, montage)
    kind = kind if kind in builtin else montage
    mont = mne.channels.transform_to_head(mne.channels.make_standard_montage(kind))
    table = {ch.lower(): np.asarray(pos, dtype=np.float64) for ch, pos in mont.get_positions()["ch_pos"].items()}
    for pos in table.values():
        pos.flags.writeable = False
    return MappingProxyType(table)  # shared by every caller: read-only


def _count_matches(names: tuple[str, ...], missing: np.ndarray, montage: str) -> int:
    table = montage_positions(montage)
    return sum(any(k in table for k in montage_name_keys(names[i])) for i in np.flatnonzero(missing))


def _fill_from_montage(names: tuple[str, ...], missing: np.ndarray, positions: np.ndarray, montage: str) -> None:
    """Fill ``positions`` rows flagged in ``missing`` from the montage by cleaned name, in place."""
    table = montage_positions(montage)
    for i in np.flatnonzero(missing):
        for key in montage_name_keys(names[i]):
            pos = table.get(key)
            if pos is not None and np.isfinite(pos).all():
                positions[i] = pos
                break


def channel_type_counts(info: mne.Info) -> dict[str, int]:
    """Counts of every MNE channel type in ``info`` (not only model types), e.g. {"eeg": 60, "stim": 9}."""
    counts: dict[str, int] = {}
    for t in info.get_channel_types():
        counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def normalised_positions(layout: SensorLayout) -> np.ndarray:
    """[C, 3] float32 positions divided by one fixed scale per modality; NaN rows stay NaN.

    EEG rows are divided by `EEG_POSITION_SCALE_M` (0.1 m), MAG/GRAD rows by `MEG_POSITION_SCALE_M`
    (0.12 m), so scalp and helmet coordinates are both O(1) and comparable across recordings.
    """
    scale = np.where(layout.types == SensorType.EEG, EEG_POSITION_SCALE_M, MEG_POSITION_SCALE_M)
    return (layout.positions / scale[:, None].astype(np.float32)).astype(np.float32)
