"""Tokenizer evaluation metrics, accumulable over batches and split by modality (EEG vs MEG).

- time: MAE, NMSE (error energy / target energy per channel) and PCC;
- per band (delta 0.5-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-100 Hz): mean absolute error of
  log-amplitude, and mean phase error 1 - cos(dphi) weighted by target amplitude (no `torch.angle`);
- per-level codebook usage (fraction of codes used) and perplexity, from index histograms;
- bits per channel-second = N_latent * F * L * log2(K) / (C * window_s).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from data.sensors import SensorType
from tokenizer.config import TokenizerConfig
from tokenizer.losses import EPS, amplitude, log_amplitude, pearson, spectrum

BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 100.0),
}

MODALITIES: dict[str, tuple[SensorType, ...]] = {
    "eeg": (SensorType.EEG,),
    "meg": (SensorType.MAG, SensorType.GRAD),
}


def bits_per_channel_second(cfg: TokenizerConfig, n_channels: int) -> float:
    """N_latent * F * L * log2(codebook_size) / (n_channels * window_s)."""
    bits = cfg.n_latent * cfg.n_frames * cfg.rvq_levels * math.log2(cfg.codebook_size)
    return bits / (n_channels * cfg.window_s)


def channel_metrics(pred: Tensor, target: Tensor, sfreq: float, log_amp_floor: float = 0.1) -> dict[str, Tensor]:
    """Per-channel metrics of pred vs target, both [M, T] scaled units -> dict of [M] tensors.

    Keys: ``mae``, ``nmse``, ``pcc``, ``logamp_<band>`` (mean |log(|X|+floor) - log(|Y|+floor)| of the
    orthonormal rfft, as in the loss) and ``phase_<band>`` for each band of `BANDS` (bands without an rfft
    bin below Nyquist are skipped).
    """
    pred, target = pred.float(), target.float()
    err = pred - target
    out = {
        "mae": err.abs().mean(dim=-1),
        "nmse": err.square().sum(dim=-1) / (target.square().sum(dim=-1) + EPS),
        "pcc": pearson(pred, target),
    }
    freqs = torch.fft.rfftfreq(target.shape[-1], d=1.0 / sfreq).to(target.device)
    pred_spec, target_spec = spectrum(pred), spectrum(target)
    pred_amp, target_amp = amplitude(pred_spec), amplitude(target_spec)
    logamp_err = (log_amplitude(pred_spec, log_amp_floor) - log_amplitude(target_spec, log_amp_floor)).abs()
    cos_dphi = (pred_spec * target_spec.conj()).real / (pred_amp * target_amp)
    for band, (lo, hi) in BANDS.items():
        in_band = (freqs >= lo) & (freqs < hi)
        if not in_band.any():
            continue
        w = target_amp[:, in_band]
        out[f"logamp_{band}"] = logamp_err[:, in_band].mean(dim=-1)
        out[f"phase_{band}"] = ((1.0 - cos_dphi[:, in_band]) * w).sum(dim=-1) / (w.sum(dim=-1) + EPS)
    return out


#: names of `channel_metrics` (bands without an rfft bin below Nyquist are simply never counted)
METRIC_NAMES: tuple[str, ...] = ("mae", "nmse", "pcc", *(f"logamp_{b}" for b in BANDS), *(f"phase_{b}" for b in BANDS))


class ReconstructionMetrics(Metric):
    """Means of `channel_metrics` over real channels, per modality (``eeg``, ``meg``), as a torchmetrics `Metric`.

    ``update(pred, target, types, channel_mask)`` with [B, C, T], [B, C, T], [B, C], [B, C] bool;
    ``compute()`` -> {"eeg/mae": ..., "meg/phase_alpha": ..., ...} as floats for the metrics seen. The states
    (sums and counts per modality and metric) are sum-reduced, so under DDP ``compute()`` gives every rank the
    same keys and the values one process would get on all the data.
    """

    full_state_update = False

    def __init__(self, sfreq: float, log_amp_floor: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sfreq = sfreq
        self.log_amp_floor = log_amp_floor
        shape = (len(MODALITIES), len(METRIC_NAMES))
        self.add_state("sums", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, types: Tensor, channel_mask: Tensor | None = None) -> None:
        mask = torch.ones_like(types, dtype=torch.bool) if channel_mask is None else channel_mask.bool()
        for m, members in enumerate(MODALITIES.values()):
            sel = mask & torch.isin(types, torch.tensor([int(t) for t in members], device=types.device))
            if not sel.any():
                continue
            for name, values in channel_metrics(pred[sel], target[sel], self.sfreq, self.log_amp_floor).items():
                i = METRIC_NAMES.index(name)
                self.sums[m, i] += values.sum().to(self.sums)
                self.counts[m, i] += values.numel()

    def compute(self) -> dict[str, float]:
        sums, counts = self.sums.cpu(), self.counts.cpu()
        out = {f"{modality}/{name}": (sums[m, i] / counts[m, i]).item()
               for m, modality in enumerate(MODALITIES) for i, name in enumerate(METRIC_NAMES) if counts[m, i] > 0}
        return dict(sorted(out.items()))


class CodebookUsage(Metric):
    """Per-level histograms of code indices, as a torchmetrics `Metric` (sum-reduced counts under DDP).

    ``update(indices)`` with indices [..., L] int; ``compute()`` -> {"usage_l0": fraction of the K codes
    used at least once, "perplexity_l0": exp(entropy of the code histogram), ...} per level, over all ranks.
    """

    full_state_update = False

    def __init__(self, n_levels: int, codebook_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.add_state("counts", torch.zeros(n_levels, codebook_size, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, indices: Tensor) -> None:
        flat = indices.reshape(-1, indices.shape[-1]).long().to(self.counts.device)
        for level in range(self.counts.shape[0]):
            self.counts[level] += torch.bincount(flat[:, level], minlength=self.codebook_size)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for level, counts in enumerate(self.counts.cpu()):
            p = counts.double() / counts.sum().clamp_min(1)
            entropy = -(p[p > 0] * p[p > 0].log()).sum()
            out[f"usage_l{level}"] = (counts > 0).double().mean().item()
            out[f"perplexity_l{level}"] = entropy.exp().item()
        return out


def channel_correlation(signal: Tensor, channel_mask: Tensor | None = None) -> Tensor:
    """Mean Pearson correlation between distinct real channels of each window: [B, C, T] -> [B].

    Windows with fewer than 2 real channels give NaN. Comparing this for a reconstruction and its
    original tells whether the decoder gives channels their own waveforms (a decoder that gives every
    channel the same waveform scores 1.0 whatever the original's value).
    """
    x = signal.float()
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if channel_mask is None else channel_mask.bool()
    x = (x - x.mean(dim=-1, keepdim=True)) * mask[..., None]
    x = x / (x.square().sum(dim=-1, keepdim=True) + EPS).sqrt()
    corr = x @ x.transpose(1, 2)  # [B, C, C]
    n = mask.sum(dim=1).double()
    off = corr.double().sum(dim=(1, 2)) - corr.double().diagonal(dim1=1, dim2=2).sum(dim=1)
    return torch.where(n >= 2, off / (n * (n - 1)).clamp_min(1), torch.full_like(n, float("nan"))).float()


def token_redundancy(indices: Tensor) -> dict[str, float]:
    """How predictable tokens are from their neighbours: indices [B, N_latent, F, L] int -> floats per level l.

    - ``distinct_l{l}``: distinct codes among the N latents of a frame (mean over frames; N is the most);
    - ``spatial_copy_l{l}``: accuracy of predicting a token by the commonest code of the *other* latents of
      the same frame (ties -> the smallest code);
    - ``frame_copy_l{l}``: accuracy of predicting a token by the same latent's code in the previous frame.
    """
    idx = indices.long()
    b, n, f, n_levels = idx.shape
    out: dict[str, float] = {}
    for level in range(n_levels):
        codes = idx[..., level].permute(0, 2, 1).reshape(b * f, n)  # [frames, N]
        same = codes[:, :, None] == codes[:, None, :]  # [frames, N, N]
        out[f"distinct_l{level}"] = float(
            (same.float().sum(dim=2).reciprocal().sum(dim=1)).mean()
        )  # sum over latents of 1 / (size of its code's group) = number of distinct codes
        # for latent i, latent j != i votes for its code with the size of that code's group among the others
        # (j's group size, minus 1 if i shares the code); the best-supported code wins, ties to the smaller
        recount = same.float().sum(dim=2)[:, None, :] - same.float()  # [frames, i, j]
        score = recount - torch.eye(n, device=idx.device) * 1e9 - codes[:, None, :].float() * 1e-6
        best = score.argmax(dim=2)  # [frames, N]: the latent whose code is predicted
        guess = torch.gather(codes, 1, best)
        out[f"spatial_copy_l{level}"] = float((guess == codes).float().mean()) if n > 1 else float("nan")
        out[f"frame_copy_l{level}"] = (
            float((idx[:, :, 1:, level] == idx[:, :, :-1, level]).float().mean()) if f > 1 else float("nan")
        )
    return out
