"""``python -m data inspect``: a readable summary of a recording or of a shard directory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .readers import integrity_notes, open_raw
from .sensors import channel_type_counts, layout_from_info
from .shards import MANIFEST, read_manifest


def describe(path: str | Path) -> dict:
    """Summary dict of ``path`` with a human-readable ``text`` entry."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _describe_shards(path)
    return _describe_recording(path)


def _describe_recording(path: Path) -> dict:
    raw = open_raw(path, preload=False, allow_truncated=True)  # describe it, and say that it is truncated
    layout, _ = layout_from_info(raw.info)
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
        f"  positions: {info['positions_found']} found, {len(info['positions_missing'])} missing"
        + (f" ({', '.join(info['positions_missing'][:10])}{' ...' if len(info['positions_missing']) > 10 else ''})" if info["positions_missing"] else ""),
        f"  bads: {', '.join(info['bads']) or 'none'}",
        "  annotations: " + (", ".join(f"{k!r} x{v}" for k, v in ann.most_common(12)) or "none"),
    ]
    lines += [f"  TRUNCATED: {n}" for n in info["integrity"]]
    info["text"] = "\n".join(lines)
    return info


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
