"""Fine-tuning with Lightning: `FinetuneDataModule` (task -> seeded splits -> loaders) and `FinetuneModule`.

The model is built in ``setup`` once the data module knows the task (classes, class counts of the training
split, window length, channels): a foundation classifier from a backbone package (which names its tokenizer
package), or a braindecode baseline with ``baseline=eegnet|shallow|labram`` on exactly the same items.

Validation metrics choose the checkpoint and stop training early (``val/selection`` = balanced accuracy, ties
broken by lower validation loss); the test split is only evaluated once, on the chosen checkpoint, by the CLI.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from data.dataset import OffsetAugmented, WindowCollator
from finetune.baselines import BASELINES, BaselineClassifier, is_baseline
from finetune.errors import LabelError
from finetune.foundation import load_foundation
from finetune.metrics import ClassificationMetrics
from finetune.model import MODES, FoundationClassifier, HeadConfig
from finetune.package import CHECKPOINT_KEY
from runkit.entry import OptionError
from runkit.schedule import TimeBudget, lr_factor

log = logging.getLogger("brainforge.finetune")

BACKBONE_INITS = ("pretrained", "random")


class ItemDataset(Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def item_channels(task) -> list[list[str] | None]:
    """Channel names per item: the item's ``channels`` entry, else the epochs layouts the task kept, else None."""
    volts = getattr(task, "_volts", None)
    out = []
    for i, it in enumerate(task.items):
        names = it.get("channels") or it.get("ch_names")
        if names is None and volts is not None:
            names = volts[i][0].names
        out.append(list(names) if names is not None else None)
    return out


class FinetuneDataModule(L.LightningDataModule):
    """A labelled task split into train / val / test.

    Args:
        path: epochs file(s) / folder, CSV manifest or BIDS root (see `finetune.data.load_task`).
        kind: auto | epochs | csv | bids.
        trial_types: which event names / trial types become classes (None = all).
        seed: split seed (also the loader shuffle seed).
        val_fraction, test_fraction: used when the data gives no split (a given split wins; val is then
            carved from its training part only).
        batch_size, num_workers: loaders.
        max_channels: training only: a random subset of at most this many channels per item each time it is
            drawn (None keeps all; the baselines always keep all).
        offset_augment: training only: one constant offset per item, the same on all its channels, drawn from
            N(0, offset_augment^2) in scaled units (the per-type robust scale), for robustness to DC shifts between
            sessions; 0 = off. Every arm gets it (baselines too). On SCP1 it helps EEGNet and costs the foundation
            arms: bench/results/finetune_ablation_offset.md.
        recentre: each split's items get that split's own per-channel median removed (`finetune.tasks.base.recentred`:
            unsupervised, per session when the data gives the split; transductive), every arm alike.
    """

    def __init__(
        self,
        path: str | list[str],
        kind: str = "auto",
        trial_types: list[str] | None = None,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        max_channels: int | None = None,
        offset_augment: float = 0.0,
        recentre: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = None
        self.splits = None
        self.subsets: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.task is not None:
            return
        from finetune.data import load_task
        from finetune.splits import make_splits, write_splits

        hp = self.hparams
        task = load_task(hp.path, kind=hp.kind, trial_types=hp.trial_types, spec=self._tokenizer_spec())
        splits = make_splits(task, hp.seed, hp.val_fraction, hp.test_fraction)
        task.fit_on(splits["train"])
        if len(splits["val"]) == 0:
            raise LabelError(f"{hp.path}: the validation split is empty ({splits.strategy}); the checkpoint is "
                             "chosen on it, so give more data or a larger --data.val_fraction")
        self.task, self.splits = task, splits
        self.subsets = {k: [task.items[i] for i in splits[k]] for k in ("train", "val", "test")}
        if hp.recentre:
            from finetune.tasks.base import recentred

            self.subsets = {k: recentred(v) for k, v in self.subsets.items()}
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.is_global_zero and trainer.default_root_dir:
            write_splits(splits, task, Path(trainer.default_root_dir))
        for w in task.warnings[:20]:
            log.warning("%s", w)

    def _tokenizer_spec(self):
        """The signal path of the foundation model's tokenizer (`finetune.preprocessing.tokenizer_spec` of the
        module's ``tokenizer`` or ``backbone`` package), so task inputs repeat it; None for baselines or when the
        package records none (the `PreprocessingSpec` defaults then)."""
        from finetune.preprocessing import tokenizer_spec

        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        hp = getattr(module, "hparams", None) or {}
        package = None if hp.get("baseline") else (hp.get("tokenizer") or hp.get("backbone"))
        return tokenizer_spec(package) if package else None

    # --- what the model needs to know ---------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.task.classes)

    def train_class_counts(self) -> np.ndarray:
        y = self.task.labels[self.splits["train"]]
        return np.bincount(y, minlength=len(self.task.classes))

    def channels(self) -> list[str] | None:
        """The task's channel names when every item has the same channel set, else None."""
        per_item = item_channels(self.task)
        if not per_item or any(c is None for c in per_item):
            return None
        first = per_item[0]
        return first if all(c == first for c in per_item) else None

    def seen_channels(self) -> list[str] | None:
        """Every channel name of the training split (sorted), None when the items carry no names."""
        per_item = item_channels(self.task)
        names = [per_item[i] for i in self.splits["train"]]
        if not names or any(c is None for c in names):
            return None
        return sorted({c for cs in names for c in cs})

    def channel_counts(self) -> set[int]:
        return {int(np.shape(it["signal"])[0]) for it in self.task.items}

    def facts(self) -> dict[str, Any]:
        """Split sizes, hashes and seed (metrics.json / model card)."""
        task, splits = self.task, self.splits
        split_hash = hashlib.sha256(json.dumps({k: [int(i) for i in splits[k]] for k in splits}).encode()).hexdigest()
        h = hashlib.sha256((task.source.get("hash") or "").encode())
        h.update(task.labels.astype(np.int64).tobytes())
        for it in task.items:
            h.update(np.ascontiguousarray(it["signal"], dtype=np.float32).tobytes())
        return {
            "task": str((task.source.get("paths") or [task.source.get("kind")])[0]),
            "inputs": [str(x) for x in task.source.get("paths") or []],
            "task_kind": task.source.get("kind"), "data_hash": h.hexdigest(), "inputs_hash": task.source.get("hash"),
            "splits_hash": split_hash, "split_rule": splits.strategy, "seed": int(self.hparams.seed),
            "split_sizes": {k: int(len(splits[k])) for k in ("train", "val", "test")},
            "class_counts": task.class_counts(), "n_items": len(task),
        }  # fmt: skip

    # --- loaders --------------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool, max_channels: int | None = None) -> DataLoader:
        """Training: shuffled (Lightning swaps in a DistributedSampler under DDP). Validation / test under DDP: each
        item on exactly one rank (`UnrepeatedDistributedSampler`; Lightning's default would pad the ranks with
        repeated items, which the metrics would then count twice), so the synced metrics equal one process's."""
        hp = self.hparams
        g = torch.Generator().manual_seed(int(hp.seed))
        ds = ItemDataset(self.subsets[split])
        collate = WindowCollator(max_channels if train else None, seed=hp.seed)
        if train and hp.offset_augment > 0:
            collate = OffsetAugmented(collate, hp.offset_augment, seed=hp.seed)
        trainer = getattr(self, "trainer", None)
        world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
        if not train and world > 1:
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(ds, num_replicas=world, rank=trainer.global_rank, shuffle=False)
            return DataLoader(ds, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers, drop_last=False,
                              collate_fn=collate)
        return DataLoader(ds, batch_size=hp.batch_size, shuffle=train, generator=g, num_workers=hp.num_workers,
                          drop_last=False, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.hparams.max_channels)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        if not self.subsets.get("test"):
            raise LabelError(f"{self.hparams.path}: the test split is empty; nothing to evaluate")
        return self._loader("test", False)


class FinetuneModule(L.LightningModule):
    """A classifier on a labelled task.

    Args:
        backbone: backbone package directory (``python -m pretrain export``); its config names the tokenizer package.
        tokenizer: tokenizer package directory, overriding the one the backbone package records.
        mode: ``probe`` (tokenizer + backbone frozen), ``full`` (layer-wise lr decay) or ``lora`` (peft adapters).
        backbone_input: ``latents`` (continuous pre-quantization latents, codebook space) or ``tokens`` (quantized indices).
        pooling: ``attention`` or ``mean`` over latents x frames; head_hidden / head_dropout / n_queries: the head.
        lr: peak AdamW learning rate of the head; in ``full`` mode layer i below the head gets lr * layer_decay**i.
        weight_decay: on weight matrices only.
        warmup_steps: linear warm-up, then cosine decay to min_lr_ratio * lr (over ``--trainer.max_time`` where
            the time cap comes first: `runkit.schedule.TimeBudget`).
        lora_r, lora_alpha, lora_dropout: LoRA adapters (mode ``lora``).
        train_tokenizer: ``full`` + ``latents``: also fine-tune the tokenizer encoder (lowest lr).
        class_weighting: weight the cross-entropy by n / (K * count) of the training split (imbalanced labels).
        label_smoothing: cross-entropy label smoothing.
        backbone_init: ``pretrained`` (the package's weights) or ``random``: the same architecture with freshly
            initialised backbone weights (seeded by ``seed_everything``); the tokenizer and its frozen codebooks stay
            the package's. The ablation's "random init" arm (bench/finetune_ablation.py).
        baseline: ``eegnet`` | ``shallow`` | ``labram`` | ``cbramod`` (or another braindecode model class name):
            train this braindecode model instead (backbone ignored); baseline_lr / baseline_kwargs configure it.
        pretrained: with ``baseline``: start from published weights, a Hugging Face hub id or a local folder
            (braindecode's ``save_pretrained`` layout), read by the model class's ``from_pretrained``.
        cache_features: ``probe`` only: the frozen tokenizer + backbone give the same hidden states for an item
            every epoch, so they are computed once per item (keyed by recording and t0_s) and kept in memory,
            up to feature_cache_mb; the head still trains on them with dropout. Off when items are channel-
            subsampled (--data.max_channels).
    """

    def __init__(
        self,
        backbone: str | None = None,
        tokenizer: str | None = None,
        mode: str = "probe",
        backbone_input: str = "latents",
        pooling: str = "attention",
        head_hidden: int = 128,
        head_dropout: float = 0.1,
        n_queries: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        layer_decay: float = 0.75,
        warmup_steps: int = 10,
        min_lr_ratio: float = 0.05,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        train_tokenizer: bool = False,
        backbone_init: str = "pretrained",
        class_weighting: bool = True,
        label_smoothing: float = 0.0,
        baseline: str | None = None,
        baseline_lr: float = 1e-3,
        baseline_kwargs: dict[str, Any] | None = None,
        pretrained: str | None = None,
        cache_features: bool = True,
        feature_cache_mb: int = 2048,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.time_budget = TimeBudget()
        if mode not in MODES:
            raise OptionError(f"--model.mode {mode!r} must be one of {MODES}")
        if baseline is not None and not is_baseline(baseline):
            raise OptionError(f"--model.baseline {baseline!r} must be one of {BASELINES} or a braindecode model class name")
        if pretrained and baseline is None:
            raise OptionError("--model.pretrained loads a braindecode model: give --model.baseline too (e.g. labram)")
        if backbone_init not in BACKBONE_INITS:
            raise OptionError(f"--model.backbone_init {backbone_init!r} must be one of {BACKBONE_INITS}")
        if baseline is None and not backbone:
            raise OptionError("--model.backbone (a backbone package directory) is required unless --model.baseline is given")
        self.model: FoundationClassifier | BaselineClassifier | None = None
        self.facts: dict[str, Any] = {}
        self.last_eval: dict[str, dict] = {}
        self._cache: dict[tuple, Tensor] | None = None
        self._cache_bytes = 0

    # --- building -------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        dm = self.trainer.datamodule
        if dm is None or getattr(dm, "task", None) is None:
            raise RuntimeError("FinetuneModule needs a FinetuneDataModule (set up before the model)")
        self.build(dm.classes, dm.train_class_counts(), dm.task.preprocessing, dm.channels(), dm.channel_counts(), dm.facts())
        self.facts["seen_channels"] = dm.seen_channels()
        hp = self.hparams
        if hp.cache_features and hp.mode == "probe" and not hp.baseline and not dm.hparams.max_channels \
                and not dm.hparams.offset_augment:
            self._cache = {}

    def build(self, classes: list[str], train_counts: np.ndarray, preprocessing, channels: list[str] | None,
              channel_counts: set[int], task_facts: dict[str, Any]) -> None:
        """Create the classifier for ``classes`` (also usable without a Trainer, e.g. in tests)."""
        hp = self.hparams
        k = len(classes)
        source: dict[str, Any] = {}
        if hp.baseline:
            if len(channel_counts) != 1:
                raise OptionError(f"baseline {hp.baseline} needs one channel set; the task has items with "
                                 f"{sorted(channel_counts)} channels")
            self.model = BaselineClassifier(hp.baseline, next(iter(channel_counts)), k, preprocessing.window_samples,
                                            preprocessing.spec.sfreq, hp.baseline_kwargs, pretrained=hp.pretrained)
        else:
            self.model, source = load_foundation(hp.backbone, hp.tokenizer, HeadConfig(
                n_classes=k, pooling=hp.pooling, n_queries=hp.n_queries, hidden=hp.head_hidden, dropout=hp.head_dropout),
                hp.backbone_input, backbone_init=hp.backbone_init, preprocessing=preprocessing)
        self.model.set_mode(hp.mode, lora_r=hp.lora_r, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                            train_tokenizer=hp.train_tokenizer)
        counts = np.asarray(train_counts, dtype=np.float64)
        weights = np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)), 1.0) if hp.class_weighting else np.ones(k)
        self.register_buffer("class_weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)
        self.val_metrics = ClassificationMetrics(k)
        self.test_metrics = ClassificationMetrics(k)
        self.facts = {
            "model": self.model.config_dict(), "labels": list(classes), "preprocessing": preprocessing.to_dict(),
            "channels": channels, "mode": None if hp.baseline else hp.mode,
            "backbone_init": None if hp.baseline else hp.backbone_init,
            "lora": {"r": hp.lora_r, "alpha": hp.lora_alpha, "dropout": hp.lora_dropout} if (hp.mode == "lora" and not hp.baseline) else None,
            "task": task_facts, "source": source, "class_weights": weights.tolist(),
        }  # fmt: skip
        if hp.baseline:
            self.facts["model"]["arch"] = hp.baseline
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.model.parameters())
        log.info("%s: %d of %d parameters train", hp.baseline or f"{hp.mode} ({hp.backbone_input})", n_train, n_all)

    # --- steps ----------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> Tensor:
        if self._cache is not None:
            hidden = self._cached_features(batch)
            if hidden is not None:
                return self.model.head(hidden)
        return self.model(batch["signal"], batch["types"], batch["positions"], batch["orientations"], batch["channel_mask"],
                          batch.get("channel_ids"))

    def _cached_features(self, batch: dict) -> Tensor | None:
        """Probe mode: frozen hidden states [B, N, F, D] per item, computed once (see ``cache_features``)."""
        keys = [(r, t) for r, t in zip(batch.get("recording") or [], batch.get("t0_s") or [], strict=False)]
        if len(keys) != len(batch["signal"]) or any(r is None or t is None for r, t in keys):
            return None
        if any(k not in self._cache for k in keys):
            with torch.no_grad():
                hidden = self.model.features(batch["signal"], batch["types"], batch["positions"], batch["orientations"],
                                             batch["channel_mask"], batch.get("channel_ids"))  # fmt: skip
            if self._cache_bytes + hidden.numel() * hidden.element_size() > self.hparams.feature_cache_mb * 2**20:
                return hidden
            for k, h in zip(keys, hidden, strict=True):
                if k not in self._cache:
                    self._cache[k] = h
                    self._cache_bytes += h.numel() * h.element_size()
            return hidden
        return torch.stack([self._cache[k] for k in keys])

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.class_weights.to(logits.device),
                               label_smoothing=self.hparams.label_smoothing)

    @staticmethod
    def _target(batch: dict, device) -> Tensor:
        return torch.as_tensor(batch["label"], dtype=torch.long, device=device)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self(batch)
        target = self._target(batch, logits.device)
        loss = self._loss(logits, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def _eval_step(self, batch: dict, metrics: ClassificationMetrics, stage: str) -> None:
        logits = self(batch)
        target = self._target(batch, logits.device)
        self.log(f"{stage}/loss", self._loss(logits, target), batch_size=len(target), sync_dist=True, prog_bar=stage == "val")
        metrics.update(torch.softmax(logits.float(), -1), target)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def _eval_end(self, metrics: ClassificationMetrics, stage: str) -> None:
        values = metrics.compute()
        metrics.reset()
        for k, v in values.items():
            if k != "confusion_matrix":
                self.log(f"{stage}/{k}", v, prog_bar=k == "balanced_accuracy", sync_dist=False)
        loss = self.trainer.callback_metrics.get(f"{stage}/loss")
        values["loss"] = float(loss) if loss is not None else None
        if stage == "val":  # checkpoint selection: balanced accuracy, ties broken by lower loss
            sel = values["balanced_accuracy"] - 1e-3 * min(values["loss"] if values["loss"] is not None else 0.0, 100.0)
            self.log("val/selection", sel, sync_dist=False)
        self.last_eval[stage] = values

    def on_validation_epoch_end(self) -> None:
        self._eval_end(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._eval_end(self.test_metrics, "test")

    # --- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        lr = hp.baseline_lr if hp.baseline else hp.lr
        decay = hp.layer_decay if (hp.mode == "full" and not hp.baseline) else 1.0
        groups = []
        for i, params in enumerate(self.model.layer_groups()):
            scale = decay**i
            wd = [p for p in params if p.ndim >= 2]
            no_wd = [p for p in params if p.ndim < 2]
            groups += [g for g in ({"params": wd, "weight_decay": hp.weight_decay, "lr": lr * scale},
                                   {"params": no_wd, "weight_decay": 0.0, "lr": lr * scale}) if g["params"]]
        opt = torch.optim.AdamW(groups, lr=lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        budget = self.time_budget
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, hp.warmup_steps, "cosine", hp.min_lr_ratio, 0.0, budget.fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.time_budget.update(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.facts
