"""Residual vector quantizer around `vector_quantize_pytorch.ResidualVQ`, always in float32.

The latent is projected to ``codebook_dim`` and L2-normalised once, at the input. The residuals are
not re-normalised: ``use_cosine_sim`` of the library would l2-normalise the input of every level (each
residual), throwing away its magnitude, and ResidualVQ has no option that normalises only its input,
so the normalisation happens here and the codebooks are Euclidean (EMA, k-means init, dead-code expiry).
``sync_codebook`` is always passed explicitly: the library would otherwise guess it from whether a
process group exists when the module is built, which under Lightning is before DDP starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import ResidualVQ

from tokenizer.config import TokenizerConfig


class RVQ(nn.Module):
    """latents [B, N, F, D] -> (quantized [B, N, F, D] float32, indices [B, N, F, L] int64, commitment scalar).

    The commitment loss is the sum over levels of the library's per-level MSE(residual, code).
    Codebook state (``embed``, ``embed_avg``, ``cluster_size``, ``initted``) lives in buffers and is saved
    in the state dict. In training mode the first call runs k-means init, and each call updates the EMA
    codebooks and replaces dead codes; in eval mode nothing is updated once initialised.
    """

    def __init__(self, cfg: TokenizerConfig, sync_codebook: bool) -> None:
        super().__init__()
        self.project_in = nn.Linear(cfg.d_model, cfg.codebook_dim)
        self.project_out = nn.Linear(cfg.codebook_dim, cfg.d_model)
        self.rvq = ResidualVQ(
            dim=cfg.codebook_dim,
            num_quantizers=cfg.rvq_levels,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            rotation_trick=cfg.rotation_trick,
            use_cosine_sim=False,
            commitment_weight=1.0,
            sync_codebook=sync_codebook,
        )

    def unit_input(self, latents: Tensor) -> Tensor:
        """latents [..., D] -> the unit vectors [..., codebook_dim] float32 the codebooks quantise (no quantization)."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            return F.normalize(self.project_in(latents.float()), dim=-1)

    def forward(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, f, _ = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            quantized, indices, commit = self.rvq(self.unit_input(latents.flatten(1, 2)))
            out = self.project_out(quantized)
        return out.view(b, n, f, -1), indices.view(b, n, f, -1), commit.sum()

    def indices_to_codes(self, indices: Tensor, levels: int | None = None) -> Tensor:
        """indices [B, N, F, L] int -> quantized latents [B, N, F, D] float32 (same as `forward`'s output), or with
        ``levels`` the latents from the sum of the first ``levels`` codes only (a coarser reading of the same tokens)."""
        b, n, f, _ = indices.shape
        with torch.autocast(device_type=indices.device.type, enabled=False):
            codes = self.rvq.get_codes_from_indices(indices.long().flatten(1, 2))[:levels].sum(0)
            out = self.project_out(codes)
        return out.view(b, n, f, -1)
