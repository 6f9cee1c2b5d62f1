"""Per-channel encoder and channel compression.

Each real channel is encoded on its own by two paths that produce the same F frames of ``hop`` samples:
(a) NeuroRVQ-style inception branches of strided temporal convolutions, and (b) a TFM-style
time-frequency motif path on `torch.stft` log-magnitudes. Frame f of both paths is centred on sample
``f * hop``: every conv uses padding ``k // 2`` (so stride s maps output n to input n * s) and the STFT
uses ``center=True`` with the same hop. The fused per-channel frames are then compressed onto
``n_latent`` learned queries that cross-attend over the channels (keys and values = channel features +
sensor embedding, padded channels masked out). No channel index is used anywhere, so the result is
invariant to channel order and to the number of padded channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenizer.config import TokenizerConfig
from tokenizer.layers import (
    CrossAttentionBlock,
    FeedForward,
    SelfAttentionBlock,
    init_convs_,
    scatter_channels,
)


class InceptionBranch(nn.Module):
    """One temporal branch: strided Conv1d -> GELU per stage. x: [N, 1, T] -> [N, c, T / hop].

    No normalisation layer: a GroupNorm over one channel's feature map would divide out that channel's
    amplitude, which the per-type robust scaling deliberately keeps.
    """

    def __init__(self, kernels: tuple[int, ...], strides: tuple[int, ...], channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for kernel, stride in zip(kernels, strides, strict=True):
            layers += [
                nn.Conv1d(in_channels, channels, kernel, stride=stride, padding=kernel // 2),
                nn.GELU(),
            ]
            in_channels = channels
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MultiScaleTemporalEncoder(nn.Module):
    """Inception branches with different kernels, concatenated and mixed. x: [N, T] -> [N, D, F]."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            InceptionBranch(kernels, cfg.conv_strides, cfg.branch_channels) for kernels in cfg.branch_kernels
        )
        self.mix = nn.Conv1d(len(cfg.branch_kernels) * cfg.branch_channels, cfg.d_model, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, None, :]
        return self.mix(torch.cat([branch(x) for branch in self.branches], dim=1))


class SpectralMotifEncoder(nn.Module):
    """Time-frequency path: log(1 + |STFT|) frames -> conv over 3 frames x all bins. x: [N, T] -> [N, D, F].

    In training, whole frequency bins are masked independently per channel with ``spectral_mask_prob``.
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.n_fft = cfg.stft_n_fft
        self.hop = cfg.hop
        self.mask_prob = cfg.spectral_mask_prob
        self.register_buffer("window", torch.hann_window(cfg.stft_n_fft), persistent=False)
        self.net = nn.Sequential(
            nn.Conv1d(cfg.n_freq_bins, cfg.d_model, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(cfg.d_model, cfg.d_model, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        n_frames = x.shape[-1] // self.hop
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        logmag = torch.log1p(spec.abs()[..., :n_frames])
        if self.training and self.mask_prob > 0:
            keep = torch.rand(logmag.shape[:2], device=x.device) >= self.mask_prob
            logmag = logmag * keep[..., None]
        return self.net(logmag)


class ChannelEncoder(nn.Module):
    """Fuses the temporal and spectral paths per channel. x: [N, T] scaled units -> [N, F, D]."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.temporal = MultiScaleTemporalEncoder(cfg)
        self.spectral = SpectralMotifEncoder(cfg)
        self.fuse = nn.Linear(2 * cfg.d_model, cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_mult)
        init_convs_(self)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.cat([self.temporal(x), self.spectral(x)], dim=1).transpose(1, 2)
        return self.ffn(self.fuse(h))


class ChannelCompressor(nn.Module):
    """``n_latent`` learned queries cross-attend over channels, per frame, then self-attend among themselves.

    features: [B, C, F, D]; sensor: [B, C, D]; mask: [B, C] bool (True = channel visible) -> [B, N_latent, F, D].
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(cfg.n_latent, cfg.d_model) * 0.02)
        self.cross = CrossAttentionBlock(cfg.d_model, cfg.n_heads, cfg.ffn_mult)
        self.mixers = nn.ModuleList(
            SelfAttentionBlock(cfg.d_model, cfg.n_heads, cfg.ffn_mult) for _ in range(cfg.n_latent_layers)
        )

    def forward(self, features: Tensor, sensor: Tensor, mask: Tensor) -> Tensor:
        b, c, f, d = features.shape
        context = (features + sensor[:, :, None, :]).permute(0, 2, 1, 3).reshape(b * f, c, d)
        key_mask = mask[:, None, :].expand(b, f, c).reshape(b * f, c)
        z = self.cross(self.latents.expand(b * f, -1, -1), context, key_mask)
        for mixer in self.mixers:
            z = mixer(z)
        return z.view(b, f, -1, d).transpose(1, 2)


class BrainEncoder(nn.Module):
    """signal [B, C, T] scaled units, sensor embedding [B, C, D], mask [B, C] bool -> latents [B, N_latent, F, D].

    Only the channels where mask is True are encoded (padding and dropped channels cost nothing).
    T must be a multiple of ``cfg.hop``; F = T / hop.
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.channel_encoder = ChannelEncoder(cfg)
        self.compressor = ChannelCompressor(cfg)

    def forward(self, signal: Tensor, sensor: Tensor, mask: Tensor) -> Tensor:
        features = scatter_channels(self.channel_encoder(signal[mask]), mask)
        return self.compressor(features, sensor, mask)
