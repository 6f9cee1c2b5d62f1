"""`TokenizerConfig`: every size of the BrainTokenizer, with `tiny`, `small` and `base` presets.

A window of ``window_samples`` samples at ``sfreq`` Hz is cut into ``n_frames`` frames of ``hop`` samples
(``hop`` = product of ``conv_strides``); each frame of each of ``n_latent`` latent channels gets
``rvq_levels`` codes from codebooks of ``codebook_size`` entries. Defaults: 512 samples at 256 Hz,
hop 64, 8 frames, 16 latents, 4 levels of 1024 codes = 512 tokens per 2 s window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


def _to_tuples(value: Any) -> Any:
    """JSON lists back to (nested) tuples."""
    if isinstance(value, list | tuple):
        return tuple(_to_tuples(v) for v in value)
    return value


@dataclass(frozen=True)
class TokenizerConfig:
    """Sizes and loss weights of a BrainTokenizer. Lengths are in samples, frequencies in Hz."""

    # window and framing
    sfreq: float = 256.0
    window_samples: int = 512
    conv_strides: tuple[int, ...] = (4, 4, 4)

    # widths
    d_model: int = 256
    n_heads: int = 8
    ffn_mult: int = 2

    # sensor encoder: random Fourier features of normalised positions
    n_fourier: int = 16
    fourier_sigma: float = 1.0

    # per-channel encoder: inception branches, one kernel per strided layer (NeuroRVQ 21/15/9/5 -> 9/7/5/3)
    branch_kernels: tuple[tuple[int, ...], ...] = ((21, 9, 9), (15, 7, 7), (9, 5, 5), (5, 3, 3))
    branch_channels: int = 64
    # time-frequency motif path (torch.stft, Hann window, hop = frame hop)
    stft_n_fft: int = 128
    spectral_mask_prob: float = 0.1

    # channel compression and latent mixing
    n_latent: int = 16
    n_latent_layers: int = 2

    # residual vector quantizer
    rvq_levels: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 128
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 10
    threshold_ema_dead_code: int = 2
    rotation_trick: bool = True

    # decoder: channels after each transposed-conv stage (same count as conv_strides, reversed strides)
    decoder_channels: tuple[int, ...] = (128, 64, 32)

    # training extras
    channel_dropout: float = 0.25
    input_noise_std: float = 0.1

    # losses: log(|X| + floor) on the orthonormal rfft, and the weights of the total
    log_amp_floor: float = 0.1
    weight_time_l1: float = 1.0
    weight_pcc: float = 1.0
    weight_log_amp: float = 1.0
    weight_phase: float = 0.5
    weight_commitment: float = 1.0

    def __post_init__(self) -> None:
        n_layers = len(self.conv_strides)
        if self.window_samples % self.hop:
            raise ValueError(f"TokenizerConfig: window_samples {self.window_samples} is not a multiple of hop {self.hop}")
        if any(len(k) != n_layers for k in self.branch_kernels):
            raise ValueError(f"TokenizerConfig: each of branch_kernels {self.branch_kernels} needs {n_layers} kernels")
        if any(k % 2 == 0 for ks in self.branch_kernels for k in ks):
            raise ValueError(f"TokenizerConfig: branch_kernels {self.branch_kernels} must be odd")
        if len(self.decoder_channels) != n_layers:
            raise ValueError(f"TokenizerConfig: decoder_channels {self.decoder_channels} needs {n_layers} entries")
        if self.d_model % self.n_heads:
            raise ValueError(f"TokenizerConfig: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.stft_n_fft < self.hop:
            raise ValueError(f"TokenizerConfig: stft_n_fft {self.stft_n_fft} is shorter than hop {self.hop}")
        if not 0.0 <= self.channel_dropout < 1.0:
            raise ValueError(f"TokenizerConfig: channel_dropout {self.channel_dropout} must be in [0, 1)")

    @property
    def hop(self) -> int:
        """Samples per frame (product of the encoder strides)."""
        return math.prod(self.conv_strides)

    @property
    def n_frames(self) -> int:
        """Frames F per window."""
        return self.window_samples // self.hop

    @property
    def window_s(self) -> float:
        """Window length in seconds."""
        return self.window_samples / self.sfreq

    @property
    def n_freq_bins(self) -> int:
        """rfft bins of the STFT path."""
        return self.stft_n_fft // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists when dumped)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TokenizerConfig.from_dict: unknown field(s) {unknown}")
        return cls(**{k: _to_tuples(v) for k, v in d.items()})

    @classmethod
    def tiny(cls) -> TokenizerConfig:
        """For tests and CPU smoke runs: a train step in well under a second at B=4, C=32."""
        return cls(
            d_model=32,
            n_heads=2,
            n_fourier=8,
            branch_kernels=((9, 5, 5), (5, 3, 3)),
            branch_channels=8,
            n_latent_layers=1,
            codebook_size=256,
            codebook_dim=16,
            decoder_channels=(16, 8, 8),
        )

    @classmethod
    def small(cls) -> TokenizerConfig:
        """Single-GPU experiments."""
        return cls(
            d_model=128,
            n_heads=4,
            branch_channels=32,
            n_latent_layers=1,
            codebook_dim=64,
            decoder_channels=(64, 32, 16),
        )

    @classmethod
    def base(cls) -> TokenizerConfig:
        """The published default."""
        return cls()

    @classmethod
    def preset(cls, name: str) -> TokenizerConfig:
        """`tiny`, `small` or `base` by name."""
        presets = {"tiny": cls.tiny, "small": cls.small, "base": cls.base}
        if name not in presets:
            raise ValueError(f"TokenizerConfig: unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()
