"""Reading window shards: `WindowCollator` and the Lightning `WindowDataModule` later stages reuse.

Batches mix recordings with different channel counts. The collator pads the channel axis to the
largest item in the batch and returns ``channel_mask``; with ``max_channels`` each larger item is
reduced to a fresh random subset of that many channels, so a 306-channel MEG window costs no more
than ``max_channels`` EEG channels and padding stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from torch import Tensor

from runkit.entry import OptionError

from .sensors import channel_identities
from .shards import check_shard_index, read_manifest

META_KEYS = ("recording", "subject", "t0_s", "label")


class WindowCollator:
    """Items -> batch dict.

    signal [B, C, T] float32, types [B, C] int64, positions / orientations [B, C, 3] float32
    (padding rows zero, unknown positions NaN), channel_ids [B, C] int64 (from the item's ``channel_ids``,
    else from its ``channels`` names, else 0 = no identity), channel_mask [B, C] bool, position_inferred [B, C]
    bool (position placed from the signal; False in shards written before the field), and lists for the
    metadata keys (recording, subject, t0_s, label).
    """

    def __init__(self, max_channels: int | None = None, seed: int = 0):
        self.max_channels = max_channels
        self.rng = np.random.default_rng(seed)

    def _subset(self, item: dict) -> dict:
        c = item["signal"].shape[0]
        if self.max_channels is None or c <= self.max_channels:
            return item
        keep = np.sort(self.rng.choice(c, self.max_channels, replace=False))
        item = {**item, "channel_ids": _item_channel_ids(item)}
        per_channel = ("signal", "types", "positions", "orientations", "channel_ids", "position_inferred")
        return {k: (v[keep] if k in per_channel else v) for k, v in item.items()}

    def __call__(self, items: list[dict]) -> dict:
        items = [self._subset(it) for it in items]
        b, c, t = len(items), max(it["signal"].shape[0] for it in items), items[0]["signal"].shape[1]
        signal = torch.zeros(b, c, t)
        types = torch.zeros(b, c, dtype=torch.long)
        pos = torch.zeros(b, c, 3)
        ori = torch.zeros(b, c, 3)
        ids = torch.zeros(b, c, dtype=torch.long)
        mask = torch.zeros(b, c, dtype=torch.bool)
        inferred = torch.zeros(b, c, dtype=torch.bool)
        for i, it in enumerate(items):
            n = it["signal"].shape[0]
            signal[i, :n] = torch.as_tensor(np.asarray(it["signal"], dtype=np.float32))
            types[i, :n] = torch.as_tensor(np.asarray(it["types"], dtype=np.int64))
            pos[i, :n] = torch.as_tensor(np.asarray(it["positions"], dtype=np.float32))
            ori[i, :n] = torch.as_tensor(np.asarray(it["orientations"], dtype=np.float32))
            ids[i, :n] = torch.as_tensor(_item_channel_ids(it))
            mask[i, :n] = True
            if "position_inferred" in it:
                inferred[i, :n] = torch.as_tensor(np.asarray(it["position_inferred"]).astype(bool))
        batch = {"signal": signal, "types": types, "positions": pos, "orientations": ori, "channel_ids": ids,
                 "channel_mask": mask, "position_inferred": inferred}
        for k in META_KEYS:
            batch[k] = [it.get(k) for it in items]
        return batch


def offset_augmented(signal: Tensor, channel_mask: Tensor, scale: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """signal [B, C, T] + one offset per item, N(0, scale^2), on its real channels (``channel_mask`` [B, C]) only."""
    offset = torch.randn(signal.shape[0], 1, 1, generator=generator, dtype=signal.dtype) * scale
    return signal + offset * channel_mask[..., None].to(signal.dtype)


class OffsetAugmented:
    """A collate function (e.g. a `WindowCollator`) whose batches get `offset_augmented`, drawn from its own seeded
    generator: the fine-tuning training loader's ``--data.offset_augment``."""

    def __init__(self, collate, scale: float, seed: int = 0) -> None:
        self.collate, self.scale = collate, scale
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, items: list[dict]) -> dict:
        batch = self.collate(items)
        batch["signal"] = offset_augmented(batch["signal"], batch["channel_mask"], self.scale, self.generator)
        return batch


def _item_channel_ids(item: dict) -> np.ndarray:
    """[C] int64 identities: the item's own, else from its channel names, else zeros (no identity)."""
    if item.get("channel_ids") is not None:
        return np.asarray(item["channel_ids"], dtype=np.int64)
    if item.get("channels") is not None:
        return channel_identities(item["channels"])
    return np.zeros(item["signal"].shape[0], dtype=np.int64)


def window_dataset(path: str | Path, shuffle: bool = False, seed: int = 42) -> StreamingDataset:
    """A `litdata.StreamingDataset` over a prepared shard directory (local path or object-store URL)."""
    if "://" not in str(path):
        read_manifest(path)  # clear error when this is not a shard directory
        check_shard_index(path)  # never unpickle: refuse indexes declaring pickled fields
        path = str(Path(path).resolve())
    # drop_last=None: litdata drops the uneven tail under DDP, so every rank gets as many batches.
    # item_shuffle_window=0: a full permutation inside each chunk. litdata's default (256) only shuffles within
    # blocks of 256 items, and a chunk stores its recordings one after another: batches would come from one
    # recording for tens of steps.
    return StreamingDataset(str(path), shuffle=shuffle, seed=seed, drop_last=None, item_shuffle_window=0)


def recording_weights(recordings: list[str]) -> np.ndarray:
    """Per-window sampling weights [N] float64 that give every recording the same total weight.

    A recording of 349 single-channel windows and one of 2 windows of 64 channels are then drawn
    equally often, instead of the long file making up most of training.
    """
    counts: dict[str, int] = {}
    for r in recordings:
        counts[r] = counts.get(r, 0) + 1
    return np.array([1.0 / counts[r] for r in recordings], dtype=np.float64)


class WindowsByIndex(torch.utils.data.Dataset):
    """Map-style view of a `StreamingDataset` (an IterableDataset, which a sampler cannot drive)."""

    def __init__(self, streaming: StreamingDataset) -> None:
        self.streaming = streaming

    def __len__(self) -> int:
        return len(self.streaming)

    def __getitem__(self, index: int) -> dict:
        return self.streaming[int(index)]


class WindowDataModule(L.LightningDataModule):
    """Train/val window shards -> data loaders (rank- and node-aware).

    Args:
        train: shard directory for training.
        val: optional shard directory for validation (prepare held-out recordings separately).
        batch_size: windows per batch per device.
        num_workers: loader worker processes.
        max_channels: cap on channels per item (random subset per item); None keeps all.
        seed: shuffle and channel-subset seed.
        balance: ``"window"``: every window equally likely (litdata's `StreamingDataLoader`, resumable
            mid-epoch); ``"recording"``: every recording equally likely (`recording_weights`, drawn with
            replacement, an epoch = as many windows as the set holds). Reading which recording each window
            comes from costs one pass over the shards at start-up.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        max_channels: int | None = 64,
        seed: int = 42,
        balance: str = "window",
    ):
        super().__init__()
        if balance not in ("window", "recording"):
            raise OptionError(f"WindowDataModule: balance must be 'window' or 'recording', got {balance!r}")
        self.save_hyperparameters()
        self.train_ds: StreamingDataset | None = None
        self.val_ds: StreamingDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train_ds is None:
            self.train_ds = window_dataset(hp.train, shuffle=hp.balance == "window", seed=hp.seed)
        if hp.val and self.val_ds is None:
            self.val_ds = window_dataset(hp.val, shuffle=False, seed=hp.seed)

    def _loader(self, ds: StreamingDataset, train: bool) -> StreamingDataLoader:
        hp = self.hparams
        return StreamingDataLoader(
            ds,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            collate_fn=WindowCollator(hp.max_channels, seed=hp.seed if train else hp.seed + 1),
            drop_last=train,
        )

    def _balanced_loader(self) -> torch.utils.data.DataLoader:
        hp, ds = self.hparams, self.train_ds
        weights = recording_weights([ds[i]["recording"] for i in range(len(ds))])
        sampler = torch.utils.data.WeightedRandomSampler(
            weights, num_samples=len(ds), replacement=True, generator=torch.Generator().manual_seed(hp.seed)
        )
        return torch.utils.data.DataLoader(
            WindowsByIndex(ds),
            batch_size=hp.batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            collate_fn=WindowCollator(hp.max_channels, seed=hp.seed),
            drop_last=True,
        )

    def train_dataloader(self):
        if self.hparams.balance == "recording":
            return self._balanced_loader()
        return self._loader(self.train_ds, train=True)

    def val_dataloader(self):
        return self._loader(self.val_ds, train=False) if self.val_ds is not None else []

    @property
    def preprocessing(self) -> dict:
        """The PreprocessingSpec dict the training shards were made with."""
        return read_manifest(self.hparams.train)["preprocessing"]
