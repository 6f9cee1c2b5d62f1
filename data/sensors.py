"""Sensor geometry: one `SensorLayout` per recording, built from ``info["chs"]``.

Types are EEG, MAG (magnetometers and axial gradiometers) and GRAD (planar gradiometers).
Positions are metres in the MNE head frame; unknown positions are NaN (never a silent zero).
Orientations are unit coil normals for MAG, the gradient direction for GRAD, zeros for EEG.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import mne
import numpy as np
from mne.io.constants import FIFF

logger = logging.getLogger("brainforge.data")

#: One shared scale per modality for `normalised_positions` (metres): about a head radius for EEG,
#: about the helmet radius for MEG, so normalised coordinates are O(1).
EEG_POSITION_SCALE_M = 0.1
MEG_POSITION_SCALE_M = 0.12

#: MNE channel type -> model sensor type; every other type (ref_meg, eog, ecg, stim, misc, ...) is dropped.
#: CTF/KIT/4D axial gradiometers are typed 'mag' by MNE and stay MAG.
MODEL_CHANNEL_TYPES: dict[str, int] = {"eeg": 0, "mag": 1, "grad": 2}


class SensorType(IntEnum):
    EEG = 0
    MAG = 1
    GRAD = 2


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
