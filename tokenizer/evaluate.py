"""``python -m tokenizer eval``: reconstruction quality and codebook use of a package on window shards.

Every window is encoded to tokens and decoded back onto its own sensors. Metrics are split by EEG and
MEG (see `tokenizer.metrics`). Optional PNG plots: original vs reconstruction for a few channels,
average amplitude spectra, and code usage per RVQ level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.dataset import WindowCollator, window_dataset
from data.sensors import SensorType
from tokenizer.losses import pearson
from tokenizer.metrics import (
    CodebookUsage,
    ReconstructionMetrics,
    bits_per_channel_second,
    channel_correlation,
    token_redundancy,
)
from tokenizer.package import load_package


@torch.no_grad()
def evaluate(
    package: str | Path,
    shards: str | Path,
    plots: str | Path | None = None,
    batch_size: int = 32,
    max_windows: int | None = None,
    progress: bool = True,
) -> dict:
    """Metrics dict: ``eeg/pcc``, ``meg/nmse``, ..., ``usage_l0``, ``perplexity_l0``, ``bits_per_channel_second``,
    plus what tells whether channels and latents are distinguishable:

    - ``eeg/pcc_position_known`` / ``eeg/pcc_position_unknown``: EEG PCC over channels with / without a position
      from the file or a label rule (channels placed from their signal, `data.signal_positions`, count as without);
    - ``chcorr_orig`` / ``chcorr_recon``: mean correlation between two channels of a window (`channel_correlation`),
      original and reconstruction, over windows with at least 2 channels;
    - ``distinct_l*``, ``spatial_copy_l*``, ``frame_copy_l*``: the tokens' redundancy (`token_redundancy`);
    - ``eeg/nmse_by_hop``: where in the window the error sits, one value per hop of ``cfg.hop`` samples (error
      energy over the energy of the per-channel-window centred target, pooled over EEG channels).
    """
    model = load_package(package).model
    cfg = model.config
    ds = window_dataset(shards)
    n = len(ds) if max_windows is None else min(len(ds), max_windows)
    collate = WindowCollator(max_channels=None)
    rec, usage = ReconstructionMetrics(cfg.sfreq), CodebookUsage(cfg.rvq_levels, cfg.codebook_size)
    bits, first = [], None
    pcc_by_position: dict[str, list[float]] = {"known": [], "unknown": []}
    chcorr: dict[str, list[float]] = {"orig": [], "recon": []}
    redundancy: dict[str, list[float]] = {}
    hop_error, hop_energy = torch.zeros(cfg.n_frames, dtype=torch.float64), torch.zeros(cfg.n_frames, dtype=torch.float64)
    for lo in tqdm(range(0, n, batch_size), desc="eval", unit="batch", disable=not progress):
        batch = collate([ds[i] for i in range(lo, min(lo + batch_size, n))])
        geo = (batch["types"], batch["positions"], batch["orientations"], batch["channel_mask"], batch["channel_ids"])
        idx = model.encode(batch["signal"], *geo)
        recon = model.decode(idx, *geo)
        rec.update(recon, batch["signal"], batch["types"], batch["channel_mask"])
        usage.update(idx)
        eeg = batch["channel_mask"] & (batch["types"] == int(SensorType.EEG))
        # "known": read from the file or found by label; a position inferred from the signal counts as unknown
        known = torch.isfinite(batch["positions"]).all(dim=-1) & ~batch["position_inferred"]
        pcc = pearson(recon, batch["signal"])
        pcc_by_position["known"] += pcc[eeg & known].tolist()
        pcc_by_position["unknown"] += pcc[eeg & ~known].tolist()
        target = batch["signal"][eeg].double()
        if target.shape[-1] == cfg.window_samples:  # windows of another length have other hops: left out
            hops = (-1, cfg.n_frames, cfg.hop)
            hop_error += (recon[eeg].double() - target).square().view(hops).sum(dim=(0, 2))
            hop_energy += (target - target.mean(-1, keepdim=True)).square().view(hops).sum(dim=(0, 2))
        chcorr["orig"] += channel_correlation(batch["signal"], batch["channel_mask"]).tolist()
        chcorr["recon"] += channel_correlation(recon, batch["channel_mask"]).tolist()
        for key, value in token_redundancy(idx).items():
            redundancy.setdefault(key, []).append(value * len(idx))
        bits += [bits_per_channel_second(cfg, int(c)) for c in batch["channel_mask"].sum(1)]
        if first is None:
            first = (batch, recon)
    metrics = {**rec.compute(), **usage.compute(), "bits_per_channel_second": float(np.mean(bits)),
               "n_windows": n, "codebook_size": cfg.codebook_size, "levels": cfg.rvq_levels}
    for side, values in pcc_by_position.items():
        metrics[f"eeg/pcc_position_{side}"] = float(np.mean(values)) if values else float("nan")
        metrics[f"eeg/channels_position_{side}"] = len(values)
    for side, values in chcorr.items():
        finite = [v for v in values if np.isfinite(v)]
        metrics[f"chcorr_{side}"] = float(np.mean(finite)) if finite else float("nan")
    metrics.update({key: float(np.sum(v) / n) for key, v in redundancy.items()})
    if hop_energy.sum() > 0:
        metrics["eeg/nmse_by_hop"] = [round(float(v), 4) for v in hop_error / hop_energy.clamp_min(1e-12)]
    if plots is not None and first is not None:
        _plots(Path(plots), first[0], first[1], usage, cfg.sfreq)
    return metrics


def _plots(out: Path, batch: dict, recon: torch.Tensor, usage: CodebookUsage, sfreq: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    x, y = batch["signal"][0], recon[0]
    n_real = int(batch["channel_mask"][0].sum())
    t = np.arange(x.shape[-1]) / sfreq
    chans = np.linspace(0, n_real - 1, min(4, n_real)).round().astype(int)
    fig, axes = plt.subplots(len(chans), 1, figsize=(10, 1.8 * len(chans)), sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], chans, strict=True):
        ax.plot(t, x[c], lw=0.8, label="original")
        ax.plot(t, y[c], lw=0.8, label="reconstruction")
        ax.set_ylabel(f"ch {c}")
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel(f"time (s), window t0 = {batch['t0_s'][0]:.1f} s of {batch['recording'][0]}")
    fig.tight_layout()
    fig.savefig(out / "reconstruction.png", dpi=100)
    plt.close(fig)

    mask = batch["channel_mask"]
    f = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
    amp = lambda s: np.abs(np.fft.rfft(s[mask].numpy(), axis=-1)).mean(0)  # noqa: E731
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.semilogy(f, amp(batch["signal"]), label="original")
    ax.semilogy(f, amp(recon), label="reconstruction")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("mean |rfft| (scaled units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "spectra.png", dpi=100)
    plt.close(fig)

    counts = usage.counts.numpy()
    fig, axes = plt.subplots(1, counts.shape[0], figsize=(3 * counts.shape[0], 3), squeeze=False)
    for lvl, ax in enumerate(axes[0]):
        c = np.sort(counts[lvl])[::-1]
        ax.bar(np.arange(len(c)), c, width=1.0)
        ax.set_title(f"level {lvl}: {(c > 0).mean():.0%} used")
        ax.set_xlabel("code (sorted by use)")
    axes[0, 0].set_ylabel("count")
    fig.tight_layout()
    fig.savefig(out / "codebook_usage.png", dpi=100)
    plt.close(fig)
