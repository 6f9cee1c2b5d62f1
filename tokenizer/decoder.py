"""Decoder: each target sensor queries the latent tokens, then a per-frame synthesis rebuilds its waveform.

The target sensors need not be the encoded ones: any layout (count, order, types, positions) can be
decoded from the same tokens, because a channel is described only by its sensor embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenizer.config import TokenizerConfig
from tokenizer.layers import CrossAttentionBlock, FeedForward, LatentMaps, orthogonal_rows, scatter_channels


class SensorQueryDecoder(nn.Module):
    """Per frame, every target sensor cross-attends over the N latent tokens.

    latents: [B, N, F, D]; sensor: [B, C, D] target sensor embeddings; optional routing [B, H, N, C], the
    encoder's logits of latent n over channel c -> per-channel frames [B, C, F, D].
    Latent tokens get a learned identity embedding (latents are ordered, channels are not).

    Mirrored routing: with ``routing``, channel c's logits over the latents are the encoder's logits of those
    latents over c, added to the decoder's own. A channel is then read back from the latents that pooled it,
    by construction and for any sensor embedding, including name identities never seen in training; the
    decoder no longer has to learn the encoder's routing anew for every kind of identity.
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.latent_ids = nn.Parameter(orthogonal_rows(cfg.n_latent, cfg.d_model))
        self.maps = LatentMaps(cfg.n_latent, cfg.d_model, transpose=True) if cfg.latent_maps else None
        self.cross = CrossAttentionBlock(cfg.d_model, cfg.n_heads, cfg.ffn_mult)

    def forward(self, latents: Tensor, sensor: Tensor, routing: Tensor | None = None) -> Tensor:
        b, n, f, d = latents.shape
        c = sensor.shape[1]
        if self.maps is not None:
            latents = self.maps(latents.transpose(1, 2)).transpose(1, 2)
        context = (latents + self.latent_ids[:, None, :]).transpose(1, 2).reshape(b * f, n, d)
        queries = sensor[:, None].expand(b, f, c, d).reshape(b * f, c, d)
        bias = None
        if routing is not None:
            h = routing.shape[1]
            bias = routing.transpose(-1, -2)[:, None].expand(b, f, h, c, n).reshape(b * f, h, c, n)
        return self.cross(queries, context, bias=bias).view(b, f, c, d).transpose(1, 2)


class WaveformDecoder(nn.Module):
    """Per-channel frames [M, F, D] -> waveform [M, F * hop] in scaled units.

    Frame f synthesises the ``2 * hop`` samples centred on sample ``f * hop`` (a linear synthesis basis
    after a feed-forward layer), tapered by a periodic Hann window and overlap-added, so neighbouring
    frames cross-fade (the windows sum to 1) and the waveform has no seams at frame boundaries; the last
    frame's second half is not tapered, as nothing follows it. This mirrors the encoder's centred
    frames and costs one matrix product per frame (the transposed-convolution stack it replaced cost
    2.7 s per 512 channels, forward + backward, on CPU).

    Gain-shape output, mirroring the encoder's input: the synthesis gives the unit-RMS shape and a linear
    head on the frame mean gives log RMS; the waveform is shape * exp(log RMS).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.hop = cfg.hop
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_mult)
        self.synthesis = nn.Linear(cfg.d_model, 2 * cfg.hop)
        nn.init.zeros_(self.synthesis.weight)  # start from a zero waveform: training fits it, rather than unlearning noise
        nn.init.zeros_(self.synthesis.bias)
        self.log_rms = nn.Linear(cfg.d_model, 1)
        self.register_buffer("taper", torch.hann_window(2 * cfg.hop, periodic=True), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        m, n_frames, _ = frames.shape
        h = self.ffn(frames)
        taper = self.taper.expand(n_frames, -1).clone()
        taper[-1, self.hop :] = 1.0
        segments = (self.synthesis(h) * taper).view(m, n_frames, 2, self.hop)
        # block b covers samples [b * hop, (b + 1) * hop): the second half of frame b and the first of frame b + 1
        blocks = segments[:, :, 1].clone()
        blocks[:, :-1] += segments[:, 1:, 0]
        shape = blocks.reshape(m, n_frames * self.hop)
        return shape * self.log_rms(frames.mean(dim=1)).exp()


class BrainDecoder(nn.Module):
    """latents [B, N, F, D], target sensor embeddings [B, C, D], mask [B, C] bool, optional routing
    [B, H, N, C] (see `SensorQueryDecoder`) -> signal [B, C, F * hop].

    Only channels where mask is True are synthesised; the others are zeros.
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.query = SensorQueryDecoder(cfg)
        self.waveform = WaveformDecoder(cfg)

    def synthesize(self, frames: Tensor, mask: Tensor) -> Tensor:
        """Per-channel frames [B, C, F, D] -> signal [B, C, F * hop], synthesised where mask [B, C] is True."""
        return scatter_channels(self.waveform(frames[mask]), mask)

    def forward(self, latents: Tensor, sensor: Tensor, mask: Tensor, routing: Tensor | None = None) -> Tensor:
        return self.synthesize(self.query(latents, sensor, routing), mask)
