"""Decoder: each target sensor queries the latent tokens, then a transposed-conv stack rebuilds its waveform.

The target sensors need not be the encoded ones: any layout (count, order, types, positions) can be
decoded from the same tokens, because a channel is described only by its sensor embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenizer.config import TokenizerConfig
from tokenizer.layers import CrossAttentionBlock, init_convs_, scatter_channels


class SensorQueryDecoder(nn.Module):
    """Per frame, every target sensor cross-attends over the N latent tokens.

    latents: [B, N, F, D]; sensor: [B, C, D] target sensor embeddings -> per-channel frames [B, C, F, D].
    Latent tokens get a learned identity embedding (latents are ordered, channels are not).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.latent_ids = nn.Parameter(torch.randn(cfg.n_latent, cfg.d_model) * 0.02)
        self.cross = CrossAttentionBlock(cfg.d_model, cfg.n_heads, cfg.ffn_mult)

    def forward(self, latents: Tensor, sensor: Tensor) -> Tensor:
        b, n, f, d = latents.shape
        c = sensor.shape[1]
        context = (latents + self.latent_ids[:, None, :]).transpose(1, 2).reshape(b * f, n, d)
        queries = sensor[:, None].expand(b, f, c, d).reshape(b * f, c, d)
        return self.cross(queries, context).view(b, f, c, d).transpose(1, 2)


def upsample_stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """ConvTranspose1d by exactly ``stride`` (length L -> L * stride), then a 7-tap conv; [M, in, L] -> [M, out, L*s].

    No normalisation layer, so the amplitude carried by the latents reaches the waveform.
    """
    pad = stride // 2
    return nn.Sequential(
        nn.ConvTranspose1d(in_channels, out_channels, stride + 2 * pad, stride=stride, padding=pad),
        nn.GELU(),
        nn.Conv1d(out_channels, out_channels, 7, padding=3),
        nn.GELU(),
    )


class WaveformDecoder(nn.Module):
    """Per-channel frames [M, F, D] -> waveform [M, F * hop] in scaled units."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        widths = (cfg.d_model, *cfg.decoder_channels)
        self.pre = nn.Sequential(nn.Conv1d(cfg.d_model, cfg.d_model, 3, padding=1), nn.GELU())
        self.up = nn.Sequential(
            *(
                upsample_stage(c_in, c_out, stride)
                for c_in, c_out, stride in zip(widths[:-1], widths[1:], reversed(cfg.conv_strides), strict=True)
            )
        )
        self.out = nn.Conv1d(widths[-1], 1, 7, padding=3)
        init_convs_(self)
        init_convs_(self.out, gain=0.0)  # start from a zero waveform: training fits it, rather than unlearning noise

    def forward(self, frames: Tensor) -> Tensor:
        return self.out(self.up(self.pre(frames.transpose(1, 2))))[:, 0]


class BrainDecoder(nn.Module):
    """latents [B, N, F, D], target sensor embeddings [B, C, D], mask [B, C] bool -> signal [B, C, F * hop].

    Only channels where mask is True are synthesised; the others are zeros.
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.query = SensorQueryDecoder(cfg)
        self.waveform = WaveformDecoder(cfg)

    def forward(self, latents: Tensor, sensor: Tensor, mask: Tensor) -> Tensor:
        frames = self.query(latents, sensor)
        return scatter_channels(self.waveform(frames[mask]), mask)
