"""BrainTokenizer: EEG/MEG windows of any sensor layout <-> discrete tokens [N_latent, F, L]."""

from tokenizer.api import Tokenizer
from tokenizer.config import TokenizerConfig
from tokenizer.losses import reconstruction_losses, unit_circle_phase_loss
from tokenizer.metrics import (
    BANDS,
    CodebookUsage,
    ReconstructionMetrics,
    bits_per_channel_second,
    channel_metrics,
)
from tokenizer.model import BrainTokenizer, sample_channel_dropout
from tokenizer.package import TokenizerPackage, TokenizerPackageError, load_package, save_package

__all__ = [
    "BANDS",
    "BrainTokenizer",
    "CodebookUsage",
    "ReconstructionMetrics",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerPackage",
    "TokenizerPackageError",
    "bits_per_channel_second",
    "channel_metrics",
    "load_package",
    "reconstruction_losses",
    "sample_channel_dropout",
    "save_package",
    "unit_circle_phase_loss",
]
