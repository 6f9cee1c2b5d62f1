"""Segments of consecutive token windows for pretraining, read through `litdata.StreamingDataset`.

Design: `SegmentDataset` *is* a ``StreamingDataset`` over the token shards, and every window item is the
**anchor** of one segment. litdata therefore does everything it normally does with the window indices:
it splits chunks (and intervals inside chunks) between nodes, ranks and workers, so ranks get disjoint
anchors; it shuffles chunk and item order per epoch from its seed; and ``StreamingDataLoader``'s
``state_dict`` counts yielded anchors, so ``ckpt_path="last"`` resumes mid-epoch at the next anchor.
Because one anchor gives exactly one segment, litdata's counters stay exact (skipping anchors would break
its resume arithmetic).

``__getitem__`` maps anchor window ``i`` of a recording with item range [start, stop) (from the token
manifest) to a segment start offset: ``i`` itself while ``i + S <= stop``, else (the last S-1 windows of a
recording) wrapped round to ``start + (i - start) mod (stop - start - S + 1)``. So each epoch visits every
valid segment start of every recording once, plus S-1 extra starts, and no segment crosses a recording.
A recording shorter than S windows gives one segment padded at the end; ``valid`` marks real frames.

Item: ``indices`` [N_latent, S*F, L] int64, ``valid`` [S*F] bool, ``recording`` str, ``start`` int (item
index of the segment's first window), ``anchor`` int (the litdata index). Neighbouring windows are read
by index; for remote shards across a chunk boundary that downloads the next chunk too.
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex

from data.shards import check_shard_index
from runkit.entry import OptionError
from tokenizer.encode import read_token_manifest

log = logging.getLogger(__name__)


class SegmentDataset(StreamingDataset):
    """Token shards -> segments of ``segment_windows`` consecutive windows of one recording (see module doc)."""

    def __init__(self, tokens: str | Path, segment_windows: int = 5, shuffle: bool = False, seed: int = 42,
                 manifest: dict | None = None, **kwargs) -> None:
        """``manifest``: the token manifest dict, needed only for object-store URLs (read locally otherwise)."""
        if segment_windows < 1:
            raise OptionError(f"segment_windows must be >= 1, got {segment_windows}")
        local = "://" not in str(tokens)
        path = str(Path(tokens).resolve()) if local else str(tokens)
        if manifest is None:
            if not local:
                raise ValueError(f"{tokens}: pass the token manifest dict for object-store shards")
            manifest = read_token_manifest(path)
        if local:
            check_shard_index(path)  # never unpickle: refuse indexes declaring pickled fields
        # drop_last=None: litdata drops the tail under DDP so every rank yields the same number of
        # segments (unequal counts would leave one rank waiting in a collective at the end of an epoch)
        kwargs.setdefault("drop_last", None)
        # full in-chunk permutation (litdata's default shuffles within blocks of 256 items, and a chunk holds
        # its recordings one after another: batches would come from one recording for tens of steps)
        kwargs.setdefault("item_shuffle_window", 0)
        super().__init__(path, shuffle=shuffle, seed=seed, **kwargs)
        self.segment_windows = segment_windows
        self.token_shape = tuple(manifest["token_shape"])  # (N_latent, F, L)
        self.codebook_size = int(manifest["codebook_size"])
        self.n_windows = int(manifest["n_windows"])  # all ranks together
        recs = sorted(manifest["recordings"], key=lambda r: r["start"])
        self._starts = [int(r["start"]) for r in recs]
        self._stops = [int(r["stop"]) for r in recs]
        self._names = [r["recording"] for r in recs]
        short = [n for n, a, b in zip(self._names, self._starts, self._stops, strict=True) if b - a < segment_windows]
        if short:
            log.warning("%d recording(s) shorter than %d windows give padded segments: %s", len(short), segment_windows, short[:5])

    def segment_start(self, anchor: int) -> tuple[int, int, int]:
        """anchor window index -> (recording number, segment start item, number of real windows)."""
        r = bisect.bisect_right(self._starts, anchor) - 1
        if r < 0 or anchor >= self._stops[r]:
            raise IndexError(f"window {anchor} is in no recording of the token manifest")
        start, stop, s = self._starts[r], self._stops[r], self.segment_windows
        n = stop - start
        if n <= s:
            return r, start, n
        n_starts = n - s + 1
        off = anchor - start
        return r, start + (off if off < n_starts else off % n_starts), s

    def code_counts(self, max_windows: int = 2048) -> torch.Tensor:
        """Code histogram [L, K] int64 over up to ``max_windows`` evenly spaced windows (all of them if fewer).

        Deterministic (the same windows on every rank), so ranks that each call it agree."""
        n = self.n_windows
        picks = np.unique(np.linspace(0, n - 1, num=min(n, max_windows)).round().astype(int)) if n else []
        _, _, levels = self.token_shape
        counts = torch.zeros(levels, self.codebook_size, dtype=torch.long)
        for i in picks:
            codes = torch.as_tensor(np.asarray(StreamingDataset.__getitem__(self, int(i))["indices"]), dtype=torch.long)
            counts += torch.stack([torch.bincount(codes[..., lv].flatten(), minlength=self.codebook_size) for lv in range(levels)])
        return counts

    def __getitem__(self, index: ChunkedIndex | int) -> dict:
        anchor = index.index if isinstance(index, ChunkedIndex) else int(index)
        r, first, n_real = self.segment_start(anchor)
        n_lat, f, levels = self.token_shape
        idx = np.zeros((n_lat, self.segment_windows * f, levels), dtype=np.int64)
        for w in range(n_real):
            item = super().__getitem__(index if first + w == anchor else first + w)
            if item["recording"] != self._names[r]:
                raise RuntimeError(f"token item {first + w} is from {item['recording']!r}, manifest says {self._names[r]!r}")
            idx[:, w * f:(w + 1) * f] = np.asarray(item["indices"], dtype=np.int64)
        valid = np.zeros(self.segment_windows * f, dtype=bool)
        valid[: n_real * f] = True
        return {"indices": torch.from_numpy(idx), "valid": torch.from_numpy(valid), "recording": self._names[r],
                "start": first, "anchor": anchor}


def collate_segments(items: list[dict]) -> dict:
    """Items -> indices [B, N, T, L] int64, valid [B, T] bool, recording list[str], start/anchor [B] int64."""
    return {
        "indices": torch.stack([it["indices"] for it in items]),
        "valid": torch.stack([it["valid"] for it in items]),
        "recording": [it["recording"] for it in items],
        "start": torch.tensor([it["start"] for it in items]),
        "anchor": torch.tensor([it["anchor"] for it in items]),
    }


class PretrainDataModule(L.LightningDataModule):
    """Token shards -> `StreamingDataLoader`s of segments (node/rank/worker-disjoint, resumable mid-epoch).

    Args:
        tokens: token shard directory (``python -m tokenizer encode``).
        val_tokens: optional token shards of held-out recordings.
        segment_windows: consecutive windows per segment (5 x 2 s = 10 s = 40 frames by default).
        batch_size: segments per batch per device.
        num_workers: loader worker processes.
        seed: shuffle seed (the order is the same for every run with the same seed and world size).
    """

    def __init__(
        self,
        tokens: str,
        val_tokens: str | None = None,
        segment_windows: int = 5,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_ds: SegmentDataset | None = None
        self.val_ds: SegmentDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train_ds is None:
            self.train_ds = SegmentDataset(hp.tokens, hp.segment_windows, shuffle=True, seed=hp.seed)
        if hp.val_tokens and self.val_ds is None:
            self.val_ds = SegmentDataset(hp.val_tokens, hp.segment_windows, shuffle=False, seed=hp.seed)

    def _loader(self, ds: SegmentDataset, train: bool) -> StreamingDataLoader:
        hp = self.hparams
        return StreamingDataLoader(ds, batch_size=hp.batch_size, num_workers=hp.num_workers,
                                   collate_fn=collate_segments, drop_last=train)

    def train_dataloader(self) -> StreamingDataLoader:
        return self._loader(self.train_ds, train=True)

    def val_dataloader(self):
        return self._loader(self.val_ds, train=False) if self.val_ds is not None else []

    @property
    def token_manifest(self) -> dict:
        return read_token_manifest(self.hparams.tokens)
