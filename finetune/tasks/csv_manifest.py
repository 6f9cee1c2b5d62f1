"""(b) A CSV manifest ``path,label[,subject][,start_s,stop_s][,split]`` over recordings. See `finetune.data`."""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import BrainforgeDataError
from data.preprocess import PreprocessingSpec
from data.readers import open_raw

from ..errors import TaskFormatError
from ..preprocessing import (
    ModelInputs,
    TaskPreprocessing,
    fit_preprocessing,
    windows_from_raw,
)
from .base import (
    CSV_COLUMNS,
    TaskData,
    check_classes,
    class_order,
    hash_inputs,
    norm_split,
    norm_subject,
    progress_bar,
)

log = logging.getLogger("brainforge.finetune")

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
            rows.append(_Row(line, p, rec["label"], norm_subject(rec.get("subject")), a, b, norm_split(rec.get("split"), where)))
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
    check_classes([r.label for r in rows], str(csv_path))
    classes = class_order([r.label for r in rows])
    if preprocessing is None:
        given_train = any(r.split == "train" for r in rows)
        seg = [r.stop_s - r.start_s for r in rows if r.start_s is not None and (r.split == "train" or not given_train)]
        seg = seg or [r.stop_s - r.start_s for r in rows if r.start_s is not None]
        prep = fit_preprocessing("recordings", seg or None, spec=spec)
    else:
        prep = preprocessing

    per_row: dict[int, ModelInputs] = {}
    by_path: dict[Path, list[int]] = {}
    for i, r in enumerate(rows):
        by_path.setdefault(r.path.resolve(), []).append(i)
    warnings: list[str] = []
    for idx in progress_bar(list(by_path.values()), "windowing recordings"):
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
              "hash": hash_inputs([csv_path] + [r.path for r in rows])}  # fmt: skip
    return TaskData(items, np.asarray(labels, np.int64), classes, subjects, recordings, np.asarray(t0s), splits,
                    prep, source, groups, warnings)  # fmt: skip
