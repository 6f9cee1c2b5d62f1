"""``python -m data inspect``: a readable summary of a recording or of a shard directory."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from .preprocess import PreprocessingSpec, RecordingPipeline
from .readers import integrity_notes, open_raw
from .sensors import SensorLayout, SensorType, channel_type_counts, layout_from_info
from .shards import MANIFEST, read_manifest

_MAX_UNKNOWN_LISTED = 64  # unknown-position channel names listed by inspect


def describe(path: str | Path) -> dict:
    """Summary dict of ``path`` with a human-readable ``text`` entry."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _describe_shards(path)
    return _describe_recording(path)


def _describe_recording(path: Path) -> dict:
    raw = open_raw(path, preload=False, allow_truncated=True)  # describe it, and say that it is truncated
    layout, _ = layout_from_info(raw.info, name=str(path))
    layout = _with_placed_from_signal(raw, layout, str(path))
    known = layout.position_known
    ann = Counter(raw.annotations.description)
    info = {
        "path": str(path),
        "sfreq": raw.info["sfreq"],
        "duration_s": raw.n_times / raw.info["sfreq"],
        "channel_types": channel_type_counts(raw.info),
        "model_channels": layout.counts(),
        "positions_found": int(known.sum()),
        "positions_missing": [n for n, k in zip(layout.names, known, strict=True) if not k],
        "position_sources": dict(zip(layout.names, layout.position_sources or (), strict=False)),
        "bads": list(raw.info["bads"]),
        "line_freq": raw.info.get("line_freq"),
        "annotations": dict(ann),
        "integrity": integrity_notes(raw),
    }
    lines = [
        f"{path}",
        f"  sfreq {info['sfreq']:g} Hz, duration {info['duration_s']:.2f} s",
        "  channels: " + ", ".join(f"{k} {v}" for k, v in info["channel_types"].items()),
        "  model input: " + ", ".join(f"{k} {v}" for k, v in info["model_channels"].items() if v),
        *position_lines(layout),
        f"  bads: {', '.join(info['bads']) or 'none'}",
        "  annotations: " + (", ".join(f"{k!r} x{v}" for k, v in ann.most_common(12)) or "none"),
    ]
    lines += [f"  TRUNCATED: {n}" for n in info["integrity"]]
    info["text"] = "\n".join(lines)
    return info


def _with_placed_from_signal(raw, layout: SensorLayout, name: str) -> SensorLayout:
    """``layout`` with the positions `data prepare` would infer from the signal for EEG channels no label rule
    places (`data.signal_positions`, on the same calibration chunk); unchanged when there are none or the
    recording cannot be preprocessed (its other problems are reported by ``prepare``)."""
    if layout.position_sources is None or all(layout.position_known | (layout.types != SensorType.EEG)):
        return layout
    try:
        placed = RecordingPipeline(raw, PreprocessingSpec(), name=name).layout
    except Exception:  # noqa: BLE001 - inspect describes what it can
        return layout
    found = dict(zip(placed.names, zip(placed.positions, placed.position_sources or (), strict=False), strict=True))
    rows = [found.get(n, (p, s)) for n, p, s in zip(layout.names, layout.positions, layout.position_sources, strict=True)]
    return dataclasses.replace(layout, positions=np.array([r[0] for r in rows], dtype=np.float32),
                               position_sources=tuple(r[1] for r in rows))


def position_lines(layout: SensorLayout, indent: str = "  ") -> list[str]:
    """Which rule gave each position: a count per rule, then the channels of the derived rules.

    E.g. "positions: 2 found, 1 missing; by rule: 1 bipolar, 1 offset, 1 unknown", then
    "bipolar: A1-Cz (A1+Cz)", "offset: C3-front (C3+2cm-anterior)", "unknown: EEG 000".
    """
    known = layout.position_known
    head = f"{indent}positions: {int(known.sum())} found, {int((~known).sum())} missing"
    if layout.position_sources is None:  # a layout built without rules recorded
        missing = [n for n, k in zip(layout.names, known, strict=True) if not k]
        return [head + (f" ({_listed(missing)})" if missing else "")]
    groups: dict[str, list[tuple[str, str]]] = {}
    for name, src in zip(layout.names, layout.position_sources, strict=True):
        rule, _, detail = src.partition(":")
        key = src if rule in ("file", "montage", "unknown") else rule  # montages by name; derived rules by kind
        groups.setdefault(key, []).append((name, detail))
    lines = [head + "; by rule: " + ", ".join(f"{len(v)} {k}" for k, v in groups.items())]
    for rule in ("alias", "offset", "bipolar"):
        if rule in groups:
            lines.append(f"{indent}  {rule}: " + ", ".join(f"{n} ({_rule_detail(rule, d)})" for n, d in groups[rule]))
    if "signal" in groups:
        how = sorted({d for _, d in groups["signal"]})
        lines.append(f"{indent}  signal (placed from the signal's correlations: {', '.join(how)}): "
                     + _listed([n for n, _ in groups["signal"]]))
    if "unknown" in groups:
        lines.append(f"{indent}  unknown (identified by name only): " + _listed([n for n, _ in groups["unknown"]]))
    return lines


def _rule_detail(rule: str, detail: str) -> str:
    """"Fp1-F3" -> "Fp1+F3" for bipolar pairs (the midpoint of both); other details as recorded."""
    return detail.replace("-", "+", 1) if rule == "bipolar" else detail


def _listed(names: list[str]) -> str:
    out = ", ".join(names[:_MAX_UNKNOWN_LISTED])
    return out + (f", ... ({len(names) - _MAX_UNKNOWN_LISTED} more)" if len(names) > _MAX_UNKNOWN_LISTED else "")


def _describe_shards(path: Path) -> dict:
    m = read_manifest(path)
    spec = m["preprocessing"]
    lines = [
        f"{path}: brainforge shards (schema {m['schema_version']})",
        f"  {m['n_windows']} windows of {spec['window_s']:g} s (stride {spec['stride_s']:g} s) at {spec['sfreq']:g} Hz "
        f"from {m['n_recordings']} recording(s)",
        "  channels (summed over recordings): " + ", ".join(f"{k} {v}" for k, v in m["channels_by_type_summed"].items() if v),
    ]
    for r in m["recordings"]:
        ch = ", ".join(f"{k} {v}" for k, v in r["channels"].items() if v)
        lines.append(f"    {r['recording']}: {r['n_windows']} windows, {ch}, subject {r['subject']}")
    if m["skipped"]:
        lines.append(f"  skipped {len(m['skipped'])}:")
        lines += [f"    {s['path']}: {s['reason']}" for s in m["skipped"]]
    return {**m, "text": "\n".join(lines)}
