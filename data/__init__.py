"""brainforge data stage: MNE recordings -> SensorLayout + PreprocessingSpec -> litdata window shards."""

from .discovery import RecordingSource, discover
from .errors import (
    BrainforgeDataError,
    NoSensorChannelsError,
    NoUsableWindowsError,
    OutputExistsError,
    RecordingTooShortError,
    SamplingRateError,
    UnreadableRecordingError,
    UnsafeShardError,
    UnsupportedInputError,
)
from .formats import is_epochs_file
from .preprocess import PreprocessingSpec, RecordingPipeline, Window
from .readers import open_raw
from .sensors import SensorLayout, SensorType, layout_from_info
from .shards import check_item_fields, check_shard_index, merge, prepare, read_manifest

_LAZY = {"WindowCollator", "WindowDataModule", "window_dataset"}  # need torch + lightning: import on use


def __getattr__(name: str):
    if name in _LAZY:
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")


__all__ = [
    "BrainforgeDataError", "NoSensorChannelsError", "NoUsableWindowsError", "OutputExistsError",
    "PreprocessingSpec", "RecordingPipeline", "RecordingSource", "RecordingTooShortError", "SamplingRateError",
    "SensorLayout", "SensorType", "UnreadableRecordingError", "UnsafeShardError", "UnsupportedInputError", "Window",
    "check_item_fields", "check_shard_index", "is_epochs_file",
    "WindowCollator", "WindowDataModule", "discover", "layout_from_info", "merge", "open_raw", "prepare",
    "read_manifest", "window_dataset",
]
