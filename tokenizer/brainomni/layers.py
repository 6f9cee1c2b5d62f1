"""Building blocks of the BrainOmni family (arXiv 2505.18185), written for brainforge.

The released BrainOmni checkpoints were trained with weight-normalised 1-D convolutions in an EnCodec-style
("SEANet") encoder/decoder, an LSTM with a skip connection, SELU feed-forward layers and RMSNorm. The blocks
here reproduce that arithmetic exactly (same padding rule, same weight-norm parametrisation ``g * v / |v|``,
same float32 RMSNorm), so a converted checkpoint gives the same numbers as the reference implementation.
Parameter names are ours; `pretrain.brainomni.convert` maps the released names onto them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, scaled by a learned gain, cast back to the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * h).to(dtype)


class SeluMLP(nn.Module):
    """dim -> 4 dim -> SELU -> dim (BrainOmni's feed-forward)."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.down(F.selu(self.up(x))))


def _weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """``g * v / ||v||`` with the norm over every dim but the first (torch's weight_norm, dim=0)."""
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
    return v * (g / norm)


def _reflect_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Reflect padding that also works when the input is shorter than the pad (zero-extend first)."""
    n = x.shape[-1]
    extra = max(left, right) - n + 1 if n <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    out = F.pad(x, (left, right), mode="reflect")
    return out[..., : out.shape[-1] - extra] if extra else out


class WNConv1d(nn.Module):
    """Weight-normalised Conv1d with "same"-style padding: total (k - 1) * d - (s - 1), split with the extra
    sample on the left, plus right padding so that the last frame is complete; reflect mode."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(c_out, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(c_out, c_in, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.flatten(1).norm(dim=1).view(-1, 1, 1))
        self.kernel, self.stride, self.dilation = kernel, stride, dilation

    def forward(self, x: Tensor) -> Tensor:
        k, s, d = self.kernel, self.stride, self.dilation
        total = (k - 1) * d - (s - 1)
        n = x.shape[-1]
        frames = (n - k + total) / s + 1
        extra = (math.ceil(frames) - 1) * s + (k - total) - n
        right = total // 2
        x = _reflect_pad(x, total - right, right + extra)
        return F.conv1d(x, _weight_norm(self.weight_g, self.weight_v), self.bias, stride=s, dilation=d)


class WNConvTranspose1d(nn.Module):
    """Weight-normalised ConvTranspose1d trimming k - s samples (the extra one on the left)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(c_in, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(c_in, c_out, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose1d(x, _weight_norm(self.weight_g, self.weight_v), self.bias, stride=self.stride)
        total = self.kernel - self.stride
        right = total // 2
        return y[..., total - right : y.shape[-1] - right]


class ConvResidual(nn.Module):
    """ELU -> conv k3 (dim -> dim/2) -> ELU -> conv k1 (dim/2 -> dim), plus a 1x1-conv shortcut."""

    def __init__(self, dim: int, kernel: int = 3, dilation: int = 1, compress: int = 2) -> None:
        super().__init__()
        hidden = dim // compress
        self.conv1 = WNConv1d(dim, hidden, kernel, dilation=dilation)
        self.conv2 = WNConv1d(hidden, dim, 1)
        self.shortcut = WNConv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv2(F.elu(self.conv1(F.elu(x))))


class SkipLSTM(nn.Module):
    """Unidirectional LSTM over the time axis of [B, D, T] with a residual connection."""

    def __init__(self, dim: int, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x: Tensor) -> Tensor:
        seq = x.permute(2, 0, 1)  # T B D
        out, _ = self.lstm(seq)
        return (out + seq).permute(1, 2, 0)


class ConvEncoder(nn.Module):
    """Per-channel waveform encoder: [M, 1, L] -> [M, dim, L / prod(ratios)].

    conv(1 -> f) then, for each stride r in reversed(ratios): residual block, ELU, strided conv (k = 2r) doubling
    the width; then the LSTM, ELU and a conv to ``dim``."""

    def __init__(self, dim: int, n_filters: int, ratios: list[int], kernel: int, last_kernel: int,
                 residual_kernel: int = 3, lstm_layers: int = 2) -> None:
        super().__init__()
        self.stem = WNConv1d(1, n_filters, kernel)
        width = n_filters
        self.res = nn.ModuleList()
        self.down = nn.ModuleList()
        for r in reversed(ratios):
            self.res.append(ConvResidual(width, residual_kernel))
            self.down.append(WNConv1d(width, 2 * width, 2 * r, stride=r))
            width *= 2
        self.lstm = SkipLSTM(width, lstm_layers)
        self.out = WNConv1d(width, dim, last_kernel)
        self.hop = int(math.prod(ratios))

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for res, down in zip(self.res, self.down, strict=True):
            h = down(F.elu(res(h)))
        return self.out(F.elu(self.lstm(h)))


class ConvDecoder(nn.Module):
    """Mirror of `ConvEncoder`: [M, dim, F] -> [M, 1, F * prod(ratios)]."""

    def __init__(self, dim: int, n_filters: int, ratios: list[int], kernel: int, last_kernel: int,
                 residual_kernel: int = 3, lstm_layers: int = 2) -> None:
        super().__init__()
        width = n_filters * 2 ** len(ratios)
        self.stem = WNConv1d(dim, width, kernel)
        self.lstm = SkipLSTM(width, lstm_layers)
        self.up = nn.ModuleList()
        self.res = nn.ModuleList()
        for r in ratios:
            self.up.append(WNConvTranspose1d(width, width // 2, 2 * r, r))
            self.res.append(ConvResidual(width // 2, residual_kernel))
            width //= 2
        self.out = WNConv1d(n_filters, 1, last_kernel)

    def forward(self, z: Tensor) -> Tensor:
        h = self.lstm(self.stem(z))
        for up, res in zip(self.up, self.res, strict=True):
            h = res(up(F.elu(h)))
        return self.out(F.elu(h))


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, T, H * d] -> [B, H, T, d]."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, d] -> [B, T, H * d]."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)
