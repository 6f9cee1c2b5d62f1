"""brainforge pretraining: masked-token backbone over token segments, LightningModule, CLI, launch recipes."""

from pretrain.data import PretrainDataModule, SegmentDataset, collate_segments
from pretrain.lightning import PretrainModule
from pretrain.model import (
    MASK_MODES,
    PRESETS,
    BackboneConfig,
    MaskedTokenModel,
    build_config,
    copy_baselines,
    sample_mask,
    unigram_floor_accuracy,
)
from pretrain.package import BackbonePackage, BackbonePackageError, export_run, load_backbone

__all__ = [
    "MASK_MODES", "PRESETS", "BackboneConfig", "BackbonePackage", "BackbonePackageError", "MaskedTokenModel", "PretrainDataModule",
    "PretrainModule", "SegmentDataset", "build_config", "collate_segments", "copy_baselines", "export_run", "load_backbone",
    "sample_mask", "unigram_floor_accuracy",
]
