"""`PretrainModule`: masked-token pretraining of the backbone on token segments (data: `PretrainDataModule`).

Per step: a fresh mask per sample over 50% of the (latent x frame) positions (``mask_mode``: ``random``
positions, whole ``frames``, or contiguous ``spans`` of ``mask_span`` whole frames; see `sample_mask`),
cross-entropy over all L code levels at the masked positions. Logged per level: accuracy, perplexity (exp
of that level's cross-entropy) and, beside it, the accuracy of three trivial predictors on the same masked
positions: the unigram floor (``floor_acc``: always predict the level's most frequent code, counted on the
training tokens seen so far, before the current batch), the spatial copy (``spatial_acc``: the majority code
of the visible latents of the same frame) and the frame copy (``framecopy_acc``: the same latent's code at
the nearest visible frame); a copy that is undefined falls back to the floor's code (`copy_baselines`).
``spatial_cover`` / ``framecopy_cover``: the fraction of masked positions where the copy was defined.

The masks come from a generator seeded by (seed, global step, global rank, batch index), not from the
global RNG, so a resumed run draws exactly the masks an uninterrupted run would.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.model import (
    MASK_MODES,
    MaskedTokenModel,
    build_config,
    copy_baselines,
    preset_of,
    sample_mask,
    unigram_floor_accuracy,
)
from runkit.entry import OptionError
from runkit.schedule import TimeBudget, lr_factor
from tokenizer.package import package_reference

log = logging.getLogger(__name__)

TOKENIZER_KEY = "brainforge_tokenizer"
BACKBONE_KEY = "brainforge_backbone_config"


def load_tokenizer_codebooks(path: str) -> tuple[Tensor, dict[str, int]]:
    """Frozen codebooks [L, K, codebook_dim] float32 and the sizes the backbone needs, from a tokenizer package."""
    from tokenizer.package import load_package

    model = load_package(path).model
    cfg = model.config
    codebooks = model.quantizer.rvq.codebooks.detach().float().clone()
    sizes = {"n_latent": cfg.n_latent, "rvq_levels": cfg.rvq_levels, "codebook_size": cfg.codebook_size,
             "codebook_dim": cfg.codebook_dim}
    return codebooks, sizes


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight matrices decay; norms, biases, embeddings (mask, latent, per-level) do not; frozen
    parameters (the tokenizer codebooks) are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class PretrainModule(L.LightningModule):
    """Masked-token pretraining.

    Args:
        tokenizer: tokenizer package directory; its codebooks are loaded and frozen, its sizes fix N, L, K.
        preset: backbone size, ``tiny`` (d32, CPU tests) | ``small`` (d256) | ``base`` | ``large`` (`PRESETS`); the
            tokenizer's names, rung for rung (``test`` became ``tiny``, the former d256 ``tiny`` is ``small``).
        overrides: BackboneConfig fields to change from the preset (e.g. {"n_layers": 4}).
        embedding: ``codebook`` (sum of frozen codebook vectors, projected) or ``learned`` per-level embeddings.
        mask_ratio: fraction of (latent x frame) positions masked per sample.
        mask_mode: ``random`` (latent x frame positions), ``frames`` (whole frames) or ``spans`` (contiguous runs
            of ``mask_span`` whole frames); see `pretrain.model.sample_mask`.
        mask_span: frames per span in ``spans`` mode (4 frames = 1 s with the 8-frames-per-2-s tokenizer).
        lr, weight_decay: AdamW; weight decay on weight matrices only (not norms, biases, embeddings).
        schedule: ``cosine`` or ``wsd``; warmup_steps, min_lr_ratio, decay_fraction (wsd) shape it. It runs over
            the steps, or over ``--trainer.max_time`` where the time cap comes first (`runkit.schedule.TimeBudget`).
        compile: ``torch.compile`` the backbone blocks (in place; state-dict keys unchanged).
        mask_seed: seed of the per-step mask generator.
        prior_init: on a fresh ``fit``, start the head at the unigram predictor of the training tokens
            (`MaskedTokenModel.init_head_prior`, counted on up to ``prior_windows`` evenly spaced windows).
        regression_weight: weight of a second target, the cosine between a regression head's output and the masked
            positions' codebook-space latents (`MaskedTokenModel.regress`); 0 = cross-entropy on the codes only.
        init_from: a backbone package (``python -m pretrain export``) whose weights this run starts from instead of
            a fresh initialisation: continued or domain-adaptive pretraining on your own recordings. Its sizes and
            tokenizer must be this run's; the head prior is then not re-initialised.
    """

    def __init__(
        self,
        tokenizer: str,
        preset: str = "small",
        overrides: dict[str, Any] | None = None,
        embedding: str = "codebook",
        mask_ratio: float = 0.5,
        mask_mode: str = "random",
        mask_span: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        schedule: str = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.05,
        decay_fraction: float = 0.2,
        compile: bool = False,
        mask_seed: int = 0,
        prior_init: bool = True,
        prior_windows: int = 2048,
        regression_weight: float = 1.0,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.time_budget = TimeBudget()
        if not 0.0 < mask_ratio < 1.0:
            raise OptionError(f"mask_ratio {mask_ratio} must be in (0, 1)")
        if mask_mode not in MASK_MODES:
            raise OptionError(f"mask_mode {mask_mode!r} must be one of {MASK_MODES}")
        if mask_span < 1:
            raise OptionError(f"mask_span {mask_span} must be >= 1 frame")
        if regression_weight < 0:
            raise OptionError(f"regression_weight {regression_weight} must be >= 0")
        if regression_weight > 0 and embedding != "codebook":
            raise OptionError(f"regression_weight {regression_weight} regresses codebook vectors and needs embedding "
                              f"'codebook', not {embedding!r}; pass --model.regression_weight 0 with learned embeddings")
        codebooks, sizes = load_tokenizer_codebooks(tokenizer)
        try:
            self.config = build_config(
                preset, {**(overrides or {}), "embedding": embedding, "regression_head": regression_weight > 0}, **sizes
            )
        except ValueError as e:  # a renamed or unknown preset, an unknown or inconsistent override
            raise OptionError(f"--model.preset / --model.overrides: {e}") from e
        self.model = MaskedTokenModel(self.config, codebooks if embedding == "codebook" else None)
        self.tokenizer_facts = package_reference(tokenizer)
        if init_from:
            self._start_from_package(init_from)
        # code histogram of the training tokens seen so far (floor predictor); saved in checkpoints. Under
        # DDP, buffers are broadcast from rank 0 before each forward, so every rank uses rank 0's histogram.
        self.register_buffer("code_counts", torch.zeros(self.config.rvq_levels, self.config.codebook_size, dtype=torch.long))
        if compile:
            for block in self.model.blocks:
                block.compile()

    def setup(self, stage: str) -> None:
        """Head prior on a fresh fit. Runs before DDP wraps the model (which then broadcasts rank 0's weights);
        a resumed run (``ckpt_path``) gets its weights from the checkpoint instead."""
        if stage != "fit" or not self.hparams.prior_init or self.trainer.ckpt_path is not None or self.hparams.init_from:
            return
        ds = getattr(self.trainer.datamodule, "train_ds", None)
        if ds is None or not hasattr(ds, "code_counts"):
            log.warning("prior_init: no SegmentDataset to count codes on; the head starts at random")
            return
        self.model.init_head_prior(ds.code_counts(self.hparams.prior_windows))

    def _start_from_package(self, path: str) -> None:
        """Continued (e.g. domain-adaptive) pretraining: this run's weights start at backbone package ``path``,
        which must have this config's sizes and have been trained on the same tokenizer's codes."""
        from pretrain.package import BackbonePackageError, load_backbone

        try:
            package = load_backbone(path)
        except BackbonePackageError as e:
            raise OptionError(f"--model.init_from: {e}") from e
        theirs, ours = package.model.config.to_dict(), self.config.to_dict()
        differ = [f"{k} {theirs.get(k)} (package) != {v} (this run)" for k, v in ours.items() if theirs.get(k) != v]
        if differ:
            raise OptionError(f"--model.init_from {path}: the package's backbone differs from this run's: "
                              f"{'; '.join(differ)}. Set --model.preset / --model.overrides to the package's sizes")
        recorded = package.tokenizer.get("weights_sha256")
        if recorded and recorded != self.tokenizer_facts.get("weights_sha256"):
            raise OptionError(f"--model.init_from {path}: the package was pretrained on the codes of another tokenizer "
                              f"({package.tokenizer.get('path')}) than --model.tokenizer {self.tokenizer_facts['path']}")
        self.model.load_state_dict(package.model.state_dict())
        log.info("backbone weights start from package %s", path)

    # --- steps -------------------------------------------------------------------------------------
    def _mask(self, batch: dict, batch_idx: int, stream: int) -> Tensor:
        g = torch.Generator().manual_seed(
            int(self.hparams.mask_seed) * 1_000_003 + int(self.global_step) * 7919 + self.global_rank * 131 + batch_idx * 17 + stream
        )
        hp = self.hparams
        return sample_mask(batch["valid"], self.config.n_latent, hp.mask_ratio, g, mode=hp.mask_mode, span=hp.mask_span)

    def _step(self, batch: dict, batch_idx: int, stage: str) -> Tensor:
        indices, valid = batch["indices"], batch["valid"]
        mask = self._mask(batch, batch_idx, 0 if stage == "train" else 1)
        hidden = self.model.encode(indices, mask, valid)[mask]  # [M, D]
        logits = self.model.logits(hidden)  # [M, L, K]
        targets = indices[mask]  # [M, L]
        levels = self.config.rvq_levels
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(-1, levels)
        loss = ce.mean()
        b = indices.shape[0]
        sync = stage != "train"
        if self.config.regression_head:
            target_latents = self.model.latents(targets).float()
            cos = F.cosine_similarity(self.model.regress(hidden).float(), target_latents, dim=-1).mean()
            loss = loss + self.hparams.regression_weight * (1 - cos)
            self.log(f"{stage}/latent_cos", cos, batch_size=b, sync_dist=sync)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=b, sync_dist=sync)
        with torch.no_grad():
            acc = (logits.argmax(-1) == targets).float().mean(0)
            floor = unigram_floor_accuracy(self.code_counts, targets)
            copies = copy_baselines(indices, mask, valid, self.code_counts.argmax(1), self.config.codebook_size)
            for lvl in range(levels):
                self.log(f"{stage}/acc_l{lvl}", acc[lvl], batch_size=b, sync_dist=sync)
                self.log(f"{stage}/ppl_l{lvl}", ce[:, lvl].mean().exp(), batch_size=b, sync_dist=sync)
                self.log(f"{stage}/floor_acc_l{lvl}", floor[lvl], batch_size=b, sync_dist=sync)
                self.log(f"{stage}/spatial_acc_l{lvl}", copies["spatial"][lvl], batch_size=b, sync_dist=sync)
                self.log(f"{stage}/framecopy_acc_l{lvl}", copies["frame"][lvl], batch_size=b, sync_dist=sync)
            if self.config.regression_head and "frame_codes" in copies:
                copy_cos = F.cosine_similarity(self.model.latents(copies["frame_codes"]).float(), target_latents, dim=-1)
                self.log(f"{stage}/latent_cos_framecopy", copy_cos.mean(), batch_size=b, sync_dist=sync)
            self.log(f"{stage}/spatial_cover", copies["spatial_cover"], batch_size=b, sync_dist=sync)
            self.log(f"{stage}/framecopy_cover", copies["frame_cover"], batch_size=b, sync_dist=sync)
            if stage == "train":
                real = indices[valid[:, None, :].expand_as(mask)]  # [P, L] all real positions of the batch
                for lvl in range(levels):
                    self.code_counts[lvl] += torch.bincount(real[:, lvl], minlength=self.config.codebook_size)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, batch_idx, "val")

    # --- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = torch.optim.AdamW(param_groups(self.model, self.hparams.weight_decay), lr=self.hparams.lr, betas=(0.9, 0.95))
        hp = self.hparams
        total = max(1, int(self.trainer.estimated_stepping_batches))
        budget = self.time_budget
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, hp.warmup_steps, hp.schedule, hp.min_lr_ratio, hp.decay_fraction, budget.fraction)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.time_budget.update(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[TOKENIZER_KEY] = self.tokenizer_facts
        checkpoint[BACKBONE_KEY] = self.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, by name, a checkpoint whose backbone has another width, depth or head count than this module
        (e.g. a run of the former ``tiny``, now ``small``, resumed with today's ``tiny`` config)."""
        saved = checkpoint.get(BACKBONE_KEY)
        if saved and any(saved.get(k) != getattr(self.config, k) for k in SIZE_FIELDS):
            name = preset_of(saved)
            fix = f"--model.preset {name}" if name else f"--model.overrides with its {', '.join(SIZE_FIELDS)}"
            raise OptionError(f"the checkpoint's backbone is {_size(saved)}, this module's is {_size(self.config.to_dict())}; "
                              f"{RENAME_NOTE}. Load it at its own size: {fix}")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> PretrainModule:
        """Lightning's loader, built at the size the checkpoint's backbone has (``brainforge_backbone_config``),
        whatever preset its hyper-parameters name: checkpoints written before the presets were renamed say ``test``
        (now ``tiny``) or ``tiny`` (then d256, now ``small``). ``preset`` / ``overrides`` passed here win."""
        if "preset" not in kwargs and "overrides" not in kwargs and isinstance(checkpoint_path, (str, Path)) \
                and Path(checkpoint_path).is_file():
            peek = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)  # no tensor is read
            saved = peek.get(BACKBONE_KEY)
            if saved:
                kwargs.update(checkpoint_preset(saved, peek.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}))
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)


SIZE_FIELDS = ("d_model", "n_layers", "n_heads")
RENAME_NOTE = ("backbone presets were renamed to match the tokenizer's: the former 'test' is now 'tiny' "
               "(d_model 32), the former 'tiny' is now 'small' (d_model 256)")


def _size(config: dict[str, Any]) -> str:
    name = preset_of(config)
    return f"d_model {config.get('d_model')}, {config.get('n_layers')} layers, {config.get('n_heads')} heads" + (
        f" (preset {name!r})" if name else "")


def checkpoint_preset(saved: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """``preset`` (and, for a size no preset has, ``overrides``) that rebuild a checkpoint's backbone config
    ``saved`` from its hyper-parameters ``hparams``, under today's preset names."""
    name = preset_of(saved)
    if name is not None:
        return {"preset": name}
    # a size no preset has: any preset, with its only fields (SIZE_FIELDS) overridden by the checkpoint's
    return {"preset": "small", "overrides": {**(hparams.get("overrides") or {}), **{k: saved[k] for k in SIZE_FIELDS}}}
