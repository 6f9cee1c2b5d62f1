"""From brainforge's inputs (a `data.SensorLayout` per item, signals in scaled units) to BrainOmni's.

BrainOmni's preprocessing (its ``factory`` module) does two things per segment that the model relies on:

* positions: head-frame ``loc[:3]`` centred on the mean of the modality (EEG, or MEG = MAG + GRAD) and
  divided by ``sqrt(3 * mean |p|^2)`` of that modality; orientation ``loc[3:6]`` (planar) / ``loc[9:12]``
  (magnetometers, axial) for MEG, zeros for EEG. Our `SensorLayout` holds exactly these positions (metres)
  and orientations, so `brainomni_positions` only centres and scales them.
* amplitudes: per sensor type, the mean over that type's channels is subtracted at every sample and the
  result divided by one standard deviation over all of that type's values (channel ratios survive).

Both work on padded batches (``channel_mask``). Differences from the reference, for inputs it never had:
a channel with an unknown (NaN) position gets the modality's centroid (0) and a sensor type with a single
channel is only scaled (subtracting its own mean would zero it).
"""

from __future__ import annotations

import torch
from torch import Tensor

EEG, MAG, GRAD = 0, 1, 2


def _mask(x: Tensor, channel_mask: Tensor | None) -> Tensor:
    if channel_mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return channel_mask.bool()


def brainomni_positions(types: Tensor, positions: Tensor, orientations: Tensor,
                        channel_mask: Tensor | None = None) -> Tensor:
    """types [B, C], positions / orientations [B, C, 3] (metres, NaN = unknown) -> pos [B, C, 6]."""
    real = _mask(positions, channel_mask)
    p = positions.float()
    known = torch.isfinite(p).all(-1) & real
    p = torch.where(known[..., None], p, torch.zeros_like(p))
    out = torch.zeros_like(p)
    meg = (types == MAG) | (types == GRAD)
    for group in (types == EEG, meg):
        sel = (group & known).float()[..., None]  # [B, C, 1]
        n = sel.sum(1, keepdim=True).clamp_min(1.0)
        mean = (p * sel).sum(1, keepdim=True) / n
        centred = (p - mean) * sel
        scale = torch.sqrt(3 * (centred.pow(2).sum(-1, keepdim=True)).sum(1, keepdim=True) / n).clamp_min(1e-12)
        out = out + centred / scale
    o = orientations.float()
    o = torch.where(torch.isfinite(o) & (meg & real)[..., None], o, torch.zeros_like(o))
    return torch.cat([out, o], dim=-1)


def brainomni_normalise(signal: Tensor, types: Tensor, channel_mask: Tensor | None = None,
                        eps: float = 1e-6) -> Tensor:
    """signal [B, C, T] -> per sensor type: minus the cross-channel mean at each sample, over one std."""
    real = _mask(signal, channel_mask)
    x = signal.float()
    out = torch.zeros_like(x)
    for t in (EEG, MAG, GRAD):
        sel = ((types == t) & real).float()[..., None]  # [B, C, 1]
        n = sel.sum(1, keepdim=True)  # [B, 1, 1]
        mean = (x * sel).sum(1, keepdim=True) / n.clamp_min(1.0)
        h = torch.where(n > 1, x - mean, x) * sel
        count = (n * x.shape[-1]).clamp_min(1.0)
        mu = h.sum((1, 2), keepdim=True) / count
        std = torch.sqrt(((h - mu) * sel).pow(2).sum((1, 2), keepdim=True) / count)
        out = out + h / (std + eps)
    return out
