"""Benchmark of masked-token pretraining quality: does the `small` backbone, after a bounded CPU run, predict
masked tokens of held-out real recordings better than the unigram floor, on every RVQ level?

Run from the repository root::

    .venv/bin/python bench/pretrain_quality.py                 # 400 steps, ~20 min of training on a quiet 2-core CPU
    .venv/bin/python bench/pretrain_quality.py --quick         # smoke run, 10 steps; writes under runs/bench only
    .venv/bin/python bench/pretrain_quality.py --analyse-only  # rebuild the report from the last run, no training

It does, through the real command lines, and writes ``bench/results/pretrain.md``:

1. Reuses the tokenizer benchmark's package and window shards (``runs/bench/tokenizer_quality/package``,
   ``shards_train``, ``shards_heldout``: real recordings of ``../shared/data/recordings`` split by
   recording, see ``bench/tokenizer_quality.py``). If they are missing it makes them first, the same way:
   ``python -m data prepare`` on each side, ``python -m tokenizer fit -c tokenizer/configs/small.yaml``
   (``--tokenizer-steps``, default 200) and ``python -m tokenizer export``.
2. ``python -m tokenizer encode`` of both sides into token shards.
3. ``python -m pretrain fit -c pretrain/configs/small.yaml`` on the training tokens, bounded by
   ``--trainer.max_steps`` (default 400) and ``--trainer.max_time`` (hard cap, default 40 min); warm-up =
   10% of the steps, cosine decay to the end. The head starts at the unigram predictor of the training
   tokens (``prior_init``, the config default), so step 0 scores exactly the floor. Batches of ``--batch-size`` (default 8, half the config's 16,
   so that twice as many steps fit on 2 shared cores). Segments are ``--segment-windows`` (default 2) windows =
   16 frames = 4 s instead of the config's 10 s, so that a step costs ~2.5x less and most of the short
   held-out recordings fill a whole segment. The held-out tokens are given as ``--data.val_tokens``: they
   are only *measured* once per epoch (no early stopping, no checkpoint selection), to draw the curve.
4. ``python -m pretrain validate`` of the last checkpoint on the held-out tokens (the floor there is the
   checkpoint's own unigram predictor, counted on the training tokens it saw).
5. ``python -m pretrain export RUN --out runs/bench/pretrain/backbone_pkg`` (fine-tuning reuses it).
6. In-process, from the exported package: per-level masked-token accuracy, perplexity and the floors
   averaged over several fresh masks, on the held-out tokens and on the training tokens.

The unigram floor predicts, on each level, the code most frequent in the *training* tokens (the floor the
issue names). Two stricter references: the "per-latent" floor predicts each latent channel's own most frequent
training code (what a model learns from the latent embedding alone, without any context), and the "held-out
oracle" floor cheats by using the held-out set's own most frequent code. Two copying predictors show whether
the masking leaves a shortcut: the spatial copy (the majority code of the visible latents of the same frame) and
the frame copy (the same latent's code at the nearest visible frame), each falling back to the unigram code where
it is undefined (`pretrain.model.copy_baselines`); masks are drawn as in the training run (``--mask-mode``). The unigram
perplexity is that of the training code histogram (add-one smoothed) on the held-out codes. Run outputs go
to ``runs/bench/pretrain``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402
from _common import Step, rel  # noqa: E402

TOKQ = ROOT / "runs" / "bench" / "tokenizer_quality"
RESULTS = ROOT / "bench" / "results" / "pretrain.md"
TRAIN_EVAL_SEGMENTS = 128  # training segments evaluated in-process (evenly spaced), to bound the time
WHAT = __doc__.split("``bench/results/pretrain.md``:\n\n")[1].split("\n\nThe unigram floor")[0]
FLOOR_NOTE = "The unigram floor" + __doc__.split("\n\nThe unigram floor")[1].split(". Run outputs")[0]


# ----------------------------------------------------------------------------------------------------
# Helpers





def fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def ensure_tokenizer_inputs(tokenizer_steps: int) -> tuple[Path, Path, Path, bool]:
    """(package, train shards, held-out shards, made_here): reuse the tokenizer bench's, else make them."""
    package, train, held = TOKQ / "package", TOKQ / "shards_train", TOKQ / "shards_heldout"
    if (package / "model.safetensors").is_file() and (train / "manifest.json").is_file() and (held / "manifest.json").is_file():
        return package, train, held, False
    import tokenizer_quality as tq  # the same split by recording as the tokenizer benchmark

    train_inputs, held_inputs, _ = tq.split_inputs()
    Step("prepare training set (fallback)", ["-m", "data", "prepare", *map(rel, train_inputs), "--out", rel(train), "--overwrite", "--quiet"])
    Step("prepare held-out set (fallback)", ["-m", "data", "prepare", *map(rel, held_inputs), "--out", rel(held), "--overwrite", "--quiet"])
    run = TOKQ / "run"
    Step("fit tokenizer (fallback)", ["-m", "tokenizer", "fit", "-c", "tokenizer/configs/small.yaml", "--data.train", rel(train),
                                      "--trainer.max_steps", tokenizer_steps, "--trainer.default_root_dir", rel(run),
                                      "--trainer.enable_progress_bar", "false"])
    Step("export tokenizer (fallback)", ["-m", "tokenizer", "export", rel(run), "--out", rel(package), "--overwrite"])
    return package, train, held, True


# ----------------------------------------------------------------------------------------------------
# In-process evaluation from the exported package


def code_histogram(tokens: Path, levels: int, k: int) -> torch.Tensor:
    """Counts [N, L, K] per latent channel of every code of every window of a token shard directory
    (``.sum(0)`` is the histogram over all latents)."""
    from pretrain.data import SegmentDataset

    ds = SegmentDataset(tokens, segment_windows=1, shuffle=False)
    n_lat = ds.token_shape[0]
    counts = torch.zeros(n_lat, levels, k, dtype=torch.long)
    for i in range(len(ds)):
        idx = ds[i]["indices"]  # [N, F, L]
        for n in range(n_lat):
            for lv in range(levels):
                counts[n, lv] += torch.bincount(idx[n, :, lv], minlength=k)
    return counts


def neighbour_repeat_rate(tokens: Path, levels: int) -> tuple[list[float], int]:
    """Per level, how often a latent's code equals its own code one frame earlier (consecutive frames of
    one recording, window boundaries included): the accuracy of the "copy the previous frame" predictor,
    i.e. how much exact-match redundancy in time the tokens hold. Returns (rates [L], frame pairs)."""
    from pretrain.data import SegmentDataset

    ds = SegmentDataset(tokens, segment_windows=1, shuffle=False)
    by_rec: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for i in range(len(ds)):
        item = ds[i]
        by_rec.setdefault(item["recording"], []).append((item["start"], item["indices"]))
    same, pairs = torch.zeros(levels, dtype=torch.float64), 0
    for items in by_rec.values():
        x = torch.cat([t for _, t in sorted(items, key=lambda z: z[0])], dim=1)  # [N, frames, L]
        eq = x[:, 1:] == x[:, :-1]
        same += eq.double().sum((0, 1))
        pairs += eq.shape[0] * eq.shape[1]
    return (same / max(1, pairs)).tolist(), pairs


@torch.no_grad()
def evaluate(model, tokens: Path, segment_windows: int, mask_ratio: float, seeds: list[int],
             train_counts: torch.Tensor, batch_size: int = 16, max_segments: int | None = None,
             mask_mode: str = "random", mask_span: int = 4) -> dict:
    """Per level, over the segments of ``tokens`` (all, or ``max_segments`` evenly spaced) and one fresh mask per segment and seed: model accuracy,
    perplexity (exp of mean cross-entropy), unigram floor accuracy (training argmax), held-out oracle floor
    (this set's own argmax), per-latent floor (each latent channel's own training argmax), unigram perplexity
    (training histogram, add-one), the spatial-copy and frame-copy baselines (`pretrain.model.copy_baselines`,
    falling back to the training argmax where the copy is undefined) and the masked count. Masks are drawn with
    ``mask_mode`` / ``mask_span`` (the training run's). ``train_counts`` [N, L, K] from `code_histogram`."""
    import torch.nn.functional as F

    from pretrain.data import SegmentDataset, collate_segments
    from pretrain.model import copy_baselines, sample_mask

    cfg = model.config
    lv_n, k = cfg.rvq_levels, cfg.codebook_size
    own = code_histogram(tokens, lv_n, k).sum(0)
    latent_best = train_counts.argmax(2)  # [N, L]
    train_counts = train_counts.sum(0)
    train_best, own_best = train_counts.argmax(1), own.argmax(1)
    logp_uni = torch.log((train_counts.double() + 1) / (train_counts.sum(1, keepdim=True).double() + k))  # [L, K]
    ds = SegmentDataset(tokens, segment_windows=segment_windows, shuffle=False)
    chosen = range(len(ds)) if max_segments is None or len(ds) <= max_segments else \
        [int(j * len(ds) / max_segments) for j in range(max_segments)]  # evenly spaced
    items = [ds[i] for i in chosen]
    correct = torch.zeros(lv_n, dtype=torch.float64)
    top5 = torch.zeros(lv_n, dtype=torch.float64)
    ce = torch.zeros(lv_n, dtype=torch.float64)
    floor = torch.zeros(lv_n, dtype=torch.float64)
    oracle = torch.zeros(lv_n, dtype=torch.float64)
    per_latent = torch.zeros(lv_n, dtype=torch.float64)
    uni_ce = torch.zeros(lv_n, dtype=torch.float64)
    spatial = torch.zeros(lv_n, dtype=torch.float64)
    framecopy = torch.zeros(lv_n, dtype=torch.float64)
    spatial_cover = framecopy_cover = 0.0
    n = 0
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        for lo in range(0, len(items), batch_size):
            batch = collate_segments(items[lo:lo + batch_size])
            mask = sample_mask(batch["valid"], cfg.n_latent, mask_ratio, g, mode=mask_mode, span=mask_span)
            logits = model(batch["indices"], mask, batch["valid"]).float()  # [M, L, K]
            tgt = batch["indices"][mask]  # [M, L]
            correct += (logits.argmax(-1) == tgt).double().sum(0)
            top5 += (logits.topk(5, dim=-1).indices == tgt[..., None]).any(-1).double().sum(0)
            ce += F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view(-1, lv_n).double().sum(0)
            floor += (tgt == train_best[None]).double().sum(0)
            oracle += (tgt == own_best[None]).double().sum(0)
            per_latent += (tgt == latent_best[mask.nonzero()[:, 1]]).double().sum(0)
            uni_ce += -torch.stack([logp_uni[lv, tgt[:, lv]] for lv in range(lv_n)], 1).sum(0)
            cb = copy_baselines(batch["indices"], mask, batch["valid"], train_best, k)
            m = tgt.shape[0]
            spatial += cb["spatial"].double() * m
            framecopy += cb["frame"].double() * m
            spatial_cover += float(cb["spatial_cover"]) * m
            framecopy_cover += float(cb["frame_cover"]) * m
            n += m
    out = {"masked_positions": n, "segments": len(items), "seeds": seeds, "mask_mode": mask_mode, "mask_span": mask_span,
           "spatial_cover": spatial_cover / max(1, n), "framecopy_cover": framecopy_cover / max(1, n), "levels": []}
    for lv in range(lv_n):
        acc, fl = float(correct[lv] / n), float(floor[lv] / n)
        sp, fc = float(spatial[lv] / n), float(framecopy[lv] / n)
        se = math.sqrt(max(acc * (1 - acc), fl * (1 - fl), sp * (1 - sp), fc * (1 - fc), 1e-12) / n)  # binomial s.e.
        out["levels"].append({
            "acc": acc, "top5": float(top5[lv] / n), "ppl": math.exp(float(ce[lv] / n)), "floor": fl,
            "spatial_copy": sp, "frame_copy": fc,
            "oracle_floor": float(oracle[lv] / n), "latent_floor": float(per_latent[lv] / n), "unigram_ppl": math.exp(float(uni_ce[lv] / n)), "se": se,
            "codes_used": int((own[lv] > 0).sum()), "top_code_share": float(own[lv].max() / own[lv].sum()),
        })
    return out


def read_curve(metrics_csv: Path, levels: int) -> tuple[list[dict], list[dict]]:
    """(train rows, val rows) of the run's metrics.csv: step, acc/floor/ppl per level, loss."""
    if not metrics_csv.is_file():
        return [], []
    train, val = [], []
    for r in csv.DictReader(metrics_csv.open()):
        for stage, rows in (("train", train), ("val", val)):
            if r.get(f"{stage}/loss"):
                rows.append({"step": int(r["step"]), "loss": float(r[f"{stage}/loss"]),
                             **{f"{m}_l{lv}": float(r[f"{stage}/{m}_l{lv}"]) for lv in range(levels) for m in ("acc", "floor_acc", "ppl", "spatial_acc", "framecopy_acc")
                                if r.get(f"{stage}/{m}_l{lv}")}})
    return train, val


def mean_rows(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals) if vals else float("nan")


# ----------------------------------------------------------------------------------------------------


def tokens_match(package: Path, *token_dirs: Path) -> bool:
    """Every token dir exists and was encoded by this very tokenizer package (weights hash)."""
    from data.atomic import content_hash

    want = content_hash(package / "model.safetensors")
    for d in token_dirs:
        m = d / "manifest.json"
        if not m.is_file() or json.loads(m.read_text()).get("tokenizer", {}).get("weights_sha256") != want:
            return False
    return True


def run_pipeline(out: Path, package: Path, train_shards: Path, held_shards: Path, args, quick: bool) -> dict:
    tok_train, tok_held = out / "tokens_train", out / "tokens_heldout"
    run, val_dir, pkg = out / "run", out / "validate", out / "backbone_pkg"
    previous = json.loads((out / "steps.json").read_text()) if (out / "steps.json").is_file() else {}
    earlier = [r for r in previous.get("steps", []) if r["name"].startswith("encode")]
    if args.reuse_tokens and tokens_match(package, tok_train, tok_held) and len(earlier) == 2:
        for rec in earlier:  # same commands, run by an earlier invocation of this script
            Step(rec["name"].removesuffix(" (reused)") + " (reused)", rec["args"], record=rec)
    else:
        Step("encode training tokens", ["-m", "tokenizer", "encode", "--tokenizer", rel(package), "--shards", rel(train_shards),
                                        "--out", rel(tok_train), "--overwrite", "--quiet"])
        Step("encode held-out tokens", ["-m", "tokenizer", "encode", "--tokenizer", rel(package), "--shards", rel(held_shards),
                                        "--out", rel(tok_held), "--overwrite", "--quiet"])
    common = ["-c", "pretrain/configs/small.yaml", "--data.tokens", rel(tok_train), "--data.val_tokens", rel(tok_held),
              "--model.tokenizer", rel(package), "--data.segment_windows", args.segment_windows,
              "--data.batch_size", args.batch_size]
    extra = []
    if args.lr is not None:
        extra += ["--model.lr", args.lr]
    if args.embedding is not None:
        extra += ["--model.embedding", args.embedding] + (["--model.regression_weight", "0"] if args.embedding == "learned" else [])
    if args.dropout is not None:
        extra += ["--model.overrides", f"{{dropout: {args.dropout}}}"]
    if args.mask_mode is not None:
        extra += ["--model.mask_mode", args.mask_mode]
    if args.mask_span is not None:
        extra += ["--model.mask_span", args.mask_span]
    if run.exists():
        import shutil

        shutil.rmtree(run)
    warmup = max(1, round(0.1 * args.max_steps))
    fit = Step("fit small backbone", ["-m", "pretrain", "fit", *common, *extra, "--trainer.max_steps", args.max_steps,
                                     "--trainer.max_time", args.max_time, "--model.warmup_steps", warmup,
                                     "--trainer.default_root_dir", rel(run), "--checkpoint_every_n_steps", 100,
                                     "--trainer.enable_progress_bar", "false"])
    if val_dir.exists():
        import shutil

        shutil.rmtree(val_dir)
    Step("validate on held-out tokens", ["-m", "pretrain", "validate", *common, *extra, "--trainer.default_root_dir", rel(val_dir),
                                         "--ckpt_path", rel(run / "checkpoints" / "last.ckpt"), "--trainer.enable_progress_bar", "false"])
    Step("export backbone package", ["-m", "pretrain", "export", rel(run), "--out", rel(pkg), "--overwrite"])
    return {"fit_wall_s": fit.wall_s, "warmup": warmup}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (10 steps, 1 eval mask); results under runs/bench only")
    p.add_argument("--max-steps", type=int, default=None, help="training steps (default 400, --quick 10); warm-up 10%% of them")
    p.add_argument("--max-time", default=None, help="hard cap on training DD:HH:MM:SS (default 00:00:40:00, --quick 00:00:03:00)")
    p.add_argument("--segment-windows", type=int, default=2, help="2 s windows per segment (default 2 = 4 s = 16 frames)")
    p.add_argument("--batch-size", type=int, default=8, help="segments per step (default 8; the config's 16 halves the steps that fit)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the config's)")
    p.add_argument("--embedding", choices=("codebook", "learned"), default=None, help="input embedding (default: the config's)")
    p.add_argument("--dropout", type=float, default=None, help="backbone dropout (default: the config's, 0)")
    p.add_argument("--mask-mode", choices=("random", "frames", "spans"), default=None,
                   help="masking of the training run (default: the config's); the evaluation uses the run's own")
    p.add_argument("--mask-span", type=int, default=None, help="frames per span with --mask-mode spans (default: the config's)")
    p.add_argument("--eval-seeds", type=int, default=None, help="fresh masks per held-out segment in the in-process evaluation (default 3, --quick 1)")
    p.add_argument("--reuse-tokens", action="store_true",
                   help="skip `tokenizer encode` when the token shards of an earlier run were made by the same package")
    p.add_argument("--tokenizer-steps", type=int, default=200, help="tokenizer training steps, only if its package must be made")
    p.add_argument("--out", type=Path, default=None, help="run outputs (default runs/bench/pretrain[_quick])")
    p.add_argument("--results", type=Path, default=None, help="report path (default bench/results/pretrain.md; --quick: in --out)")
    p.add_argument("--analyse-only", action="store_true", help="rebuild the report from the last run's outputs, no training")
    args = p.parse_args(argv)
    quick = args.quick
    args.max_steps = args.max_steps or (10 if quick else 400)
    args.max_time = args.max_time or ("00:00:03:00" if quick else "00:00:40:00")
    seeds = list(range(args.eval_seeds or (1 if quick else 3)))
    out = args.out or ROOT / "runs" / "bench" / ("pretrain_quick" if quick else "pretrain")
    results = args.results or (out / "pretrain.md" if quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.json"
    t_start = time.perf_counter()
    machine = _common.machine_description(("numpy", "torch", "lightning", "litdata"))

    if args.analyse_only:
        saved = Step.replay(steps_file)
        original_command, info, made_here, machine = saved["command"], saved["info"], saved["made_here"], saved["machine"]
        package, train_shards, held_shards = TOKQ / "package", TOKQ / "shards_train", TOKQ / "shards_heldout"
        args.max_steps, args.max_time, args.segment_windows = saved["max_steps"], saved["max_time"], saved["segment_windows"]
        args.batch_size = saved.get("batch_size", args.batch_size)
    else:
        package, train_shards, held_shards, made_here = ensure_tokenizer_inputs(args.tokenizer_steps)
        info = run_pipeline(out, package, train_shards, held_shards, args, quick)
        original_command = _common.command_line()
        machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        steps_file.write_text(json.dumps({"command": original_command, "machine": machine, "info": info, "made_here": made_here,
                                          "max_steps": args.max_steps, "max_time": args.max_time,
                                          "segment_windows": args.segment_windows, "batch_size": args.batch_size,
                                          "steps": [s.to_dict() for s in Step.log]}, indent=1))

    # --- in-process evaluation -------------------------------------------------------------------
    from pretrain.model import preset_of
    from pretrain.package import load_backbone

    t0 = time.perf_counter()
    pkg = load_backbone(out / "backbone_pkg")
    model, cfg = pkg.model, pkg.model.config
    preset = preset_of(cfg) or f"d{cfg.d_model} x {cfg.n_layers}"  # the size trained, by today's preset names
    mask_ratio = float(pkg.meta["training"].get("mask_ratio") or 0.5)
    mask_mode = pkg.meta["training"].get("mask_mode") or "random"  # packages from before mask modes used random
    mask_span = int(pkg.meta["training"].get("mask_span") or 4)
    steps_done = pkg.meta["training"].get("global_step")
    train_counts = code_histogram(out / "tokens_train", cfg.rvq_levels, cfg.codebook_size)  # [N, L, K]
    held = evaluate(model, out / "tokens_heldout", args.segment_windows, mask_ratio, seeds, train_counts,
                    mask_mode=mask_mode, mask_span=mask_span)
    print(f"held-out evaluated ({held['masked_positions']:,} masked positions)", flush=True)
    train_eval = evaluate(model, out / "tokens_train", args.segment_windows, mask_ratio, seeds[:1], train_counts,
                          max_segments=TRAIN_EVAL_SEGMENTS, mask_mode=mask_mode, mask_span=mask_span)
    repeat = {side: neighbour_repeat_rate(out / f"tokens_{side}", cfg.rvq_levels) for side in ("heldout", "train")}
    t_inproc = time.perf_counter() - t0
    (out / "eval.json").write_text(json.dumps({"heldout": held, "train": train_eval}, indent=1))
    wall = time.perf_counter() - t_start
    if args.analyse_only:
        wall = sum(s.wall_s for s in Step.log if not s.name.endswith("(reused)")) + t_inproc

    # --- report --------------------------------------------------------------------------------------
    levels = cfg.rvq_levels
    fit = next(s for s in Step.log if s.name in ("fit small backbone", "fit tiny backbone"))  # tiny: before the rename
    train_curve, val_curve = read_curve(out / "run" / "metrics.csv", levels)
    _, cli_val = read_curve(out / "validate" / "metrics.csv", levels)
    cli_val = cli_val[-1] if cli_val else {}
    tm = {s: json.loads((out / f"tokens_{s}" / "manifest.json").read_text()) for s in ("train", "heldout")}
    seg_frames = args.segment_windows * tm["train"]["token_shape"][1]
    import yaml

    batch = int(yaml.safe_load((out / "run" / "config.yaml").read_text())["data"]["batch_size"])
    tok_metrics = package / "metrics.json"
    tok_steps = json.loads(tok_metrics.read_text()).get("training", {}).get("global_step", "?") if tok_metrics.is_file() else "?"
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    def versus(acc: float, floor: float, se: float) -> str:
        margin = acc - floor
        return "beats" if margin > 2 * se else "does NOT beat" if margin <= 0 else "ties (within 2 s.e.)"

    verdict = [versus(r["acc"], r["floor"], r["se"]) for r in held["levels"]]
    verdict_oracle = [versus(r["acc"], r["oracle_floor"], r["se"]) for r in held["levels"]]
    verdict_latent = [versus(r["acc"], r["latent_floor"], r["se"]) for r in held["levels"]]
    n_beat, n_beat_oracle = sum(v == "beats" for v in verdict), sum(v == "beats" for v in verdict_oracle)
    n_beat_latent = sum(v == "beats" for v in verdict_latent)
    verdict_spatial = [versus(r["acc"], r["spatial_copy"], r["se"]) for r in held["levels"]]
    verdict_frame = [versus(r["acc"], r["frame_copy"], r["se"]) for r in held["levels"]]
    n_beat_spatial, n_beat_frame = sum(v == "beats" for v in verdict_spatial), sum(v == "beats" for v in verdict_frame)
    summary_rows = [[lv, f"{r['acc']:.2%}", f"{r['floor']:.2%}", f"{r['spatial_copy']:.2%}", f"{r['frame_copy']:.2%}",
                     f"{r['latent_floor']:.2%}", f"{r['oracle_floor']:.2%}",
                     f"{r['acc'] / max(r['floor'], 1e-9):.1f}x", f"{r['top5']:.2%}", f"{r['ppl']:.0f}", f"{r['unigram_ppl']:.0f}",
                     verdict[lv], verdict_spatial[lv], verdict_frame[lv], verdict_latent[lv], verdict_oracle[lv]]
                    for lv, r in enumerate(held["levels"])]
    summary_head = ["level", "accuracy", "unigram floor", "spatial copy", "frame copy", "per-latent floor", "held-out oracle floor",
                    "acc / floor", "top-5 acc", "perplexity", "unigram perplexity", "vs unigram floor", "vs spatial copy",
                    "vs frame copy", "vs per-latent floor", "vs oracle floor"]
    train_rows = [[lv, f"{r['acc']:.2%}", f"{r['floor']:.2%}", f"{r['ppl']:.0f}", f"{r['unigram_ppl']:.0f}"]
                  for lv, r in enumerate(train_eval["levels"])]
    cli_rows = [[lv, fmt(cli_val.get(f"acc_l{lv}"), ".2%"), fmt(cli_val.get(f"floor_acc_l{lv}"), ".2%"),
                 fmt(cli_val.get(f"spatial_acc_l{lv}"), ".2%"), fmt(cli_val.get(f"framecopy_acc_l{lv}"), ".2%"),
                 fmt(cli_val.get(f"ppl_l{lv}"), ".0f")] for lv in range(levels)]
    curve_rows = []
    for r in val_curve:
        near = [t for t in train_curve if abs(t["step"] - r["step"]) <= 10]
        curve_rows.append([r["step"], *[f"{mean_rows(near, f'acc_l{lv}'):.2%} / {r.get(f'acc_l{lv}', float('nan')):.2%}"
                                        for lv in range(levels)], f"{mean_rows(near, 'loss'):.3f} / {r['loss']:.3f}"])
    fit_min = fit.wall_s / 60
    stopped_early = steps_done is not None and steps_done < args.max_steps
    manifests = "\n\n".join(
        f"{side}: {tm[s]['n_windows']} windows, token shape {tm[s]['token_shape']} (latents x frames x levels) per 2 s window; "
        + ", ".join(f"`{r['recording'].split('/')[-1]}` {r['stop'] - r['start']}" for r in tm[s]["recordings"])
        for side, s in (("Training tokens", "train"), ("Held-out tokens", "heldout")))
    diag = [
        f"- **Budget.** {steps_done} optimizer steps of {batch} segments x {cfg.n_latent} latents x {seg_frames} frames "
        f"= {batch * cfg.n_latent * seg_frames:,} positions ({int(batch * cfg.n_latent * seg_frames * mask_ratio):,} masked) per step, "
        f"{fit_min:.1f} min of `fit` wall time including start-up and the per-epoch held-out measurement "
        f"(~{fit.wall_s / max(1, steps_done or 1):.1f} s/step on this shared 2-core CPU); "
        f"{(steps_done or 0) * batch / max(1, tm['train']['n_windows']):.1f} passes over {tm['train']['n_windows']} training anchors. "
        + ("The time cap stopped training before max_steps (the cosine schedule did not finish)." if stopped_early else "The cosine schedule ran to its end."),
        f"- **Model.** `{preset}`: d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, embedding `{cfg.embedding}`, "
        f"{n_params / 1e6:.2f} M trainable parameters.",
        "- **Floors.** Held-out codes per level: " + "; ".join(
            f"L{lv} uses {r['codes_used']} of {cfg.codebook_size} codes, the commonest is {r['top_code_share']:.1%} of positions"
            for lv, r in enumerate(held["levels"])) + ". The training argmax scores " + ", ".join(
            f"{r['floor']:.2%}" for r in held["levels"]) + " on them (levels 0..); the held-out set's own argmax " + ", ".join(
            f"{r['oracle_floor']:.2%}" for r in held["levels"]) + ".",
        "- **Fit vs generalisation.** Accuracy on the training tokens (1 mask): " + ", ".join(
            f"L{lv} {r['acc']:.2%}" for lv, r in enumerate(train_eval["levels"])) + "; on held-out: " + ", ".join(
            f"L{lv} {r['acc']:.2%}" for lv, r in enumerate(held["levels"])) + ".",
        "- **How predictable the tokens are from context.** A latent's code equals its own code one frame (0.25 s) "
        "earlier in " + ", ".join(f"L{lv} {r:.2%}" for lv, r in enumerate(repeat["heldout"][0]))
        + f" of held-out frame pairs ({repeat['heldout'][1]:,}) and " + ", ".join(f"L{lv} {r:.2%}" for lv, r in enumerate(repeat["train"][0]))
        + f" of training pairs ({repeat['train'][1]:,}). On the masked held-out positions themselves (masking `{mask_mode}`), "
        "copying the majority code of the frame's visible latents scores " + ", ".join(
            f"L{lv} {r['spatial_copy']:.2%}" for lv, r in enumerate(held["levels"]))
        + f" (defined at {held['spatial_cover']:.0%} of them) and copying the nearest visible frame " + ", ".join(
            f"L{lv} {r['frame_copy']:.2%}" for lv, r in enumerate(held["levels"]))
        + f" (defined at {held['framecopy_cover']:.0%}); the model's margin over the better of the two is what it learned beyond copying.",
        f"- **Uncertainty.** {held['masked_positions']:,} masked held-out positions ({held['segments']} segments x {len(seeds)} masks); "
        "binomial standard error per level: " + ", ".join(f"{r['se']:.2%}" for r in held["levels"])
        + " ('beats' = accuracy above the floor by more than 2 s.e.).",
    ]
    sections = [
        ("Summary",
         f"After {steps_done} steps ({fit_min:.1f} min of CPU `fit` wall time) of `{preset}`, masked-token accuracy on held-out "
         f"real recordings beats the unigram floor on {n_beat} of {levels} levels, the per-latent floor on {n_beat_latent} of {levels} "
         f"and the held-out oracle floor on {n_beat_oracle} of {levels}; it beats the spatial-copy baseline on {n_beat_spatial} "
         f"and the frame-copy baseline on {n_beat_frame} of {levels} levels "
         f"(masking `{mask_mode}`" + (f" of {mask_span}-frame runs" if mask_mode == "spans" else "") + f", copies defined at "
         f"{held['spatial_cover']:.0%} / {held['framecopy_cover']:.0%} of masked positions, else the unigram code; "
         f"mask ratio {mask_ratio:g}, segments of {args.segment_windows} x 2 s = {seg_frames} frames, {len(seeds)} fresh masks per segment):"
         + "\n\n" + _common.table(summary_head, summary_rows)
         + ("\n\nQUICK smoke run: not a result." if quick else "")),
        ("What was done", WHAT + "\n\n" + FLOOR_NOTE + "."
         + ("\n\nThe tokenizer package and window shards were MISSING and were made by this run (fallback steps below)." if made_here else "")),
        ("Commands", ("```\n" + original_command + "\n```\n\n"
                      + (f"(this report was rebuilt from that run's outputs by `{_common.command_line()}`)\n\n" if args.analyse_only else ""))
         + "which ran, in order (wall time, peak RSS of the largest process):\n\n"
         + "\n\n".join(f"{s.name} ({s.wall_s / 60:.1f} min, {_common.fmt_mb(s.peak_rss)}):\n\n```\n{s.command}\n```" for s in Step.log)
         + f"\n\nIn-process evaluation: {t_inproc / 60:.1f} min. Whole script: {wall / 60:.1f} min wall."),
        ("Machine", _common.machine_table(machine) + "\n\nThe 2 cores are shared with other engineers' runs; the load averages "
         "show how busy the machine was, which sets how many steps fit in the time cap."),
        ("Data (split by recording, see bench/results/tokenizer_quality.md)", manifests
         + f"\n\nTokenizer package: `{rel(package)}` ({tok_steps} "
           "training steps of `small`; its held-out reconstruction quality is in bench/results/tokenizer_quality.md)."),
        ("Held-out, python -m pretrain validate (one mask per segment)",
         _common.table(["level", "accuracy", "unigram floor (checkpoint's histogram)", "spatial copy", "frame copy", "perplexity"], cli_rows)
         + (f"\n\nval/loss {cli_val['loss']:.4f}." if cli_val else "")),
        (f"Training tokens, in-process (same package, {train_eval['segments']} evenly spaced segments, 1 mask)",
         _common.table(["level", "accuracy", "unigram floor", "perplexity", "unigram perplexity"], train_rows)),
        ("Learning curve (train, mean of logs within 10 steps / held-out at each epoch end)",
         _common.table(["step", *[f"acc L{lv} train / held-out" for lv in range(levels)], "loss train / held-out"], curve_rows)
         if curve_rows else "(no per-epoch validation logged)"),
        ("Diagnosis (facts measured in this run)", "\n".join(diag)),
    ]
    path = _common.write_markdown(results, "Benchmark: masked-token pretraining quality (held-out recordings)", sections)
    print("\n" + _common.table(summary_head, summary_rows))
    print(f"\nwall time {wall / 60:.1f} min; wrote {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
