"""Learning-rate schedules as multipliers of the peak lr (for `torch.optim.lr_scheduler.LambdaLR`)."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float, decay_fraction: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then ``cosine`` to ``min_ratio`` over the run, or
    ``wsd`` (warmup-stable-decay): flat, then linear decay to ``min_ratio`` over the last ``decay_fraction``."""
    warm = max(1, warmup)
    if step < warm:
        return (step + 1) / warm
    if schedule == "cosine":
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_start = max(warm, int(total * (1 - decay_fraction)))
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        return 1.0 - (1 - min_ratio) * progress
    raise ValueError(f"schedule {schedule!r} must be 'cosine' or 'wsd'")
