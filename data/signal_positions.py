"""Positions for EEG channels that no label rule places, inferred from the signal itself.

Why: a channel without a position can only be told apart from the others by its name, and a name says
nothing about which channels it resembles. The tokenizer pools channels onto its latents by sensor
embedding, so channels with arbitrary identities are pooled arbitrarily: measured on the held-out
32-channel EEGLAB recording (no positions), every latent mixed ~2.6 unrelated channels per attention
head, and the reconstruction's channel-to-channel correlation rose from 0.51 to 0.83. Yet 4 spatial
components explain that recording to PCC 0.95: its channels are strongly structured, the tokenizer just
cannot see the structure. Volume conduction makes nearby electrodes correlate, so the correlation
matrix is a map of the scalp, and it can be read back into positions:

- ``"signal:neighbours"``: when at least 3 EEG channels of the recording have a position, an unknown
  channel is placed at the correlation-weighted mean of the 3 known channels it correlates with most
  (weights r^2, only r >= ``MIN_CORRELATION``), pushed out to their radius. A channel that correlates
  with none of them stays unknown.
- ``"signal:mds"``: when fewer than 3 have one and at least 3 do not, classical multidimensional scaling
  of the correlation distance sqrt(2 (1 - r)) gives a 2-D map, which is wrapped onto the upper half of
  a 0.095 m sphere (an azimuthal projection, as a topomap is drawn). The map's orientation is arbitrary
  (MDS knows distances, not left from right); it is made deterministic, not anatomical.

This is a recording-level property, measured once (on the calibration chunk of ``data prepare``, or on
a served request's signal), like a position read from a file: it costs no tokens, and ``decode`` needs it
as it needs any position. Every placed channel is recorded in ``SensorLayout.position_sources``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from .sensors import SensorLayout, SensorType

log = logging.getLogger("brainforge.data")

MIN_CORRELATION = 0.3  # below this a known channel is not evidence of proximity
NEIGHBOURS = 3
MDS_RADIUS_M = 0.095
MDS_MAX_POLAR_RAD = 1.75  # ~100 degrees from the vertex: the 10-20 cap reaches just below the equator


def _correlation(signal: np.ndarray) -> np.ndarray:
    """Pearson correlation between rows [C, T] -> [C, C]; flat rows correlate 0 with everything."""
    x = signal.astype(np.float64) - signal.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1))
    x = x / np.where(norm > 0, norm, np.inf)[:, None]
    return x @ x.T


def _by_neighbours(corr: np.ndarray, known_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """corr [U, K] of unknown vs known channels, known positions [K, 3] -> (positions [U, 3], placed [U])."""
    centre = known_pos.mean(axis=0)
    radius = np.linalg.norm(known_pos - centre, axis=1).mean()
    out = np.full((len(corr), 3), np.nan)
    for u, row in enumerate(corr):
        best = np.argsort(row)[::-1][:NEIGHBOURS]
        best = best[row[best] >= MIN_CORRELATION]
        if best.size == 0:
            continue
        w = row[best] ** 2
        p = (w[:, None] * known_pos[best]).sum(axis=0) / w.sum() - centre
        out[u] = centre + p * (radius / max(np.linalg.norm(p), 1e-9))
    return out, np.isfinite(out).all(axis=1)


def _by_mds(corr: np.ndarray) -> np.ndarray:
    """corr [U, U] -> positions [U, 3] on the upper half of a sphere (see the module docstring)."""
    n = len(corr)
    d2 = np.clip(2.0 * (1.0 - corr), 0.0, None)
    j = np.eye(n) - 1.0 / n
    w, v = np.linalg.eigh(-0.5 * j @ d2 @ j)
    top = np.argsort(w)[::-1][:2]
    v = v[:, top] * np.sign(v[np.abs(v[:, top]).argmax(axis=0), np.arange(2)])  # deterministic signs
    xy = v * np.sqrt(np.clip(w[top], 0.0, None))
    xy -= xy.mean(axis=0)
    rho = np.linalg.norm(xy, axis=1)
    theta = rho * (MDS_MAX_POLAR_RAD / max(rho.max(), 1e-12))
    phi = np.arctan2(xy[:, 1], xy[:, 0])
    return MDS_RADIUS_M * np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)


def positions_from_signal(
    signal: np.ndarray, positions: np.ndarray, is_eeg: np.ndarray
) -> tuple[np.ndarray, list[str | None]]:
    """Fill in the positions of EEG channels without one from the signal's correlations.

    signal [C, T] (any units; finite), positions [C, 3] metres, head frame (NaN rows = unknown),
    is_eeg [C] bool. Returns (positions [C, 3] float32 with the placed rows filled in, and per channel
    the rule that placed it: ``"signal:neighbours"``, ``"signal:mds"`` or None where nothing changed).
    """
    positions = np.array(positions, dtype=np.float64)
    rules: list[str | None] = [None] * len(positions)
    finite = np.isfinite(positions).all(axis=1)
    unknown = np.flatnonzero(is_eeg & ~finite)
    known = np.flatnonzero(is_eeg & finite)
    if unknown.size == 0 or signal.shape[1] < 2:
        return positions.astype(np.float32), rules
    if known.size >= NEIGHBOURS:
        corr = _correlation(signal[np.concatenate([unknown, known])])[: unknown.size, unknown.size :]
        placed_pos, placed = _by_neighbours(corr, positions[known])
        rule = "signal:neighbours"
    elif unknown.size >= 3:
        placed_pos, placed, rule = _by_mds(_correlation(signal[unknown])), np.ones(unknown.size, bool), "signal:mds"
    else:
        return positions.astype(np.float32), rules
    for i, p, ok in zip(unknown, placed_pos, placed, strict=True):
        if ok:
            positions[i] = p
            rules[i] = rule
    return positions.astype(np.float32), rules


def with_signal_positions(layout: SensorLayout, signal: np.ndarray, name: str = "") -> SensorLayout:
    """``layout`` with its unplaced EEG channels placed from ``signal`` [C, T] (rows = layout's channels);
    ``position_sources`` names the rule for each placed channel. Unchanged when nothing is placed."""
    is_eeg = layout.types == SensorType.EEG
    positions, rules = positions_from_signal(signal, layout.positions, is_eeg)
    if not any(rules):
        return layout
    placed = [n for n, r in zip(layout.names, rules, strict=True) if r]
    log.info("%s: %d EEG channel(s) without a position placed from the signal (%s): %s",
             name or "recording", len(placed), next(r for r in rules if r), ", ".join(placed[:16]))
    sources = layout.position_sources or tuple("unknown" if np.isnan(p).any() else "file" for p in layout.positions)
    sources = tuple(r or s for r, s in zip(rules, sources, strict=True))
    return dataclasses.replace(layout, positions=positions, position_sources=sources)
