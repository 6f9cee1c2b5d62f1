"""BrainOmni's backbone (the stage-2 masked-token model of arXiv 2505.18185) in brainforge's own code.

Input: the frozen BrainOmni tokenizer's quantized features [B, n_latent, W, d_tok] of 2 s windows taken with
25% overlap (``overlap_ratio``), plus each latent's learned query vector. Each block is pre-norm: half of the
width attends over time (per latent, RoPE) and the other half over the latents (per frame); then a SELU MLP.
`encode` gives the features BrainOmni uses downstream: the output of every block but the last, L2-normalised.

A faithful detail: the RoPE frequencies span the whole half-width (``1 / 10000^(2i / (D/2))``) and are dealt
out to the heads in order, so each head rotates at its own frequencies; and the block writes the spatial half
of its output first, the temporal half second (the input is read the other way round).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenizer.brainomni.layers import RMSNorm, SeluMLP, merge_heads, split_heads


@dataclass(frozen=True)
class BrainOmniBackboneConfig:
    """BrainOmni's ``model_cfg.json`` fields of the backbone (its names). ``tiny``: 256 x 12 layers, 8 heads;
    ``base``: 512 x 12, 16 heads."""

    n_dim: int = 256  # tokenizer feature width
    n_neuro: int = 16
    codebook_size: int = 512
    num_quantizers: int = 4
    window_length: int = 512
    overlap_ratio: float = 0.25
    lm_dim: int = 256
    lm_head: int = 8
    lm_depth: int = 12
    lm_dropout: float = 0.1
    mask_ratio: float = 0.5
    num_quantizers_used: int = 4

    def __post_init__(self) -> None:
        if self.lm_dim % 2 or (self.lm_dim // 2) % max(1, self.lm_head // 2) or self.lm_head < 2:
            raise ValueError(f"lm_dim {self.lm_dim} / lm_head {self.lm_head}: each half ({self.lm_dim // 2}) must split "
                             f"into lm_head // 2 heads")
        if self.lm_depth < 2:
            raise ValueError(f"lm_depth {self.lm_depth}: encode() uses all blocks but the last, so at least 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BrainOmniBackboneConfig:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("num_quantizers_used") is None:
            kw["num_quantizers_used"] = kw.get("num_quantizers", cls.num_quantizers)
        return cls(**kw)


def rope_angles(n: int, dim: int, device=None) -> Tensor:
    """Complex rotations [n, dim // 2] for positions 0..n-1 over a width ``dim`` (pairs of adjacent features)."""
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))
    ang = torch.outer(torch.arange(n, device=device).float(), inv)
    return torch.polar(torch.ones_like(ang), ang)


def apply_rope(x: Tensor, rot: Tensor) -> Tensor:
    """x [B, T, H, d] with rot [T, H * d / 2] -> rotated x (float32 maths, input dtype out)."""
    b, t, h, d = x.shape
    xc = torch.view_as_complex(x.float().reshape(b, t, h, d // 2, 2))
    return torch.view_as_real(xc * rot.view(t, h, d // 2)[None]).flatten(3).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with one qkv projection; RoPE on q and k when ``rope``."""

    def __init__(self, dim: int, heads: int, dropout: float, rope: bool) -> None:
        super().__init__()
        self.dim, self.heads, self.dropout, self.rope = dim, heads, dropout, rope
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(self.dim, dim=-1)
        if self.rope:
            rot = rope_angles(t, self.dim, x.device)
            q = apply_rope(q.view(b, t, self.heads, -1), rot).transpose(1, 2)
            k = apply_rope(k.view(b, t, self.heads, -1), rot).transpose(1, 2)
        else:
            q, k = split_heads(q, self.heads), split_heads(k, self.heads)
        o = F.scaled_dot_product_attention(q, k, split_heads(v, self.heads),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(merge_heads(o))


class FactorisedBlock(nn.Module):
    """x [B, K, W, D]: norm -> (time attention on x[..., :D/2] | latent attention on x[..., D/2:]) -> residual;
    norm -> SELU MLP -> residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.temporal = Attention(dim // 2, heads // 2, dropout, rope=True)
        self.spatial = Attention(dim // 2, heads // 2, dropout, rope=False)
        self.norm2 = RMSNorm(dim)
        self.ffn = SeluMLP(dim, dropout)

    def mix(self, x: Tensor) -> Tensor:
        b, k, w, d = x.shape
        half = d // 2
        xt = x[..., :half].reshape(b * k, w, half)
        xs = x[..., half:].permute(0, 2, 1, 3).reshape(b * w, k, half)
        yt = self.temporal(xt).view(b, k, w, half)
        ys = self.spatial(xs).view(b, w, k, half).permute(0, 2, 1, 3)
        return torch.cat([ys, yt], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mix(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class BrainOmniBackbone(nn.Module):
    """BrainOmni's stage-2 transformer over tokenizer features (the tokenizer itself is held separately)."""

    def __init__(self, config: BrainOmniBackboneConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.mask_token = nn.Parameter(torch.zeros(c.n_dim))
        self.projection = nn.Linear(c.n_dim, c.lm_dim) if c.n_dim != c.lm_dim else nn.Identity()
        self.blocks = nn.ModuleList(FactorisedBlock(c.lm_dim, c.lm_head, c.lm_dropout) for _ in range(c.lm_depth))
        self.predict_head = nn.Linear(c.lm_dim, c.num_quantizers_used * c.codebook_size)

    @property
    def d_model(self) -> int:
        return self.config.lm_dim

    def embed(self, feats: Tensor, latent_queries: Tensor) -> Tensor:
        """features [B, K, W, d_tok] + the tokenizer's latent queries [K, d_tok] -> [B, K, W, lm_dim]."""
        k = feats.shape[1]
        return self.projection(feats + latent_queries.to(feats.dtype).detach().view(1, k, 1, -1))

    def encode_embedded(self, h: Tensor) -> Tensor:
        """-> BrainOmni's downstream features: blocks[:-1], then L2 normalisation, [B, K, W, lm_dim]."""
        for block in self.blocks[:-1]:
            h = block(h)
        return F.normalize(h, p=2.0, dim=-1, eps=1e-6)

    def encode(self, feats: Tensor, latent_queries: Tensor) -> Tensor:
        return self.encode_embedded(self.embed(feats, latent_queries))

    def logits(self, feats: Tensor, latent_queries: Tensor) -> Tensor:
        """Masked-token logits over all blocks: [B, K, W, num_quantizers_used, codebook_size]."""
        h = self.embed(feats, latent_queries)
        for block in self.blocks:
            h = block(h)
        out = self.predict_head(h)
        return out.view(*out.shape[:-1], self.config.num_quantizers_used, self.config.codebook_size)
