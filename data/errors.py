"""Exception types of the data stage. Every message names the file, channel or field at fault."""

from __future__ import annotations


class BrainforgeDataError(Exception):
    """Base class: a recording or dataset that cannot be used, with the reason."""


class UnreadableRecordingError(BrainforgeDataError):
    """The file cannot be opened: corrupt, truncated, empty, missing companions, or unsupported."""


class UnsupportedInputError(BrainforgeDataError):
    """The file is readable but is not a continuous recording (annotations only, epochs, ...)."""


class NoSensorChannelsError(BrainforgeDataError):
    """The recording has no EEG, magnetometer or gradiometer channel."""


class RecordingTooShortError(BrainforgeDataError):
    """The recording is shorter than one window."""


class SamplingRateError(BrainforgeDataError):
    """The sampling rate is too low for the preprocessing spec (or otherwise unusable)."""


class NoUsableWindowsError(BrainforgeDataError):
    """Every window of the recording was rejected (NaN/Inf, flat, all channels bad)."""


class OutputExistsError(BrainforgeDataError):
    """The output directory exists and --overwrite was not given."""


class UnsafeShardError(BrainforgeDataError):
    """A shard folder whose litdata index declares a field format that would unpickle (or otherwise execute) data."""


class TruncatedRecordingError(UnreadableRecordingError):
    """The file holds less data than its header declares (cut mid-data, or an unknown / impossible record count).

    ``prepare --allow-truncated`` keeps such recordings (the readable part) with a note in the manifest."""
