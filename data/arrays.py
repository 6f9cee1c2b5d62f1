"""`ArrayRecording`: a signal already in memory, [C, T] with its `mne.Info`, given to the preprocessing as an
opened recording, without building an `mne.io.RawArray`.

The server receives every v2 / octet-stream / JSON request as such an array. A RawArray for it copies the info,
checks it again, converts the samples to float64 and, per read, converts them back to float32 (issue 14: about
1.5 ms of a 64-channel 10 s request, a tenth of its preprocessing). `RecordingPipeline` and the fine-tuning
stage's preprocessing read only what this class has.
"""

from __future__ import annotations

from collections.abc import Sequence

import mne
import numpy as np


class ArrayRecording:
    """The part of `mne.io.BaseRaw` that the preprocessing reads, over an array.

    Args:
        data: [C, T] samples in SI units (volts, tesla, ...), kept as given (not copied, not converted: float32
            stays float32, the same values a RawArray would give back as float64) and read-only from here on.
        info: its measurement info (C channels in ``data`` order, ``sfreq``); shared, not copied: leave it unchanged.

    Raises:
        ValueError: ``data`` is not 2-D or its channel count differs from the info's.
    """

    filenames: tuple = ()
    first_samp = 0

    def __init__(self, data: np.ndarray, info: mne.Info) -> None:
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"ArrayRecording: data must be [C, T], got shape {list(data.shape)}")
        if data.shape[0] != len(info["ch_names"]):
            raise ValueError(f"ArrayRecording: {data.shape[0]} channels of data but {len(info['ch_names'])} in info")
        self._data = data.view()
        self._data.flags.writeable = False
        self.info = info

    @property
    def ch_names(self) -> list[str]:
        return list(self.info["ch_names"])

    @property
    def n_times(self) -> int:
        return int(self._data.shape[1])

    def __len__(self) -> int:
        return self.n_times

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.n_times) / float(self.info["sfreq"])

    def get_channel_types(self) -> list[str]:
        return self.info.get_channel_types()

    def get_data(self, picks: Sequence[int] | Sequence[str] | np.ndarray | None = None, start: int = 0,
                 stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of the channels ``picks`` (indices or names; None: all), [len(picks), n], in
        the data's own dtype. May be a read-only view of the data (all channels, in order)."""
        stop = self.n_times if stop is None else min(int(stop), self.n_times)
        start = max(0, int(start))
        if picks is None:
            return self._data[:, start:stop]
        idx = np.asarray(picks)
        if idx.dtype.kind in "US":
            names = self.info["ch_names"]
            missing = [str(p) for p in idx if p not in names]
            if missing:
                raise ValueError(f"ArrayRecording.get_data: no channel named {missing[:5]}")
            idx = np.array([names.index(p) for p in idx], dtype=np.int64)
        elif idx.dtype.kind not in "iu":
            raise TypeError(f"ArrayRecording.get_data: picks must be channel indices or names, got {idx.dtype}")
        if idx.ndim == 1 and np.array_equal(idx, np.arange(self._data.shape[0])):
            return self._data[:, start:stop]
        return self._data[idx, start:stop]
