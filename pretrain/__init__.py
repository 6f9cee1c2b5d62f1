"""brainforge pretraining: masked-token backbone over token segments, LightningModule, CLI, launch recipes."""

from pretrain.data import PretrainDataModule, SegmentDataset, collate_segments
from pretrain.lightning import PretrainModule
from pretrain.model import (
    PRESETS,
    BackboneConfig,
    MaskedTokenModel,
    build_config,
    sample_mask,
    unigram_floor_accuracy,
)
from pretrain.package import BackbonePackage, BackbonePackageError, export_run, load_backbone

__all__ = [
    "PRESETS", "BackboneConfig", "BackbonePackage", "BackbonePackageError", "MaskedTokenModel", "PretrainDataModule",
    "PretrainModule", "SegmentDataset", "build_config", "collate_segments", "export_run", "load_backbone",
    "sample_mask", "unigram_floor_accuracy",
]
