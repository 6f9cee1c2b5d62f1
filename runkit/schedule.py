"""Learning-rate schedules as multipliers of the peak lr (for `torch.optim.lr_scheduler.LambdaLR`)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float, decay_fraction: float,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then ``cosine`` to ``min_ratio`` over the run, or
    ``wsd`` (warmup-stable-decay): flat, then linear decay to ``min_ratio`` over the last ``decay_fraction``.

    ``time_fraction`` (0 to 1, `TimeBudget.fraction`) is the share of a wall-clock cap already spent: after warm-up
    the schedule stands at whichever is further along, ``step / total`` or ``time_fraction``."""
    warm = max(1, warmup)
    if step < warm:
        return (step + 1) / warm
    step = max(step, int(time_fraction * total))
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


class TimeBudget:
    """Share of ``--trainer.max_time`` a run has spent (0 to 1), the same number on every rank.

    Lightning stops a run at its time cap wherever the step schedule stands, so a cosine planned over
    ``max_steps`` is cut before it has annealed (a tokenizer bench run stopped at 5,963 of 8,000 steps with the
    lr still at a fifth of its peak). Passed to `lr_factor`, the fraction lets the schedule follow whichever is
    further along, steps or wall time: a capped run still ends at the low lr. Without a time cap it stays 0.
    Rank 0's clock is broadcast every ``every`` steps (a collective at the same steps on every rank), so under
    DDP all ranks keep the same lr.
    """

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.fraction = 0.0

    def update(self, trainer: pl.Trainer) -> None:
        """Call at the start of every training batch (a LightningModule's ``on_train_batch_start``)."""
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None or trainer.global_step % self.every:
            return
        remaining = timer.time_remaining("train")
        if remaining is None:
            return
        elapsed = timer.time_elapsed("train")
        fraction = min(1.0, elapsed / max(elapsed + remaining, 1e-9))
        self.fraction = float(trainer.strategy.broadcast(fraction))
