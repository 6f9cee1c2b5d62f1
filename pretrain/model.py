"""Masked-token backbone: factorised spatial (over latents) / temporal (over frames) attention.

Shapes: B batch, N latent channels (16), T frames (segment_windows x frames per window), L RVQ levels,
K codebook size, D model width.

* input ``indices`` [B, N, T, L] int64 (codes of the frozen tokenizer), ``mask`` [B, N, T] bool (True =
  masked, to predict), optional ``valid`` [B, T] bool (False = padding frames past a short recording).
* embedding: ``codebook`` mode sums the L frozen tokenizer codebook vectors of a position (that sum is the
  RVQ's quantized vector) and projects it to D; ``learned`` mode sums L learned per-level embeddings.
  Masked positions get one learned mask embedding instead. A learned latent-channel embedding is added.
* blocks: x + SpatialAttn(RMSNorm x) over N (per frame), x + TemporalAttn(RMSNorm x) over T (per latent,
  RoPE over time, padding frames excluded as keys), x + SwiGLU(RMSNorm x). All attention goes through
  ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU).
* heads: one linear layer to L x K logits (``head="linear"``), or, with ``head="codebook"``, one linear map per
  level into codebook space scored against that level's frozen codebook vectors plus a per-code bias (`CodebookHead`:
  the output side of the ``codebook`` embedding, so a hidden state that carries a visible neighbour's latent already
  scores that neighbour's codes). Evaluated only at the positions asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runkit.config import DictConfig


@dataclass(frozen=True)
class BackboneConfig(DictConfig):
    """Sizes of the backbone. ``n_latent``, ``rvq_levels``, ``codebook_size`` and ``codebook_dim`` come
    from the tokenizer package; the rest from a preset (`tiny`, `small`, `base`, `large`; see `PRESETS`)."""

    d_model: int = 256
    n_layers: int = 8
    n_heads: int = 4
    ffn_mult: float = 8 / 3  # SwiGLU hidden = ffn_mult * d_model, rounded up to a multiple of 32
    dropout: float = 0.0
    rope_base: float = 10000.0
    embedding: str = "codebook"  # "codebook" (frozen tokenizer codebooks, projected) | "learned"
    n_latent: int = 16
    rvq_levels: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 128
    regression_head: bool = False  # a head that predicts masked positions' codebook-space latents (see `regress`)
    head: str = "linear"  # "linear" (D -> L x K) | "codebook" (scored against the frozen codebooks, `CodebookHead`)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"BackboneConfig: d_model {self.d_model} / n_heads {self.n_heads} must be an even head width")
        if self.embedding not in ("codebook", "learned"):
            raise ValueError(f"BackboneConfig: embedding {self.embedding!r} must be 'codebook' or 'learned'")
        if self.head not in ("linear", "codebook"):
            raise ValueError(f"BackboneConfig: head {self.head!r} must be 'linear' or 'codebook'")
        if self.head == "codebook" and self.embedding != "codebook":
            raise ValueError("BackboneConfig: head 'codebook' needs embedding 'codebook' (it scores the frozen codebooks)")

    @property
    def ffn_hidden(self) -> int:
        return int(math.ceil(self.ffn_mult * self.d_model / 32) * 32)



#: Backbone sizes by name, the tokenizer's preset names (`tokenizer.config`) rung for rung: ``tiny`` is the d32
#: CPU-test size in both stages. Before they were aligned, this ``tiny`` was called ``test``
#: and today's ``small`` (d256) was called ``tiny``.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 32, "n_layers": 2, "n_heads": 2},  # CPU tests and smoke runs: a step in milliseconds
    "small": {"d_model": 256, "n_layers": 8, "n_heads": 4},
    "base": {"d_model": 512, "n_layers": 12, "n_heads": 8},
    "large": {"d_model": 1024, "n_layers": 24, "n_heads": 16},
}
#: Old preset names that no longer exist -> the preset of the same size now. (The old ``tiny``, d256, is today's
#: ``small``; the name ``tiny`` itself now means d32 and cannot be caught here.)
RENAMED_PRESETS: dict[str, str] = {"test": "tiny"}


def describe_preset(name: str) -> str:
    """``'tiny' (d_model 32, 2 layers)``."""
    p = PRESETS[name]
    return f"{name!r} (d_model {p['d_model']}, {p['n_layers']} layers)"


def preset_of(config: BackboneConfig | dict[str, Any]) -> str | None:
    """The preset whose width, depth and heads ``config`` has, or None (a custom size)."""
    c = config.to_dict() if isinstance(config, BackboneConfig) else config
    return next((k for k, v in PRESETS.items() if all(c.get(f) == x for f, x in v.items())), None)


def build_config(preset: str = "small", overrides: dict[str, Any] | None = None, **tokenizer_sizes: Any) -> BackboneConfig:
    """A preset with the tokenizer's sizes and field overrides (e.g. {"n_layers": 4})."""
    if preset in RENAMED_PRESETS:
        raise ValueError(f"backbone preset {preset!r} was renamed to {describe_preset(RENAMED_PRESETS[preset])}, "
                         f"the tokenizer's name for that scale; the former 'tiny' is now {describe_preset('small')}")
    if preset not in PRESETS:
        raise ValueError(f"backbone preset {preset!r} unknown; choose one of {', '.join(map(describe_preset, PRESETS))}")
    return BackboneConfig.from_dict({**PRESETS[preset], **tokenizer_sizes, **(overrides or {})})


def rope_tables(t: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin [T, head_dim/2] float32 for positions 0..T-1."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    ang = torch.arange(t, device=device, dtype=torch.float32)[:, None] * inv[None]
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [..., T, H] rotated pairwise (first half, second half) by the angles of each position."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis: x [S, T, D] -> [S, T, D]."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None, key_mask: Tensor | None = None) -> Tensor:
        s, t, d = x.shape
        q, k, v = self.qkv(x).view(s, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # [S, 1, 1, T], True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(s, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.drop(self.down(F.silu(gate) * up))


class FactorisedBlock(nn.Module):
    """x [B, N, T, D]: spatial attention over N, temporal attention over T (RoPE), SwiGLU; pre-norm residuals."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_s, self.norm_t, self.norm_f = nn.RMSNorm(d), nn.RMSNorm(d), nn.RMSNorm(d)
        self.spatial = Attention(d, cfg.n_heads, cfg.dropout)
        self.temporal = Attention(d, cfg.n_heads, cfg.dropout)
        self.ffn = SwiGLU(d, cfg.ffn_hidden, cfg.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], valid: Tensor | None) -> Tensor:
        b, n, t, d = x.shape
        xs = x.transpose(1, 2).reshape(b * t, n, d)
        x = x + self.spatial(self.norm_s(xs)).view(b, t, n, d).transpose(1, 2)
        key_mask = None if valid is None else valid[:, None, :].expand(b, n, t).reshape(b * n, t)
        x = x + self.temporal(self.norm_t(x.reshape(b * n, t, d)), rope, key_mask).view(b, n, t, d)
        return x + self.ffn(self.norm_f(x))


class CodebookHead(nn.Module):
    """Logits tied to the frozen RVQ codebooks: ``logits[l, k] = <W_l h, c_lk> / rms_l + b_lk``.

    ``weight`` [L x codebook_dim, D] (W_l stacked) and ``bias`` [L x K] carry the same names and zero/unigram
    initialisation as the linear head (`MaskedTokenModel.init_head_prior`). ``rms_l`` is level l's RMS codevector
    norm, so that the residual levels' small vectors start on the same logit scale as level 0's."""

    def __init__(self, d: int, levels: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.levels, self.codebook_dim = levels, codebook_dim
        self.weight = nn.Parameter(torch.randn(levels * codebook_dim, d) * d**-0.5)
        self.bias = nn.Parameter(torch.zeros(levels * codebook_size))

    def forward(self, hidden: Tensor, codebooks: Tensor) -> Tensor:
        """hidden [..., D], codebooks [L, K, codebook_dim] -> logits [..., L, K]."""
        query = F.linear(hidden, self.weight).unflatten(-1, (self.levels, self.codebook_dim))  # [..., L, cd]
        rms = codebooks.float().pow(2).sum(-1).mean(-1).clamp_min(1e-12).sqrt()  # [L]
        scores = torch.einsum("...lc,lkc->...lk", query, codebooks.to(query.dtype)) / rms.to(query.dtype)[:, None]
        return scores + self.bias.view(self.levels, -1)


class MaskedTokenModel(nn.Module):
    """Backbone + per-level heads. ``codebooks`` [L, K, codebook_dim] (frozen) for ``codebook`` mode."""

    def __init__(self, cfg: BackboneConfig, codebooks: Tensor | None = None) -> None:
        super().__init__()
        self.config = cfg
        L_, K, d = cfg.rvq_levels, cfg.codebook_size, cfg.d_model
        if cfg.embedding == "codebook":
            if codebooks is None:
                codebooks = torch.zeros(L_, K, cfg.codebook_dim)  # filled by load_state_dict / the tokenizer
            if tuple(codebooks.shape) != (L_, K, cfg.codebook_dim):
                raise ValueError(f"codebooks shape {tuple(codebooks.shape)} != (L, K, codebook_dim) {(L_, K, cfg.codebook_dim)}")
            # a frozen parameter, not a buffer: DDP would re-broadcast buffers before every forward
            self.codebooks = nn.Parameter(codebooks.detach().float().clone(), requires_grad=False)
            self.code_proj = nn.Linear(cfg.codebook_dim, d)
        else:
            self.level_embed = nn.Embedding(L_ * K, d)
            nn.init.normal_(self.level_embed.weight, std=0.02)
        self.mask_embed = nn.Parameter(torch.randn(d) * 0.02)
        self.latent_embed = nn.Parameter(torch.randn(cfg.n_latent, d) * 0.02)
        self.blocks = nn.ModuleList(FactorisedBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(d)
        if cfg.head == "codebook":
            self.head = CodebookHead(d, L_, K, cfg.codebook_dim)
        else:
            self.head = nn.Linear(d, L_ * K)
        if cfg.regression_head:
            if cfg.embedding != "codebook":
                raise ValueError("BackboneConfig: regression_head needs embedding 'codebook' (its targets are codebook vectors)")
            self.regress_head = nn.Linear(d, cfg.codebook_dim)

    def embed(self, indices: Tensor) -> Tensor:
        """indices [B, N, T, L] -> [B, N, T, D]."""
        cfg = self.config
        if cfg.embedding == "codebook":
            return self.code_proj(self.latents(indices))
        offsets = torch.arange(cfg.rvq_levels, device=indices.device) * cfg.codebook_size
        return self.level_embed(indices + offsets).sum(-2)

    def encode(self, indices: Tensor, mask: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
        """Hidden states [B, N, T, D] (after the final norm). mask [B, N, T] True = replaced by the mask embedding."""
        if indices.shape[1] != self.config.n_latent:
            raise ValueError(f"indices have {indices.shape[1]} latents, the backbone was built for {self.config.n_latent}")
        return self.encode_embedded(self.embed(indices), mask, valid)

    def encode_embedded(self, x: Tensor, mask: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
        """Embedded positions x [B, N, T, D] (from `embed`, or ``code_proj`` of continuous codebook-space
        latents) -> hidden states [B, N, T, D] after the final norm. mask/valid as in `encode`."""
        b, n, t, _ = x.shape
        if n != self.config.n_latent:
            raise ValueError(f"input has {n} latents, the backbone was built for {self.config.n_latent}")
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embed.to(x.dtype), x)
        x = x + self.latent_embed[None, :, None, :]
        if valid is not None and bool(valid.all()):
            valid = None
        rope = rope_tables(t, self.config.d_model // self.config.n_heads, self.config.rope_base, x.device)
        for block in self.blocks:
            x = block(x, rope, valid)
        return self.norm(x)

    @torch.no_grad()
    def init_head_prior(self, counts: Tensor) -> None:
        """Start the head at the unigram predictor: bias = log code frequencies (add-one smoothed) of
        ``counts`` [L, K], weight = 0. Step 0 then predicts exactly the floor and scores the unigram
        cross-entropy, instead of a random code at log K, and training only has to learn the context."""
        cfg = self.config
        if tuple(counts.shape) != (cfg.rvq_levels, cfg.codebook_size):
            raise ValueError(f"code counts shape {tuple(counts.shape)} != (L, K) {(cfg.rvq_levels, cfg.codebook_size)}")
        freq = (counts.double() + 1) / (counts.double().sum(1, keepdim=True) + cfg.codebook_size)
        self.head.bias.copy_(freq.log().flatten().to(self.head.bias.dtype))
        self.head.weight.zero_()

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden [..., D] -> logits [..., L, K]."""
        if self.config.head == "codebook":
            return self.head(hidden, self.codebooks)
        return self.head(hidden).unflatten(-1, (self.config.rvq_levels, self.config.codebook_size))

    def forward(self, indices: Tensor, mask: Tensor, valid: Tensor | None = None) -> Tensor:
        """Logits [M, L, K] at the M masked positions (in ``mask.nonzero()`` order)."""
        return self.logits(self.encode(indices, mask, valid)[mask])

    def freeze_pretraining_parts(self) -> None:
        """Stop gradients to what only pretraining uses: the frozen codebooks and the prediction heads (fine-tuning
        reads hidden states; an unused trainable parameter would also stop DDP)."""
        self.head.requires_grad_(False)
        if self.config.embedding == "codebook":
            self.codebooks.requires_grad_(False)
        if self.config.regression_head:
            self.regress_head.requires_grad_(False)

    def latents(self, indices: Tensor) -> Tensor:
        """The quantised latents in codebook space: indices [..., L] -> level sum of codebook vectors [..., codebook_dim]."""
        levels = torch.arange(self.config.rvq_levels, device=indices.device)
        return self.codebooks[levels, indices].sum(-2)

    def regress(self, hidden: Tensor) -> Tensor:
        """hidden [..., D] -> predicted codebook-space latent [..., codebook_dim] (needs ``regression_head``).

        Exact codes of an informative tokenizer are near-uniform (perplexity ~500 of 1,024 per level) and nearly
        independent from frame to frame, so the cross-entropy alone gives the backbone little to learn from; the
        latent they sum to varies smoothly, and regressing it (cosine) is a dense target."""
        return self.regress_head(hidden)


MASK_MODES = ("random", "frames", "spans")


def sample_mask(valid: Tensor, n_latent: int, ratio: float, generator: torch.Generator | None = None,
                mode: str = "random", span: int = 4) -> Tensor:
    """A fresh mask per sample. valid [B, T] bool -> mask [B, N, T] bool (True = masked; never on padding frames).

    * ``random``: exactly floor(ratio * valid positions) of the (latent x frame) positions, independently. A model
      can then copy a visible latent of the same frame, or the same latent one frame away.
    * ``frames``: exactly floor(ratio * valid frames) whole frames (all N latents of a frame together), chosen
      independently: nothing of a masked frame is visible, but its neighbouring frames usually are.
    * ``spans``: the same number of whole frames, as contiguous runs of ``span`` frames: the valid frames are
      cut into blocks of ``span`` from a random offset and whole blocks are masked in random order (the last
      one trimmed to hit the count), so most masked frames are ``span // 2`` or more frames from a visible one.

    ``frames`` and ``spans`` mask at least one frame of any sample with a valid frame.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode {mode!r} must be one of {MASK_MODES}")
    b, t = valid.shape
    if mode == "random":
        ok = valid[:, None, :].expand(b, n_latent, t).reshape(b, -1)
        scores = torch.rand(b, n_latent * t, generator=generator).to(valid.device)
        scores = scores.masked_fill(~ok, 2.0)
        k = (ok.sum(1).float() * ratio).floor().long()  # per sample
        rank = scores.argsort(dim=1).argsort(dim=1)
        return (rank < k[:, None]).view(b, n_latent, t)
    n_valid = valid.sum(1)
    k = torch.where(n_valid > 0, ((n_valid.float() * ratio).floor().long()).clamp(min=1), torch.zeros_like(n_valid))
    if mode == "frames":
        scores = torch.rand(b, t, generator=generator).to(valid.device).masked_fill(~valid, 2.0)
        rank = scores.argsort(dim=1).argsort(dim=1)
        frames = rank < k[:, None]
    else:
        if span < 1:
            raise ValueError(f"mask span {span} must be >= 1 frame")
        frames = torch.zeros(b, t, dtype=torch.bool)
        for i in range(b):
            where = valid[i].nonzero().flatten().cpu()  # valid frame indices (padding is at the end, but be general)
            n, want = len(where), int(k[i])
            if want == 0:
                continue
            offset = int(torch.randint(0, span, (1,), generator=generator))
            cuts = list(range(offset % span or span, n, span)) if n > span else []
            blocks = [blk for blk in torch.tensor_split(torch.arange(n), cuts) if len(blk)]
            order = torch.randperm(len(blocks), generator=generator).tolist()
            chosen: list[Tensor] = []
            left = want
            for j in order:
                blk = blocks[j]
                if len(blk) >= left:
                    chosen.append(blk[:left])  # the last block, trimmed to hit the count
                    break
                chosen.append(blk)
                left -= len(blk)
            frames[i, where[torch.cat(chosen)]] = True
        frames = frames.to(valid.device)
    return (frames & valid)[:, None, :].expand(b, n_latent, t).clone()


def copy_baselines(indices: Tensor, mask: Tensor, valid: Tensor | None, fallback: Tensor,
                   codebook_size: int | None = None) -> dict[str, Tensor]:
    """Accuracy of the two copying predictors on the masked positions, per level (the shortcuts a model can take).

    * ``spatial``: the majority code (ties: the smallest code) of the *visible* latents of the same frame;
    * ``frame``: the same latent's code at the nearest visible frame of the same sample (ties: the previous one);

    each computed per level, and where it is undefined (no visible latent in that frame / no visible frame of
    that latent) the predictor falls back to ``fallback`` [L] (the unigram floor's codes), so both are scored
    on every masked position and compare directly with the model's accuracy. ``spatial_cover`` /
    ``frame_cover``: the fraction of masked positions where the copy was defined.

    indices [B, N, T, L] int, mask [B, N, T] bool (True = masked), valid [B, T] bool or None (all real),
    fallback [L] int, codebook_size K (default: from the codes; pass it to avoid a device sync)
    -> {"spatial": [L], "frame": [L], "spatial_cover": [], "frame_cover": [], "n": []} float, and "frame_codes"
    [M, L] (the frame copy's predicted codes; absent when nothing is masked).
    """
    b, n, t, levels = indices.shape
    dev = indices.device
    if valid is None:
        valid = torch.ones(b, t, dtype=torch.bool, device=dev)
    visible = ~mask & valid[:, None, :]  # [B, N, T]
    targets = indices[mask]  # [M, L]
    m = targets.shape[0]
    fallback = fallback.to(dev).long()
    if m == 0:
        zero = torch.zeros(levels, device=dev)
        return {"spatial": zero, "frame": zero.clone(), "spatial_cover": torch.tensor(0.0), "frame_cover": torch.tensor(0.0),
                "n": torch.tensor(0.0)}
    # spatial: code histogram of the visible latents of each (sample, frame, level)
    k = codebook_size or int(max(int(indices.max()) + 1, int(fallback.max()) + 1))
    onehot_idx = indices.permute(0, 2, 3, 1)  # [B, T, L, N]
    vis = visible.permute(0, 2, 1)[:, :, None, :].expand(b, t, levels, n).to(torch.float32)
    hist = torch.zeros(b, t, levels, k, device=dev).scatter_add_(3, onehot_idx.long(), vis)  # [B, T, L, K]
    majority = hist.argmax(-1)  # first max = smallest code on ties
    has_vis = visible.any(1)  # [B, T]
    bi, ni, ti = mask.nonzero(as_tuple=True)
    spatial_pred = torch.where(has_vis[bi, ti][:, None], majority[bi, ti], fallback[None])
    # frame: nearest visible frame of the same latent
    pos = torch.arange(t, device=dev).expand(b, n, t)
    prev = torch.where(visible, pos, torch.full_like(pos, -1)).cummax(dim=2).values  # last visible <= t
    nxt = torch.where(visible, pos, torch.full_like(pos, t)).flip(2).cummin(dim=2).values.flip(2)  # first visible >= t
    p, q = prev[bi, ni, ti], nxt[bi, ni, ti]
    d_prev = torch.where(p >= 0, ti - p, torch.full_like(p, 10 * t + 10))
    d_next = torch.where(q < t, q - ti, torch.full_like(q, 10 * t + 10))
    has_frame = (p >= 0) | (q < t)
    src = torch.where(d_prev <= d_next, p, q).clamp(0, t - 1)
    frame_pred = torch.where(has_frame[:, None], indices[bi, ni, src], fallback[None])
    return {
        "spatial": (spatial_pred == targets).float().mean(0), "frame": (frame_pred == targets).float().mean(0),
        "spatial_cover": has_vis[bi, ti].float().mean(), "frame_cover": has_frame.float().mean(),
        "n": torch.tensor(float(m)), "frame_codes": frame_pred,
    }


def unigram_floor_accuracy(counts: Tensor, targets: Tensor) -> Tensor:
    """Accuracy per level of always predicting each level's most frequent code.

    counts [L, K] code histogram (e.g. of the training tokens seen so far); targets [M, L] -> [L] float.
    """
    best = counts.argmax(dim=1)  # [L]
    if targets.shape[0] == 0:
        return torch.zeros(counts.shape[0], device=counts.device)
    return (targets == best[None]).float().mean(0)
