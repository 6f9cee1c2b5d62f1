"""Benchmark of fine-tuning quality on the real labelled sets of ``../shared/data/tasks``, beside a braindecode
EEGNet trained from scratch on exactly the same splits and preprocessing.

Run from the repository root::

    .venv/bin/python bench/finetune_tasks.py                # 2 sets x (probe, full, eegnet) x 3 seeds (~30 min on 2 cores)
    .venv/bin/python bench/finetune_tasks.py --quick        # smoke run: 1 seed, 2 epochs per fit; writes under runs/bench only
    .venv/bin/python bench/finetune_tasks.py --analyse-only # rebuild the report from the last run, no training
    .venv/bin/python bench/finetune_tasks.py --backbone runs/demo/backbone_pkg   # another backbone package

It does, through the real command line, and writes ``bench/results/finetune_tasks.md``:

1. For each set with an official train/test split (``self_regulation_scp1-epo.fif``, ``eyes_open_shut-epo.fif``:
   ``epochs.metadata["split"]``), each model and each seed S, one
   ``python -m finetune fit -c finetune/configs/{probe,full}.yaml --data.path SET --model.backbone PKG
   --seed_everything S --data.seed S ...`` (EEGNet: ``full.yaml`` with ``--model.baseline eegnet``, the backbone
   unused). The official test part is the test split; the validation split is carved from the official training
   part only (20%, stratified by label, with the seed S), and it alone chooses the checkpoint and stops training
   early. The best checkpoint is tested once by the CLI (``RUN/test_metrics.json``). Fits run one after another
   (the cheap EyesOpenShut first; per set every model of seed 0, then seed 1, ...), each with
   ``OMP_NUM_THREADS=1`` (``--threads``), so an interrupted run still compares like with like.
2. Once, as a smoke check only (no quality claim: 29 segments, no official split), ``full`` and EEGNet with seed
   0 on ``mne_sample_audvis.csv`` (CSV path, MEG + EEG, 4 classes, split stratified by label).
3. From each run directory: test and validation metrics of the chosen checkpoint, the per-epoch curves of
   ``metrics.csv`` (train loss, validation loss and balanced accuracy), split class counts (``splits.json``),
   epochs run, wall time and peak RSS of the fit process.

Every number in the report is measured in that run, except the reference numbers quoted from
``../shared/data/tasks/README.md``. Run outputs go to ``runs/bench/finetune_tasks``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402

TASKS = ROOT.parent / "shared" / "data" / "tasks"
RESULTS = ROOT / "bench" / "results" / "finetune_tasks.md"
DISCUSSION = ROOT / "bench" / "results" / "finetune_tasks_discussion.md"
WHAT = __doc__.split("``bench/results/finetune_tasks.md``:\n\n")[1].split("\n\nEvery number")[0]

#: sets with an official split -> short name (run in this order: the cheap one first)
SETS = {"eyes_open_shut-epo.fif": "EyesOpenShut", "self_regulation_scp1-epo.fif": "SCP1"}
SMOKE_SET = "mne_sample_audvis.csv"
#: test balanced accuracy on the official split, 3 seeds, quoted from ../shared/data/tasks/README.md
REFERENCE = {
    "EyesOpenShut": {"MiniRocket": "0.571 ± 0.039", "EEGNet": "0.484 ± 0.074", "ShallowFBCSPNet": "0.524 ± 0.067"},
    "SCP1": {"MiniRocket": "0.917 ± 0.004", "EEGNet": "0.881 ± 0.006", "ShallowFBCSPNet": "0.722 ± 0.069"},
}
MODELS = ("probe", "full", "eegnet")
CONFIG = {"probe": "finetune/configs/probe.yaml", "full": "finetune/configs/full.yaml", "eegnet": "finetune/configs/full.yaml"}


@dataclass(frozen=True)
class Budget:
    """What one fit may spend: epochs, early-stopping patience (validation epochs), a hard cap on the training
    time (``--trainer.max_time``, a safety net: the best checkpoint so far is then tested) and extra CLI options."""

    epochs: int
    patience: int
    max_time: str
    extra: tuple[str, ...] = ()


#: (set name, model) -> budget. The foundation models cost ~100x EEGNet per step (a 8-layer d256 backbone over
#: 16 latents x frames on 2 shared CPU cores), and an SCP1 item (3.5 s = 14 frames) ~3.5x an EyesOpenShut item
#: (1 s = 4 frames): SCP1 gets few epochs (7 steps each), with the warm-up shortened to match.
SHORT_WARMUP = ("--model.warmup_steps", "2")
BUDGETS: dict[tuple[str, str], Budget] = {
    ("EyesOpenShut", "probe"): Budget(10, 4, "00:00:06:00", SHORT_WARMUP),
    ("EyesOpenShut", "full"): Budget(8, 4, "00:00:08:00", SHORT_WARMUP),
    ("EyesOpenShut", "eegnet"): Budget(80, 20, "00:00:05:00"),
    ("SCP1", "probe"): Budget(2, 2, "00:00:10:00", SHORT_WARMUP),
    ("SCP1", "full"): Budget(2, 2, "00:00:16:00", SHORT_WARMUP),
    ("SCP1", "eegnet"): Budget(80, 20, "00:00:05:00"),
    ("audvis", "full"): Budget(3, 3, "00:00:05:00", SHORT_WARMUP),
    ("audvis", "eegnet"): Budget(30, 20, "00:00:03:00"),
}
#: ``--long``: the foundation models get about as many epochs as EEGNet needed (affordable with a small backbone)
LONG_BUDGETS: dict[tuple[str, str], Budget] = {
    **BUDGETS,
    ("EyesOpenShut", "probe"): Budget(60, 20, "00:00:06:00", SHORT_WARMUP),
    ("EyesOpenShut", "full"): Budget(60, 20, "00:00:08:00", SHORT_WARMUP),
    ("SCP1", "probe"): Budget(30, 10, "00:00:08:00", SHORT_WARMUP),
    ("SCP1", "full"): Budget(30, 10, "00:00:10:00", SHORT_WARMUP),
}
QUICK_EPOCHS = 2
METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc")
DEFAULT_BACKBONE = ROOT / "runs" / "bench" / "pretrain" / "backbone_pkg"
DEMO_BACKBONE = ROOT / "runs" / "demo" / "backbone_pkg"


# ----------------------------------------------------------------------------------------------------
# Helpers


def rel(path: Path | str) -> str:
    try:
        return os.path.relpath(Path(path), ROOT)
    except ValueError:
        return str(path)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def mean_std(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f} (1 seed)"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def fit_args(set_file: str, model: str, seed: int, backbone: Path, run: Path, quick: bool,
             budgets: dict[tuple[str, str], Budget]) -> list[str]:
    b = budgets[(SETS.get(set_file, "audvis"), model)]
    args = ["-m", "finetune", "fit", "-c", CONFIG[model], "--data.path", rel(TASKS / set_file)]
    args += ["--model.baseline", "eegnet"] if model == "eegnet" else ["--model.backbone", rel(backbone)]
    args += ["--seed_everything", str(seed), "--data.seed", str(seed),
             "--trainer.default_root_dir", rel(run),
             "--trainer.max_epochs", str(QUICK_EPOCHS if quick else b.epochs),
             "--early_stopping_patience", str(b.patience), "--trainer.max_time", b.max_time, *b.extra,
             "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false"]
    return args


def command(args: list[str]) -> str:
    return " ".join([".venv/bin/python", *(f"'{a}'" if " " in a else a for a in args)])


def read_curves(metrics_csv: Path) -> dict[str, list]:
    """Per epoch: mean train loss, val loss, val balanced accuracy (lists indexed by epoch, None if missing)."""
    out: dict[str, dict[int, list[float]]] = {"train_loss": {}, "val_loss": {}, "val_bacc": {}}
    if not metrics_csv.is_file():
        return {k: [] for k in out}
    rows = list(csv.DictReader(metrics_csv.open()))
    # the CLI's final validate + test of the best checkpoint log one row each at the end: drop both
    tested = any(r.get("test/loss") for r in rows)
    fit_rows = [r for r in rows if not r.get("test/loss")]
    if tested:
        last_val = max((i for i, r in enumerate(fit_rows) if r.get("val/loss")), default=None)
        fit_rows = [r for i, r in enumerate(fit_rows) if i != last_val]
    for r in fit_rows:
        ep = int(r["epoch"])
        if r.get("train/loss"):
            out["train_loss"].setdefault(ep, []).append(float(r["train/loss"]))
        if r.get("val/loss"):
            out["val_loss"].setdefault(ep, []).append(float(r["val/loss"]))
            out["val_bacc"].setdefault(ep, []).append(float(r["val/balanced_accuracy"]))
    n_ep = max([max(d) for d in out.values() if d] or [-1]) + 1
    return {k: [statistics.mean(d[e]) if e in d else None for e in range(n_ep)] for k, d in out.items()}


def collect(run: Path) -> dict:
    """What one finished fit left in its run directory."""
    tm = json.loads((run / "test_metrics.json").read_text())
    splits = json.loads((run / "splits.json").read_text()) if (run / "splits.json").is_file() else {}
    curves = read_curves(run / "metrics.csv")
    best = tm.get("best_checkpoint") or ""
    return {
        "test": {k: tm["test"].get(k) for k in (*METRICS, "accuracy", "pr_auc", "loss", "confusion_matrix")},
        "val": {k: tm["val"].get(k) for k in (*METRICS, "loss")},
        "classes": tm.get("classes"), "split_rule": tm["facts"].get("split_rule"),
        "split_sizes": tm["facts"].get("split_sizes"),
        "class_counts": {k: splits.get(k, {}).get("class_counts") for k in ("train", "val", "test")},
        "curves": curves, "epochs_run": len(curves["val_bacc"]),
        "best_epoch": best_epoch(curves), "best_checkpoint": rel(best) if best else None,
    }


def best_epoch(curves: dict) -> int | None:
    """Epoch (0-based) with the highest val/selection (balanced accuracy - 1e-3 x loss), as the CLI chooses."""
    vals = [(b - 1e-3 * min(v, 100.0), -e) for e, (b, v) in enumerate(zip(curves["val_bacc"], curves["val_loss"], strict=True))
            if b is not None and v is not None]
    return -max(vals)[1] if vals else None


# ----------------------------------------------------------------------------------------------------
# Running


def run_fit(set_file: str, model: str, seed: int, backbone: Path, out: Path, quick: bool, threads: int,
            budgets: dict[tuple[str, str], Budget]) -> dict:
    name = SETS.get(set_file, "audvis")
    run = out / name / f"{model}_seed{seed}"
    args = fit_args(set_file, model, seed, backbone, run, quick, budgets)
    print(f"[{time.strftime('%H:%M:%S')}] {name} {model} seed {seed}: {command(args)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    child = _common.run_measured([sys.executable, *args], cwd=ROOT, env=env)
    run.mkdir(parents=True, exist_ok=True)
    (run / "bench_output_tail.log").write_text(child.output_tail)
    rec = {"set": set_file, "name": name, "model": model, "seed": seed, "args": args, "threads": threads,
           "command": f"OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {command(args)}",
           "backbone": None if model == "eegnet" else rel(backbone),
           "returncode": child.returncode, "wall_s": child.wall_s, "peak_rss": child.peak_rss_max_process,
           "run": rel(run), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if child.returncode == 0 and (run / "test_metrics.json").is_file():
        rec.update(collect(run))
        print(f"    {child.wall_s / 60:.1f} min, peak RSS {_common.fmt_mb(child.peak_rss_max_process)}, "
              f"{rec['epochs_run']} epochs, test bal. acc. {fmt(rec['test']['balanced_accuracy'])}", flush=True)
    else:
        rec["error"] = child.output_tail[-2500:]
        print(f"    FAILED rc {child.returncode} after {child.wall_s / 60:.1f} min:\n{child.output_tail[-1500:]}", flush=True)
    return rec


def save_records(out: Path, state: dict) -> None:
    from data.atomic import write_json_atomic

    write_json_atomic(out / "records.json", state)


# ----------------------------------------------------------------------------------------------------
# Facts about the inputs (for the discussion)


def backbone_facts(backbone: Path) -> dict:
    cfg = json.loads((backbone / "config.json").read_text())
    tok_path = Path((cfg.get("tokenizer") or {}).get("path") or "")
    tok = {}
    if (tok_path / "config.json").is_file():
        tc = json.loads((tok_path / "config.json").read_text())
        c = tc.get("config", tc)
        tok = {"path": rel(tok_path), **{k: c.get(k) for k in ("d_model", "n_latent", "rvq_levels", "codebook_size", "sfreq")},
               "training": tc.get("training") or tc.get("trained_on")}
    b = cfg.get("config", {})
    return {"path": rel(backbone), "d_model": b.get("d_model"), "n_layers": b.get("n_layers"), "embedding": b.get("embedding"),
            "training": cfg.get("training"), "tokenizer": tok}


def set_facts(set_file: str) -> dict:
    """Channels, how many have a known position, sfreq, epoch length and class counts of one epochs set."""
    import mne
    import numpy as np

    ep = mne.read_epochs(TASKS / set_file, preload=False, verbose="error")
    from data.sensors import layout_from_info

    layout, _ = layout_from_info(ep.info, name=set_file)
    known = int(np.asarray(layout.position_known).sum())
    md = ep.metadata
    inv = {v: k for k, v in ep.event_id.items()}
    counts: dict[str, dict[str, int]] = {}
    for split, code in zip(md["split"], ep.events[:, 2], strict=True):
        counts.setdefault(str(split), {}).setdefault(inv[code], 0)
        counts[str(split)][inv[code]] += 1
    return {"channels": len(ep.ch_names), "positions_known_by_layout": known, "sfreq": ep.info["sfreq"],
            "epoch_s": round(len(ep.times) / ep.info["sfreq"], 3), "official_counts": counts}


# ----------------------------------------------------------------------------------------------------
# Report


def summary_rows(records: list[dict]) -> tuple[list[list], dict]:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if "test" in r and r["name"] in REFERENCE:
            by.setdefault((r["name"], r["model"]), []).append(r)
    rows, means = [], {}
    for name in REFERENCE:
        for model in MODELS:
            rs = sorted(by.get((name, model), []), key=lambda r: r["seed"])
            if not rs:
                continue
            vals = {m: [r["test"][m] for r in rs if r["test"].get(m) is not None] for m in METRICS}
            means[(name, model)] = vals["balanced_accuracy"]
            ref = REFERENCE[name]["EEGNet"] if model == "eegnet" else ""
            rows.append([name, model, len(rs), f"**{mean_std(vals['balanced_accuracy'])}**", mean_std(vals["cohen_kappa"]),
                         mean_std(vals["f1_weighted"]), mean_std(vals["auroc"]),
                         mean_std([r["val"]["balanced_accuracy"] for r in rs]), ref])
    return rows, means


def verdicts(means: dict) -> list[str]:
    out = []
    for name in REFERENCE:
        f, e = means.get((name, "full")), means.get((name, "eegnet"))
        if not f or not e:
            out.append(f"- {name}: not measured (full: {len(f or [])} seeds, EEGNet: {len(e or [])} seeds).")
            continue
        mf, me = statistics.mean(f), statistics.mean(e)
        ok = round(mf, 3) >= round(me, 3)  # equal at the reported precision counts as a match
        out.append(f"- {name}: `full` {mf:.3f} vs EEGNet {me:.3f} (difference {mf - me:+.3f}, {len(f)}/{len(e)} seeds): "
                   + ("**met** (full ≥ EEGNet)." if ok else "**NOT met** (full < EEGNet)."))
    return out


def curve_str(xs: list, spec: str = ".2f") -> str:
    return " ".join(fmt(x, spec) for x in xs) if xs else "-"


def report(state: dict, out: Path, results_path: Path) -> Path:
    records = state["records"]
    rows, means = summary_rows(records)
    quick = state.get("quick")
    bb = state.get("backbone_facts", {})
    tok = bb.get("tokenizer", {})
    sections: list[tuple[str, str]] = []
    head = (f"Command: `{state['command']}` ({'QUICK smoke run: not a quality result' if quick else 'full run'}), "
            f"started {state['started']}, {len([r for r in records if 'test' in r])} of {state['planned']} planned fits finished"
            f"{'' if state.get('complete') else ' (run incomplete: the tables hold the fits that finished)'}.\n\n"
            f"Backbone package: `{bb.get('path')}` (d_model {bb.get('d_model')}, {bb.get('n_layers')} layers, embedding "
            f"{bb.get('embedding')}; pretraining {json.dumps(bb.get('training'))}), tokenizer package `{tok.get('path')}` "
            f"(d_model {tok.get('d_model')}, {tok.get('n_latent')} latents, {tok.get('rvq_levels')} RVQ levels x "
            f"{tok.get('codebook_size')} codes).")
    kept = [r for r in records if r.get("finished", "9") < state["started"][:19]]
    if kept:
        head += (f"\n\n{len(kept)} of these fits ({', '.join(sorted({r['model'] for r in kept}))}) finished before this "
                 "invocation started: they were kept from an earlier run of this script into the same folder (`--resume`); "
                 "see 'finished' in the per-seed table and their commands below.")
    if state.get("backbone_note"):
        head += f"\n\n**Note:** {state['backbone_note']}"
    sections.append(("Run", head))
    sections.append(("What it does", WHAT))
    table = _common.table(["set", "model", "seeds", "test balanced acc.", "test kappa", "test weighted F1", "test AUROC",
                           "val balanced acc.", "README EEGNet"], rows) if rows else "(no finished fit)"
    refs = _common.table(["set", "MiniRocket", "EEGNet", "ShallowFBCSPNet"],
                         [[n, r["MiniRocket"], r["EEGNet"], r["ShallowFBCSPNet"]] for n, r in REFERENCE.items()])
    sections.append(("Results (official split, test part; mean ± std over seeds)",
                     table + "\n\nReference numbers from `../shared/data/tasks/README.md` (official split, 3 seeds, test "
                     "balanced accuracy; not re-measured here):\n\n" + refs + "\n\nAim: `full` at least matches EEGNet "
                     "on every set.\n\n" + "\n".join(verdicts(means))))
    budget = _common.table(["set", "model", "config", "max epochs", "early-stopping patience (val epochs)",
                            "hard cap on training time", "other options"],
                           [[n, m, f"`{CONFIG[m]}`", QUICK_EPOCHS if quick else b.epochs, b.patience, b.max_time,
                             " ".join(b.extra) or "-"] for (n, m), b in (LONG_BUDGETS if state.get("long") else BUDGETS).items()])
    sections.append(("Budget per fit", budget + "\n\nEach fit runs with `OMP_NUM_THREADS=1` (`--threads`). A first invocation "
                     "with torch's default (2 threads per process) on the oversubscribed cores (load average about 10) was "
                     "aborted: EEGNet on SCP1 managed 9 epochs in 6.3 min (about 40 s per epoch, stopped by the 5 min cap); "
                     "with one thread the same fit ran 62 epochs in 3.3 min."
                     "\n\nEverything else is the config's: batch 32, AdamW, warm-up 10 steps (2 where listed) then "
                     "cosine decay; `probe` lr 1e-3 (head only), `full` lr 5e-4 with layer decay 0.75, EEGNet lr 1e-3; "
                     "class-weighted cross-entropy; the checkpoint with the best `val/selection` (validation balanced "
                     "accuracy, ties broken by lower validation loss) is tested."))
    per_seed = []
    for r in sorted(records, key=lambda r: (r["name"], MODELS.index(r["model"]) if r["model"] in MODELS else 9, r["seed"])):
        if "test" not in r:
            per_seed.append([r["name"], r["model"], r["seed"], "FAILED", "", "", "", "", "", "", f"{r['wall_s'] / 60:.1f}",
                             _common.fmt_mb(r["peak_rss"]), r["finished"][11:16]])
            continue
        t = r["test"]
        per_seed.append([r["name"], r["model"], r["seed"], fmt(t["balanced_accuracy"]), fmt(t["cohen_kappa"]),
                         fmt(t["f1_weighted"]), fmt(t["auroc"]), fmt(r["val"]["balanced_accuracy"]),
                         r["epochs_run"], r["best_epoch"] if r["best_epoch"] is not None else "-",
                         f"{r['wall_s'] / 60:.1f}", _common.fmt_mb(r["peak_rss"]), r["finished"][11:16]])
    sections.append(("Per seed", _common.table(["set", "model", "seed", "test bal. acc.", "kappa", "weighted F1", "AUROC",
                                                "val bal. acc.", "epochs run", "best epoch", "wall (min)", "peak RSS",
                                                "finished (UTC)"],
                                               per_seed)
                     + "\n\n`audvis` = `mne_sample_audvis.csv`: a smoke check of the CSV + MEG path only (29 segments, "
                     "no official split, split stratified by label): **no quality claim**."))
    curves = []
    for r in records:
        if "curves" not in r:
            continue
        c = r["curves"]
        curves.append(f"- {r['name']} {r['model']} seed {r['seed']}: train loss [{curve_str(c['train_loss'])}]; "
                      f"val loss [{curve_str(c['val_loss'])}]; val bal. acc. [{curve_str(c['val_bacc'])}]")
    sections.append(("Curves (per epoch: mean train loss, validation loss, validation balanced accuracy)",
                     "\n".join(curves) or "-"))
    balance = []
    for name, f in (state.get("set_facts") or {}).items():
        split_counts = next((r["class_counts"] for r in records if r["name"] == name and r.get("class_counts")), {})
        balance.append(f"- {name}: {f['channels']} channels ({f['positions_known_by_layout']} with a position after the "
                       f"data stage's montage fallback), {f['sfreq']:g} Hz, {f['epoch_s']} s epochs; official counts "
                       f"{json.dumps(f['official_counts'])}; our split (seed {next((r['seed'] for r in records if r['name'] == name), '-')}) "
                       f"{json.dumps(split_counts)}")
    sections.append(("Data and class balance", "\n".join(balance) or "-"))
    for other in state.get("also") or []:
        path = ROOT / other / "records.json"
        if not path.is_file():
            sections.append((f"Other run: `{other}`", f"(no `{rel(path)}`: not run or not finished)"))
            continue
        o = json.loads(path.read_text())
        o_rows, o_means = summary_rows(o["records"])
        ob = o.get("backbone_facts", {})
        sections.append((f"Other run: `{other}` (backbone `{ob.get('path')}`)",
                         f"Command: `{o['command']}`, started {o['started']}; backbone d_model {ob.get('d_model')}, "
                         f"{ob.get('n_layers')} layers, pretraining {json.dumps(ob.get('training'))}; tokenizer "
                         f"`{(ob.get('tokenizer') or {}).get('path')}`. "
                         + ("Foundation budgets: `--long` (LONG_BUDGETS: many more epochs). " if o.get("long") else "Same budgets. ")
                         + f"Seeds {sorted({r['seed'] for r in o['records']})}; fits as above (with "
                         f"`--model.backbone {ob.get('path')}`); its EEGNet rows, if any, are that folder's records. Per-seed rows, curves "
                         f"and commands: `{rel(ROOT / other)}/records.json`"
                         + (f" and `{o['results']}`" if o.get("results") else "") + ".\n\n"
                         + (_common.table(["set", "model", "seeds", "test balanced acc.", "test kappa", "test weighted F1",
                                           "test AUROC", "val balanced acc.", "README EEGNet"], o_rows) if o_rows else "-")
                         + "\n\n" + "\n".join(verdicts(o_means))))
    if DISCUSSION.is_file() and not quick and Path(results_path).resolve() == RESULTS.resolve():
        sections.append(("Discussion (written by hand after the run, from the numbers above)", DISCUSSION.read_text()))
    elif not quick:
        sections.append(("Discussion", f"See `{rel(RESULTS)}` (the main report), which summarises this run too."))
    sections.append(("Commands", "\n".join(f"- `{r['command']}`" for r in records) or "-"))
    sections.append(("Machine", _common.machine_table(state["machine"])))
    return _common.write_markdown(results_path, "Fine-tuning on the real labelled sets", sections)


# ----------------------------------------------------------------------------------------------------
# Main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"1 seed, {QUICK_EPOCHS} epochs per fit; results under runs/bench only")
    p.add_argument("--backbone", type=Path, default=None,
                   help=f"backbone package (default {rel(DEFAULT_BACKBONE)}, else {rel(DEMO_BACKBONE)} with a note)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; --quick 0)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    p.add_argument("--long", action="store_true", help="foundation models get LONG_BUDGETS (many more epochs)")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP/MKL threads per fit (default 1: the 2 cores are shared with other work, where torch's "
                        "default of 2 spinning threads per process was much slower; see the report)")
    p.add_argument("--no-smoke", action="store_true", help=f"skip the {SMOKE_SET} smoke check")
    p.add_argument("--out", type=Path, default=None, help="run outputs (default runs/bench/finetune_tasks[_quick])")
    p.add_argument("--results", type=Path, default=None, help=f"report (default {rel(RESULTS)}; --quick: OUT/finetune_tasks.md)")
    p.add_argument("--also", nargs="*", default=[],
                   help="other output folders of this bench (e.g. a run with another backbone) to summarise in the report")
    p.add_argument("--resume", action="store_true", help="keep the fits already in OUT/records.json, run only the others")
    p.add_argument("--analyse-only", action="store_true", help="rebuild the report from OUT/records.json, no training")
    a = p.parse_args()
    out = a.out or ROOT / "runs" / "bench" / ("finetune_tasks_quick" if a.quick else "finetune_tasks")
    results = a.results or (out / "finetune_tasks.md" if a.quick else RESULTS)
    if a.analyse_only:
        state = json.loads((out / "records.json").read_text())
        if a.also:
            state["also"] = [rel(x) for x in a.also]
        print(f"wrote {report(state, out, results)}")
        return

    note = ""
    backbone = a.backbone
    if backbone is None:
        backbone = DEFAULT_BACKBONE
        if not (backbone / "model.safetensors").is_file():
            backbone = DEMO_BACKBONE
            note = (f"{rel(DEFAULT_BACKBONE)} (the pretraining benchmark's backbone) did not exist when this run started, "
                    f"so the `tiny` demo backbone {rel(DEMO_BACKBONE)} (`make demo`) was used.")
    if not (backbone / "model.safetensors").is_file():
        raise SystemExit(f"backbone package {backbone} has no model.safetensors")
    seeds = a.seeds or ([0] if a.quick else [0, 1, 2])
    plan = [(s, m, seed) for s in a.sets for seed in seeds for m in a.models]
    if not a.no_smoke:
        plan += [(SMOKE_SET, m, 0) for m in ("full", "eegnet") if m in a.models]
    out.mkdir(parents=True, exist_ok=True)
    state = {"command": _common.command_line(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": a.quick,
             "planned": len(plan), "machine": _common.machine_description(("numpy", "torch", "lightning", "mne", "braindecode")),
             "backbone_facts": backbone_facts(backbone), "backbone_note": note, "records": [], "complete": False,
             "results": rel(results), "also": [rel(x) for x in a.also], "long": a.long}
    if a.resume and (out / "records.json").is_file():
        old = json.loads((out / "records.json").read_text())
        # keep finished fits; a foundation fit only if it used this backbone
        state["records"] = [r for r in old["records"] if "test" in r and r.get("backbone") in (None, rel(backbone))
                            and (r["set"], r["model"], r["seed"]) in set(plan)]
    state["set_facts"] = {SETS[s]: set_facts(s) for s in a.sets}
    done = {(r["set"], r["model"], r["seed"]) for r in state["records"]}
    t0 = time.perf_counter()
    for set_file, model, seed in plan:
        if (set_file, model, seed) in done:
            continue
        state["records"].append(run_fit(set_file, model, seed, backbone, out, a.quick, a.threads,
                                        LONG_BUDGETS if a.long else BUDGETS))
        save_records(out, state)
        report(state, out, results)
    state["complete"] = all("test" in r for r in state["records"]) and len(state["records"]) == len(plan)
    state["total_wall_s"] = time.perf_counter() - t0
    save_records(out, state)
    print(f"[{time.strftime('%H:%M:%S')}] {len(plan)} fits in {state['total_wall_s'] / 60:.1f} min; wrote {report(state, out, results)}")


if __name__ == "__main__":
    main()
