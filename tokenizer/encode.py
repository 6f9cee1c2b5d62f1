"""``python -m tokenizer encode``: window shards -> token shards ([N_latent, F, L] int16 per window).

Token items keep the window order of the input shards (recordings in manifest order, windows in time
order), so consecutive items of one recording are consecutive windows. ``manifest.json`` records, per
recording, the item range [start, stop) and its window times, plus the tokenizer and source manifests.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from data import check_item_fields, check_shard_index, read_manifest
from data.atomic import atomic_directory, content_hash, write_json_atomic
from data.dataset import WindowCollator, window_dataset
from tokenizer.package import load_package, package_reference

TOKEN_SCHEMA_VERSION = 1


@lru_cache(maxsize=2)
def _model(package: str):
    return load_package(package).model


def _encode_range(job: tuple[str, str, int, int, int]):
    """litdata ``fn``: encode windows [start, stop) of the shards; yields token items in order."""
    package, shards, start, stop, batch_size = job
    model, ds, collate = _model(package), window_dataset(shards), WindowCollator(max_channels=None)
    for lo in range(start, stop, batch_size):
        batch = collate([ds[i] for i in range(lo, min(lo + batch_size, stop))])
        with torch.no_grad():
            idx = model.encode(batch["signal"], batch["types"], batch["positions"], batch["orientations"], batch["channel_mask"],
                               batch["channel_ids"])
        n_ch = batch["channel_mask"].sum(1).tolist()
        for j in range(idx.shape[0]):
            yield check_item_fields({
                "indices": idx[j].numpy().astype(np.int16),
                "recording": str(batch["recording"][j]),
                "subject": str(batch["subject"][j]),
                "t0_s": float(batch["t0_s"][j]),
                "label": str(batch["label"][j] or ""),
                "n_channels": int(n_ch[j]),
            }, shards)


def encode_shards(
    package: str | Path,
    shards: str | Path,
    out: str | Path,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Encode every window of ``shards`` with the tokenizer ``package``; returns the token manifest."""
    import litdata

    package, shards = str(Path(package).resolve()), str(Path(shards).resolve())
    model = _model(package)
    if model.config.codebook_size > np.iinfo(np.int16).max:
        raise ValueError(f"codebook_size {model.config.codebook_size} does not fit int16 token shards")
    src = read_manifest(shards)
    n = len(window_dataset(shards))
    per_job = max(batch_size, 16 * batch_size)
    jobs = [(package, shards, lo, min(lo + per_job, n), batch_size) for lo in range(0, n, per_job)]
    t0 = time.perf_counter()
    with atomic_directory(out, overwrite) as tmp:
        litdata.optimize(
            fn=_encode_range, inputs=jobs, output_dir=str(tmp / "shards"), chunk_bytes="64MB",
            num_workers=1, reorder_files=False, verbose=progress,
        )
        for f in (tmp / "shards").iterdir():
            os.replace(f, tmp / f.name)
        shutil.rmtree(tmp / "shards")
        manifest = _token_manifest(tmp, package, src, model.config, time.perf_counter() - t0)
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def _token_manifest(tmp: Path, package: str, src: dict, cfg, seconds: float) -> dict:
    from litdata import StreamingDataset

    check_shard_index(tmp)
    items = StreamingDataset(str(tmp))
    recs: dict[str, dict] = {}
    for i in range(len(items)):
        it = items[i]
        r = recs.setdefault(it["recording"], {"recording": it["recording"], "subject": it["subject"], "start": i, "t0_s": []})
        r["stop"] = i + 1
        r["t0_s"].append(it["t0_s"])
    return {
        "schema_version": TOKEN_SCHEMA_VERSION,
        "kind": "tokens",
        "created_unix": time.time(),
        "n_windows": len(items),
        "token_shape": [cfg.n_latent, cfg.n_frames, cfg.rvq_levels],
        "codebook_size": cfg.codebook_size,
        "tokenizer": package_reference(package),
        "preprocessing": src["preprocessing"],
        "source_shards": {"n_windows": src["n_windows"], "shard_sha256": src["shard_sha256"]},
        "recordings": list(recs.values()),
        "encode_seconds": round(seconds, 3),
        "shard_sha256": {p.name: content_hash(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != "manifest.json"},
    }


def read_token_manifest(path: str | Path) -> dict:
    m = json.loads((Path(path) / "manifest.json").read_text())
    if m.get("kind") != "tokens":
        raise ValueError(f"{path} holds window shards, not token shards: run `python -m tokenizer encode` first")
    check_shard_index(path)  # never unpickle: refuse indexes declaring pickled fields
    return m
