"""A classical transform codec at a given bit budget: the trivial baseline for the tokenizer's reconstruction.

Each channel-window is coded on its own: DCT-II (orthonormal) of the whole window, the K largest coefficients
kept, each sent as its index (ceil(log2 T) bits) and its value on a uniform b-bit grid over [-s, s], where s is
the largest kept magnitude (16 bits). The encoder picks b in 2..7 per channel-window (3 bits say which) and
K = floor((budget - 19) / (index bits + b)); nothing else is sent. Every bit is counted, so the codec never
spends more than the budget it is given (`bits_used`).

Nothing here is learned, so it cannot overfit the held-out set: it is what the tokenizer has to beat at the
same bits per channel-second.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct, idct

SCALE_BITS = 16
CHOICE_BITS = 3
VALUE_BITS = (2, 3, 4, 5, 6, 7)


def _kept(n_samples: int, budget_bits: float, value_bits: int) -> int:
    index_bits = math.ceil(math.log2(n_samples))
    return max(0, min(n_samples, int((budget_bits - SCALE_BITS - CHOICE_BITS) // (index_bits + value_bits))))


def bits_used(n_samples: int, budget_bits: float, value_bits: int) -> int:
    """Bits one channel-window costs with ``value_bits`` per kept value (0 when nothing fits in the budget)."""
    k = _kept(n_samples, budget_bits, value_bits)
    return 0 if k == 0 else SCALE_BITS + CHOICE_BITS + k * (math.ceil(math.log2(n_samples)) + value_bits)


def dct_codec(x: np.ndarray, budget_bits: float, block: int | None = None) -> np.ndarray:
    """Code every row of x [C, T] (one channel-window per row) in at most ``budget_bits`` bits -> its
    reconstruction [C, T] (zeros for a row when not even one coefficient fits).

    ``block``: code each run of ``block`` samples apart, with an equal share of the budget (T a multiple of it),
    as a frame-by-frame coder must; None = the whole window at once."""
    x = np.asarray(x, dtype=np.float64)
    if block is not None and block != x.shape[-1]:
        c, t = x.shape
        if t % block:
            raise ValueError(f"dct_codec: window of {t} samples is not a multiple of block {block}")
        parts = x.reshape(c, t // block, block).reshape(-1, block)
        return dct_codec(parts, budget_bits * block / t).reshape(c, t)
    coefs = dct(x, norm="ortho", axis=-1)
    order = np.argsort(-np.abs(coefs), axis=-1)
    best = np.zeros_like(x)
    best_err = np.full(x.shape[0], np.inf)
    for value_bits in VALUE_BITS:
        k = _kept(x.shape[-1], budget_bits, value_bits)
        if k == 0:
            continue
        idx = order[:, :k]
        values = np.take_along_axis(coefs, idx, axis=-1)
        scale = np.float16(np.abs(values).max(axis=-1, keepdims=True)).astype(np.float64) + 1e-12
        levels = 2**value_bits
        q = np.clip(np.floor((values / scale + 1.0) / 2.0 * levels), 0, levels - 1)
        sent = np.zeros_like(coefs)
        np.put_along_axis(sent, idx, ((q + 0.5) / levels * 2.0 - 1.0) * scale, axis=-1)
        recon = idct(sent, norm="ortho", axis=-1)
        err = ((recon - x) ** 2).sum(axis=-1)
        better = err < best_err
        best[better], best_err[better] = recon[better], err[better]
    return best.astype(np.float32)
