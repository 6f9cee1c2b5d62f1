"""Shared building blocks: feed-forward, masked cross-attention, pre-norm attention blocks, conv init."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FeedForward(nn.Module):
    """Pre-norm residual MLP: x + W2 GELU(W1 RMSNorm(x)). x: [..., D] -> [..., D]."""

    def __init__(self, dim: int, mult: int = 2) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(self.norm(x))


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a key/value set, with an optional key mask.

    queries: [N, Q, D]; context: [N, K, D] (values, and keys unless ``keys`` [N, K, D] is given);
    key_mask: [N, K] bool, True = attend (each row needs one True); bias: optional [N, H, Q, K] float added
    to the attention logits (after the 1 / sqrt(head dim) scaling); weights: optional [N, H, Q, K] attention
    weights that replace the softmax (queries and keys are then unused).
    Returns [N, Q, D]. The output is a sum over keys, so it does not depend on the keys' order.
    """

    def __init__(self, dim: int, n_heads: int, sharpness: float | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        # optional learned per-head logit scale, starting at ``sharpness``: attention that is selective from
        # the first step, instead of near-uniform averages that make every query's output alike
        self.log_sharpness = None if sharpness is None else nn.Parameter(torch.full((n_heads,), math.log(sharpness)))
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        return x.view(n, length, self.n_heads, dim // self.n_heads).transpose(1, 2)

    def _heads_q(self, queries: Tensor) -> Tensor:
        """Projected, sharpened queries split by head: [N, Q, D] -> [N, H, Q, D / H]."""
        q = self._split_heads(self.to_q(queries))
        if self.log_sharpness is not None:
            q = q * self.log_sharpness.exp()[None, :, None, None]
        return q

    def logits(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Attention logits [N, H, Q, K] of (un-normed) queries [N, Q, D] over keys [N, K, D], as `forward` uses them."""
        q, k = self._heads_q(queries), self._split_heads(self.to_k(keys))
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def forward(
        self,
        queries: Tensor,
        context: Tensor,
        key_mask: Tensor | None = None,
        keys: Tensor | None = None,
        bias: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        v = self._split_heads(self.to_v(context))
        if weights is not None:  # attention weights given [N, H, Q, K]: queries and keys are not needed
            return self.to_out((weights @ v).transpose(1, 2).flatten(2))
        q = self._heads_q(queries)
        k = self._split_heads(self.to_k(context if keys is None else keys))
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        if bias is not None:
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out(out.transpose(1, 2).flatten(2))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention plus feed-forward.

    queries: [N, Q, D], context: [N, K, D], key_mask: [N, K] bool (True = attend), keys [N, K, D] (only with
    ``separate_keys``; else the context gives the keys) -> [N, Q, D]. With ``add_query`` (default) the queries are added back (residual);
    without it the output is the attended content alone.
    """

    def __init__(
        self, dim: int, n_heads: int, ffn_mult: int, add_query: bool = True, sharpness: float | None = None,
        separate_keys: bool = False,
    ) -> None:
        super().__init__()
        self.add_query = add_query
        self.norm_q = nn.RMSNorm(dim)
        self.norm_kv = nn.RMSNorm(dim)
        # only a block that is given separate keys has their norm (an unused parameter would stop DDP)
        self.norm_k = nn.RMSNorm(dim) if separate_keys else None
        self.attn = CrossAttention(dim, n_heads, sharpness)
        self.ffn = FeedForward(dim, ffn_mult)

    def routing_logits(self, queries: Tensor, keys: Tensor) -> Tensor:
        """The attention logits [N, H, Q, K] this block gives queries [N, Q, D] over separate keys [N, K, D]."""
        return self.attn.logits(self.norm_q(queries), self.norm_k(keys))

    def forward(
        self,
        queries: Tensor,
        context: Tensor,
        key_mask: Tensor | None = None,
        keys: Tensor | None = None,
        bias: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        if (keys is None) != (self.norm_k is None):
            raise ValueError("CrossAttentionBlock: give keys exactly when built with separate_keys=True")
        keys = None if keys is None else self.norm_k(keys)
        x = self.attn(self.norm_q(queries), self.norm_kv(context), key_mask, keys, bias, weights)
        return self.ffn(queries + x if self.add_query else x)


class SelfAttentionBlock(nn.Module):
    """Pre-norm residual self-attention plus feed-forward over a set. x: [N, S, D] -> [N, S, D].

    The attention's output projection starts at zero, so the block starts as (nearly) the identity: at
    initialisation a near-uniform self-attention would add the same average to every member of the set.
    """

    def __init__(self, dim: int, n_heads: int, ffn_mult: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim)
        self.attn = CrossAttention(dim, n_heads)
        nn.init.zeros_(self.attn.to_out.weight)
        nn.init.zeros_(self.attn.to_out.bias)
        self.ffn = FeedForward(dim, ffn_mult)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        return self.ffn(x + self.attn(h, h))


class LatentMaps(nn.Module):
    """One learned D x D map per latent: x [..., N, D] -> [..., N, D], x_n @ W_n.

    The maps start as random orthogonal matrices drawn from a fixed seed, so an encoder's maps and a decoder's
    ``transpose=True`` maps start as exact inverses and the pair begins as the identity. Why: when a window has
    fewer channels than latents the pooled latents coincide (one channel: all N are the same vector, quantised
    to the same codes), and the self-attention after pooling cannot tell identical inputs apart. Rotated
    differently, the N copies fall on different codes, so the N_latent x L tokens of a frame all carry bits.
    """

    def __init__(self, n: int, dim: int, transpose: bool = False, seed: int = 1234) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        maps = torch.linalg.qr(torch.randn(n, dim, dim, generator=gen))[0]
        self.weight = nn.Parameter(maps.transpose(1, 2).contiguous() if transpose else maps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...nd,nde->...ne", x, self.weight)


def balanced_routing(logits: Tensor, mask: Tensor, iters: int = 5) -> Tensor:
    """Sinkhorn-balanced routing: log attention weights [B, H, N, C] from logits [B, H, N, C] and mask [B, C] bool.

    Each (head, latent) row still sums to 1 over the real channels (it is an attention), and every real channel
    receives nearly the same total weight, H * N / C_real, over all heads and latents (``iters`` alternating
    normalisations, rows last). So no channel is left out of the tokens and none is pooled into many latents,
    whatever the layout (plain softmax routing over sensor keys leaves some channels far more weight than others).
    """
    b, h, n, _ = logits.shape
    real = mask[:, None, None, :]
    # padded channels get a large finite negative logit, never -inf: a logsumexp over only -inf entries has a NaN
    # gradient, and the decoder's rows for padded channels must stay finite
    log_w = logits.float().masked_fill(~real, -1e4)
    column_mass = (h * n / mask.sum(dim=1).clamp_min(1)).log()[:, None, None, None]
    for _ in range(iters):
        column = torch.logsumexp(log_w, dim=(1, 2), keepdim=True) - column_mass
        log_w = log_w - column.masked_fill(~real, 0.0)
        log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
    return log_w


def init_convs_(module: nn.Module, gain: float = math.sqrt(2.0)) -> None:
    """Variance-preserving init of every Conv1d / ConvTranspose1d in ``module``: N(0, gain^2 / fan_in), zero bias.

    fan_in counts the weights that reach one output sample (in_channels * kernel, divided by the stride for a
    transposed conv). PyTorch's default init shrinks the signal about 3x per layer, so through a deep conv
    stack without normalisation the output would depend on the input only through ~1e-4 of its scale.
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv1d | nn.ConvTranspose1d):
            fan_in = conv.in_channels * conv.kernel_size[0]
            if isinstance(conv, nn.ConvTranspose1d):
                fan_in /= conv.stride[0]
            nn.init.normal_(conv.weight, std=gain / math.sqrt(fan_in))
            nn.init.zeros_(conv.bias)


def orthogonal_rows(n: int, dim: int) -> Tensor:
    """[n, dim] rows that are orthogonal to one another (when n <= dim) at unit RMS per entry."""
    rows = torch.empty(n, dim)
    nn.init.orthogonal_(rows)
    return rows * math.sqrt(dim) / rows.norm(dim=1, keepdim=True)


def scatter_channels(values: Tensor, mask: Tensor) -> Tensor:
    """Inverse of ``x[mask]``: values [M, ...] for the M True entries of mask [B, C] -> [B, C, ...], zeros elsewhere."""
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    out[mask] = values
    return out


def default_mask(channel_mask: Tensor | None, signal: Tensor) -> Tensor:
    """channel_mask [B, C] bool, or all True for a signal [B, C, ...] when None."""
    if channel_mask is None:
        return torch.ones(signal.shape[:2], dtype=torch.bool, device=signal.device)
    return channel_mask.bool()
