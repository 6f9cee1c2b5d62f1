"""Sensor geometry: one `SensorLayout` per recording, built from ``info["chs"]``.

Types are EEG, MAG (magnetometers and axial gradiometers) and GRAD (planar gradiometers).
Positions are metres in the MNE head frame; unknown positions are NaN (never a silent zero).
Orientations are unit coil normals for MAG, the gradient direction for GRAD, zeros for EEG.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import IntEnum

import mne
import numpy as np
from mne.io.constants import FIFF

from .montage import (  # noqa: F401  (re-exported: data.sensors API)
    AUTO_MONTAGES,
    DIRECTIONAL_OFFSET_M,
    ELECTRODE_ALIASES,
    MIN_AUTO_COVERAGE,
    _pick_montage,
    montage_name_keys,
    montage_positions,
    resolve_montage_position,
)

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
    head frame, NaN rows where unknown; orientations: [C, 3] float32 (zeros for EEG);
    position_sources: None (not recorded) or C strings naming the rule that gave each position (see
    `layout_from_info`): "file", "montage:<montage>", "alias:T3->T7", "bipolar:Fp1-F3",
    "offset:C3+2cm-anterior", "signal:neighbours" / "signal:mds" (`data.signal_positions`) or "unknown".
    """

    names: tuple[str, ...]
    types: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    position_sources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.types.shape != (n,) or self.positions.shape != (n, 3) or self.orientations.shape != (n, 3):
            raise ValueError(
                f"SensorLayout: {n} names but types {self.types.shape}, positions {self.positions.shape}, "
                f"orientations {self.orientations.shape}"
            )
        if self.position_sources is not None:
            sources = tuple(str(x) for x in self.position_sources)
            if len(sources) != n:
                raise ValueError(f"SensorLayout: {n} names but {len(sources)} position_sources")
            object.__setattr__(self, "position_sources", sources)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def channel_ids(self) -> np.ndarray:
        """[C] int64 stable identities of the channel names (see `channel_identity`)."""
        return channel_identities(self.names)

    @property
    def position_known(self) -> np.ndarray:
        """[C] bool: True where the channel has a real position."""
        return ~np.isnan(self.positions).any(axis=1)

    @property
    def position_inferred(self) -> np.ndarray:
        """[C] bool: True where the position was inferred from the signal (`data.signal_positions`), not read
        from the file or found by label."""
        if self.position_sources is None:
            return np.zeros(len(self.names), dtype=bool)
        return np.array([s.startswith("signal:") for s in self.position_sources], dtype=bool)

    def select(self, idx) -> SensorLayout:
        """A layout of the channels at ``idx`` (indices or boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        sources = self.position_sources
        return SensorLayout(
            names=tuple(self.names[i] for i in idx),
            types=self.types[idx],
            positions=self.positions[idx],
            orientations=self.orientations[idx],
            position_sources=None if sources is None else tuple(sources[i] for i in idx),
        )

    def counts(self) -> dict[str, int]:
        """Channel counts by sensor type, e.g. {"eeg": 60, "mag": 102, "grad": 204}."""
        return {t.name.lower(): int((self.types == t).sum()) for t in SensorType}

    def to_dict(self) -> dict[str, list]:
        """JSON-friendly form for manifests: lists of names/ints/floats, NaN written as None.

        ``position_sources`` is written only when recorded (dicts of layouts without it are unchanged).
        """
        d = {
            "names": list(self.names),
            "types": [int(t) for t in self.types],
            "positions": _rows_to_json(self.positions),
            "orientations": _rows_to_json(self.orientations),
        }
        if self.position_sources is not None:
            d["position_sources"] = list(self.position_sources)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> SensorLayout:
        """Inverse of `to_dict` (None becomes NaN; no ``position_sources`` key gives None)."""
        names = tuple(str(n) for n in d["names"])
        n = len(names)
        sources = d.get("position_sources")
        return cls(
            names=names,
            types=np.asarray(d["types"], dtype=np.int8).reshape(n),
            positions=_rows_from_json(d["positions"], n),
            orientations=_rows_from_json(d["orientations"], n),
            position_sources=None if sources is None else tuple(str(x) for x in sources),
        )


#: Bits of a channel identity; ids are in [1, 2**IDENTITY_BITS), 0 means "no identity given".
IDENTITY_BITS = 62


def channel_identity(name: str) -> int:
    """Stable identity of a channel label: 62 bits of sha256 of its stripped, lower-cased name (never 0).

    The same label gets the same id in every recording and every process, and two labels of one
    recording get different ids (a collision among 62-bit hashes is ~1e-16 for 300 channels). The
    tokenizer gives a channel whose position is unknown an identity embedding built from these bits, so
    no two channels of a window share a decoder query.
    """
    digest = hashlib.sha256(name.strip().lower().encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "little") & ((1 << IDENTITY_BITS) - 1)) or 1


def channel_identities(names) -> np.ndarray:
    """[C] int64 `channel_identity` of each name."""
    return np.array([channel_identity(n) for n in names], dtype=np.int64)


def _rows_to_json(a: np.ndarray) -> list[list[float | None]]:
    """[C, 3] float → nested lists with None for NaN (JSON has no NaN)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]


def _rows_from_json(rows: list, n: int) -> np.ndarray:
    """Nested lists with None → [n, 3] float32 with NaN."""
    out = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    return out.reshape(n, 3)


# ----------------------------------------------------------------------------------------------------
# Layout from an mne.Info


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
      from a built-in montage by the label rules of `resolve_montage_position` (the name itself after
      cleaning, old 10-20 aliases, ``C3-front``-style offsets, bipolar midpoints); with
      ``montage="auto"`` the one of `AUTO_MONTAGES` that places the most of those channels wins
      (10-05 names, BioSemi A1..D32 caps, EGI E1..E256 nets), and only if it places at least half of
      them (Nihon Kohden "POL ..." auxiliary inputs are not counted): a cap whose labels fit no montage
      (e.g. BioSemi banks A1..H16) keeps unknown positions rather than getting 10-05's C1 for its own C1.
      Orientations are zeros.
    - Channels whose position stays unknown get NaN rows and one logged warning for the recording.
    - ``layout.position_sources`` records the rule behind each row: "file" (``loc``, every MEG channel
      with a position), "montage:<montage>", "alias:T3->T7", "offset:C3+2cm-anterior",
      "bipolar:Fp1-F3" or "unknown".

    Args:
        info: the recording's measurement info.
        montage: a built-in MNE montage used to fill missing EEG positions, or "auto" (see above).
        name: how log messages name the recording (e.g. its path).

    Returns:
        (layout, picks): layout with C channels (positions/orientations [C, 3] float32, metres, head
        frame); picks: [C] int64 indices into ``info['ch_names']``, layout row i = channel picks[i].

    The result is remembered per channel set (names, kinds, units, coil types, frames, ``loc``), ``dev_head_t``
    and ``montage`` (the last `LAYOUT_CACHE_SIZE`), with its warnings, which are logged again (naming ``name``)
    at every call: a server sees one montage again and again, and placing 64 labels in the built-in montages
    costs more than filtering a 10 s request (issue 14). Each call returns its own copies of the arrays.
    """
    key = _layout_key(info, montage)
    with _LAYOUT_LOCK:
        hit = _LAYOUT_CACHE.get(key)
        if hit is not None:
            _LAYOUT_CACHE.move_to_end(key)
    if hit is None:
        hit = _build_layout(info, montage)
        with _LAYOUT_LOCK:
            _LAYOUT_CACHE[key] = hit
            while len(_LAYOUT_CACHE) > LAYOUT_CACHE_SIZE:
                _LAYOUT_CACHE.popitem(last=False)
    layout, picks, notes = hit
    for fmt, args in notes:
        logger.warning("%s: " + fmt, name or "recording", *args)
    return replace(layout, types=layout.types.copy(), positions=layout.positions.copy(),
                   orientations=layout.orientations.copy()), picks.copy()


LAYOUT_CACHE_SIZE = 64
_LAYOUT_CACHE: OrderedDict[tuple, tuple[SensorLayout, np.ndarray, list]] = OrderedDict()
_LAYOUT_LOCK = threading.Lock()


def _layout_key(info: mne.Info, montage: str | None) -> tuple:
    """What `layout_from_info` reads of ``info``: every channel's name, kind, unit, coil type (these give MNE's
    channel type), coordinate frame and ``loc``, and the device-to-head transform."""
    trans = info.get("dev_head_t")
    return (montage, None if trans is None else np.asarray(trans["trans"], dtype=np.float64).tobytes(),
            tuple((ch["ch_name"], int(ch["kind"]), int(ch["unit"]), int(ch["coil_type"]), int(ch["coord_frame"]),
                   np.asarray(ch["loc"], dtype=np.float64).tobytes()) for ch in info["chs"]))


def _build_layout(info: mne.Info, montage: str | None) -> tuple[SensorLayout, np.ndarray, list]:
    """`layout_from_info` without the cache: (layout, picks, warnings as (format, args) without the recording's
    name)."""
    notes: list[tuple[str, tuple]] = []
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
    sources = ["unknown" if u else "file" for u in unknown]

    meg = types != SensorType.EEG
    if meg.any():
        _meg_to_head(info, chs, types, locs, meg, positions, orientations, notes)

    eeg_missing = unknown & (types == SensorType.EEG)
    if eeg_missing.any():
        if montage == "auto":
            montage = _pick_montage(names, eeg_missing)
        if montage is not None:
            for i in np.flatnonzero(eeg_missing):
                hit = resolve_montage_position(names[i], montage)
                if hit is not None:
                    positions[i], sources[i] = hit

    still = ~np.isfinite(positions).all(axis=1)
    if still.any():
        missing = [names[i] for i in np.flatnonzero(still)]
        listed = ", ".join(missing[:_MAX_LISTED])
        if len(missing) > _MAX_LISTED:
            listed += f", ... ({len(missing) - _MAX_LISTED} more)"
        notes.append((
            "%d channel(s) have no known position (not in the file, no match in montage %s): %s; "
            "they are identified by name, and EEG ones placed from the signal's correlations where they can be "
            "(data.signal_positions)",
            (len(missing), repr(montage) if montage else "(none of the built-in caps fits these names)", listed),
        ))
    layout = SensorLayout(
        names=names,
        types=types,
        positions=positions.astype(np.float32),
        orientations=orientations.astype(np.float32),
        position_sources=tuple(sources),
    )
    return layout, picks, notes


_MAX_LISTED = 64  # channel names listed in one warning


def _meg_to_head(
    info: mne.Info,
    chs: list[dict],
    types: np.ndarray,
    locs: np.ndarray,
    meg: np.ndarray,
    positions: np.ndarray,
    orientations: np.ndarray,
    notes: list[tuple[str, tuple]],
) -> None:
    """Fill MEG rows of ``positions``/``orientations`` [C, 3] in place: device frame -> head frame. Warnings go to
    ``notes`` as (format, args) without the recording's name."""
    dev_head_t = info.get("dev_head_t")
    if dev_head_t is None:
        notes.append(("no device->head transform (dev_head_t); MEG positions stay in the device frame", ()))
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
        notes.append(("MEG channel(s) without a coil orientation (left as zeros): %s", (", ".join(bad),)))


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
