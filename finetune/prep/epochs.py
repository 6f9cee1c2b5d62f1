"""The "epochs" preprocessing (steps 1-6 of `finetune.preprocessing`): epochs arrays and MNE Epochs -> `ModelInputs`."""

from __future__ import annotations

import logging

import mne
import numpy as np
from scipy.signal import oaconvolve, resample_poly

from data.arrays import ArrayRecording
from data.preprocess import rational_ratio
from data.sensors import SensorLayout, SensorType

from ..errors import TaskFormatError
from .task import ModelInputs, TaskPreprocessing, _captured_warnings, _concat, _items, _model_channels

log = logging.getLogger("brainforge.finetune")

# ----------------------------------------------------------------------------------------------------
# Epochs


def _low_pass(x: np.ndarray, sfreq_in: float, prep: TaskPreprocessing, warnings: list[str], name: str) -> np.ndarray:
    h_freq = prep.spec.low_pass(sfreq_in)
    if not prep.low_pass or h_freq >= prep.spec.sfreq / 2:
        return x
    h = mne.filter.create_filter(None, prep.spec.sfreq, None, h_freq, verbose="error").astype(np.float32)
    half = (len(h) - 1) // 2
    if half >= x.shape[-1]:
        warnings.append(f"{name}: epochs of {x.shape[-1]} samples are shorter than the {h_freq:g} Hz low-pass filter; not low-passed")
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(half, half)]
    y = np.pad(x, pad, mode="reflect", reflect_type="odd")
    return oaconvolve(y, h.reshape((1,) * (x.ndim - 1) + (-1,)), mode="valid", axes=-1).astype(np.float32)


def _fit_length(x: np.ndarray, t: int) -> np.ndarray:
    """[..., n] -> [..., t]: crop the tail or hold the last value."""
    n = x.shape[-1]
    if n >= t:
        return x[..., :t]
    return np.concatenate([x, np.repeat(x[..., -1:], t - n, axis=-1)], axis=-1)


def epochs_volts(
    info: mne.Info, data: np.ndarray, prep: TaskPreprocessing, name: str, warnings: list[str] | None = None
) -> tuple[SensorLayout, np.ndarray, np.ndarray]:
    """Steps 1-4 of the epochs preprocessing (see the module docstring), before offsets and scales.

    Args:
        info: the epochs' info (sfreq, channel types, positions, bads).
        data: [E, C_all, n] float in SI units, all channels of ``info``.
        prep: an "epochs" TaskPreprocessing (its ``window_samples`` is T).
        name: how errors name the input (file path).
        warnings: a list that receives warnings.

    Returns:
        (layout, volts [E, C, T] float32 SI units, picks [C] indices into ``info["ch_names"]``).

    Raises:
        TaskFormatError: NaN or Inf in the data (names the epoch and channel).
        NoSensorChannelsError: no EEG/MEG channel.
    """
    warnings = warnings if warnings is not None else []
    with _captured_warnings(warnings):
        layout, picks = _model_channels(info, name)
    x = np.asarray(data)[:, picks, :]
    bad = ~np.isfinite(x)
    if bad.any():
        e, c, s = np.argwhere(bad)[0]
        n_ep = int(bad.any(axis=(1, 2)).sum())
        raise TaskFormatError(
            f"{name}: NaN or Inf in epoch {e} (0-based), channel {layout.names[c]}, sample {s} "
            f"({n_ep} of {x.shape[0]} epochs affected); drop or repair those epochs first"
        )
    x = x.astype(np.float32)
    sfreq_in = float(info["sfreq"])
    up, down = rational_ratio(prep.spec.sfreq, sfreq_in)
    if (up, down) != (1, 1):
        x = resample_poly(x, up, down, axis=-1, padtype="line").astype(np.float32)
    x = _low_pass(x, sfreq_in, prep, warnings, name)
    t = prep.window_samples
    if abs(x.shape[-1] - t) > 0.25 * t:
        warnings.append(f"{name}: epochs of {x.shape[-1]} samples at {prep.spec.sfreq:g} Hz fitted to {t} samples")
    return layout, _fit_length(x, t), picks


def scale_epochs(layout: SensorLayout, volts: np.ndarray, prep: TaskPreprocessing, name: str, warnings: list[str]) -> np.ndarray:
    """Steps 5-6: subtract the training offsets and divide by the training scales -> [E, C, T] float32 clipped."""
    if prep.scales is None or prep.offsets is None:
        raise ValueError("TaskPreprocessing has no scales/offsets yet: call fit_scales on the training epochs first")
    off = np.empty(len(layout), np.float32)
    scale = np.empty(len(layout), np.float32)
    unseen = []
    for c, ch in enumerate(layout.names):
        if ch in prep.offsets:
            off[c] = prep.offsets[ch]
        else:
            off[c] = np.median(volts[:, c, :])
            unseen.append(ch)
        t = SensorType(int(layout.types[c])).name.lower()
        if t not in prep.scales:
            raise TaskFormatError(
                f"{name}: channel {ch} is {t.upper()}, a sensor type the model was not trained on "
                f"(trained on: {', '.join(sorted(prep.scales))})"
            )
        scale[c] = prep.scales[t]
    if unseen:
        warnings.append(
            f"{name}: {len(unseen)} channel(s) not in the training data ({', '.join(unseen[:8])}"
            f"{', ...' if len(unseen) > 8 else ''}): offset taken from this input's own median"
        )
    y = (volts - off[None, :, None]) / scale[None, :, None]
    return np.clip(y, -prep.spec.clip, prep.spec.clip).astype(np.float32)


def windows_from_epoch_array(
    info: mne.Info, data: np.ndarray, t0_s: np.ndarray, prep: TaskPreprocessing, name: str
) -> ModelInputs:
    """Epochs given as an array [E, C_all, n] (SI units) with their info -> ModelInputs (steps 1-6)."""
    if prep.input_kind != "epochs":
        raise ValueError(f"windows_from_epoch_array needs an 'epochs' TaskPreprocessing, got {prep.input_kind!r}")
    warnings: list[str] = []
    layout, volts, _ = epochs_volts(info, data, prep, name, warnings)
    sig = scale_epochs(layout, volts, prep, name, warnings)
    t0 = np.asarray(t0_s, dtype=np.float64)
    return ModelInputs(_items(layout, sig, t0, name), t0, layout, np.arange(len(sig), dtype=np.int64), warnings)


def windows_from_epochs(epochs: mne.BaseEpochs, prep: TaskPreprocessing, name: str) -> ModelInputs:
    """MNE Epochs -> ModelInputs, one item per epoch (epochs preprocessing, steps 1-6).

    For a "recordings" TaskPreprocessing each epoch is treated as a short recording segment: it must be at
    least T samples long after resampling, and is windowed like one (see `windows_from_raw`).
    """
    data = epochs.get_data()
    t0 = epochs.events[:, 0] / epochs.info["sfreq"] + epochs.tmin
    if prep.input_kind == "epochs":
        return windows_from_epoch_array(epochs.info, data, t0, prep, name)
    from .recordings import windows_from_raw  # which uses this module's windows_from_epoch_array

    parts = []
    for e in range(len(data)):
        raw = ArrayRecording(data[e], epochs.info)  # what windows_from_raw reads of a Raw, without a copy
        rw = windows_from_raw(raw, prep, f"{name} epoch {e}")
        rw.t0_s = rw.t0_s + t0[e]
        rw.source_index[:] = e
        parts.append(rw)
    return _concat(parts, name)
