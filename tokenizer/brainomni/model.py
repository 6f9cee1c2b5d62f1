"""BrainOmni's tokenizer ("BrainTokenizer", arXiv 2505.18185) as a brainforge model family.

Inputs follow BrainOmni's convention:

* ``x`` [B, C, T] at 256 Hz, normalised per sensor type (`brainomni_normalise`);
* ``pos`` [B, C, 6]: position (centred and scaled per modality, `brainomni_positions`) and orientation
  (zeros for EEG);
* ``sensor_type`` [B, C]: 0 EEG, 1 MAG, 2 GRAD (the same codes as `data.sensors.SensorType`).

The signal is cut into 2 s windows (512 samples, optionally overlapping), each channel-window goes through a
convolutional encoder (hop 64 -> 8 frames per window), then ``n_latent`` learned latent queries attend over the
channels (keys = features + sensor embedding), and a residual VQ with EMA codebooks quantizes the
L2-normalised latents. The decoder lets each sensor's embedding query the latents and decodes a waveform.

The optional ``channel_mask`` [B, C] (True = real channel) is ours: padded channels are left out of the
latents' attention, so batches may mix channel counts. Without padding the arithmetic is BrainOmni's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenizer.brainomni.layers import ConvDecoder, ConvEncoder, RMSNorm, SeluMLP, merge_heads, split_heads

#: released BrainTokenizer (model_cfg.json of OpenTSLab/BrainOmni on the Hugging Face hub)
SAMPLE_RATE = 256.0
BAND_HZ = (0.1, 96.0)


@dataclass(frozen=True)
class BrainOmniTokenizerConfig:
    """The fields of BrainOmni's ``model_cfg.json`` that shape the tokenizer (its names, so configs map 1:1)."""

    window_length: int = 512
    n_filters: int = 32
    ratios: list[int] = field(default_factory=lambda: [8, 4, 2])
    kernel_size: int = 5
    last_kernel_size: int = 5
    n_dim: int = 256
    n_neuro: int = 16
    n_head: int = 4
    dropout: float = 0.0
    codebook_dim: int = 256
    codebook_size: int = 512
    num_quantizers: int = 4
    rotation_trick: bool = True
    quantize_optimize_method: str = "ema"

    def __post_init__(self) -> None:
        if self.n_dim % self.n_head:
            raise ValueError(f"n_dim {self.n_dim} is not a multiple of n_head {self.n_head}")
        hop = 1
        for r in self.ratios:
            hop *= int(r)
        if self.window_length % hop:
            raise ValueError(f"window_length {self.window_length} is not a multiple of the hop {hop} (ratios {self.ratios})")
        if self.quantize_optimize_method != "ema":
            raise ValueError(f"quantize_optimize_method {self.quantize_optimize_method!r}: only 'ema' codebooks are "
                             "supported (the released checkpoints use them)")

    @property
    def hop(self) -> int:
        hop = 1
        for r in self.ratios:
            hop *= int(r)
        return hop

    @property
    def frames_per_window(self) -> int:
        return self.window_length // self.hop

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BrainOmniTokenizerConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: (list(v) if k == "ratios" else v) for k, v in d.items() if k in names})


def unfold_windows(x: Tensor, window: int, overlap: float = 0.0) -> Tensor:
    """[..., T] -> [..., N, window]. Shorter inputs are zero-padded to one window; with overlap the end is
    zero-padded up to the next stride, without overlap a tail shorter than a window is dropped (BrainOmni)."""
    if x.shape[-1] < window:
        x = F.pad(x, (0, window - x.shape[-1]))
    stride = int(window * (1 - overlap))
    if overlap > 0:
        rest = (x.shape[-1] - window) % stride
        if rest:
            x = F.pad(x, (0, stride - rest))
    return x.unfold(-1, window, stride)


class SensorEmbedding(nn.Module):
    """pos [B, C, 6] + sensor type [B, C] -> sensor embedding [B, C, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.type_embed = nn.Embedding(3, dim)
        self.pos_in = nn.Linear(6, dim // 2)
        self.pos_out = nn.Linear(dim // 2, dim)
        self.mlp = SeluMLP(dim)
        self.norm = RMSNorm(dim)

    def forward(self, pos: Tensor, sensor_type: Tensor) -> Tensor:
        h = self.pos_out(F.selu(self.pos_in(pos)))
        h = h + self.type_embed(sensor_type.long()).to(h.dtype)
        return self.norm(h + self.mlp(h))


class LatentAttention(nn.Module):
    """Learned latent queries read the channels: keys are given, values are ``v(x)``, no query projection."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, keys: Tensor, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        h = self.heads
        mask = None if key_mask is None else key_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(split_heads(queries, h), split_heads(keys, h), split_heads(self.v(x), h),
                                           attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(merge_heads(o))


class SensorQueryAttention(nn.Module):
    """Each sensor's embedding queries the latents (keys and values from one projection of the latents)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, sensors: Tensor, latents: Tensor) -> Tensor:
        h = self.heads
        k, v = self.kv(latents).chunk(2, dim=-1)
        o = F.scaled_dot_product_attention(split_heads(sensors, h), split_heads(k, h), split_heads(v, h),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(merge_heads(o))


class EMACodebook(nn.Module):
    """One residual-VQ level: optional projection into the codebook space, nearest code (squared Euclidean
    distance in float32), projection back. Buffers mirror the EMA statistics of the released checkpoints;
    brainforge never updates them (the tokenizer is frozen)."""

    def __init__(self, dim: int, codebook_dim: int, size: int) -> None:
        super().__init__()
        project = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if project else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if project else nn.Identity()
        self.register_buffer("embed", torch.randn(size, codebook_dim))
        self.register_buffer("embed_avg", torch.zeros(size, codebook_dim))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("initialised", torch.ones(1))

    def nearest(self, z: Tensor) -> Tensor:
        """z [..., codebook_dim] -> indices [...]."""
        flat = z.reshape(-1, z.shape[-1]).float()
        e = self.embed.float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None, :]
        return dist.argmin(-1).view(z.shape[:-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.project_in(x)
        idx = self.nearest(z)
        return self.project_out(F.embedding(idx, self.embed).to(z.dtype)), idx

    def lookup(self, idx: Tensor) -> Tensor:
        return self.project_out(F.embedding(idx, self.embed))


class ResidualQuantizer(nn.Module):
    """L2-normalise, then ``levels`` codebooks each quantize what the previous ones left."""

    def __init__(self, dim: int, codebook_dim: int, size: int, levels: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(EMACodebook(dim, codebook_dim, size) for _ in range(levels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [..., D] -> (quantized sum [..., D], indices [..., L])."""
        residual = F.normalize(x, p=2.0, dim=-1)
        total = torch.zeros_like(residual)
        indices = []
        for level in self.levels:
            q, idx = level(residual)
            residual = residual - q
            total = total + q
            indices.append(idx)
        return total, torch.stack(indices, -1)

    def lookup(self, indices: Tensor) -> Tensor:
        """indices [..., L] -> quantized sum [..., D]."""
        return sum(level.lookup(indices[..., i]) for i, level in enumerate(self.levels))


class BrainOmniTokenizer(nn.Module):
    """BrainOmni's BrainTokenizer (inference: `tokenize`, `reconstruct`, `decode`)."""

    def __init__(self, config: BrainOmniTokenizerConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.sensor_embed = SensorEmbedding(c.n_dim)
        self.conv_encoder = ConvEncoder(c.n_dim, c.n_filters, c.ratios, c.kernel_size, c.last_kernel_size)
        self.latents = nn.Parameter(torch.randn(c.n_neuro, c.n_dim))
        self.key_proj = nn.Linear(c.n_dim, c.n_dim)
        self.latent_attn = LatentAttention(c.n_dim, c.n_head, c.dropout)
        self.quantizer = ResidualQuantizer(c.n_dim, c.codebook_dim, c.codebook_size, c.num_quantizers)
        self.sensor_query = SensorQueryAttention(c.n_dim, c.n_head, c.dropout)
        self.conv_decoder = ConvDecoder(c.n_dim, c.n_filters, c.ratios, c.kernel_size, c.last_kernel_size)

    # --- encoder ------------------------------------------------------------------------------
    def encode_windows(self, windows: Tensor, sensor: Tensor, channel_mask: Tensor | None = None) -> Tensor:
        """windows [B, C, N, L], sensor embedding [B, C, D] -> latents [B, n_latent, N, F, D] (pre-quantization)."""
        b, c, n, L = windows.shape
        h = self.conv_encoder(windows.reshape(b * c * n, 1, L))  # [BCN, D, F]
        d, f = h.shape[1], h.shape[2]
        h = h.transpose(1, 2).reshape(b, c, n * f, d).permute(0, 2, 1, 3).reshape(b * n * f, c, d)  # [(B W), C, D]
        s = sensor[:, None].expand(b, n * f, c, d).reshape(b * n * f, c, d)
        mask = None
        if channel_mask is not None:
            mask = channel_mask.bool()[:, None].expand(b, n * f, c).reshape(b * n * f, c)
        q = self.latents.to(h.dtype)[None].expand(b * n * f, -1, -1)
        z = self.latent_attn(q, self.key_proj(h + s), h, mask)  # [(B N F), n_latent, D]
        return z.view(b, n, f, -1, d).permute(0, 3, 1, 2, 4)

    def tokenize(self, x: Tensor, pos: Tensor, sensor_type: Tensor, overlap: float = 0.0,
                 channel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [B, C, T] -> (quantized features [B, n_latent, W, D], indices [B, n_latent, W, L]) with
        W = windows x frames per window (BrainOmni's ``tokenize``)."""
        windows = unfold_windows(x, self.config.window_length, overlap)
        latents = self.encode_windows(windows, self.sensor_embed(pos, sensor_type), channel_mask)
        feats, idx = self.quantizer(latents)
        return feats.flatten(2, 3), idx.flatten(2, 3)

    # --- decoder ------------------------------------------------------------------------------
    def decode_features(self, feats: Tensor, sensor: Tensor) -> Tensor:
        """quantized features [B, n_latent, N, F, D], sensor embedding [B, C, D] -> [B, C, N, L]."""
        b, k, n, f, d = feats.shape
        c = sensor.shape[1]
        lat = feats.permute(0, 2, 3, 1, 4).reshape(b * n * f, k, d)
        s = sensor[:, None, None].expand(b, n, f, c, d).reshape(b * n * f, c, d)
        h = self.sensor_query(s, lat)  # [(B N F), C, D]
        h = h.view(b, n, f, c, d).permute(0, 3, 1, 4, 2).reshape(b * c * n, d, f)
        return self.conv_decoder(h).view(b, c, n, -1)

    def decode(self, indices: Tensor, pos: Tensor, sensor_type: Tensor) -> Tensor:
        """indices [B, n_latent, N * F, L] (non-overlapping windows) -> normalised waveforms [B, C, N * L]."""
        b, k, w, _ = indices.shape
        f = self.config.frames_per_window
        feats = self.quantizer.lookup(indices.long()).view(b, k, w // f, f, -1)
        return self.decode_features(feats, self.sensor_embed(pos, sensor_type)).flatten(2)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, pos: Tensor, sensor_type: Tensor) -> Tensor:
        """x [B, C, T] -> the reconstruction [B, C, N, L] of each window's per-channel z-scored signal."""
        windows = unfold_windows(x, self.config.window_length)
        sensor = self.sensor_embed(pos, sensor_type)
        feats, _ = self.quantizer(self.encode_windows(windows, sensor))
        return self.decode_features(feats, sensor).float()
