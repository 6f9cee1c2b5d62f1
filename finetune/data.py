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

How signals become model inputs is `finetune.preprocessing` (epochs and braindecode windows: "epochs"
preprocessing with offsets/scales fixed on the training part; CSV and BIDS: the continuous pipeline).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np
from tqdm.auto import tqdm

from data.atomic import content_hash
from data.errors import BrainforgeDataError
from data.preprocess import PreprocessingSpec
from data.readers import is_epochs_file, open_raw
from data.sensors import SensorLayout

from .errors import FinetuneDataError, LabelError, TaskFormatError
from .preprocessing import (
    RawWindows,
    TaskPreprocessing,
    epochs_volts,
    fit_preprocessing,
    fit_scales,
    scale_epochs,
    windows_from_raw,
)

log = logging.getLogger("brainforge.finetune")

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test", "eval": "test"}  # fmt: skip
CSV_COLUMNS = ("path", "label", "subject", "start_s", "stop_s", "split")
DEFAULT_EVENT_WINDOW_S = (0.0, 0.5)  # BIDS events with no duration
PROGRESS_MIN = 4  # files before a progress bar shows


@dataclass
class TaskData:
    """A labelled task, ready for training.

    items: N WindowCollator items (signal [C, T] float32 scaled units, types [C] int8, positions [C, 3]
        float32 metres, NaN unknown, orientations [C, 3], channels (C names), recording, t0_s, label), all
        with the same T.
    labels: [N] int64 indices into ``classes``.
    classes: class names, in label-index order.
    subjects: per item, the subject or None.
    recordings: per item, the recording (file) it came from.
    t0_s: [N] float64 start of each item (see `RawWindows`).
    splits: per item "train" / "val" / "test" when the data says so, else None.
    groups: per item, the labelled unit it came from (epoch, CSV row, BIDS event, recording): windows of
        one unit always land in the same split.
    preprocessing: how items were made (repeat at predict time).
    source: {"kind": "epochs"|"csv"|"bids"|"braindecode", "paths": [...], "hash": sha256 of the inputs}.
    warnings: what was guessed or dropped while loading.
    """

    items: list[dict]
    labels: np.ndarray
    classes: list[str]
    subjects: list[str | None]
    recordings: list[str]
    t0_s: np.ndarray
    splits: list[str | None]
    preprocessing: TaskPreprocessing
    source: dict
    groups: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _volts: list[tuple[SensorLayout, np.ndarray]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.items)
        if not self.groups:
            self.groups = [f"{r}#{i}" for i, r in enumerate(self.recordings)]
        for name in ("labels", "subjects", "recordings", "t0_s", "splits", "groups"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TaskData: {n} items but {len(getattr(self, name))} {name}")
        for it, y in zip(self.items, self.labels, strict=True):
            it["label"] = int(y)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def window_samples(self) -> int:
        return self.preprocessing.window_samples

    def class_counts(self, idx: np.ndarray | None = None) -> dict[str, int]:
        y = self.labels if idx is None else self.labels[np.asarray(idx, dtype=np.int64)]
        return {c: int((y == k).sum()) for k, c in enumerate(self.classes)}

    @property
    def has_subjects(self) -> bool:
        return all(s is not None for s in self.subjects) and len(self.subjects) > 0

    @property
    def has_splits(self) -> bool:
        return any(s is not None for s in self.splits)

    def fit_on(self, train_idx: np.ndarray) -> TaskData:
        """Refit the epochs offsets/scales on the items at ``train_idx`` and rescale every item, in place.

        Call after `finetune.splits.make_splits` when the split was not given by the data (load_task fits
        on the given "train" rows, else on all items). No-op for continuous recordings (scaled per recording).
        """
        if self._volts is None:
            return self
        idx = np.asarray(train_idx, dtype=np.int64)
        prep = fit_scales(self.preprocessing, _stack_by_layout([self._volts[i] for i in idx]))
        self.preprocessing = prep
        for it, (layout, v) in zip(self.items, self._volts, strict=True):
            it["signal"] = scale_epochs(layout, v[None], prep, it["recording"], [])[0]
        return self

    def subset(self, idx: np.ndarray) -> TaskData:
        """The items at ``idx`` (same classes and preprocessing)."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return dataclasses.replace(
            self, items=pick(self.items), labels=self.labels[idx], subjects=pick(self.subjects),
            recordings=pick(self.recordings), t0_s=self.t0_s[idx], splits=pick(self.splits),
            groups=pick(self.groups), _volts=pick(self._volts) if self._volts is not None else None,
        )  # fmt: skip


def _stack_by_layout(pairs: list[tuple[SensorLayout, np.ndarray]]) -> list[tuple[SensorLayout, np.ndarray]]:
    """(layout, [C, T]) per item -> (layout, [E, C, T]) per distinct channel set (for `fit_scales`)."""
    groups: dict[tuple, tuple[SensorLayout, list[np.ndarray]]] = {}
    for layout, v in pairs:
        groups.setdefault(layout.names, (layout, []))[1].append(v)
    return [(lay, np.stack(vs)) for lay, vs in groups.values()]


def _progress(seq: Sequence, desc: str):
    """A tqdm bar over ``seq`` when it is long enough to be worth one."""
    return tqdm(seq, desc=desc, unit="file", disable=len(seq) < PROGRESS_MIN, leave=False)


def _norm_split(value, where: str) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    s = SPLIT_NAMES.get(str(value).strip().lower())
    if s is None:
        raise TaskFormatError(f"{where}: split {value!r} is not one of train, val, test")
    return s


def _norm_subject(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip()
    return s or None


def _hash_inputs(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(set(Path(p).resolve() for p in paths)):
        h.update(str(p.name).encode())
        h.update(content_hash(p).encode())
    return h.hexdigest()


def _class_order(names: Sequence[str], codes: dict[str, int] | None = None) -> list[str]:
    """Classes sorted by event code when known, else naturally (numbers as numbers)."""
    def key(n: str):
        code = (codes or {}).get(n)
        parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)]
        return (code if code is not None else 1 << 60, [(0, p) if isinstance(p, int) else (1, p) for p in parts])

    return sorted(set(names), key=key)


def _check_classes(labels: Sequence[str], where: str) -> None:
    present = sorted(set(labels))
    if len(present) < 2:
        raise LabelError(
            f"{where}: only one class ({present[0] if present else 'none'!s}) in {len(labels)} labelled items; "
            f"a classifier needs at least two"
        )


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


# ----------------------------------------------------------------------------------------------------
# (a) epochs files


def read_epochs_file(p: str | Path) -> mne.BaseEpochs:
    """An MNE epochs file (preloaded) -> Epochs; a missing or unreadable file raises `TaskFormatError` naming it."""
    p = Path(p)
    if not p.is_file():
        raise TaskFormatError(f"{p}: no such epochs file")
    try:
        return mne.read_epochs(p, preload=True, verbose="error")
    except Exception as e:  # MNE raises many types for corrupt files
        raise TaskFormatError(f"{p}: cannot be read as MNE epochs ({type(e).__name__}: {e})") from e


def load_epochs_task(
    files: Sequence[str | Path],
    *,
    trial_types: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
) -> TaskData:
    """(a) One item per epoch of each ``*-epo.fif``; see `load_task`."""
    files = [Path(f) for f in files]
    raw_parts = []  # (file, info, data [E, C, n], names [E], subjects, splits, t0)
    all_names: set[str] = set()
    codes: dict[str, int] = {}
    for f in _progress(files, "reading epochs"):
        ep = read_epochs_file(f)
        inv = {v: k for k, v in ep.event_id.items()}
        names = [inv.get(int(c)) for c in ep.events[:, 2]]
        if any(n is None for n in names):
            bad = sorted({int(c) for c, n in zip(ep.events[:, 2], names, strict=True) if n is None})
            raise LabelError(f"{f}: event code(s) {bad} have no name in event_id {ep.event_id}")
        all_names.update(names)
        for k, v in ep.event_id.items():
            codes.setdefault(k, v)
        md = ep.metadata
        subj = [_norm_subject(v) for v in md["subject"]] if md is not None and "subject" in md else [None] * len(ep)
        if md is not None and "split" in md:
            spl = [_norm_split(v, f"{f}: epoch {i} (metadata row {i})") for i, v in enumerate(md["split"])]
        else:
            spl = [None] * len(ep)
        t0 = ep.events[:, 0] / ep.info["sfreq"] + ep.tmin
        raw_parts.append((f, ep.info, ep.get_data(), names, subj, spl, t0))

    if trial_types is not None:
        unknown = sorted(set(trial_types) - all_names)
        if unknown:
            raise TaskFormatError(
                f"{', '.join(map(str, files))}: trial type(s) {unknown} not in the epochs' event_id "
                f"(present: {_class_order(all_names, codes)})"
            )
        keep_names = set(trial_types)
    else:
        keep_names = all_names
    where = ", ".join(map(str, files))
    kept = [n for part in raw_parts for n in part[3] if n in keep_names]
    _check_classes(kept, where)
    classes = _class_order(set(kept), codes)

    if preprocessing is None:
        given_train = any(s == "train" for part in raw_parts for s in part[5])
        lengths = [
            part[2].shape[-1] / part[1]["sfreq"]
            for part in raw_parts for n, s in zip(part[3], part[5], strict=True)
            if n in keep_names and (s == "train" or not given_train)
        ]  # fmt: skip
        prep = fit_preprocessing("epochs", lengths, spec=spec)
    else:
        prep, given_train = preprocessing, False
    if prep.input_kind != "epochs":
        raise TaskFormatError(f"{where}: the given preprocessing is for {prep.input_kind!r}, not epochs")

    items: list[dict] = []
    volts: list[tuple[SensorLayout, np.ndarray]] = []
    labels, subjects, recordings, t0s, splits, groups, warnings = [], [], [], [], [], [], []
    for f, info, data, names, subj, spl, t0 in raw_parts:
        sel = np.array([n in keep_names for n in names], dtype=bool)
        if not sel.any():
            continue
        layout, v, _ = epochs_volts(info, data[sel], prep, str(f), warnings)
        idx = np.flatnonzero(sel)
        for j, e in enumerate(idx):
            volts.append((layout, v[j]))
            labels.append(classes.index(names[e]))
            subjects.append(subj[e])
            recordings.append(str(f))
            t0s.append(float(t0[e]))
            splits.append(spl[e])
            groups.append(f"{f}#epoch{e}")
    if preprocessing is None:
        fit_idx = [i for i, s in enumerate(splits) if s == "train" or not given_train]
        prep = fit_scales(prep, _stack_by_layout([volts[i] for i in fit_idx]))
    for (layout, v), rec, t0 in zip(volts, recordings, t0s, strict=True):
        sig = scale_epochs(layout, v[None], prep, rec, warnings)[0]
        items.append({"signal": sig, "types": layout.types.astype(np.int8), "positions": layout.positions,
                      "orientations": layout.orientations, "channels": layout.names, "recording": rec, "t0_s": t0})  # fmt: skip
    source = {"kind": "epochs", "paths": [str(f) for f in files], "hash": _hash_inputs(files)}
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s), splits,
                    prep, source, groups, sorted(set(warnings)), volts)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# (b) CSV manifest


@dataclass
class _Row:
    line: int  # line number in the file (the header is line 1)
    path: Path
    label: str
    subject: str | None
    start_s: float | None
    stop_s: float | None
    split: str | None

    def where(self, csv_path: Path) -> str:
        return f"{csv_path}: line {self.line} (path {self.path})"


def _parse_float(value: str | None, col: str, where: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        x = float(value)
    except ValueError:
        raise TaskFormatError(f"{where}: {col} {value!r} is not a number (seconds)") from None
    if not np.isfinite(x):
        raise TaskFormatError(f"{where}: {col} {value!r} is not a finite number")
    return x


def read_csv_manifest(csv_path: str | Path) -> list[_Row]:
    """Parse and check every row of a task CSV (paths resolved against the CSV's folder).

    Raises:
        TaskFormatError: missing columns, a row with too many/few fields, an empty path or label, a
            start/stop that is not a number, only one of start/stop, stop <= start, a negative start, a
            path that does not exist. All problems are listed (up to 20), each with its line number.
    """
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise TaskFormatError(f"{csv_path}: cannot read the manifest ({e})") from e
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise TaskFormatError(f"{csv_path}: empty file; expected a header line path,label[,subject][,start_s,stop_s]")
    header = [h.strip().lower() for h in header]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise TaskFormatError(f"{csv_path}: line 1: missing column(s) {missing}; header is {header}, expected path,label[,subject][,start_s,stop_s]")
    if ("start_s" in header) != ("stop_s" in header):
        raise TaskFormatError(f"{csv_path}: line 1: start_s and stop_s come together; header is {header}")
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        log.warning("%s: ignoring unknown column(s) %s", csv_path, unknown)
    rows, problems = [], []
    for line, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        where = f"{csv_path}: line {line}"
        if len(fields) != len(header):
            problems.append(f"{where}: {len(fields)} field(s), the header has {len(header)} ({','.join(header)})")
            continue
        rec = {h: f.strip() for h, f in zip(header, fields, strict=True)}
        try:
            if not rec["path"]:
                raise TaskFormatError(f"{where}: empty path")
            if not rec["label"]:
                raise TaskFormatError(f"{where}: empty label")
            a = _parse_float(rec.get("start_s"), "start_s", where)
            b = _parse_float(rec.get("stop_s"), "stop_s", where)
            if (a is None) != (b is None):
                raise TaskFormatError(f"{where}: give both start_s and stop_s, or neither (got {rec.get('start_s')!r}, {rec.get('stop_s')!r})")
            if a is not None and (a < 0 or b <= a):
                raise TaskFormatError(f"{where}: segment [{a}, {b}) s: need 0 <= start_s < stop_s")
            p = Path(rec["path"])
            p = p if p.is_absolute() else csv_path.parent / p
            if not p.exists():
                raise TaskFormatError(f"{where}: recording {rec['path']!r} does not exist (looked for {p})")
            rows.append(_Row(line, p, rec["label"], _norm_subject(rec.get("subject")), a, b, _norm_split(rec.get("split"), where)))
        except TaskFormatError as e:
            problems.append(str(e))
    if problems:
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise TaskFormatError(f"{csv_path}: {len(problems)} bad row(s):\n" + "\n".join(problems[:20]) + more)
    if not rows:
        raise TaskFormatError(f"{csv_path}: no data rows")
    return rows


def load_csv_task(
    csv_path: str | Path, *, preprocessing: TaskPreprocessing | None = None, spec: PreprocessingSpec | None = None
) -> TaskData:
    """(b) A CSV manifest over recordings; see `load_task` and the module docstring of `finetune.preprocessing`."""
    csv_path = Path(csv_path)
    rows = read_csv_manifest(csv_path)
    _check_classes([r.label for r in rows], str(csv_path))
    classes = _class_order([r.label for r in rows])
    if preprocessing is None:
        given_train = any(r.split == "train" for r in rows)
        seg = [r.stop_s - r.start_s for r in rows if r.start_s is not None and (r.split == "train" or not given_train)]
        seg = seg or [r.stop_s - r.start_s for r in rows if r.start_s is not None]
        prep = fit_preprocessing("recordings", seg or None, spec=spec)
    else:
        prep = preprocessing

    per_row: dict[int, RawWindows] = {}
    by_path: dict[Path, list[int]] = {}
    for i, r in enumerate(rows):
        by_path.setdefault(r.path.resolve(), []).append(i)
    warnings: list[str] = []
    for idx in _progress(list(by_path.values()), "windowing recordings"):
        first = rows[idx[0]]
        try:
            raw = open_raw(first.path)
        except BrainforgeDataError as e:
            raise TaskFormatError(f"{first.where(csv_path)}: {e}") from e
        seg_rows = [i for i in idx if rows[i].start_s is not None]
        whole_rows = [i for i in idx if rows[i].start_s is None]
        try:
            if seg_rows:
                rw = windows_from_raw(raw, prep, str(first.path), [(rows[i].start_s, rows[i].stop_s) for i in seg_rows])
                for k, i in enumerate(seg_rows):
                    sel = rw.source_index == k
                    per_row[i] = dataclasses.replace(
                        rw, items=[it for it, s in zip(rw.items, sel, strict=True) if s], t0_s=rw.t0_s[sel],
                        source_index=rw.source_index[sel], warnings=[],
                    )  # fmt: skip
                warnings.extend(rw.warnings)
            if whole_rows:
                rw = windows_from_raw(raw, prep, str(first.path))
                warnings.extend(rw.warnings)
                for i in whole_rows:
                    per_row[i] = rw
        except TaskFormatError as e:  # a segment outside the recording: name the CSV line
            m = re.search(r"segment (\d+)", str(e))
            row = rows[seg_rows[int(m.group(1))]] if (m and seg_rows) else first
            raise TaskFormatError(f"{row.where(csv_path)}: {e}") from e
        except BrainforgeDataError as e:
            raise TaskFormatError(f"{first.where(csv_path)}: {e}") from e

    items, labels, subjects, recordings, t0s, splits, groups = [], [], [], [], [], [], []
    for i, r in enumerate(rows):
        rw = per_row[i]
        if len(rw) == 0:
            warnings.append(f"{r.where(csv_path)}: no usable window; row dropped")
        for it, t0 in zip(rw.items, rw.t0_s, strict=True):
            items.append(dict(it))
            labels.append(classes.index(r.label))
            subjects.append(r.subject)
            recordings.append(str(r.path))
            t0s.append(float(t0))
            splits.append(r.split)
            groups.append(f"{csv_path.name}:line{r.line}" if r.start_s is not None else str(r.path.resolve()))
    source = {"kind": "csv", "paths": [str(csv_path)] + sorted({str(r.path) for r in rows}),
              "hash": _hash_inputs([csv_path] + [r.path for r in rows])}  # fmt: skip
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s), splits,
                    prep, source, groups, warnings)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# (c) BIDS


def _annotation_segments(raw: mne.io.BaseRaw) -> list[tuple[str, float, float]]:
    """(description, onset_s, duration_s) with onsets in seconds of ``raw.times``."""
    ann = raw.annotations
    shift = raw.first_time if ann.orig_time is not None else 0.0
    return [(str(d), float(o) - shift, float(du)) for d, o, du in zip(ann.description, ann.onset, ann.duration, strict=True)]


def load_bids_task(
    root: str | Path,
    *,
    trial_types: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
    event_window_s: tuple[float, float] | None = None,
) -> TaskData:
    """(c) A BIDS root: one segment per event of the chosen trial types; see `load_task`."""
    from data.readers import discover

    root = Path(root)
    sources, skipped = discover([root])
    sources = [s for s in sources if s.bids_path is not None]
    if not sources:
        why = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise TaskFormatError(f"{root}: no BIDS recording found{(' (' + why + ')') if why else ''}")
    opened = []
    present: set[str] = set()
    for src in _progress(sources, "opening BIDS recordings"):
        try:
            raw = src.open()
        except BrainforgeDataError as e:
            raise TaskFormatError(f"{root}: {e}") from e
        events = [ev for ev in _annotation_segments(raw) if not ev[0].upper().startswith(("BAD", "EDGE"))]
        present.update(ev[0] for ev in events)
        opened.append((src, raw, events))
    if trial_types is not None:
        unknown = sorted(set(trial_types) - present)
        if unknown:
            raise TaskFormatError(f"{root}: trial type(s) {unknown} not in any events.tsv (present: {sorted(present)})")
        keep = set(trial_types)
    else:
        keep = present
    if not keep:
        raise LabelError(f"{root}: no events with a trial_type in any *_events.tsv")

    warnings: list[str] = []
    plan = []  # (src, raw, [(label, a, b)])
    for src, raw, events in opened:
        dur = raw.n_times / raw.info["sfreq"]
        segs = []
        for desc, onset, d in events:
            if desc not in keep:
                continue
            lo, hi = event_window_s if event_window_s is not None else ((0.0, d) if d > 0 else DEFAULT_EVENT_WINDOW_S)
            a, b = onset + lo, onset + hi
            if a < 0 or b > dur:
                warnings.append(f"{src.recording_id}: event {desc!r} at {onset:.3f} s: window [{a:.3f}, {b:.3f}) s leaves the recording; dropped")
                continue
            segs.append((desc, a, b))
        plan.append((src, raw, segs))
    labels_all = [s[0] for _, _, segs in plan for s in segs]
    _check_classes(labels_all, str(root))
    classes = _class_order(labels_all)
    if preprocessing is None:
        prep = fit_preprocessing("recordings", [b - a for _, _, segs in plan for _, a, b in segs], spec=spec)
    else:
        prep = preprocessing

    items, labels, subjects, recordings, t0s, groups = [], [], [], [], [], []
    for src, raw, segs in _progress(plan, "windowing BIDS events"):
        if not segs:
            continue
        try:
            rw = windows_from_raw(raw, prep, src.recording_id, [(a, b) for _, a, b in segs])
        except FinetuneDataError as e:
            raise TaskFormatError(f"{root}: {e}") from e
        except BrainforgeDataError as e:
            raise TaskFormatError(f"{root}: {src.path}: {e}") from e
        warnings.extend(rw.warnings)
        for it, t0, k in zip(rw.items, rw.t0_s, rw.source_index, strict=True):
            items.append(dict(it))
            labels.append(classes.index(segs[k][0]))
            subjects.append(src.subject)
            recordings.append(src.recording_id)
            t0s.append(float(t0))
            groups.append(f"{src.recording_id}#event{k}")
    files = [Path(s.path) for s, _, _ in plan] + sorted(root.rglob("*_events.tsv"))
    source = {"kind": "bids", "paths": [str(root)], "hash": _hash_inputs(files), "trial_types": sorted(keep)}
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s),
                    [None] * len(items), prep, source, groups, warnings)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# (d) braindecode


def task_from_braindecode(
    ds,
    *,
    classes: Sequence[str] | None = None,
    preprocessing: TaskPreprocessing | None = None,
    spec: PreprocessingSpec | None = None,
    subject_key: str = "subject",
    split_key: str | None = "split",
) -> TaskData:
    """(d) A braindecode ``BaseConcatDataset`` of windows (``create_windows_from_events`` /
    ``create_fixed_length_windows``) -> TaskData, with the epochs preprocessing.

    Args:
        ds: the concat dataset; each sub-dataset is a ``WindowsDataset`` (``.windows``: mne Epochs) or an
            ``EEGWindowsDataset`` (``.raw`` + ``.metadata``). Signals must be in SI units (volts), as MNE reads them.
        classes: names for the integer targets 0..K-1 (default: the targets as strings).
        preprocessing: reuse a fitted TaskPreprocessing.
        spec: base spec for fitting.
        subject_key / split_key: columns of each sub-dataset's ``description`` giving the subject / split.

    Raises:
        TaskFormatError: a sub-dataset that is not windowed, non-integer targets, NaN data.
        LabelError: fewer than two classes.
    """
    subs = getattr(ds, "datasets", None)
    if not subs:
        raise TaskFormatError("task_from_braindecode: expected a braindecode BaseConcatDataset of windows datasets")
    parts = []  # (name, info, data [E, C, n], targets [E], subject, split, t0 [E])
    for d_i, sub in enumerate(subs):
        name = f"braindecode dataset {d_i}"
        desc = getattr(sub, "description", None)
        subject = _norm_subject(desc.get(subject_key)) if desc is not None and subject_key in desc else None
        split = _norm_split(desc.get(split_key), name) if desc is not None and split_key and split_key in desc else None
        if hasattr(sub, "windows"):
            info = sub.windows.info
        elif hasattr(sub, "raw") and hasattr(sub, "metadata"):
            info = sub.raw.info
        else:
            raise TaskFormatError(f"{name}: {type(sub).__name__} is not a windows dataset (use create_windows_from_events first)")
        if len(sub) == 0:
            continue
        xs, ys, t0 = [], [], []
        for j in range(len(sub)):
            x, y, inds = sub[j]
            xs.append(np.asarray(x))
            ys.append(y)
            t0.append(float(inds[1]) / info["sfreq"])
        if len({x.shape for x in xs}) > 1:
            raise TaskFormatError(f"{name}: windows of different shapes {sorted({x.shape for x in xs})}")
        try:
            targets = np.asarray(ys, dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise TaskFormatError(f"{name}: targets must be integer class indices ({e})") from e
        if targets.ndim != 1:
            raise TaskFormatError(f"{name}: targets must be one integer per window, got shape {targets.shape}")
        ch_names = list(getattr(sub, "windows", None).ch_names if hasattr(sub, "windows") else sub.raw.ch_names)
        info = mne.pick_info(info, [info["ch_names"].index(c) for c in ch_names]) if ch_names != info["ch_names"] else info
        parts.append((name, info, np.stack(xs), targets, subject, split, np.asarray(t0)))
    if not parts:
        raise TaskFormatError("task_from_braindecode: every sub-dataset is empty")
    all_targets = np.concatenate([p[3] for p in parts])
    if all_targets.min() < 0:
        raise TaskFormatError(f"task_from_braindecode: negative target {int(all_targets.min())}")
    k = int(all_targets.max()) + 1
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    if len(classes) < k:
        raise LabelError(f"task_from_braindecode: target {k - 1} has no name in classes {classes}")
    _check_classes([classes[t] for t in all_targets], "braindecode dataset")

    given_train = any(p[5] == "train" for p in parts)
    if preprocessing is None:
        lengths = [p[2].shape[-1] / p[1]["sfreq"] for p in parts if p[5] == "train" or not given_train]
        prep = fit_preprocessing("epochs", lengths, spec=spec)
    else:
        prep = preprocessing
    volts, labels, subjects, recordings, t0s, splits, groups, warnings = [], [], [], [], [], [], [], []
    for name, info, data, targets, subject, split, t0 in parts:
        layout, v, _ = epochs_volts(info, data, prep, name, warnings)
        for j in range(len(v)):
            volts.append((layout, v[j]))
            labels.append(int(targets[j]))
            subjects.append(subject)
            recordings.append(name)
            t0s.append(float(t0[j]))
            splits.append(split)
            groups.append(f"{name}#window{j}")
    if preprocessing is None:
        fit_idx = [i for i, s in enumerate(splits) if s == "train" or not given_train]
        prep = fit_scales(prep, _stack_by_layout([volts[i] for i in fit_idx]))
    items = []
    for (layout, v), rec, t0 in zip(volts, recordings, t0s, strict=True):
        sig = scale_epochs(layout, v[None], prep, rec, warnings)[0]
        items.append({"signal": sig, "types": layout.types.astype(np.int8), "positions": layout.positions,
                      "orientations": layout.orientations, "channels": layout.names, "recording": rec, "t0_s": t0})  # fmt: skip
    h = hashlib.sha256()
    for _, _, data, targets, *_ in parts:
        h.update(np.ascontiguousarray(data, dtype=np.float32).tobytes())
        h.update(targets.tobytes())
    source = {"kind": "braindecode", "paths": [], "hash": h.hexdigest(), "n_datasets": len(parts)}
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s), splits,
                    prep, source, groups, sorted(set(warnings)), volts)  # fmt: skip
