"""Benchmark of the BrainTokenizer's reconstruction quality on held-out real EEG and MEG recordings.

Run from the repository root::

    .venv/bin/python bench/tokenizer_quality.py          # <= 30 min of training on CPU, ~35 min in all
    .venv/bin/python bench/tokenizer_quality.py --quick  # smoke run, 10 steps (~3 min on 2 busy cores); writes under runs/bench only
    .venv/bin/python bench/tokenizer_quality.py --max-steps 800  # what the committed result used (quiet machine, ~17 min)
    .venv/bin/python bench/tokenizer_quality.py --analyse-only   # rebuild the report from the last run, no training

It does, through the real command lines, and writes ``bench/results/tokenizer_quality.md``:

1. ``python -m data prepare`` twice on ``../shared/data/recordings``: a training set and a held-out set
   split by recording, never by window (the split and the reasons are in `HELD_OUT` and `EXCLUDED`:
   recordings that hold the same data as another one are kept on one side or left out). The one exception is the
   only Neuromag recording (`NEUROMAG`): its last 6 s are held out (``--neuromag-tail-s``), the rest trains, so
   the Neuromag MEG aim is tested on windows held out in time (same session: a weaker test than a new recording).
2. ``python -m tokenizer fit -c tokenizer/configs/small.yaml`` on the training set on CPU (every
   recording equally likely, ``--data.balance recording``), for a bounded budget: ``--trainer.max_steps``
   (default 3000) with the config's schedule shape kept (warm-up = 5% of the steps, then cosine decay to the
   end), and ``--trainer.max_time`` as a hard cap; where the cap comes first the cosine follows the clock instead
   (`runkit.schedule.TimeBudget`), so a large ``--max-steps`` makes the run use the whole time budget and still end
   annealed. No validation set is given: the held-out recordings are not looked at during training.
3. ``python -m tokenizer export`` and ``python -m tokenizer eval ... --save-to-package --plots`` on the
   held-out set: PCC, NMSE, codebook usage per RVQ level, bits per channel-second, split EEG / MEG.
4. In-process, from the same package: the same metrics per recording, on the held-out set and on up to
   16 evenly spaced windows of each training recording (to tell under-fitting from a generalisation
   gap), the ratio of reconstructed to original signal RMS, the bits per channel-second of each
   modality's windows, the amplitude distribution of each recording's scaled windows, and the state of
   the EMA codebooks.

Every number is measured in that run; only the aims (PCC >= 0.8 on EEG and on MEG, every level >= 80%
code usage, <= 50 bits per channel-second) are fixed. Run outputs go to ``runs/bench/tokenizer_quality``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402
from _codec_baseline import dct_codec  # noqa: E402
from _common import Step, rel  # noqa: E402

RECORDINGS = ROOT.parent / "shared" / "data" / "recordings"
RESULTS = ROOT / "bench" / "results" / "tokenizer_quality.md"
CODEC_BLOCK = 128  # samples: the DCT baseline also coded in blocks this long, each apart (as frame-wise tokens are)
PLOTS = ROOT / "bench" / "results" / "tokenizer_quality_plots"
MAX_PLOT_BYTES = 200 * 1024
WHAT = __doc__.split("tokenizer_quality.md``:\n\n")[1].split("\n\nEvery number")[0]

#: held-out recordings (relative to RECORDINGS) -> why / what they are
HELD_OUT: dict[str, str] = {
    "kit/test.sqd": "MEG: KIT/Yokogawa 157 magnetometers (NYU), 2 s. Its FIF twin is left out (below).",
    "ctf/testdata_ctf_short_discontinuous.ds": "MEG: CTF 273 axial gradiometers (typed mag) + EEG, 2 s. No CTF system in training.",
    "eeglab/test_raw.set": "EEG: 32 channels, EEGLAB tutorial recording, 238 s.",
    "eeglab/test_raw_2021.set": "EEG: 3 channels, an excerpt of the same tutorial recording (so both are held out).",
    "edf/test_edf_stim_channel.edf": "EEG: Nihon Kohden export, 19 EEG channels, 9.6 s (flat after ~6 s).",
}
#: recordings on neither side -> why
EXCLUDED: dict[str, str] = {
    "kit/test_bin_raw.fif": "same data as held-out kit/test.sqd",
    "eeglab/test_raw_h5.set": "same data as held-out eeglab/test_raw.set",
    "edf/test_utf8.edf": "same signal as edf/test_subsecond.edf (kept in training once)",
    "broken/test_subsecond_truncated.edf": "truncated copy of edf/test_subsecond.edf",
    "curry/test_bdf_stim_channel Curry 8.cdt": "same acquisition as bdf/test_bdf_stim_channel.bdf",
    "nihonkohden/MB0400FU.EDF": "same acquisition as nihonkohden/MB0400FU.EEG (kept in training once)",
    "bdf/test_bdf_stim_channel.bdf": "non-neural: floating electrodes, 50 Hz only",
    "egi/test_egi_multiepoch_paused.mff": "non-physiological amplitudes (net probably not on a head)",
    "gdf/test_1ch.gdf": "ECG, not EEG/MEG",
    "brainvision/test.vhdr": "synthetic 5 Hz square wave",
    "brainvision/test_units.vhdr": "synthetic 5 Hz square wave (same data file)",
    "brainvision/testv2.vhdr": "synthetic 5 Hz square wave (same data file)",
    "edf/test_generator.edf": "synthetic test-generator waveforms",
    "edf/test_uneven_samp.edf": "synthetic sine + block",
    "edf/duplicate_channel_labels.edf": "non-physiological step/ramp",
}
#: the only Neuromag recording: its last NEUROMAG_TAIL_S seconds are held out (same session, later in time), the
#: rest trains, so the Neuromag MEG aim has held-out windows at all (a weaker test than a held-out recording)
NEUROMAG = "fif/test_raw.fif"
NEUROMAG_TAIL_S = 6.0
AIM_PCC, AIM_MEG_PCC, AIM_USAGE, AIM_CHCORR, AIM_SPATIAL_COPY = 0.8, 0.7, 0.8, 0.1, 0.1
TRAIN_EVAL_PER_RECORDING = 16  # training-set windows evaluated per recording (evenly spaced), to bound time
WARMUP_FRACTION = 0.05  # warm-up steps / max_steps


# ----------------------------------------------------------------------------------------------------
# Helpers


def cut_in_time(src: Path, tail_s: float, dest: Path) -> tuple[Path, Path]:
    """Split a FIF recording ``tail_s`` seconds before its end into ``dest/<stem>_head_raw.fif`` and
    ``dest/<stem>_tail_raw.fif`` (data, sensors and projectors unchanged) -> (head, tail)."""
    import mne

    raw = mne.io.read_raw_fif(src, verbose="error")
    cut = raw.times[-1] - tail_s
    if cut <= 0:
        raise SystemExit(f"{src}: {raw.times[-1]:.1f} s long, cannot hold out its last {tail_s} s")
    dest.mkdir(parents=True, exist_ok=True)
    stem = src.name.removesuffix(".fif").removesuffix("_raw")
    head, tail = dest / f"{stem}_head_raw.fif", dest / f"{stem}_tail_raw.fif"
    raw.copy().crop(0, cut, include_tmax=False).save(head, overwrite=True, verbose="error")
    raw.copy().crop(cut, None).save(tail, overwrite=True, verbose="error")
    return head, tail


def split_inputs(cut_dir: Path | None = None, tail_s: float = NEUROMAG_TAIL_S
                 ) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """(training entry points, held-out entry points, [(recording, why skipped)] for the rest).

    With ``cut_dir`` and ``tail_s`` > 0, `NEUROMAG` is cut in time (`cut_in_time`, files in ``cut_dir``): its
    head trains, its last ``tail_s`` seconds are held out."""
    from data import discover

    sources, _ = discover([RECORDINGS])
    found = {os.path.relpath(s.path, RECORDINGS): Path(s.path) for s in sources}
    missing = [r for r in HELD_OUT if r not in found]
    if missing:
        raise SystemExit(f"held-out recording(s) not found under {RECORDINGS}: {missing}")
    train = [p for r, p in sorted(found.items()) if r not in HELD_OUT and r not in EXCLUDED]
    held = [found[r] for r in HELD_OUT]
    if cut_dir is not None and tail_s > 0 and NEUROMAG in found:
        head, tail = cut_in_time(found[NEUROMAG], tail_s, cut_dir)
        train = [head if p == found[NEUROMAG] else p for p in train]
        held.append(tail)
    excluded = [(r, why) for r, why in EXCLUDED.items() if r in found]
    return train, held, excluded



# ----------------------------------------------------------------------------------------------------
# In-process evaluation per recording


def mean_channel_correlation(x: torch.Tensor) -> float:
    """Mean Pearson correlation over all pairs of distinct channels of one window x [C, T] (C >= 2)."""
    z = x - x.mean(dim=-1, keepdim=True)
    z = z / (z.norm(dim=-1, keepdim=True) + 1e-9)
    c = z.shape[0]
    return float(((z @ z.T).sum() - (z.square().sum())) / (c * (c - 1)))


class RecordingStats:
    """Accumulates, for one group of windows: `ReconstructionMetrics`, code usage, RMS of target/recon
    per modality, bits per channel-second per window, and window / channel counts."""

    def __init__(self, cfg) -> None:
        from tokenizer.metrics import CodebookUsage, ReconstructionMetrics

        self.cfg = cfg
        self.rec = ReconstructionMetrics(cfg.sfreq)
        self.usage = CodebookUsage(cfg.rvq_levels, cfg.codebook_size)
        self.sq = defaultdict(float)  # "eeg/target", "eeg/recon" -> sum of squares
        self.n = defaultdict(int)  # "eeg" -> samples
        self.bits: list[float] = []
        self.chcorr: dict[str, list[float]] = {"orig": [], "recon": []}
        self.windows = 0
        self.channels: set[int] = set()
        self.pcc_by_position: dict[str, list[float]] = {"known": [], "unknown": []}
        self.redundancy: dict[str, list[float]] = defaultdict(list)
        self.codec_pcc: dict[str, list[float]] = defaultdict(list)  # the DCT codec at the same bits, per modality

    def update(self, signal, recon, types, mask, indices, window_slice, positions) -> None:
        from tokenizer.losses import pearson
        from tokenizer.metrics import MODALITIES, bits_per_channel_second, token_redundancy

        s, r, ty, m = signal[window_slice], recon[window_slice], types[window_slice], mask[window_slice]
        self.rec.update(r, s, ty, m)
        self.usage.update(indices[window_slice])
        for key, value in token_redundancy(indices[window_slice]).items():
            self.redundancy[key].append(value)
        eeg, known = m & (ty == 0), torch.isfinite(positions[window_slice]).all(dim=-1)
        pcc = pearson(r, s)
        self.pcc_by_position["known"] += pcc[eeg & known].tolist()
        self.pcc_by_position["unknown"] += pcc[eeg & ~known].tolist()
        for modality, members in MODALITIES.items():
            sel = m & torch.isin(ty, torch.tensor([int(t) for t in members]))
            if sel.any():
                self.sq[f"{modality}/target"] += float(s[sel].square().sum())
                self.sq[f"{modality}/recon"] += float(r[sel].square().sum())
                self.n[modality] += int(sel.sum()) * s.shape[-1]
        for j, c in enumerate(m.sum(1).tolist()):
            self.bits.append(bits_per_channel_second(self.cfg, int(c)))
            self.channels.add(int(c))
            budget = self.bits[-1] * s.shape[-1] / self.cfg.sfreq
            for key, block in (("", None), ("_blocks", CODEC_BLOCK)):
                codec = torch.from_numpy(dct_codec(s[j].numpy(), budget, block))
                codec_pcc = pearson(codec[None], s[j][None])[0]
                for modality, members in MODALITIES.items():
                    sel = m[j] & torch.isin(ty[j], torch.tensor([int(t) for t in members]))
                    self.codec_pcc[modality + key] += codec_pcc[sel].tolist()
        for j in range(s.shape[0]):
            if int(m[j].sum()) > 1:
                self.chcorr["orig"].append(mean_channel_correlation(s[j][m[j]]))
                self.chcorr["recon"].append(mean_channel_correlation(r[j][m[j]]))
        self.windows += int(s.shape[0])

    def summary(self) -> dict:
        out = {**self.rec.compute(), **self.usage.compute(), "windows": self.windows,
               "channels": sorted(self.channels), "bits_per_channel_second": sum(self.bits) / max(1, len(self.bits))}
        for k, v in self.chcorr.items():
            out[f"chcorr_{k}"] = sum(v) / len(v) if v else float("nan")
        for k, v in self.pcc_by_position.items():
            out[f"eeg/pcc_position_{k}"] = sum(v) / len(v) if v else float("nan")
        for k, v in self.codec_pcc.items():
            modality, _, blocks = k.partition("_")
            out[f"{modality}/pcc_dct_codec{'_' + blocks if blocks else ''}"] = sum(v) / len(v) if v else float("nan")
        for k, v in self.redundancy.items():
            out[k] = sum(v) / len(v)
        for modality in self.n:
            tgt = math.sqrt(self.sq[f"{modality}/target"] / self.n[modality])
            rec = math.sqrt(self.sq[f"{modality}/recon"] / self.n[modality])
            out[f"{modality}/rms_target"], out[f"{modality}/rms_ratio"] = tgt, rec / max(tgt, 1e-12)
        return out


@torch.no_grad()
def window_index(shards: Path) -> tuple[dict[str, list[int]], dict[str, dict[str, float]]]:
    """(window indices per recording, signal scale per recording: rms, median / 99.9th percentile / max of
    |x| in scaled units over all its windows and channels), read from the shards without a model."""
    import numpy as np

    from data.dataset import window_dataset

    ds = window_dataset(shards)
    where: dict[str, list[int]] = defaultdict(list)
    values: dict[str, list] = defaultdict(list)
    for i in range(len(ds)):
        item = ds[i]
        where[item["recording"]].append(i)
        values[item["recording"]].append(np.abs(np.asarray(item["signal"], dtype=np.float32)).ravel())
    scale = {}
    for rec, chunks in values.items():
        a = np.concatenate(chunks)
        scale[rec] = {"rms": float(np.sqrt(np.mean(a.astype(np.float64) ** 2))), "median": float(np.median(a)),
                      "p999": float(np.quantile(a, 0.999)), "max": float(a.max())}
    return dict(where), scale


def spread(indices: list[int], k: int | None) -> list[int]:
    """At most ``k`` of ``indices``, evenly spaced (all when k is None)."""
    if k is None or len(indices) <= k:
        return indices
    step = len(indices) / k
    return [indices[int(j * step)] for j in range(k)]


def per_recording(model, shards: Path, indices: list[int], batch_size: int = 32) -> dict[str, dict]:
    """Metrics per recording, per modality group of windows ("EEG-only windows", "windows with MEG"), and
    for all the given windows together ("all"), from the package's model on the windows ``indices`` of ``shards``."""
    from data.dataset import WindowCollator, window_dataset
    from data.sensors import SensorType

    cfg = model.config
    ds = window_dataset(shards)
    collate = WindowCollator(max_channels=None)
    groups: dict[str, RecordingStats] = defaultdict(lambda: RecordingStats(cfg))
    meg = torch.tensor([int(SensorType.MAG), int(SensorType.GRAD)])
    for lo in range(0, len(indices), batch_size):
        batch = collate([ds[i] for i in indices[lo:lo + batch_size]])
        geo = (batch["types"], batch["positions"], batch["orientations"], batch["channel_mask"], batch["channel_ids"])
        with torch.no_grad():
            idx = model.encode(batch["signal"], *geo)
            recon = model.decode(idx, *geo)
        has_meg = (torch.isin(batch["types"], meg) & batch["channel_mask"]).any(1)
        for i, name in enumerate(batch["recording"]):
            for key in (name, "all", "windows with MEG" if has_meg[i] else "EEG-only windows"):
                groups[key].update(batch["signal"], recon, batch["types"], batch["channel_mask"], idx, slice(i, i + 1),
                                   batch["positions"])
    return {k: v.summary() for k, v in groups.items()}


def hidden_channel_pcc(model, shards: Path, shares: tuple[float, ...] = (0.25, 0.5), batch_size: int = 16) -> dict:
    """Encode each EEG window from a random share of its channels (seeded), decode all of them: mean PCC of the
    channels the encoder saw and of those it did not, per hidden share -> {share: {"visible", "hidden", "n_hidden"}}."""
    from data.dataset import WindowCollator, window_dataset
    from data.sensors import SensorType
    from tokenizer.losses import pearson

    ds = window_dataset(shards)
    collate = WindowCollator(max_channels=None)
    items = [it for it in (ds[i] for i in range(len(ds))) if (it["types"] == int(SensorType.EEG)).sum() > 1]
    out = {}
    for share in shares:
        gen, visible_pcc, hidden_pcc = torch.Generator().manual_seed(0), [], []
        for lo in range(0, len(items), batch_size):
            batch = collate(items[lo:lo + batch_size])
            mask, seen = batch["channel_mask"], batch["channel_mask"].clone()
            for i in range(mask.shape[0]):
                real = mask[i].nonzero().flatten()
                hide = real[torch.randperm(len(real), generator=gen)[: int(share * len(real))]]
                seen[i, hide] = False
            geo = (batch["types"], batch["positions"], batch["orientations"])
            with torch.no_grad():
                idx = model.encode(batch["signal"], *geo, seen, batch["channel_ids"])
                recon = model.decode(idx, *geo, mask, batch["channel_ids"])
            pcc, eeg = pearson(recon, batch["signal"].float()), batch["types"] == int(SensorType.EEG)
            visible_pcc += pcc[seen & eeg].tolist()
            hidden_pcc += pcc[mask & ~seen & eeg].tolist()
        out[share] = {"visible": sum(visible_pcc) / len(visible_pcc) if visible_pcc else float("nan"),
                      "hidden": sum(hidden_pcc) / len(hidden_pcc) if hidden_pcc else float("nan"),
                      "n_hidden": len(hidden_pcc)}
    return out


def position_swap_pcc(model, shards: Path, indices: list[int]) -> dict[str, dict]:
    """On EEG channels whose position was read from the file or found by a label rule: PCC with those positions,
    with every EEG position of the window replaced by what `data.signal_positions` places from the window's own
    signal (MDS, as for a recording without a montage), and with none -> {"true"|"signal"|"none": {"pcc", "n"}}.

    Paired on the same channel-windows, so it separates what a position is worth from how hard a recording is
    (the held-out channels with and without a position come from different recordings at different bits per
    channel-second)."""
    import numpy as np

    from data.dataset import WindowCollator, window_dataset
    from data.sensors import SensorType
    from data.signal_positions import positions_from_signal
    from tokenizer.losses import pearson

    ds, collate = window_dataset(shards), WindowCollator(max_channels=None)
    pcc: dict[str, list[float]] = {"true": [], "signal": [], "none": []}
    for i in indices:
        batch = collate([ds[i]])
        eeg = (batch["channel_mask"] & (batch["types"] == int(SensorType.EEG)))[0]
        known = eeg & torch.isfinite(batch["positions"][0]).all(-1) & ~batch["position_inferred"][0]
        if int(known.sum()) < 3:
            continue
        x = batch["signal"][0, eeg].numpy()
        placed, _ = positions_from_signal(x, np.full((len(x), 3), np.nan), np.ones(len(x), dtype=bool))
        for name, eeg_positions in (("true", None), ("signal", torch.as_tensor(placed, dtype=torch.float32)),
                                    ("none", torch.full((int(eeg.sum()), 3), float("nan")))):
            positions = batch["positions"].clone()
            if eeg_positions is not None:
                positions[0, eeg] = eeg_positions
            geo = (batch["types"], positions, batch["orientations"], batch["channel_mask"], batch["channel_ids"])
            with torch.no_grad():
                recon = model.decode(model.encode(batch["signal"], *geo), *geo)
            pcc[name] += pearson(recon, batch["signal"].float())[0, known].tolist()
    return {k: {"pcc": sum(v) / len(v) if v else float("nan"), "n": len(v)} for k, v in pcc.items()}


# ----------------------------------------------------------------------------------------------------
# Report pieces


def dist_version(name: str) -> str:
    """Installed version of a distribution (for packages without ``__version__``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def training_curve(run_dir: Path) -> dict:
    """First/last logged train loss terms and the number of logged steps, from the run's metrics.csv."""
    import csv

    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/loss")]
    if not rows:
        return {}
    keys = [k for k in rows[0] if k.startswith("train/")]

    def mean(rs, k):
        vals = [float(r[k]) for r in rs if r.get(k)]
        return sum(vals) / len(vals) if vals else float("nan")

    head, tail = rows[:3], rows[-3:]
    return {"first_step": int(rows[0]["step"]), "last_step": int(rows[-1]["step"]),
            "first": {k: mean(head, k) for k in keys}, "last": {k: mean(tail, k) for k in keys}}


def codebook_state(package: Path) -> list[tuple[int, int, float]]:
    """Per RVQ level: (codes, codes whose EMA cluster size is within 5% of the dead-code threshold, median
    EMA cluster size). The library resets an expired code's cluster size to the threshold itself, so codes
    sitting at the threshold are the ones recently expired and replaced by a random batch vector."""
    from safetensors.torch import load_file

    cfg = json.loads((package / "config.json").read_text())["config"]
    state = load_file(str(package / "model.safetensors"))
    out = []
    for level in range(cfg["rvq_levels"]):
        sizes = [v for k, v in state.items() if f"layers.{level}." in k and k.endswith("cluster_size")]
        if not sizes:
            continue
        cs = sizes[0].flatten()
        near = int((cs <= 1.05 * cfg["threshold_ema_dead_code"]).sum())
        out.append((cs.numel(), near, float(cs.median())))
    return out


def metric_rows(groups: dict[str, dict], names: list[str], levels: int) -> list[list[str]]:
    rows = []
    for name in names:
        m = groups.get(name)
        if m is None:
            continue
        ch = m["channels"]
        chs = f"{ch[0]}" if len(ch) == 1 else f"{ch[0]}-{ch[-1]}"
        rows.append([name, m["windows"], chs,
                     fmt(m.get("eeg/pcc")), fmt(m.get("eeg/nmse")), fmt(m.get("eeg/rms_ratio"), ".2f"),
                     fmt(m.get("meg/pcc")), fmt(m.get("meg/nmse")), fmt(m.get("meg/rms_ratio"), ".2f"),
                     f"{fmt(m.get('chcorr_orig'), '.2f')} / {fmt(m.get('chcorr_recon'), '.2f')}",
                     " / ".join(f"{m[f'usage_l{lv}']:.0%}" for lv in range(levels)),
                     fmt(m["bits_per_channel_second"], ".0f")])
    return rows


METRIC_HEAD = ["windows of", "windows", "channels", "EEG PCC", "EEG NMSE", "EEG rms recon/orig",
               "MEG PCC", "MEG NMSE", "MEG rms recon/orig", "ch-ch corr orig / recon", "code usage per level", "bits / ch-s"]


def run_steps(train: list[Path], held: list[Path], train_shards: Path, held_shards: Path, run_dir: Path, package: Path,
              plots: Path, eval_json: Path, max_steps: int, warmup: int, max_time: str, quick: bool,
              overrides: str | None = None) -> tuple[Step, float]:
    """prepare x2 -> fit -> export -> eval through the command lines; returns the fit step and the wall seconds.
    ``overrides``: a JSON object of `TokenizerConfig` fields for the fit (``--model.overrides``)."""
    t0 = time.perf_counter()
    Step("prepare training set", ["-m", "data", "prepare", *map(rel, train), "--out", rel(train_shards), "--overwrite", "--quiet"])
    Step("prepare held-out set", ["-m", "data", "prepare", *map(rel, held), "--out", rel(held_shards), "--overwrite", "--quiet"])
    fit = Step("fit", [
        "-m", "tokenizer", "fit", "-c", "tokenizer/configs/small.yaml",
        "--data.train", rel(train_shards), "--trainer.default_root_dir", rel(run_dir),
        "--trainer.accelerator", "cpu", "--trainer.max_steps", str(max_steps), "--trainer.max_time", max_time,
        "--model.warmup_steps", str(warmup), "--data.balance", "recording",
        "--trainer.enable_progress_bar", "false", *(["--model.overrides", overrides] if overrides else []),
    ])
    Step("export", ["-m", "tokenizer", "export", rel(run_dir), "--out", rel(package), "--overwrite"])
    if plots.exists():
        shutil.rmtree(plots)
    ev_args = ["-m", "tokenizer", "eval", "--tokenizer", rel(package), "--shards", rel(held_shards),
               "--plots", rel(plots), "--json", rel(eval_json), "--save-to-package", "--quiet"]
    if quick:
        ev_args += ["--max-windows", "32"]
    Step("eval (held-out)", ev_args)
    return fit, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (10 steps); results under runs/bench only")
    p.add_argument("--max-steps", type=int, default=None,
                   help="training steps; warm-up is 5%% of them (default 3000, --quick 10)")
    p.add_argument("--max-time", default=None, help="hard cap on training time DD:HH:MM:SS (default 00:00:30:00, --quick 00:00:01:00)")
    p.add_argument("--out", type=Path, default=None, help="run outputs (default runs/bench/tokenizer_quality[_quick])")
    p.add_argument("--overrides", default=None,
                   help='TokenizerConfig fields for the fit as JSON, e.g. \'{"channel_dropout": 0}\' (a variant of small)')
    p.add_argument("--results", type=Path, default=None,
                   help="report path (default bench/results/tokenizer_quality.md); its plots go in <stem>_plots beside it")
    p.add_argument("--neuromag-tail-s", type=float, default=NEUROMAG_TAIL_S,
                   help=f"hold out the last seconds of {NEUROMAG}, the only Neuromag recording (default "
                        f"{NEUROMAG_TAIL_S:g}; 0 = it all trains, the split before 2026-12-01)")
    p.add_argument("--analyse-only", action="store_true",
                   help="do not prepare/train/evaluate again: rebuild the report from the outputs (and steps.json) of "
                        "the last run in --out")
    args = p.parse_args(argv)
    quick = args.quick
    max_steps = args.max_steps or (10 if quick else 3000)
    warmup = max(1, round(max_steps * WARMUP_FRACTION))
    max_time = args.max_time or ("00:00:01:00" if quick else "00:00:30:00")
    out = args.out or ROOT / "runs" / "bench" / ("tokenizer_quality_quick" if quick else "tokenizer_quality")
    results = out / "tokenizer_quality.md" if quick else RESULTS
    plots = out / "plots" if quick else PLOTS
    if args.results:
        results, plots = args.results, args.results.with_name(args.results.stem + "_plots")
    train_shards, held_shards = out / "shards_train", out / "shards_heldout"
    run_dir, package = out / "run", out / "package"
    eval_json = out / "eval_heldout.json"

    if not RECORDINGS.is_dir():
        raise SystemExit(f"{RECORDINGS} not found: this benchmark needs the shared real recordings")
    machine = _common.machine_description(("numpy", "torch", "lightning", "mne"))
    machine["vector-quantize-pytorch"] = dist_version("vector-quantize-pytorch")
    machine["torch threads (intra-op)"] = str(torch.get_num_threads())
    t_start = time.perf_counter()
    cut_dir = out / "cut"  # where `cut_in_time` writes the head and tail of NEUROMAG
    train, held, excluded = split_inputs(None if args.analyse_only else cut_dir, args.neuromag_tail_s)
    steps_file = out / "steps.json"
    if args.analyse_only:
        saved = Step.replay(steps_file)
        fit = next(st for st in Step.log if st.name == "fit")
        steps_wall, machine = saved["steps_wall_s"], saved["machine"]
        original_command = saved.get("command", "(not recorded)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a stale last.ckpt would resume nothing but could be exported by mistake
        fit, steps_wall = run_steps(train, held, train_shards, held_shards, run_dir, package, plots, eval_json,
                                    max_steps, warmup, max_time, quick, args.overrides)
        machine["load average after eval (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        steps_file.write_text(json.dumps({"command": _common.command_line(), "steps": [st.to_dict() for st in Step.log],
                                          "steps_wall_s": steps_wall, "machine": machine}, indent=2))
    print(f"[{time.strftime('%H:%M:%S')}] per-recording metrics (in-process) ...", flush=True)
    t0 = time.perf_counter()
    held_where, held_scale = window_index(held_shards)
    train_where, train_scale = window_index(train_shards)
    per_rec = 4 if quick else TRAIN_EVAL_PER_RECORDING
    from tokenizer.package import load_package

    model = load_package(package).model.eval()  # once, for every in-process measurement below
    held_groups = per_recording(model, held_shards, sorted(i for v in held_where.values() for i in spread(v, 8 if quick else None)))
    train_groups = per_recording(model, train_shards, sorted(i for v in train_where.values() for i in spread(v, per_rec)))
    hidden = hidden_channel_pcc(model, held_shards)
    swap = {"held-out": position_swap_pcc(model, held_shards, sorted(i for v in held_where.values() for i in v)),
            "training (4 windows per recording)": position_swap_pcc(model, train_shards, sorted(
                i for v in train_where.values() for i in spread(v, 4)))}
    t_inproc = time.perf_counter() - t0
    wall = steps_wall + t_inproc if args.analyse_only else time.perf_counter() - t_start
    machine["load average at end (1/5/15 min)" if not args.analyse_only else "load average at report rebuild"] = (
        " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    fit_opts = {a: b for a, b in zip(fit.args, fit.args[1:], strict=False) if a.startswith("--")}
    max_steps, max_time = int(fit_opts["--trainer.max_steps"]), fit_opts["--trainer.max_time"]
    warmup = int(fit_opts["--model.warmup_steps"])

    # ---- facts
    metrics = json.loads(eval_json.read_text())
    pkg_metrics = json.loads((package / "metrics.json").read_text())
    steps_done = pkg_metrics.get("training", {}).get("global_step")
    cfg = json.loads((package / "config.json").read_text())["config"]
    levels = cfg["rvq_levels"]
    train_manifest = json.loads((train_shards / "manifest.json").read_text())
    held_manifest = json.loads((held_shards / "manifest.json").read_text())
    curve = training_curve(run_dir)
    dead = codebook_state(package)
    n_frames = cfg["window_samples"] // cfg["hop"]
    fit_min = fit.wall_s / 60
    kept_plots, dropped_plots = [], []
    for png in sorted(plots.glob("*.png")) if plots.is_dir() else []:
        size = png.stat().st_size
        (kept_plots if size < MAX_PLOT_BYTES else dropped_plots).append((png, size))
    for png, _ in dropped_plots:
        png.unlink()

    usage = [metrics.get(f"usage_l{lv}", float("nan")) for lv in range(levels)]
    def cut_part(path: str) -> str | None:
        """"head" or "tail" for a time cut of `NEUROMAG` (a file in ``cut_dir``), else None."""
        p = Path(path)
        if p.resolve().parent != cut_dir.resolve():
            return None
        return "tail" if p.name.endswith("_tail_raw.fif") else "head"

    neuromag_held = [r for r in held_manifest["recordings"] if cut_part(r["path"]) == "tail"]
    neuromag = held_groups.get(neuromag_held[0]["recording"], {}) if neuromag_held else {}
    cut_why = {f"{NEUROMAG} (tail)": "MEG+EEG: the last seconds of the only Neuromag recording (same session as its "
                                     "head, which trains): held out in time, not by recording",
               f"{NEUROMAG} (head)": "the rest of that recording"}
    chcorr_gap = abs(metrics.get("chcorr_recon", float("nan")) - metrics.get("chcorr_orig", float("nan")))
    checks = [
        ("PCC on EEG (held-out)", metrics.get("eeg/pcc"), f">= {AIM_PCC}", (metrics.get("eeg/pcc") or 0) >= AIM_PCC),
        ("PCC on EEG channels with a position", metrics.get("eeg/pcc_position_known"), f">= {AIM_PCC}",
         (metrics.get("eeg/pcc_position_known") or 0) >= AIM_PCC),
        ("PCC on EEG channels without a position", metrics.get("eeg/pcc_position_unknown"), f">= {AIM_PCC}",
         (metrics.get("eeg/pcc_position_unknown") or 0) >= AIM_PCC),
        (f"PCC on MEG, Neuromag ({NEUROMAG} held out in time: {neuromag.get('windows', 0)} windows)"
         if neuromag else "PCC on MEG (held-out; no Neuromag system is held out)",
         neuromag.get("meg/pcc") if neuromag else metrics.get("meg/pcc"), f">= {AIM_MEG_PCC}",
         ((neuromag.get("meg/pcc") if neuromag else metrics.get("meg/pcc")) or 0) >= AIM_MEG_PCC),
        ("|ch-ch corr recon - orig|", chcorr_gap, f"<= {AIM_CHCORR}", chcorr_gap <= AIM_CHCORR),
        *[(f"code usage, level {lv}", usage[lv], f">= {AIM_USAGE:.0%}", usage[lv] >= AIM_USAGE) for lv in range(levels)],
        ("spatial-copy accuracy, level 0", metrics.get("spatial_copy_l0"), f"<= {AIM_SPATIAL_COPY:.0%}",
         (metrics.get("spatial_copy_l0") or 1) <= AIM_SPATIAL_COPY),
    ]
    aim_rows = [[name, fmt(v, ".3f" if "bits" not in name else ".1f"), aim, "met" if ok else "MISSED"]
                for name, v, aim, ok in checks]
    n_missed = sum(not ok for *_, ok in checks)

    def name_of(path: str) -> str:
        """A recording as the report names it: relative to RECORDINGS, or a time cut of `NEUROMAG`."""
        part = cut_part(path)
        return f"{NEUROMAG} ({part})" if part else os.path.relpath(path, RECORDINGS)

    def side_rows(manifest: dict) -> list[list]:
        rows = []
        for r in manifest["recordings"]:
            rel_path = name_of(r["path"])
            ch = r["channels"]
            rows.append([rel_path, r["n_windows"], ch.get("eeg", 0), ch.get("mag", 0) + ch.get("grad", 0),
                         HELD_OUT.get(rel_path, cut_why.get(rel_path, ""))])
        return rows

    tokens_bits = cfg["n_latent"] * (cfg["window_samples"] // cfg["hop"]) * levels * math.log2(cfg["codebook_size"])
    window_s = cfg["window_samples"] / cfg["sfreq"]

    meg_train_windows = sum(r["n_windows"] for r in train_manifest["recordings"]
                            if r["channels"].get("mag", 0) + r["channels"].get("grad", 0) > 0)
    import yaml

    batch_size = int(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size"])
    vectors_per_step = batch_size * cfg["n_latent"] * n_frames
    seen = (steps_done or 0) * batch_size
    t_all, h_all = train_groups.get("all", {}), held_groups.get("all", {})

    diag = [
        f"- **Budget.** {steps_done} optimizer steps of batch {batch_size} in {fit_min:.1f} min of `fit` wall time "
        f"(~{fit.wall_s / max(1, steps_done or 1):.1f} s/step on this shared 2-core CPU): {seen:,} windows drawn, "
        f"{seen / max(1, train_manifest['n_windows']):.1f} passes over {train_manifest['n_windows']} training windows. "
        "The `small` config's own schedule is 3000 steps.",
        f"- **Data volume.** Training windows: {train_manifest['n_windows']} (EEG {train_manifest['channels_by_type_summed']['eeg']} "
        f"channels summed over recordings); only {meg_train_windows} of them contain MEG ("
        + ", ".join(f"`{name_of(r['path'])}` {r['n_windows']}" for r in train_manifest["recordings"]
                    if r["channels"].get("mag", 0) + r["channels"].get("grad", 0) > 0)
        + f"); held-out windows with MEG: {held_groups.get('windows with MEG', {}).get('windows', 0)}.",
        f"- **Under-fitting vs generalisation.** Training-set windows: EEG PCC {fmt(t_all.get('eeg/pcc'))}, "
        f"MEG PCC {fmt(t_all.get('meg/pcc'))}; held-out: EEG PCC {fmt(h_all.get('eeg/pcc'))}, MEG PCC {fmt(h_all.get('meg/pcc'))}. "
        + ("Even the windows it was trained on reconstruct poorly (under-fitting): what limits the fit (steps, "
           "and the channel collapse below) matters before any generalisation gap."
           if (t_all.get("eeg/pcc") or 0) < AIM_PCC else
           "Training windows reconstruct well and held-out ones do not: a generalisation gap (too little data)."
           if (h_all.get("eeg/pcc") or 0) < AIM_PCC else
           "EEG reconstructs as well held out as in training; held-out MEG falls short, and its few windows come "
           "from systems that training saw little or nothing of (table above)."
           if (h_all.get("meg/pcc") or 1) < AIM_PCC else
           "Both reconstruct well."),
        "- **Channel diversity.** Mean correlation between two channels of the same window, original -> reconstruction: "
        + ", ".join(f"{name} {fmt(g.get('chcorr_orig'), '.2f')} -> {fmt(g.get('chcorr_recon'), '.2f')}"
                    for name, g in (("held-out EEG-only windows", held_groups.get("EEG-only windows", {})),
                                    ("held-out windows with MEG", held_groups.get("windows with MEG", {})),
                                    ("training sample", t_all)))
        + ". A reconstruction correlation near 1 means the decoder gives (nearly) every channel the same waveform: "
        "its sensor queries do not yet tell channels apart, so PCC can only reach what a common-mode signal explains "
        "(much for unreferenced EEG, nothing for MEG, whose channels are nearly uncorrelated).",
        f"- **Scale.** RMS of the reconstruction over RMS of the original (held-out): EEG "
        f"{fmt(h_all.get('eeg/rms_ratio'), '.2f')}, MEG {fmt(h_all.get('meg/rms_ratio'), '.2f')} "
        f"(1.00 = right amplitude; well below 1 = the decoder plays it safe and shrinks towards zero). "
        f"Original RMS in scaled units: EEG {fmt(h_all.get('eeg/rms_target'), '.2f')}, MEG {fmt(h_all.get('meg/rms_target'), '.2f')}. "
        "Heavy-tailed training recordings (RMS > 3x their median |x|, see 'Signal scale'): "
        + (", ".join(f"`{r}` RMS {v['rms']:.1f}, max |x| {v['max']:.0f}" for r, v in sorted(train_scale.items())
                     if v["rms"] > 3 * v["median"]) or "none")
        + ". The time-L1 and spectral losses are not normalised per window, so such windows weigh most in the gradient.",
        f"- **Codebooks.** Each training step quantises {batch_size} x {cfg['n_latent']} x {n_frames} = "
        f"{vectors_per_step:,} vectors per level over {cfg['codebook_size']} codes: {vectors_per_step / cfg['codebook_size']:.1f} "
        f"per code on average, against a dead-code threshold (`threshold_ema_dead_code`) of {cfg['threshold_ema_dead_code']}. "
        "EMA cluster sizes in the exported package, per level (codes within 5% of the threshold, i.e. just expired and "
        "replaced by a random batch vector; median): "
        + ", ".join(f"L{lv}: {d} of {k}, median {med:.2f}" for lv, (k, d, med) in enumerate(dead))
        + f". Held-out usage per level: {' / '.join(f'{u:.0%}' for u in usage)}; the held-out set has "
        f"{metrics.get('n_windows')} windows x {cfg['n_latent']} latents x {cfg['window_samples'] // cfg['hop']} "
        f"frames = {metrics.get('n_windows', 0) * cfg['n_latent'] * (cfg['window_samples'] // cfg['hop']):,} "
        f"vectors per level for {cfg['codebook_size']} codes. MEG alone ({held_groups.get('windows with MEG', {}).get('windows', 0)} windows) "
        "cannot show high usage whatever the model does.",
        f"- **Bits.** A window always costs {cfg['n_latent']} x {cfg['window_samples'] // cfg['hop']} x {levels} x "
        f"log2({cfg['codebook_size']}) = {tokens_bits:,.0f} bits per {window_s:g} s, whatever its channel count, so bits per "
        f"channel-second = {tokens_bits / window_s:,.0f} / C. Held-out recordings: "
        + ", ".join(f"`{name_of(r['path'])}` {n} ch -> {tokens_bits / window_s / n:.0f}"
                    for r in held_manifest["recordings"]
                    for n in [sum(r["channels"].get(k, 0) for k in ("eeg", "mag", "grad"))])
        + " bits per channel-second.",
    ]

    sections = [
        ("Summary",
         f"Held-out EEG PCC {fmt(metrics.get('eeg/pcc'))}, NMSE {fmt(metrics.get('eeg/nmse'))}; held-out MEG PCC "
         f"{fmt(metrics.get('meg/pcc'))}, NMSE {fmt(metrics.get('meg/nmse'))}; code usage per level "
         f"{' / '.join(f'{u:.0%}' for u in usage)}; after {steps_done} steps ({fit_min:.1f} min of CPU training). "
         f"{'All aims met.' if not n_missed else f'{n_missed} of {len(checks)} aim checks MISSED (table below).'}"
         + f" A per-channel DCT codec at the same bits per channel-second (no learning) reaches held-out EEG PCC "
           f"{fmt(h_all.get('eeg/pcc_dct_codec'))}, MEG {fmt(h_all.get('meg/pcc_dct_codec'))} (section 'The trivial "
           "baseline')."
         + (" QUICK smoke run: not a result." if quick else "")),
        ("What was done", WHAT),
        ("Commands", (f"```\n{original_command}\n```\n\n(this report was then rebuilt from that run's outputs, "
                      f"without training again, by `{_common.command_line()}`)\n\n"
                      if args.analyse_only else "```\n" + _common.command_line() + "\n```\n\n")
         + "which ran, in order "
         + "(wall time, peak RSS of the largest process):\n\n"
         + "\n\n".join(f"{s.name} ({s.wall_s / 60:.1f} min, {_common.fmt_mb(s.peak_rss)}):\n\n```\n{s.command}\n```"
                       for s in Step.log)
         + f"\n\nPer-recording metrics in-process: {t_inproc / 60:.1f} min. Whole script: {wall / 60:.1f} min wall."),
        ("Machine", _common.machine_table(machine) + "\n\nThe 2 cores are shared with other engineers' test runs; the "
         "load averages above show how busy the machine was, which sets how many steps fit in the time cap."),
        ("Split (by recording)",
         "Held-out set:\n\n" + _common.table(["recording", "windows", "EEG ch", "MEG ch", "why"], side_rows(held_manifest))
         + "\n\nTraining set:\n\n" + _common.table(["recording", "windows", "EEG ch", "MEG ch", ""], side_rows(train_manifest))
         + "\n\nOn neither side:\n\n" + _common.table(["recording", "why"], [[r, w] for r, w in excluded])
         + "\n\nRecordings `data prepare` skips anyway (shorter than one 2 s window, annotations only, broken, epoched) "
           "are not listed."),
        ("Aims", _common.table(["check", "measured", "aim", ""], aim_rows)
         + "\n\n'With a position': read from the file or found by a label rule. EEG channels with neither are placed "
         "from their recording's correlations by `data prepare` (`data/signal_positions.py`) and count as 'without "
         "a position' (`python -m data inspect RECORDING` lists them)."),
        ("Held-out metrics (python -m tokenizer eval)",
         _common.table(["metric", "EEG", "MEG"],
                       [[k, fmt(metrics.get(f"eeg/{k}"), ".4f"), fmt(metrics.get(f"meg/{k}"), ".4f")]
                        for k in ("pcc", "nmse", "mae", "logamp_delta", "logamp_theta", "logamp_alpha", "logamp_beta",
                                  "logamp_gamma", "phase_delta", "phase_theta", "phase_alpha", "phase_beta", "phase_gamma")])
         + "\n\n" + _common.table(["RVQ level", "code usage", "perplexity"],
                                  [[lv, f"{metrics[f'usage_l{lv}']:.1%}", f"{metrics[f'perplexity_l{lv}']:.0f}"] for lv in range(levels)])
         + f"\n\nbits per channel-second (mean over held-out windows): {metrics.get('bits_per_channel_second'):.1f}; "
           f"windows: {metrics.get('n_windows')}. The same numbers are in `{rel(package)}/metrics.json` under `eval`."
         + ("\n\nEEG NMSE by hop of the window (where in the 2 s the error sits; the last hop is the only one that a "
            "single frame synthesises): " + " / ".join(f"{v:.2f}" for v in metrics["eeg/nmse_by_hop"])
            if metrics.get("eeg/nmse_by_hop") else "")),
        ("Channels and latents: are they distinguishable? (held-out, eval CLI)",
         _common.table(["measure", "value"], [
             ["EEG PCC, channels with a position", f"{fmt(metrics.get('eeg/pcc_position_known'))} "
              f"({metrics.get('eeg/channels_position_known', 0)} channel-windows)"],
             ["EEG PCC, channels without a position", f"{fmt(metrics.get('eeg/pcc_position_unknown'))} "
              f"({metrics.get('eeg/channels_position_unknown', 0)} channel-windows)"],
             ["mean ch-ch correlation, original / reconstruction",
              f"{fmt(metrics.get('chcorr_orig'))} / {fmt(metrics.get('chcorr_recon'))}"],
         ])
         + "\n\nToken redundancy per RVQ level: distinct codes among the "
         + f"{cfg['n_latent']} latents of a frame; accuracy of predicting a token by the commonest code of the other "
           "latents of its frame (spatial copy) and by the same latent's code in the previous frame (frame copy). "
           "These are the shortcuts a masked-token model could take.\n\n"
         + _common.table(["RVQ level", "distinct codes / frame", "spatial-copy acc.", "frame-copy acc."],
                         [[lv, fmt(metrics.get(f"distinct_l{lv}"), ".2f"), fmt(metrics.get(f"spatial_copy_l{lv}")),
                           fmt(metrics.get(f"frame_copy_l{lv}"))] for lv in range(levels)])),
        ("Per recording and per modality (in-process, same package)",
         "Held-out:\n\n" + _common.table(METRIC_HEAD, metric_rows(
             held_groups, ["all", "EEG-only windows", "windows with MEG", *sorted(k for k in held_groups
                                                                           if k not in ("all", "EEG-only windows", "windows with MEG"))], levels))
         + f"\n\nTraining set (up to {per_rec} evenly spaced windows of each training recording; no channel dropout "
           "or noise; 'all' is this sample):\n\n"
         + _common.table(METRIC_HEAD, metric_rows(
             train_groups, ["all", "EEG-only windows", "windows with MEG", *sorted(k for k in train_groups
                                                                            if k not in ("all", "EEG-only windows", "windows with MEG"))], levels))
         + "\n\nPCC and NMSE are means over channels; 'rms recon/orig' is the ratio of RMS amplitudes; 'ch-ch corr' is "
           "the mean Pearson correlation between two different channels of the same window (original / reconstruction; "
           "near 1 for the reconstruction = every channel gets the same waveform); bits / ch-s is the mean over the "
           "group's windows."),
        ("Channels the encoder did not see (held-out EEG windows)",
         "Each window encoded from a random share of its channels (seed 0), all of them decoded from those tokens; "
         "PCC of the channels the encoder saw and of the hidden ones (predicted from their sensor embedding alone):\n\n"
         + _common.table(["hidden share", "PCC seen channels", "PCC hidden channels", "hidden channel-windows"],
                         [[f"{share:.0%}", fmt(v["visible"]), fmt(v["hidden"]), v["n_hidden"]] for share, v in hidden.items()])),
        ("What a position is worth (same channel-windows)",
         "EEG channels with a position from the file or a label rule, decoded with those positions, with every EEG "
         "position of the window replaced by the placement `data.signal_positions` infers from the window's signal "
         "(MDS, what a montage-less recording gets), and with no position at all. Paired, so it separates the worth "
         "of a position from how hard a recording is: the aim rows 'with / without a position' compare different "
         "recordings at different bits per channel-second.\n\n"
         + _common.table(["windows", "PCC true positions", "PCC signal-placed", "PCC no position", "channel-windows"],
                         [[side, fmt(v["true"]["pcc"]), fmt(v["signal"]["pcc"]), fmt(v["none"]["pcc"]), v["true"]["n"]]
                          for side, v in swap.items()])),
        ("The trivial baseline: a transform codec at the same bits",
         "`bench/_codec_baseline.py`: every channel-window coded on its own by the K largest coefficients of its DCT "
         "(index + a 2-7 bit value each, a 16-bit scale, the encoder's choice of value bits), with K set so that the "
         "channel-window costs no more bits than the tokens spend on it (bits per channel-second of that window x "
         f"{window_s:g} s); where not even one coefficient fits (under 19 + 12 bits per channel-window) it sends "
         "nothing and scores 0. It ignores what channels share, which the tokens exploit: a joint codec would do "
         "better still. Nothing is learned, so it cannot overfit; the tokenizer has to beat it. The blocks column "
         f"spends the same bits on each {CODEC_BLOCK}-sample block apart, as a coder of frames must.\n\n"
         + _common.table(["windows of", "windows", "bits / ch-s", "EEG PCC tokenizer", "EEG PCC DCT codec",
                          f"EEG PCC DCT codec, {CODEC_BLOCK}-sample blocks apart", "MEG PCC tokenizer", "MEG PCC DCT codec"],
                         [[name, g["windows"], fmt(g["bits_per_channel_second"], ".0f"), fmt(g.get("eeg/pcc")),
                           fmt(g.get("eeg/pcc_dct_codec")), fmt(g.get("eeg/pcc_dct_codec_blocks")), fmt(g.get("meg/pcc")),
                           fmt(g.get("meg/pcc_dct_codec"))]
                          for name in ["all", *sorted(k for k in held_groups if k not in
                                                      ("all", "EEG-only windows", "windows with MEG"))]
                          for g in [held_groups[name]]])
         + "\n\nHeld-out windows; the same groups as the per-recording table below."),
        ("Signal scale (scaled units, from the shards)",
         "Amplitude of every recording's prepared windows (all channels and samples): the robust scaling puts the "
         "median |x| near 1; the tails are what the data stage leaves.\n\n"
         + _common.table(["side", "recording", "RMS", "median |x|", "99.9th pct |x|", "max |x|"],
                         [[side, r, f"{v['rms']:.2f}", f"{v['median']:.2f}", f"{v['p999']:.1f}", f"{v['max']:.1f}"]
                          for side, sc in (("held-out", held_scale), ("train", train_scale)) for r, v in sorted(sc.items())])),
        ("Training", (f"{steps_done} steps (checkpoint `global_step`), `fit` wall time {fit_min:.1f} min (including start-up), "
                      f"max_steps {max_steps}, warm-up {warmup} steps, max_time {max_time}"
                      + (" (the time cap stopped it before max_steps: the LR schedule did not finish)"
                         if steps_done is not None and steps_done < max_steps else "") + ".\n\n" + (_common.table(
                          ["train loss term", f"first logs (step {curve['first_step']})", f"last logs (step {curve['last_step']})"],
                          [[k.removeprefix("train/"), fmt(curve["first"][k], ".4f"), fmt(curve["last"][k], ".4f")] for k in curve["first"]])
                          if curve else "(no metrics.csv)"))),
        ("Diagnosis (facts measured in this run)", "\n".join(diag)),
        ("Plots", ("Written by `tokenizer eval --plots` (first held-out batch; code usage over the whole held-out set):\n\n"
                   + "\n".join(f"- `{rel(pth)}` ({sz / 1024:.0f} kB)" for pth, sz in kept_plots)
                   + ("\n\nRemoved (>= 200 kB, not for the repository): " + ", ".join(pth.name for pth, _ in dropped_plots)
                      if dropped_plots else ""))),
    ]
    path = _common.write_markdown(results, "Benchmark: tokenizer quality (held-out recordings)", sections)
    print("\n" + _common.table(["check", "measured", "aim", ""], aim_rows))
    print("\n" + _common.table(METRIC_HEAD, metric_rows(held_groups, sorted(held_groups), levels)))
    print(f"\nwall time {wall / 60:.1f} min; wrote {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
