"""Labelled task data: epochs files, CSV manifests, BIDS roots and braindecode datasets -> `TaskData`.

Sources (``load_task(path, kind="auto")``):

(a) ``*-epo.fif`` (one file, several, or a folder of them): one item per epoch, labels from ``event_id``
    (the event name of each epoch); ``epochs.metadata`` columns ``subject`` and ``split`` are honoured.
(b) a CSV manifest ``path,label[,subject][,start_s,stop_s][,split]``: ``path`` relative to the CSV's
    folder, any format `data.open_raw` reads; without start/stop the label holds for the whole recording
    (every 2 s window of it), with them for the segment ``[start_s, stop_s)`` in seconds of ``raw.times``.
(c) a BIDS root: labels from the ``trial_type`` of ``*_events.tsv`` (``trial_types`` chooses which), the
    subject from the BIDS entities; each event is a segment [onset, onset + duration), or
    ``event_window_s`` around the onset (default 0 to 0.5 s for events without a duration).
(d) `task_from_braindecode`: a braindecode ``BaseConcatDataset`` of windows (labels are its targets).

Each source is a module of `finetune.tasks` (``epochs``, ``csv_manifest``, ``bids``, ``braindecode_windows``;
`TaskData` in ``base``); this module picks one and re-exports their public names.
How signals become model inputs is `finetune.preprocessing` (epochs and braindecode windows: "epochs"
preprocessing with offsets/scales fixed on the training part; CSV and BIDS: the continuous pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data.preprocess import PreprocessingSpec
from data.readers import is_epochs_file

from .errors import TaskFormatError
from .preprocessing import TaskPreprocessing
from .tasks.base import CSV_COLUMNS, DEFAULT_EVENT_WINDOW_S, SPLIT_NAMES, TaskData
from .tasks.bids import load_bids_task
from .tasks.braindecode_windows import task_from_braindecode
from .tasks.csv_manifest import load_csv_task, read_csv_manifest
from .tasks.epochs import load_epochs_task, read_epochs_file

__all__ = ["CSV_COLUMNS", "DEFAULT_EVENT_WINDOW_S", "SPLIT_NAMES", "TaskData", "load_bids_task", "load_csv_task",
           "load_epochs_task", "load_task", "read_csv_manifest", "read_epochs_file", "task_from_braindecode"]

# ----------------------------------------------------------------------------------------------------
# Entry point


def load_task(
    path: str | Path | Sequence[str | Path],
    *,
    kind: str = "auto",
    trial_types: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
    event_window_s: tuple[float, float] | None = None,
) -> TaskData:
    """Load a labelled task.

    Args:
        path: an epochs file, a list of them, a folder of them, a CSV manifest or a BIDS root.
        kind: "auto" (from the path), "epochs", "csv" or "bids".
        trial_types: which event names / trial types (epochs, BIDS) become classes; None = all present.
        preprocessing: reuse a fitted TaskPreprocessing (e.g. a package's) instead of fitting one.
        spec: base PreprocessingSpec for fitting (default `PreprocessingSpec()`).
        event_window_s: BIDS: (tmin, tmax) in seconds around each event onset; default: the event's own
            duration, else (0, 0.5).

    Raises:
        TaskFormatError: unreadable/missing files, malformed CSV rows, NaN data, unknown trial types
            (messages name the file and row).
        LabelError: fewer than two classes.
    """
    paths = [Path(p) for p in path] if isinstance(path, list | tuple) else [Path(path)]
    if not paths:
        raise TaskFormatError("load_task: no input path")
    for p in paths:
        if not p.exists():
            raise TaskFormatError(f"{p}: no such file or folder")
    kind = _detect_kind(paths) if kind == "auto" else kind
    if kind == "epochs":
        return load_epochs_task(_epoch_files(paths), trial_types=trial_types, preprocessing=preprocessing, spec=spec)
    if len(paths) != 1:
        raise TaskFormatError(f"load_task(kind={kind!r}) takes one path, got {len(paths)}")
    if kind == "csv":
        return load_csv_task(paths[0], preprocessing=preprocessing, spec=spec)
    if kind == "bids":
        return load_bids_task(paths[0], trial_types=trial_types, preprocessing=preprocessing, spec=spec,
                              event_window_s=event_window_s)  # fmt: skip
    raise ValueError(f"load_task: kind must be auto, epochs, csv or bids, got {kind!r}")


def _detect_kind(paths: list[Path]) -> str:
    p = paths[0]
    if len(paths) > 1 or is_epochs_file(p):
        return "epochs"
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if p.is_dir():
        if (p / "dataset_description.json").exists():
            return "bids"
        if any(is_epochs_file(f) for f in p.iterdir()):
            return "epochs"
    raise TaskFormatError(
        f"{p}: not a task input (expected *-epo.fif files or a folder of them, a .csv manifest, or a BIDS root "
        f"with dataset_description.json)"
    )


def _epoch_files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if is_epochs_file(f))
            if not found:
                raise TaskFormatError(f"{p}: folder holds no *-epo.fif file")
            out.extend(found)
        else:
            out.append(p)
    return out
