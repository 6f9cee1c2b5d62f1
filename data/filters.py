"""The pipeline's filters: the band-pass + notch FIR (designed once per rate and band), the resampler's anti-alias
FIR and the polyphase resampler that applies it (`resample_reflected`), and the band filter's FFT application to whole
channels (`filter_valid`, `filter_reflected`); `row_medians` for the calibration statistics.

A request to the server is one short recording in one chunk: its 10 s are shorter than the 0.1 Hz high-pass (a
~40 s FIR), so the odd reflections at both edges are longer than the signal itself. `filter_reflected` gives the
same output as padding and `filter_valid`, with an FFT of 3x the signal's length instead of the signal plus the
filter (issue 14).
"""

from __future__ import annotations

from functools import lru_cache

import mne
import numpy as np
import scipy.fft
from scipy.signal import firwin, resample_poly


def _design_band_filter(sf: float, l_freq: float | None, h_freq: float, notch_freqs: tuple[float, ...]) -> np.ndarray:
    """Band-pass and notch FIRs at ``sf`` (MNE defaults), convolved into one symmetric filter (float64)."""
    h = mne.filter.create_filter(None, sf, l_freq, h_freq, verbose="error")
    if notch_freqs:
        freqs = np.asarray(notch_freqs)
        half_trans = 0.5  # half of notch_filter's trans_bandwidth=1 Hz; notch widths freq/200
        lows, highs = freqs - freqs / 400 - half_trans, freqs + freqs / 400 + half_trans
        notch = mne.filter.create_filter(None, sf, highs, lows, l_trans_bandwidth=half_trans,
                                         h_trans_bandwidth=half_trans, verbose="error")
        h = np.convolve(h, notch)
    return h


@lru_cache(maxsize=64)
def band_filter(sf: float, l_freq: float | None, h_freq: float, notch_freqs: tuple[float, ...]) -> np.ndarray:
    """`_design_band_filter` as float32, designed once per (rate, band, notches) in a process (read-only array).

    A design costs tens of milliseconds (MNE's firwin over a 33 s filter); every recording, upload or request
    at one sampling rate shares it.
    """
    h = _design_band_filter(sf, l_freq, h_freq, notch_freqs).astype(np.float32)
    h.flags.writeable = False
    return h


@lru_cache(maxsize=64)
def resample_filter(rate: int) -> np.ndarray | None:
    """The polyphase resampler's anti-alias FIR for ``max(up, down) = rate`` (None when there is nothing to resample)."""
    if rate <= 1:
        return None
    h = firwin(20 * rate + 1, 1.0 / rate, window=("kaiser", 5.0)).astype(np.float32)
    h.flags.writeable = False
    return h


@lru_cache(maxsize=32)
def _resample_plan(up: int, down: int) -> tuple[np.ndarray, int, int, int, int, int]:
    """`resample_reflected`'s block matrix for ``up/down`` (reduced): ``b = k*down`` input samples map to ``o = k*up``
    output samples, ``k`` the fewest periods with ``b >= RESAMPLE_MIN_BLOCK``. Output ``y[o*m + r]`` is the sum over
    ``nb`` consecutive input blocks ``d`` of ``xpad[b*(m + d) + q] * mat[q, d*o + r]`` (``xpad``: the input with
    ``p_l`` samples before it), ``mat[q, d*o + r] = up * h[r*down - (d*b + q - p_l)*up + half]`` (zero off the FIR).

    Returns (mat [b, nb*o] float32 read-only, b, o, nb, p_l, samples of reflection needed after the input).
    """
    h = resample_filter(max(up, down)) * np.float32(up)  # float32, as resample_poly scales it
    half = (len(h) - 1) // 2
    k = max(1, -(-RESAMPLE_MIN_BLOCK // down))
    b, o = k * down, k * up
    p_l = half // up  # input samples before the first needed by output 0
    nb = -(-(((o - 1) * down + half) // up + p_l + 1) // b)
    d, q, r = np.ix_(np.arange(nb), np.arange(b), np.arange(o))
    idx = r * down - (d * b + q - p_l) * up + half
    mat = np.where((idx >= 0) & (idx <= 2 * half), h[np.clip(idx, 0, 2 * half)], np.float32(0))
    mat = np.ascontiguousarray(mat.astype(np.float32).transpose(1, 0, 2).reshape(b, nb * o))
    mat.flags.writeable = False
    return mat, b, o, nb, p_l, half // up + 2


def resample_reflected(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``resample_poly(x, up, down, axis=1, window=resample_filter(max(up, down)), padtype="reflect")`` of ``x``
    [C, n] float32 -> [C, ceil(n*up/down)] float32: the same FIR, the same edges, equal up to float32 round-off.

    scipy's `upfirdn` costs ~1 ns per tap and output sample (0.05 s for a 366-channel MEG minute at 600 Hz); here
    the input, even-reflected at both ends, is cut into blocks of ``b`` samples and each block's outputs are one
    matrix product with the filter's polyphase block matrix (`_resample_plan`), which BLAS does ~4x faster despite
    the zeros in it. Channels go through in blocks of `RESAMPLE_BLOCK_BYTES` of products.
    """
    g = np.gcd(up, down)
    up, down = up // g, down // g
    c, n = x.shape
    mat, b, o, nb, p_l, right = _resample_plan(up, down)
    if max(p_l, right) > n - 1:  # reflections longer than the signal: leave them to scipy
        return resample_poly(x, up, down, axis=1, window=resample_filter(max(up, down)), padtype="reflect")
    n_out = -(-n * up // down)
    mo = -(-n_out // o)  # output blocks
    rows_in = mo + nb - 1  # input blocks
    xp = np.empty((c, rows_in * b), np.float32)
    rr = min(right, xp.shape[1] - p_l - n)
    xp[:, p_l : p_l + n] = x
    xp[:, :p_l] = x[:, p_l:0:-1]
    xp[:, p_l + n : p_l + n + rr] = x[:, n - 1 - rr : n - 1][:, ::-1]
    xp[:, p_l + n + rr :] = 0.0  # feeds only outputs past n_out
    xb = xp.reshape(c, rows_in, b)
    out = np.empty((c, mo, o), np.float32)
    rows = max(1, RESAMPLE_BLOCK_BYTES // (4 * rows_in * nb * o))
    for a in range(0, c, rows):
        e = min(a + rows, c)
        z = (xb[a:e].reshape(-1, b) @ mat).reshape(e - a, rows_in, nb, o)
        dst = out[a:e]
        np.copyto(dst, z[:, :mo, 0])
        for d in range(1, nb):
            dst += z[:, d : d + mo, d]
    return out.reshape(c, mo * o)[:, :n_out]


#: `resample_reflected`: fewest input samples per block (a few taps' worth: BLAS needs some width)
RESAMPLE_MIN_BLOCK = 32
#: `resample_reflected`: bytes of block products per group of channels
RESAMPLE_BLOCK_BYTES = 1 << 22


@lru_cache(maxsize=32)
def _band_spectrum(band_key: tuple, nfft: int) -> np.ndarray:
    """rfft of `band_filter(*band_key)` at length ``nfft`` (complex64, read-only), once per (filter, length)."""
    h = scipy.fft.rfft(band_filter(*band_key), n=nfft).astype(np.complex64)
    h.flags.writeable = False
    return h


def filter_valid(y: np.ndarray, band_key: tuple) -> np.ndarray:
    """``y`` [C, L] float32 convolved with the band filter (M taps, M <= L), "valid" part only: [C, L - M + 1].

    One FFT of length ``next_fast_len(L)`` per channel and a cached filter spectrum: samples ``M-1 .. L-1`` of the
    circular convolution are untouched by wrap-around, so no zero padding to ``L + M - 1`` is needed. Where the
    filter is as long as the signal (a 33 s band-pass on a 10 s request), this is a third of the FFT work of an
    overlap-add convolution, and the filter's transform is never recomputed for a repeated length.
    """
    m = len(band_filter(*band_key))
    n = y.shape[-1]
    if n < m:
        raise ValueError(f"filter_valid: {n} samples are fewer than the filter's {m} taps")
    nfft = scipy.fft.next_fast_len(n, real=True)
    spec = scipy.fft.rfft(y, n=nfft, axis=-1)
    spec *= _band_spectrum(band_key, nfft)
    return scipy.fft.irfft(spec, n=nfft, axis=-1)[..., m - 1 : n].astype(np.float32, copy=False)


@lru_cache(maxsize=32)
def _folded_spectrum(band_key: tuple, n: int, nfft: int) -> tuple[np.ndarray, float, float]:
    """For `filter_reflected` on ``n`` samples: the conjugate rfft (length ``nfft``, complex64, read-only) of the band
    filter wrapped onto the period ``2 (n - 1)`` of the odd reflections, and the filter's sum and first moment."""
    h = band_filter(*band_key).astype(np.float64)[::-1]  # taps in correlation order: out[t] = sum_j h[half + j] y(t + j)
    half = (len(h) - 1) // 2
    j = np.arange(-half, half + 1)
    period = 2 * (n - 1)
    g = np.bincount((j + n - 1) % period, weights=h, minlength=period)  # g[q]: lag q - (n - 1)
    spec = np.conj(scipy.fft.rfft(g, n=nfft)).astype(np.complex64)
    spec.flags.writeable = False
    return spec, float(h.sum()), float((j * h).sum())


def filter_reflected(y: np.ndarray, band_key: tuple) -> np.ndarray:
    """``y`` [C, n] float32 padded at both ends by odd reflection over the band filter's half length, then filtered:
    ``filter_valid(np.pad(y, ((0, 0), (half, half)), mode="reflect", reflect_type="odd"), band_key)`` -> [C, n]
    float32, equal to it up to float32 round-off, without building the padding.

    numpy's odd reflection, repeated where the padding is longer than the signal, is the straight line through
    the first and last samples plus the rest ``z`` continued antisymmetrically with period ``2 (n - 1)``. The filter
    maps the line to itself times its sum (plus its first moment times the slope, zero for these symmetric
    filters); on ``z``, it is the filter wrapped onto one period, applied to three half periods of ``z`` (one FFT
    of ``3 n`` samples). Where the filter is shorter than the signal, padding is cheaper and is used instead.

    Channels go through in blocks of `REFLECT_BLOCK_BYTES` of FFT input: the FFT buffers of one block stay in the
    cache and are reused by the next from the allocator's free memory (whole-array buffers of a 64-channel
    request, 2 MB each, were given back to the OS and faulted in again at every request: 40% of this function's
    time).
    """
    c, n = y.shape
    half = (len(band_filter(*band_key)) - 1) // 2
    nfft = scipy.fft.next_fast_len(3 * n - 3, real=True) if n >= 2 else 0
    if n < 2 or nfft >= scipy.fft.next_fast_len(n + 2 * half, real=True):
        padded = np.pad(y, ((0, 0), (half, half)), mode="reflect", reflect_type="odd")
        return filter_valid(padded, band_key)
    spec_g, total, moment = _folded_spectrum(band_key, n, nfft)
    y = np.asarray(y, dtype=np.float32)
    ramp = np.arange(n, dtype=np.float32)
    slope = (y[:, -1:] - y[:, :1]) / np.float32(n - 1)  # the line: y[:, :1] + slope * ramp
    offset = np.float32(total) * y[:, :1] + np.float32(moment) * slope  # the filtered line: offset + total*slope*ramp
    out = np.empty((c, n), np.float32)
    rows = max(1, REFLECT_BLOCK_BYTES // (4 * nfft))
    for a in range(0, c, rows):
        b = min(a + rows, c)
        w = np.empty((b - a, nfft), np.float32)  # z over [-(n-1), 2(n-1)), then zeros
        z = w[:, n - 1 : 2 * n - 1]
        np.multiply(slope[a:b], ramp, out=z)
        np.subtract(y[a:b], z, out=z)
        z -= y[a:b, :1]
        np.negative(z[:, :0:-1], out=w[:, : n - 1])
        np.negative(z[:, n - 2 : 0 : -1], out=w[:, 2 * n - 1 : 3 * n - 3])
        w[:, 3 * n - 3 :] = 0.0
        spec = scipy.fft.rfft(w, axis=-1, overwrite_x=True)
        spec *= spec_g
        o = out[a:b]
        o[...] = scipy.fft.irfft(spec, n=nfft, axis=-1, overwrite_x=True)[:, :n]
        np.multiply(np.float32(total) * slope[a:b], ramp, out=w[:, :n])  # w is free again: scratch
        o += w[:, :n]
        o += offset[a:b]
    return out


#: FFT input bytes per block of channels in `filter_reflected` (8 channels of a 10 s request at 256 Hz)
REFLECT_BLOCK_BYTES = 1 << 18


def row_medians(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)`` of a [C, n] float array (n >= 1), equal to the last bit; PARTITIONS ``a`` IN PLACE
    (pass a scratch array: the order of each row's values changes, the values do not).

    One `np.partition` at the upper middle, which numpy runs with SIMD selection, and the largest value below it;
    `np.median` partitions at both middle indices of an even count, which takes numpy's slow path (~10x the time
    on [64, 2560] float32). An array holding NaN goes to `np.median` (NaN for those rows).
    """
    if np.isnan(a).any():
        return np.median(a, axis=1)
    n = a.shape[1]
    k = n // 2
    a.partition(k, axis=1)
    upper = a[:, k]
    if n % 2:
        return upper.copy()
    return (a[:, :k].max(axis=1) + upper) / 2
