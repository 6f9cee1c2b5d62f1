"""Rate-distortion sweep of the BrainTokenizer: held-out PCC against bits per channel-second.

Run from the repository root (needs ``../shared/data/recordings``)::

    .venv/bin/python bench/tokenizer_rate_distortion.py                 # N_latent 16 / 32 / 64, ~8 min each
    .venv/bin/python bench/tokenizer_rate_distortion.py --quick         # 10 steps each, smoke run under runs/bench
    .venv/bin/python bench/tokenizer_rate_distortion.py --analyse-only  # rebuild the report from the last run
    .venv/bin/python bench/tokenizer_rate_distortion.py --latents 16 --levels 8 --steps 8000 --max-time 00:00:30:00 \
        --out runs/bench/tokenizer_rd_long --results bench/results/tokenizer_rate_distortion_long.md  # the 30-min budget
    .venv/bin/python bench/tokenizer_rate_distortion.py --from-quality-runs Q16 Q32 Q64 --out runs/bench/tokenizer_rd_q \
        --results bench/results/tokenizer_rate_distortion_q.md  # points from bench/tokenizer_quality.py --out Q.. runs

For each N_latent (and RVQ depth, ``--levels``), through the real command lines and on the same data and
budget (the same number of optimizer steps, batch, schedule and time cap): ``tokenizer fit -c
tokenizer/configs/small.yaml --model.overrides {n_latent: N, rvq_levels: L}``, ``tokenizer export`` and
``tokenizer eval`` on the held-out recordings of ``bench/tokenizer_quality.py`` (same split, same shards).
Writes ``bench/results/tokenizer_rate_distortion.md`` and ``.png``: held-out EEG PCC (with and without
positions) and MEG PCC against bits per channel-second of the held-out windows.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402
import tokenizer_quality as tq  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "tokenizer_rate_distortion.md"
PLOT = ROOT / "bench" / "results" / "tokenizer_rate_distortion.png"


def run_point(out: Path, train_shards: Path, held_shards: Path, n_latent: int, levels: int, steps: int,
              max_time: str, quick: bool) -> dict:
    """fit -> export -> eval for one (N_latent, levels); returns the eval metrics with wall times."""
    run, pkg, ev = out / f"run_n{n_latent}_l{levels}", out / f"pkg_n{n_latent}_l{levels}", out / f"eval_n{n_latent}_l{levels}.json"
    overrides = json.dumps({"n_latent": n_latent, "rvq_levels": levels})
    if run.exists():
        shutil.rmtree(run)  # a stale checkpoints/last.ckpt would be what `export` picks up
    fit = _common.Step(f"fit N_latent={n_latent} L={levels}", [
        "-m", "tokenizer", "fit", "-c", "tokenizer/configs/small.yaml", "--data.train", _common.rel(train_shards),
        "--trainer.default_root_dir", _common.rel(run), "--trainer.accelerator", "cpu", "--trainer.max_steps", str(steps),
        "--trainer.max_time", max_time, "--model.warmup_steps", str(max(1, round(steps * tq.WARMUP_FRACTION))),
        "--model.overrides", overrides, "--trainer.enable_progress_bar", "false"])
    _common.Step("export", ["-m", "tokenizer", "export", _common.rel(run), "--out", _common.rel(pkg), "--overwrite"])
    ev_args = ["-m", "tokenizer", "eval", "--tokenizer", _common.rel(pkg), "--shards", _common.rel(held_shards),
               "--json", _common.rel(ev), "--quiet"]
    if quick:
        ev_args += ["--max-windows", "16"]
    _common.Step("eval (held-out)", ev_args)
    m = json.loads(ev.read_text())
    steps_done = json.loads((pkg / "metrics.json").read_text()).get("training", {}).get("global_step")
    return {**m, "n_latent": n_latent, "levels": levels, "steps": steps_done, "fit_min": fit.wall_s / 60}


def point_from_quality_run(run: Path) -> dict:
    """One point from a finished ``bench/tokenizer_quality.py --out RUN``: its held-out eval (same split and
    metrics as `run_point`), its package's N_latent and RVQ depth, its steps and fit wall time."""
    files = [run / "eval_heldout.json", run / "package" / "config.json", run / "package" / "metrics.json", run / "steps.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"--from-quality-runs {run}: not a finished bench/tokenizer_quality.py run (missing {', '.join(missing)})")
    ev, package_config, metrics, steps = (json.loads(f.read_text()) for f in files)
    cfg = package_config.get("config", package_config)
    fit = next(s for s in steps["steps"] if s["name"] == "fit")
    return {**ev, "n_latent": cfg["n_latent"], "levels": cfg["rvq_levels"], "steps": metrics.get("training", {}).get("global_step"),
            "fit_min": fit["wall_s"] / 60, "fit_command": fit["command"]}


def budget_text(record: dict) -> str:
    """How the points' budgets compare, for the report."""
    if record.get("from_quality_runs"):
        return ("Each point is a `bench/tokenizer_quality.py` run (its own report has the per-recording tables): the "
                "same split, batch, channel cap and time cap, the fit command above; steps differ (a larger N_latent "
                "makes a step slower, and the time cap ends the run), the lr schedule follows the time cap.")
    return (f"{record['steps_per_point']} optimizer steps per point (batch and channel cap of small.yaml), the same data, "
            "schedule and time cap.")


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("eeg/pcc", "EEG, all channels", "o"), ("eeg/pcc_position_known", "EEG with positions", "s"),
                               ("eeg/pcc_position_unknown", "EEG without positions", "^"), ("meg/pcc", "MEG", "D")):
        pts = sorted((p["bits_per_channel_second"], p[key], p) for p in points if p.get(key) == p.get(key) and key in p)
        if not pts:
            continue
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker=marker, label=label)
        if key == "eeg/pcc":
            for x, y, p in pts:
                ax.annotate(f"N={p['n_latent']}, L={p['levels']}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("bits per channel-second (held-out windows, mean)")
    ax.set_ylabel("held-out PCC")
    ax.axhline(0.8, color="grey", lw=0.5, ls="--")
    ax.set_title("BrainTokenizer rate-distortion (small)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latents", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--levels", type=int, nargs="+", default=[4], help="RVQ depths to sweep (each with every N_latent)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per point (default 700, --quick 10)")
    p.add_argument("--max-time", default="00:00:10:00", help="hard cap per fit, DD:HH:MM:SS")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--analyse-only", action="store_true")
    p.add_argument("--from-quality-runs", type=Path, nargs="+", default=None, metavar="RUN",
                   help="take the points from finished `bench/tokenizer_quality.py --out RUN` runs (their own fits, split "
                        "and budget; pass runs that differ only in --overrides) instead of fitting here")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--results", type=Path, default=None,
                   help=f"report path (default {RESULTS.relative_to(ROOT)}); the PNG goes beside it")
    args = p.parse_args(argv)
    steps = args.steps or (10 if args.quick else 700)
    out = args.out or ROOT / "runs" / "bench" / ("tokenizer_rd_quick" if args.quick else "tokenizer_rd")
    results, png = (out / "rd.md", out / "rd.png") if args.quick else (RESULTS, PLOT)
    if args.results:
        results, png = args.results, args.results.with_suffix(".png")
    saved = out / "points.json"
    machine = _common.machine_description(("numpy", "torch", "lightning"))
    if args.analyse_only:
        record = json.loads(saved.read_text())
    elif args.from_quality_runs:
        out.mkdir(parents=True, exist_ok=True)
        points = [point_from_quality_run(r) for r in args.from_quality_runs]
        record = {"command": _common.command_line(), "points": points, "machine": machine, "from_quality_runs": True,
                  "steps": [{"name": f"fit N_latent={q['n_latent']} L={q['levels']}", "wall_s": q["fit_min"] * 60,
                             "args": shlex.split(q["fit_command"])[1:]} for q in points],
                  "steps_per_point": " / ".join(str(q["steps"]) for q in points)}
        saved.write_text(json.dumps(record, indent=2))
    else:
        if not tq.RECORDINGS.is_dir():
            raise SystemExit(f"{tq.RECORDINGS} not found: this benchmark needs the shared real recordings")
        out.mkdir(parents=True, exist_ok=True)
        train, held, _ = tq.split_inputs(out / "cut")  # the Neuromag recording cut in time, as in tokenizer_quality
        train_shards, held_shards = out / "shards_train", out / "shards_heldout"
        t0 = time.perf_counter()
        _common.Step("prepare training set", ["-m", "data", "prepare", *map(_common.rel, train), "--out", _common.rel(train_shards), "--overwrite", "--quiet"])
        _common.Step("prepare held-out set", ["-m", "data", "prepare", *map(_common.rel, held), "--out", _common.rel(held_shards), "--overwrite", "--quiet"])
        points = [run_point(out, train_shards, held_shards, n, lv, steps, args.max_time, args.quick)
                  for lv in args.levels for n in args.latents]
        machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        record = {"command": _common.command_line(), "points": points, "wall_min": (time.perf_counter() - t0) / 60,
                  "steps": [s.to_dict() for s in _common.Step.log], "machine": machine, "steps_per_point": steps}
        saved.write_text(json.dumps(record, indent=2))
    points = record["points"]
    plot(points, png)
    f = tq.fmt
    rows = [[p["n_latent"], p["levels"], p["steps"], f"{p['fit_min']:.1f}", f(p["bits_per_channel_second"], ".0f"),
             f(p.get("eeg/pcc")), f(p.get("eeg/pcc_position_known")), f(p.get("eeg/pcc_position_unknown")), f(p.get("meg/pcc")),
             f"{f(p.get('chcorr_orig'), '.2f')} / {f(p.get('chcorr_recon'), '.2f')}",
             " / ".join(f"{p[f'usage_l{lv}']:.0%}" for lv in range(p["levels"])), f(p.get("spatial_copy_l0"))]
            for p in points]
    head = ["N_latent", "RVQ levels", "steps", "fit min", "bits / ch-s", "EEG PCC", "EEG PCC (pos.)", "EEG PCC (no pos.)",
            "MEG PCC", "ch-ch corr orig / recon", "code usage per level", "spatial copy L0"]
    sections = [
        ("What was done", "For each" + __doc__.split("\n\nFor each", 1)[1]),
        ("Commands", f"```\n{record['command']}\n```\n\nwhich ran, in order (wall time):\n\n"
         + "\n\n".join(f"{s['name']} ({s['wall_s'] / 60:.1f} min):\n\n```\n.venv/bin/python {' '.join(map(shlex.quote, s['args']))}\n```"
                       for s in record["steps"])),
        ("Results", _common.table(head, rows) + f"\n\n![rate-distortion]({png.name})\n\n" + budget_text(record)
         + " Bits per channel-second = N_latent x frames x levels x log2(codes) / (channels x seconds), "
         "averaged over the held-out windows (their channel counts differ)."),
        ("Machine", _common.machine_table(record["machine"])),
    ]
    _common.write_markdown(results, "Benchmark: tokenizer rate-distortion (held-out recordings)", sections)
    print(_common.table(head, rows))
    print(f"wrote {_common.rel(results)} and {_common.rel(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
