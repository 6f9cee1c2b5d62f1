"""`TokenizerModule`: the BrainTokenizer science as a LightningModule (data: `data.WindowDataModule`).

The model is built in `configure_model`, after the Trainer has set up its strategy, so that
``sync_codebook`` is decided from the real world size (True with more than one process) instead of
the quantizer library guessing it at construction time, before the process group exists.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from runkit.entry import OptionError
from runkit.schedule import TimeBudget, lr_factor
from tokenizer.config import TokenizerConfig
from tokenizer.metrics import CodebookUsage, ReconstructionMetrics
from tokenizer.model import BrainTokenizer

PREPROCESSING_KEY = "brainforge_preprocessing"
CONFIG_KEY = "brainforge_tokenizer_config"  # the resolved TokenizerConfig, so a checkpoint never depends on preset defaults


def checkpoint_config(checkpoint: dict) -> TokenizerConfig:
    """The TokenizerConfig a checkpoint was trained with. Checkpoints from before `CONFIG_KEY` was written
    are rebuilt from their preset and overrides, with the decoder routing they had then ("learned")."""
    if CONFIG_KEY in checkpoint:
        return TokenizerConfig.from_dict(checkpoint[CONFIG_KEY])
    hp = checkpoint.get("hyper_parameters", {})
    return build_config(hp.get("preset", "tiny"), {"decoder_routing": "learned", **(hp.get("overrides") or {})})


#: fields that only shape training (augmentation, loss weights, codebook upkeep): a resumed run may change them
_TRAINING_ONLY = {"channel_dropout", "input_noise_std", "position_dropout", "spectral_mask_prob", "log_amp_floor",
                  "ema_decay", "threshold_ema_dead_code", "kmeans_iters"}


def _resumable_change(field: str) -> bool:
    return field in _TRAINING_ONLY or field.startswith("weight_")


def build_config(preset: str = "tiny", overrides: dict[str, Any] | None = None) -> TokenizerConfig:
    """A preset (`tiny`, `small`, `base`) with field overrides, e.g. {"codebook_size": 512}."""
    base = TokenizerConfig.preset(preset).to_dict()
    unknown = sorted(set(overrides or {}) - set(base))
    if unknown:
        raise OptionError(f"tokenizer config: unknown field(s) {unknown}; see tokenizer/config.py")
    return TokenizerConfig.from_dict({**base, **(overrides or {})})


def mean_code_assignments(config: TokenizerConfig, windows_per_step: int) -> float:
    """Vectors one training step assigns to each code of a level, on average: B x N_latent x F / codebook size.
    The EMA cluster size of a code settles near this; a code below ``threshold_ema_dead_code`` is re-seeded."""
    return windows_per_step * config.n_latent * config.n_frames / config.codebook_size


def warn_on_codebook_churn(config: TokenizerConfig, windows_per_step: int) -> None:
    """Warn when the dead-code threshold is not below the mean assignment count: most codes would then be
    re-seeded with a random batch vector at every step, and the codebook would never settle."""
    mean = mean_code_assignments(config, windows_per_step)
    if config.threshold_ema_dead_code >= mean:
        rank_zero_warn(
            f"tokenizer: threshold_ema_dead_code {config.threshold_ema_dead_code:g} is not below the mean "
            f"{mean:.2f} vectors per code per step ({windows_per_step} windows x {config.n_latent} latents x "
            f"{config.n_frames} frames / {config.codebook_size} codes): most codes would be re-seeded every step. "
            f"Lower it to about {mean / 2:.2g} with --model.overrides '{{threshold_ema_dead_code: {mean / 2:.2g}}}' or raise --data.batch_size."
        )


class TokenizerModule(L.LightningModule):
    """Trains a `BrainTokenizer` on window batches.

    Args:
        preset: size preset, ``tiny`` | ``small`` | ``base``.
        overrides: TokenizerConfig fields to change from the preset.
        lr: peak AdamW learning rate; weight_decay applies to weights only (not norms, biases, embeddings).
        warmup_steps: linear warm-up, then cosine decay to ``min_lr_ratio * lr`` over the run (over
            ``--trainer.max_time`` instead where the time cap comes first: `runkit.schedule.TimeBudget`).
        sync_codebook: None decides from the Trainer's world size; True/False forces it.
    """

    def __init__(
        self,
        preset: str = "tiny",
        overrides: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.05,
        sync_codebook: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = build_config(preset, overrides)
        self.time_budget = TimeBudget()
        self.model: BrainTokenizer | None = None
        self.preprocessing: dict[str, Any] = {}
        # sum-reduced torchmetrics states: under DDP every rank computes the same keys and values
        self.val_reconstruction = ReconstructionMetrics(self.config.sfreq)
        self.val_usage = CodebookUsage(self.config.rvq_levels, self.config.codebook_size)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = BrainTokenizer(self.config, sync_codebook=self._sync_codebook())

    def _sync_codebook(self) -> bool:
        """Whether the codebooks are synchronised across processes: as forced, else when there are several."""
        sync = self.hparams.sync_codebook
        if sync is None:
            sync = self._trainer is not None and self.trainer.world_size > 1
        return bool(sync)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "preprocessing"):
            self.preprocessing = dm.preprocessing
        batch_size = getattr(getattr(dm, "hparams", None), "batch_size", None)
        if stage == "fit" and batch_size:
            warn_on_codebook_churn(self.config, batch_size * (self.trainer.world_size if self._sync_codebook() else 1))

    # --- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        b = batch["signal"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=b)
        for k, v in out["losses"].items():
            self.log(f"train/{k}", v, batch_size=b)
        return out["loss"]

    def on_validation_epoch_start(self) -> None:
        self.val_reconstruction.reset()
        self.val_usage.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(batch, channel_dropout=False)
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=batch["signal"].shape[0], sync_dist=True)
        self.val_reconstruction.update(out["recon"], batch["signal"], batch["types"], batch["channel_mask"])
        self.val_usage.update(out["indices"])

    def on_validation_epoch_end(self) -> None:
        metrics = {**self.val_reconstruction.compute(), **self.val_usage.compute()}
        keep = ("eeg/pcc", "eeg/nmse", "meg/pcc", "meg/nmse", "usage_l0", "usage_l1", "usage_l2", "usage_l3")
        for k in keep:  # compute() reduced the states over ranks: every rank has the same keys, in the same order
            if k in metrics:
                self.log(f"val/{k}", metrics[k], sync_dist=True)

    # --- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        hp = self.hparams
        budget = self.time_budget
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, hp.warmup_steps, "cosine", hp.min_lr_ratio, 0.0, budget.fraction))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.time_budget.update(self.trainer)

    # --- checkpoint extras ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[PREPROCESSING_KEY] = self.preprocessing
        checkpoint[CONFIG_KEY] = self.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.preprocessing = checkpoint.get(PREPROCESSING_KEY, {})
        trained = checkpoint_config(checkpoint)
        changed = sorted(k for k, v in trained.to_dict().items()
                         if self.config.to_dict().get(k) != v and not _resumable_change(k))
        if changed:
            raise OptionError(
                f"tokenizer checkpoint: trained with a different config ({', '.join(f'{k}={trained.to_dict()[k]!r}' for k in changed)}); "
                "resume with the --model.preset and --model.overrides it was trained with (loss weights and augmentation may change)"
            )
