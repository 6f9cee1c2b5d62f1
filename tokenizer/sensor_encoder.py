"""Sensor embedding from geometry and type (BrainOmni-style, plus random Fourier features of position).

Positions are metres in the head frame, divided by one fixed scale per modality (the same constants as
`data.sensors.normalised_positions`). Rows with any NaN are "unknown": they are zeroed before any
arithmetic and their position term is a learned "unknown position" embedding instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from data.sensors import EEG_POSITION_SCALE_M, MEG_POSITION_SCALE_M, SensorType
from tokenizer.layers import FeedForward


def normalise_positions(positions: Tensor, types: Tensor) -> tuple[Tensor, Tensor]:
    """Per-modality normalised positions with unknown rows zeroed.

    positions: [..., 3] float metres (NaN = unknown); types: [...] int (SensorType).
    Returns (normalised positions [..., 3] float, unitless ~[-1, 1]; known [...] bool).
    """
    known = torch.isfinite(positions).all(dim=-1)
    clean = torch.where(known[..., None], positions, torch.zeros_like(positions))
    scale = torch.where(types == SensorType.EEG, EEG_POSITION_SCALE_M, MEG_POSITION_SCALE_M).to(clean.dtype)
    return clean / scale[..., None], known


class SensorEncoder(nn.Module):
    """types [B, C] int, positions [B, C, 3] metres (NaN = unknown), orientations [B, C, 3] -> [B, C, D].

    position term: MLP(normalised xyz, sin/cos random Fourier features), or the learned unknown embedding;
    plus Linear(orientation) and a type embedding (EEG / MAG / GRAD), then RMSNorm and a residual FFN.
    Each channel is embedded on its own, so the output is equivariant to channel order.
    """

    def __init__(self, dim: int, n_fourier: int, fourier_sigma: float, ffn_mult: int = 2) -> None:
        super().__init__()
        self.register_buffer("fourier_basis", torch.randn(3, n_fourier) * fourier_sigma)
        self.position_mlp = nn.Sequential(nn.Linear(3 + 2 * n_fourier, dim), nn.SELU(), nn.Linear(dim, dim))
        self.unknown_position = nn.Parameter(torch.randn(dim) * 0.02)
        self.orientation = nn.Linear(3, dim)
        self.type_embedding = nn.Embedding(len(SensorType), dim)
        self.norm = nn.RMSNorm(dim)
        self.ffn = FeedForward(dim, ffn_mult)

    def forward(self, types: Tensor, positions: Tensor, orientations: Tensor) -> Tensor:
        pos, known = normalise_positions(positions.float(), types)
        phase = 2 * math.pi * pos @ self.fourier_basis
        pos_emb = self.position_mlp(torch.cat([pos, phase.sin(), phase.cos()], dim=-1))
        pos_emb = torch.where(known[..., None], pos_emb, self.unknown_position)
        orient = torch.nan_to_num(orientations.float(), nan=0.0)
        x = pos_emb + self.orientation(orient) + self.type_embedding(types.long())
        return self.ffn(self.norm(x))
