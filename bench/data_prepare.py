"""Benchmark of the data stage (`data.prepare` / ``python -m data prepare``).

Run from the repository root::

    .venv/bin/python bench/data_prepare.py          # full: warm-up + best of 3, 30 min and 2 h tiles (~10 min)
    .venv/bin/python bench/data_prepare.py --quick  # best of 1, no warm-up, 1 and 10 min tiles (~2 min)

It measures, in one run, and prints a table and writes ``bench/results/data_prepare.md``:

1. Throughput against braindecode on the same real recordings (``../shared/data/recordings`` when
   present, else the bundled ``tests/data`` fixtures), in recording-seconds per wall second. Ours:
   `data.prepare` (workers=1; workers=2 is item 3). Peer: braindecode doing the same work: one
   ``RawDataset(raw)`` (formerly ``BaseDataset``) per recording (preloaded) in a ``BaseConcatDataset``, ``preprocess`` with
   ``Preprocessor``s (pick EEG/MEG, polyphase resample to 256 Hz, FIR band-pass 0.1 Hz to
   min(100, 0.45 sfreq), notch at the same frequencies, bad-channel flagging + robust MAD scaling per
   sensor type), ``create_fixed_length_windows`` (512 samples, stride 512) and ``.save(dir)``. The
   filter edges and notch frequencies of both sides come from the same `data.PreprocessingSpec`.
   One untimed warm-up each, then the sides run interleaved, best of N.
2. Peak memory of ``python -m data prepare`` on one multi-channel recording tiled to a short and a
   long duration (built from parts on disk, never held whole in memory), each in a fresh child
   process: the whole process tree is polled (RSS and PSS) and the kernel's ru_maxrss is read.
3. Across cores: the throughput inputs copied into ``--tile-copies`` folders (default 11: 44 recordings), prepared
   with ``--workers 1`` and ``--workers 2`` (the same call, sides interleaved, best of N), with each worker's
   start-up time (process start to ready, from the manifest) and the one-worker time / two-worker time ratio.
4. (not with --quick) Where our per-recording time goes: each input once through
   `data.RecordingPipeline` in-process under cProfile, with the input samples it reads counted.

Every number printed or written is measured in that run; only the aims (>= 2x braindecode, workers=2 >= 1.5x
workers=1 on the large input, < 1 GB at 2 h) are fixed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402

import data  # noqa: E402
from data import PreprocessingSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "data_prepare.md"
WHAT = __doc__.split("data_prepare.md``:\n\n")[1].split("\n\nEvery number")[0]
SHARED = ROOT.parent / "shared" / "data" / "recordings"
#: real recordings used for throughput when ../shared is present (relative to SHARED)
SHARED_INPUTS = (
    "eeglab/test_raw.set",
    "edf/test_edf_overlapping_annotations.edf",
    "bdf/multiple_annotation_chans.bdf",
    "fif/test_raw.fif",
)
FIXTURE_INPUTS = ("test.edf", "sample_audvis_5s_raw.fif", "test_subsecond.edf")
#: tiling sources for the memory test, first one present wins (>= 32 channels each)
TILE_SOURCES = (SHARED / "eeglab/test_raw.set", SHARED / "edf/test_edf_overlapping_annotations.edf",
                ROOT / "tests/data/test.edf")
TILE_MAX_CHANNELS = 64
AIM_SPEEDUP = 2.0
AIM_WORKERS = 1.5  # workers=2 over workers=1 on the large input
AIM_PEAK_BYTES = 1024**3
GROWTH_TOLERANCE = 1.15  # long/short peak ratio still counted as "does not grow"


@dataclass
class Recording:
    path: Path
    seconds: float
    sfreq: float
    n_sensors: int  # EEG + MAG + GRAD channels

    @property
    def label(self) -> str:
        return _label(self.path)


def _label(path: Path) -> str:
    """``path`` relative to the shared recordings folder, else to the repository root."""
    for base in (SHARED, ROOT):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


# ----------------------------------------------------------------------------------------------------
# Inputs


def sensor_picks(info: mne.Info) -> np.ndarray:
    return mne.pick_types(info, meg=True, eeg=True, ref_meg=False, exclude=[])


def describe_recording(path: Path) -> Recording:
    raw = data.open_raw(path, preload=False)
    sfreq = float(raw.info["sfreq"])
    return Recording(path, raw.n_times / sfreq, sfreq, len(sensor_picks(raw.info)))


def find_inputs() -> tuple[list[Recording], str]:
    """The throughput inputs and where they come from."""
    shared = [SHARED / p for p in SHARED_INPUTS]
    if all(p.exists() for p in shared):
        paths, origin = shared, "real recordings from ../shared/data/recordings"
    else:
        paths = [ROOT / "tests" / "data" / p for p in FIXTURE_INPUTS]
        origin = "bundled fixtures in tests/data (../shared/data/recordings not found)"
    return [describe_recording(p) for p in paths], origin


# ----------------------------------------------------------------------------------------------------
# Our side


def run_ours(paths: Sequence[Path], out: Path, workers: int) -> dict:
    """`data.prepare` into ``out``; returns the manifest. Filter designs are cleared first: each run designs its
    own, as a fresh ``python -m data prepare`` would (within a run, recordings at one rate share a design)."""
    from data.preprocess import band_filter, resample_filter

    band_filter.cache_clear()
    resample_filter.cache_clear()
    return data.prepare([str(p) for p in paths], out, workers=workers, overwrite=True, progress=False)


# ----------------------------------------------------------------------------------------------------
# Peer: braindecode doing the same work


def _flag_bads_and_scale(raw: mne.io.BaseRaw, z_threshold: float) -> None:
    """Per sensor type: flag flat / robust-z (log MAD) outlier channels as bad, divide by the median MAD."""
    types = np.array(raw.get_channel_types())
    for t in sorted(set(types)):
        idx = np.flatnonzero(types == t)
        x = raw.get_data(picks=idx)
        mad = np.median(np.abs(x - np.median(x, axis=1, keepdims=True)), axis=1)
        ref = max(float(np.median(mad)), 1e-30)
        live = mad > ref * 1e-6
        logm = np.log(np.where(live, mad, ref))
        spread = 1.4826 * np.median(np.abs(logm[live] - np.median(logm[live]))) if live.sum() >= 3 else 0.0
        z = (logm - np.median(logm[live])) / spread if spread > 0 else np.zeros_like(logm)
        good = live & (np.abs(z) <= z_threshold)
        raw.info["bads"] += [raw.ch_names[i] for i in idx[~good]]
        scale = float(np.median(mad[good])) if good.any() else ref
        raw.apply_function(lambda a, s=scale: a / s, picks=idx, channel_wise=False)


def braindecode_preprocessors(sfreq_in: float, line_freq: float | None, spec: PreprocessingSpec) -> list:
    from braindecode.preprocessing import Preprocessor

    steps = [
        Preprocessor("pick_types", meg=True, eeg=True, ref_meg=False, exclude=[]),
        Preprocessor("resample", sfreq=spec.sfreq, method="polyphase"),
        Preprocessor("filter", l_freq=spec.l_freq, h_freq=spec.low_pass(sfreq_in)),
    ]
    notch = spec.notch_freqs(sfreq_in, line_freq)
    if notch:
        steps.append(Preprocessor("notch_filter", freqs=notch))
    steps.append(Preprocessor(_flag_bads_and_scale, apply_on_array=False, z_threshold=spec.bad_z_threshold))
    return steps


def run_braindecode(paths: Sequence[Path], out: Path) -> int:
    """The braindecode pipeline into ``out``; returns the number of windows written."""
    from braindecode.datasets import BaseConcatDataset, RawDataset  # BaseDataset's 1.x name
    from braindecode.preprocessing import create_fixed_length_windows, preprocess

    spec = PreprocessingSpec()
    datasets = []
    for p in paths:
        raw = data.open_raw(p, preload=True)  # the same reader (and channel types) as our side
        sfreq_in, line_freq = float(raw.info["sfreq"]), raw.info.get("line_freq")
        ds = RawDataset(raw, description={"path": str(p)})
        preprocess(BaseConcatDataset([ds]), braindecode_preprocessors(sfreq_in, line_freq, spec))
        datasets.append(ds)
    windows = create_fixed_length_windows(
        BaseConcatDataset(datasets), window_size_samples=spec.window_samples,
        window_stride_samples=spec.stride_samples, drop_last_window=True,
    )
    if out.exists():
        shutil.rmtree(out)
    windows.save(str(out), overwrite=True)
    return len(windows)


# ----------------------------------------------------------------------------------------------------
# Throughput


@dataclass
class Throughput:
    name: str
    times: list[float]
    n_windows: int
    recording_s: float
    inner_s: float | None = None  # our side: seconds spent inside the per-recording work (manifest)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def rate(self) -> float:
        return self.recording_s / self.best


def measure_throughput(
    recs: list[Recording], tmp: Path, repeats: int, warmup: bool, workers: Sequence[int]
) -> dict[str, Throughput]:
    """Keys: ``ours1`` (workers=1), ``ours2`` (workers=2, when asked) and ``bd`` (braindecode)."""
    paths = [r.path for r in recs]
    last: dict[str, object] = {}

    def ours(n: int) -> Callable[[], None]:
        def go() -> None:
            last[f"ours{n}"] = run_ours(paths, tmp / f"ours_w{n}", n)
        return go

    def peer() -> None:
        last["bd"] = run_braindecode(paths, tmp / "braindecode")

    fns: dict[str, Callable[[], None]] = {f"ours{n}": ours(n) for n in workers}
    times = _common.interleaved({**fns, "bd": peer}, repeats, warmup)
    total = sum(r.seconds for r in recs)
    out = {}
    for n in workers:
        m = last[f"ours{n}"]
        inner = sum(r["seconds"] for r in m["recordings"]) if n == 1 else None
        out[f"ours{n}"] = Throughput(f"brainforge data.prepare, workers={n}", times[f"ours{n}"], m["n_windows"],
                                     total, inner)
    out["bd"] = Throughput("braindecode preprocess + windows + save", times["bd"], int(last["bd"]), total)
    return out


# ----------------------------------------------------------------------------------------------------
# Across cores: many recordings, workers=1 vs workers=2


def tile_inputs(recs: list[Recording], copies: int, root: Path) -> Path:
    """``copies`` folders, each holding a copy of every throughput input (with its sidecar files)."""
    import shutil as _sh

    for k in range(copies):
        d = root / f"copy{k:02d}"
        d.mkdir(parents=True)
        for r in recs:
            for f in r.path.parent.glob(r.path.stem + ".*"):  # e.g. EEGLAB .set + .fdt
                sub = d / r.path.parent.name
                sub.mkdir(exist_ok=True)
                _sh.copyfile(f, sub / f.name)
    return root


@dataclass
class Scaling:
    n_recordings: int
    recording_s: float
    times: dict[int, list[float]]
    startup_s: dict[int, list[float]]  # workers -> per-worker start-up of the last run
    n_windows: int


def measure_workers(recs: list[Recording], tmp: Path, copies: int, repeats: int, warmup: bool) -> Scaling:
    root = tile_inputs(recs, copies, tmp / "large_input")
    last: dict[int, dict] = {}

    def ours(n: int) -> Callable[[], None]:
        def go() -> None:
            last[n] = run_ours([root], tmp / f"large_w{n}", n)
        return go

    times = _common.interleaved({f"w{n}": ours(n) for n in (1, 2)}, repeats, warmup)
    assert last[1]["n_windows"] == last[2]["n_windows"]
    return Scaling(last[1]["n_recordings"], copies * sum(r.seconds for r in recs),
                   {n: times[f"w{n}"] for n in (1, 2)},
                   {n: last[n]["run"].get("worker_startup_s", []) for n in (1, 2)}, last[1]["n_windows"])


def scaling_text(sc: Scaling, load_avg: tuple[float, float, float]) -> str:
    rows = []
    for n in (1, 2):
        best = min(sc.times[n])
        start = ", ".join(f"{x:.2f}" for x in sc.startup_s[n]) or "— (in the calling process)"
        rows.append([f"workers={n}", f"{best:.2f}", ", ".join(f"{t:.2f}" for t in sc.times[n]),
                     f"{sc.recording_s / best:,.0f}", start])
    table = _common.table(["run", "best wall s", "all runs s", "recording-s / s", "per-worker start-up s"], rows)
    ratio = min(sc.times[1]) / min(sc.times[2])
    return (f"{sc.n_recordings} recordings ({sc.recording_s:,.0f} recording-s, {sc.n_windows} windows): the "
            f"throughput inputs copied into separate folders. Load average (1/5/15 min) right after: "
            f"{' / '.join(f'{x:.2f}' for x in load_avg)}.\n\n{table}\n\nworkers=1 / workers=2 wall time: "
            f"**{ratio:.2f}x**. Per-worker start-up = from starting the process to its first message (forked from "
            "a forkserver that has imported `data.shards`: numpy, scipy, MNE; never torch or litdata).")


# ----------------------------------------------------------------------------------------------------
# Where our per-recording time goes (in-process, no litdata)


@dataclass
class Diagnosis:
    read_ratio: dict[str, float]  # recording label -> input samples fetched with get_data / samples in it
    seconds: dict[str, float]
    top: list[tuple[str, int, float, float]]  # function, calls, own s, cumulative s


def _count_reads(raw: mne.io.BaseRaw, counter: dict) -> None:
    """Make ``raw.get_data`` add the number of samples it returns to ``counter["samples"]``."""
    get_data = raw.get_data

    def counting(*args, **kwargs):
        x = get_data(*args, **kwargs)
        counter["samples"] += x.shape[-1]
        return x

    raw.get_data = counting


def diagnose(recs: list[Recording], top_n: int = 12) -> Diagnosis:
    """Run `data.RecordingPipeline` on each input under cProfile; count the input samples it reads."""
    import cProfile
    import pstats
    import time

    prof, ratios, seconds = cProfile.Profile(), {}, {}
    for r in recs:
        raw, counter = data.open_raw(r.path, preload=False), {"samples": 0}
        _count_reads(raw, counter)
        t0 = time.perf_counter()
        prof.enable()
        for _ in data.RecordingPipeline(raw, PreprocessingSpec(), name=r.label).windows():
            pass
        prof.disable()
        seconds[r.label] = time.perf_counter() - t0
        ratios[r.label] = counter["samples"] / raw.n_times
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top_n]  # by own time
    top = [(_func_name(f), v[1], v[2], v[3]) for f, v in rows]
    return Diagnosis(ratios, seconds, top)


def _func_name(f: tuple[str, int, str]) -> str:
    path, line, name = f
    if path == "~":
        return name
    parts = Path(path).parts
    short = "/".join(parts[parts.index("site-packages") + 1:] if "site-packages" in parts else parts[-2:])
    return f"{short}:{line}({name})"


def diagnosis_text(d: Diagnosis) -> str:
    reads = _common.table(
        ["recording", "in-process s", "input samples read / samples in recording"],
        [[k, f"{d.seconds[k]:.2f}", f"{v:.2f}"] for k, v in d.read_ratio.items()],
    )
    top = _common.table(["function (by own time)", "calls", "own s", "cumulative s"],
                        [[f"`{n}`", c, f"{t:.2f}", f"{cum:.2f}"] for n, c, t, cum in d.top])
    return (
        "Each throughput input once through `data.RecordingPipeline(...).windows()` in this process under "
        "cProfile (no litdata, no writing). A read ratio above 1 means input samples are fetched, resampled "
        f"and filtered more than once (chunk margins, calibration passes).\n\n{reads}\n\n{top}"
    )


# ----------------------------------------------------------------------------------------------------
# Memory vs duration


def tile_source() -> Path:
    for p in TILE_SOURCES:
        if p.exists():
            return p
    raise FileNotFoundError(f"no tiling source found among {[str(p) for p in TILE_SOURCES]}")


def write_part(source: Path, minutes: float, out: Path) -> tuple[Path, int, float]:
    """The first ``TILE_MAX_CHANNELS`` EEG/MEG channels of ``source`` repeated to ``minutes``, as FIF."""
    raw = data.open_raw(source, preload=True)
    raw.pick(sensor_picks(raw.info)[:TILE_MAX_CHANNELS])
    x = raw.get_data()
    n = int(round(minutes * 60 * raw.info["sfreq"]))
    part = np.tile(x, (1, math.ceil(n / x.shape[1])))[:, :n]
    mne.io.RawArray(part, raw.info, verbose="error").save(out, overwrite=True, verbose="error")
    return out, len(raw.ch_names), float(raw.info["sfreq"])


def write_tiled(part: Path, copies: int, out: Path) -> Path:
    """``copies`` back-to-back copies of ``part``, streamed from disk (never all in memory)."""
    raws = [mne.io.read_raw_fif(part, preload=False, verbose="error") for _ in range(copies)]
    long = mne.concatenate_raws(raws, verbose="error")
    long.save(out, overwrite=True, buffer_size_sec=30.0, verbose="error")
    return out


@dataclass
class MemoryRun:
    label: str
    run: _common.ChildRun
    minutes: float | None = None  # recording duration; None for the import-only floor
    n_windows: int | None = None
    inner_s: float | None = None  # seconds inside the per-recording work, from the manifest


def prepare_in_child(path: Path, out: Path, minutes: float) -> MemoryRun:
    cmd = [sys.executable, "-m", "data", "prepare", str(path), "--out", str(out), "--overwrite", "--quiet"]
    run = _common.run_measured(cmd, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {run.returncode}):\n{run.output_tail}")
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    inner = sum(r["seconds"] for r in manifest["recordings"])
    return MemoryRun(f"{minutes:g} min recording", run, minutes, manifest["n_windows"], inner)


FLOOR_IMPORTS = "import data.shards, litdata"


def import_floor() -> MemoryRun:
    """A child that only imports what each process of a prepare run imports (litdata brings torch)."""
    run = _common.run_measured([sys.executable, "-c", FLOOR_IMPORTS], cwd=ROOT)
    return MemoryRun(f"`{FLOOR_IMPORTS}` only", run)


def measure_memory(minutes: Sequence[float], tmp: Path) -> tuple[list[MemoryRun], dict]:
    """[import floor, short tile, long tile] and a description of the tiled source."""
    short, long_ = minutes
    source = tile_source()
    part, n_ch, sfreq = write_part(source, short, tmp / f"tile_{short:g}min_raw.fif")
    tiled = write_tiled(part, round(long_ / short), tmp / f"tile_{long_:g}min_raw.fif")
    runs = [import_floor()]
    runs += [prepare_in_child(path, tmp / f"shards_{m:g}min", m) for m, path in ((short, part), (long_, tiled))]
    desc = {"source": str(source), "channels": n_ch, "sfreq": sfreq,
            "bytes_long": sum(f.stat().st_size for f in tmp.glob(f"tile_{long_:g}min_raw*.fif"))}
    return runs, desc


# ----------------------------------------------------------------------------------------------------
# Report


def throughput_table(results: dict[str, Throughput]) -> str:
    rows = []
    for r in results.values():
        times = ", ".join(f"{t:.2f}" for t in r.times)
        inner = f"{r.recording_s / r.inner_s:,.0f}" if r.inner_s else "—"
        rows.append([r.name, f"{r.best:.2f}", times, f"{r.rate:,.0f}", inner, r.n_windows])
    headers = ["pipeline", "best wall s", "all runs s", "recording-s / s", "in-worker rec-s / s", "windows"]
    return _common.table(headers, rows)


def inputs_table(recs: list[Recording]) -> str:
    rows = [[r.label, r.n_sensors, f"{r.sfreq:g}", f"{r.seconds:.1f}"] for r in recs]
    rows.append(["total", "", "", f"{sum(r.seconds for r in recs):.1f}"])
    return _common.table(["recording", "EEG/MEG channels", "sfreq Hz", "seconds"], rows)


def memory_table(runs: list[MemoryRun]) -> str:
    rows = []
    for m in runs:
        rate = f"{m.minutes * 60 / m.run.wall_s:,.0f}" if m.minutes else "—"
        inner = f"{m.minutes * 60 / m.inner_s:,.0f}" if m.inner_s else "—"
        rows.append([m.label, _common.fmt_mb(m.run.peak_rss_sum), _common.fmt_mb(m.run.peak_pss_sum),
                     _common.fmt_mb(m.run.peak_rss_max_process), m.run.max_processes, f"{m.run.wall_s:.1f}",
                     rate, inner, "—" if m.n_windows is None else m.n_windows])
    headers = ["child", "peak RSS, tree sum", "peak PSS, tree sum", "peak RSS, largest process",
               "processes", "wall s", "recording-s / s", "in-worker rec-s / s", "windows"]
    return _common.table(headers, rows)


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def aims_rows(tp: dict[str, Throughput], mem: list[MemoryRun], sc: Scaling | None = None) -> tuple[list[list[str]], dict]:
    _, short, long_ = mem
    fig = {
        "speedup": tp["bd"].best / tp["ours1"].best,
        "growth_rss": long_.run.peak_rss_sum / short.run.peak_rss_sum,
        "growth_pss": long_.run.peak_pss_sum / short.run.peak_pss_sum,
        "growth_max": long_.run.peak_rss_max_process / short.run.peak_rss_max_process,
    }
    ratio = f"{long_.minutes:g} min / {short.minutes:g} min"
    rows = [["throughput ours (workers=1) / braindecode", f">= {AIM_SPEEDUP:g}x", f"{fig['speedup']:.2f}x",
             verdict(fig["speedup"] >= AIM_SPEEDUP)]]
    if "ours2" in tp:
        fig["speedup2"] = tp["bd"].best / tp["ours2"].best
        rows.append(["throughput ours (workers=2) / braindecode", "(reported)", f"{fig['speedup2']:.2f}x", ""])
    if sc is not None:
        fig["workers"] = min(sc.times[1]) / min(sc.times[2])
        rows.append([f"workers=2 / workers=1, {sc.n_recordings} recordings", f">= {AIM_WORKERS:g}x",
                     f"{fig['workers']:.2f}x", verdict(fig["workers"] >= AIM_WORKERS)])
    for key, name in (("peak_rss_sum", "RSS, tree sum"), ("peak_pss_sum", "PSS, tree sum"),
                      ("peak_rss_max_process", "RSS, largest process")):
        v = getattr(long_.run, key)
        rows.append([f"peak {name} at {long_.minutes:g} min", f"< {_common.fmt_mb(AIM_PEAK_BYTES)}",
                     _common.fmt_mb(v), verdict(v < AIM_PEAK_BYTES)])
    for key, name in (("growth_rss", "RSS, tree sum"), ("growth_pss", "PSS, tree sum"),
                      ("growth_max", "RSS, largest process")):
        rows.append([f"peak {name}, {ratio}", f"<= {GROWTH_TOLERANCE:g}", f"{fig[key]:.2f}",
                     verdict(fig[key] <= GROWTH_TOLERANCE)])
    return rows, fig


def observations(tp: dict[str, Throughput], mem: list[MemoryRun], fig: dict) -> str:
    """Plain statements derived from this run's numbers (no fixed figures)."""
    ours, bd = tp["ours1"], tp["bd"]
    outside = ours.best - ours.inner_s
    floor, short, long_ = mem
    lines = [
        f"- Of the best workers=1 wall time ({ours.best:.2f} s), {ours.inner_s:.2f} s was spent inside the "
        f"per-recording work (open, filter, window, yield items; summed from the manifest) and {outside:.2f} s "
        f"outside it (shard writing, window hashes, input hashes, manifest). Counting "
        f"only the per-recording work, our rate is {ours.recording_s / ours.inner_s:,.0f} recording-s/s, "
        f"against braindecode's {bd.rate:,.0f} end to end.",
        f"- A child that only runs `{FLOOR_IMPORTS}` peaks at {_common.fmt_mb(floor.run.peak_rss_max_process)} "
        f"RSS ({_common.fmt_mb(floor.run.peak_pss_sum)} PSS) and takes {floor.run.wall_s:.1f} s; the largest process of a prepare run peaks at "
        f"{_common.fmt_mb(short.run.peak_rss_max_process)} ({short.minutes:g} min) and "
        f"{_common.fmt_mb(long_.run.peak_rss_max_process)} ({long_.minutes:g} min), so the work itself adds "
        f"{_common.fmt_mb(long_.run.peak_rss_max_process - floor.run.peak_rss_max_process)} on top of those "
        f"imports at {long_.minutes:g} min. A prepare run had up to {long_.run.max_processes} processes alive "
        f"at once, which is why the RSS tree sum is far above the largest process.",
    ]
    if fig["speedup"] < 1:
        lines.append(f"- **Our side is slower than braindecode** on these inputs ({fig['speedup']:.2f}x); "
                     "see the first line for how much is fixed start-up and how much is per-recording work.")
    return "\n".join(lines)


def n_cores() -> int:
    return os.cpu_count() or 1


def report(args, machine, recs, origin, tp, mem, mem_src, diag, sc=None, sc_load=None) -> list[tuple[str, str]]:
    rows, fig = aims_rows(tp, mem, sc)
    how = (f"Best of {args.repeats} timed run(s){'' if args.no_warmup else ' after one untimed warm-up'}, "
           f"sides interleaved; workers={', '.join(map(str, args.workers))} on our side; memory tiles "
           f"{args.tiles[0]:g} min and {args.tiles[1]:g} min.")
    return [
        ("What was measured", WHAT),
        ("Command", f"```\n{_common.command_line()}\n```\n\n{how}"),
        ("Machine", _common.machine_table(machine)),
        ("Inputs (throughput)", f"{origin}.\n\n{inputs_table(recs)}"),
        ("Throughput", throughput_table(tp) + "\n\nrecording-s / s = total recording seconds / best wall "
         "seconds. braindecode's windows are saved as its preprocessed continuous FIF (float32) + window "
         "metadata; ours as float16 window items in litdata shards + manifest."),
    ] + ([("Across cores (large input)", scaling_text(sc, sc_load))] if sc else []) + [
        ("Peak memory vs duration", f"Source: `{_label(Path(mem_src['source']))}`, first {mem_src['channels']} EEG/MEG "
         f"channels at {mem_src['sfreq']:g} Hz, tiled (the long file is "
         f"{_common.fmt_mb(mem_src['bytes_long'])} on disk). Each row is a fresh child process: "
         f"`python -m data prepare FILE --out DIR --overwrite --quiet`, and first a child that only runs "
         f"`{FLOOR_IMPORTS}` (the import floor of each process).\n\n{memory_table(mem)}"),
        ("Against the aims", _common.table(["aim", "target", "measured", "verdict"], rows)),
        ("Observations", observations(tp, mem, fig)),
    ] + ([("Where the per-recording time goes", diagnosis_text(diag))] if diag else [])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="best of 1, no warm-up, no workers=2 run, 1 and 10 min tiles (about 2 minutes)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 3, 1 with --quick)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of each side")
    p.add_argument("--tiles", type=float, nargs=2, default=None, metavar=("SHORT_MIN", "LONG_MIN"),
                   help="memory test durations in minutes, LONG a multiple of SHORT (default 10 120)")
    p.add_argument("--no-profile", action="store_true", help="skip the in-process profile (skipped by --quick)")
    p.add_argument("--tile-copies", type=int, default=11, help="copies of the throughput inputs for the workers=1 vs 2 "
                   "run (default 11: 44 recordings; 0 skips it)")
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.no_warmup = args.no_warmup or args.quick
    args.workers = [1]  # workers=2 is measured on the large input (--tile-copies)
    args.no_profile = args.no_profile or args.quick
    args.tiles = args.tiles or ([1.0, 10.0] if args.quick else [30.0, 120.0])  # both longer than one chunk
    return args


def quiet_libraries() -> None:
    mne.set_log_level("ERROR")
    warnings.filterwarnings("ignore")
    logging.getLogger("brainforge.data").setLevel(logging.ERROR)
    logging.getLogger("litdata").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    machine = _common.machine_description(("numpy", "scipy", "torch", "mne", "braindecode", "litdata"))
    recs, origin = find_inputs()
    print(f"inputs: {origin}\n{inputs_table(recs)}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_data_prepare_") as d:
        tmp = Path(d)
        tp = measure_throughput(recs, tmp, args.repeats, not args.no_warmup, args.workers)
        print(throughput_table(tp) + "\n", flush=True)
        sc = sc_load = None
        if args.tile_copies:
            sc = measure_workers(recs, tmp, args.tile_copies, args.repeats, not args.no_warmup)
            sc_load = os.getloadavg()
            print(scaling_text(sc, sc_load) + "\n", flush=True)
        mem, mem_src = measure_memory(args.tiles, tmp)
        print(memory_table(mem) + "\n", flush=True)
    diag = None if args.no_profile else diagnose(recs)
    if diag:
        print(diagnosis_text(diag) + "\n", flush=True)
    machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    sections = report(args, machine, recs, origin, tp, mem, mem_src, diag, sc, sc_load)
    print(dict(sections)["Against the aims"] + "\n\n" + dict(sections)["Observations"])
    path = _common.write_markdown(args.results, "Benchmark: data prepare", sections)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
