"""One command: pretrain on every real recording we have, split by recording, and export the tokenizer and backbone
packages that the ablation (``bench/finetune_ablation.py``) fine-tunes.

Run from the repository root::

    .venv/bin/python bench/pretrain_all.py                                   # small tokenizer + small backbone, bounded
    .venv/bin/python bench/pretrain_all.py --tokenizer-config tokenizer/configs/tiny.yaml --tokenizer-steps 800
    .venv/bin/python bench/pretrain_all.py --tokenizer-package TOK_PKG       # reuse a trained tokenizer, pretrain only
    .venv/bin/python bench/pretrain_all.py --quick                           # smoke run: 5 steps of each, ~10 min

It does, through the real command lines, and writes ``OUT/pretrain_all.md`` (default ``runs/bench/pretrain_all``):

1. Split by recording: every readable recording of ``../shared/data/recordings`` (found by ``data.discover``) goes
   to training, except the held-out recordings of the tokenizer benchmark (``bench/tokenizer_quality.py``:
   ``HELD_OUT``, other files and systems than the training ones) plus the recordings the ablation fine-tunes on
   (``fif/test_raw.fif`` for ``mne_sample_audvis.csv``, ``edf/test_edf_overlapping_annotations.edf`` for the
   ``motor`` set; ``--keep-task-recordings`` trains on them instead), and except duplicates, synthetic and
   non-neural files (``EXCLUDED`` there; also listed in the report).
2. ``python -m data prepare`` of each side into window shards.
3. ``python -m tokenizer fit -c TOKENIZER_CONFIG`` (``--tokenizer-config``, any preset the tokenizer offers, plus
   ``--tokenizer-args``) on the training shards, validated on the held-out shards, bounded by ``--tokenizer-steps``
   and ``--tokenizer-max-time``; ``python -m tokenizer export`` -> ``OUT/tokenizer_pkg``. With
   ``--tokenizer-package`` this step is skipped and that package is used.
4. ``python -m tokenizer encode`` of both sides into token shards.
5. ``python -m pretrain fit -c BACKBONE_CONFIG`` (``--backbone-config``, default ``pretrain/configs/small.yaml``, its
   masking included, plus ``--pretrain-args``) on the training tokens with the held-out tokens as validation, bounded
   by ``--pretrain-steps`` and ``--pretrain-max-time``; segments of ``--segment-windows`` windows, batches of
   ``--batch-size``.
6. ``python -m pretrain validate`` of the last checkpoint on the held-out tokens: masked-token accuracy per level
   beside the unigram floor, the spatial-copy and the frame-copy baselines.
7. ``python -m pretrain export`` -> ``OUT/backbone_pkg``.

The report gives every command with its wall time and peak memory, the total wall time and the machine's load,
so the time "on 2 CPU cores" is stated as measured (the cores may be shared: the load average says how much).
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
from _common import Step, rel  # noqa: E402

RECORDINGS = ROOT.parent / "shared" / "data" / "recordings"
#: recordings the ablation fine-tunes on: held out of pretraining unless --keep-task-recordings
TASK_RECORDINGS = {
    "fif/test_raw.fif": "MEG + EEG, the MNE sample recording: the ablation's `audvis` set is cut from it",
    "edf/test_edf_overlapping_annotations.edf": "EEG 64 channels, motor runs: the ablation's `motor` set is cut from it",
}
WHAT = __doc__.split("(default ``runs/bench/pretrain_all``):\n\n")[1].split("\n\nThe report")[0]





def split_recordings(keep_task_recordings: bool) -> tuple[list[Path], list[Path], dict[str, str], dict[str, str]]:
    """(training entry points, held-out entry points, {held-out: why}, {excluded: why})."""
    from tokenizer_quality import EXCLUDED, HELD_OUT

    from data import discover

    sources, _ = discover([RECORDINGS])
    found = {os.path.relpath(s.path, RECORDINGS): Path(s.path) for s in sources}
    held_out = dict(HELD_OUT)
    if not keep_task_recordings:
        held_out.update(TASK_RECORDINGS)
    held = [found[r] for r in sorted(held_out) if r in found]
    train = [p for r, p in sorted(found.items()) if r not in held_out and r not in EXCLUDED]
    return train, held, {r: w for r, w in held_out.items() if r in found}, {r: w for r, w in EXCLUDED.items() if r in found}


def split_by_channels(shards: Path, min_channels: int) -> tuple[set[Path], set[Path]]:
    """Recordings of a shard set (resolved paths) with at least / fewer than ``min_channels`` EEG/MEG channels."""
    manifest = json.loads((shards / "manifest.json").read_text())
    n = {(ROOT / r["path"]).resolve(): sum(r["channels"].get(k, 0) for k in ("eeg", "mag", "grad")) for r in manifest["recordings"]}
    return {p for p, c in n.items() if c >= min_channels}, {p for p, c in n.items() if c < min_channels}


def last_val_metrics(metrics_csv: Path) -> dict[str, float]:
    import csv

    if not metrics_csv.is_file():
        return {}
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get("val/loss")]
    return {k.removeprefix("val/"): float(v) for k, v in rows[-1].items() if k.startswith("val/") and v} if rows else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="outputs (default runs/bench/pretrain_all[_quick])")
    p.add_argument("--tokenizer-package", type=Path, default=None, help="use this tokenizer package; skip tokenizer training")
    p.add_argument("--tokenizer-config", default="tokenizer/configs/small.yaml", help="tokenizer config / preset to train")
    p.add_argument("--tokenizer-steps", type=int, default=None, help="tokenizer optimizer steps (default 400; --quick 5)")
    p.add_argument("--tokenizer-max-time", default=None, help="cap DD:HH:MM:SS (default 00:00:40:00; --quick 00:00:02:00)")
    p.add_argument("--tokenizer-args", default="", help="extra `tokenizer fit` options (one string)")
    p.add_argument("--backbone-config", default=None,
                   help="pretraining config: preset, masking (default pretrain/configs/small.yaml; --quick tiny.yaml)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="backbone optimizer steps (default 400; --quick 5)")
    p.add_argument("--pretrain-max-time", default=None, help="cap DD:HH:MM:SS (default 00:00:40:00; --quick 00:00:02:00)")
    p.add_argument("--pretrain-args", default="", help="extra `pretrain fit` options (one string), e.g. '--model.mask_mode frames'")
    p.add_argument("--segment-windows", type=int, default=2, help="2 s windows per pretraining segment (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="pretraining segments per step (default 8)")
    p.add_argument("--keep-task-recordings", action="store_true",
                   help="pretrain on the recordings the ablation fine-tunes on too (default: held out)")
    p.add_argument("--min-channels", type=int, default=1,
                   help="train only on recordings with at least N EEG/MEG channels (default 1: all). A 1-channel "
                        "recording gives 16 latents of one channel, whose codes a masked model copies across the frame")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 steps of each model, backbone preset `tiny`")
    a = p.parse_args(argv)
    q = a.quick
    out = a.out or ROOT / "runs" / "bench" / ("pretrain_all_quick" if q else "pretrain_all")
    tok_steps = a.tokenizer_steps or (5 if q else 400)
    tok_time = a.tokenizer_max_time or ("00:00:02:00" if q else "00:00:40:00")
    pre_steps = a.pretrain_steps or (5 if q else 400)
    pre_time = a.pretrain_max_time or ("00:00:02:00" if q else "00:00:40:00")
    a.backbone_config = a.backbone_config or ("pretrain/configs/tiny.yaml" if q else "pretrain/configs/small.yaml")
    out.mkdir(parents=True, exist_ok=True)
    machine = _common.machine_description(("numpy", "torch", "lightning", "litdata", "mne"))
    t0 = time.perf_counter()
    log: list[Step] = []

    train, held, held_why, excluded = split_recordings(a.keep_task_recordings)
    shards_train, shards_held = out / "shards_train", out / "shards_heldout"
    Step("prepare training recordings", ["-m", "data", "prepare", *map(rel, train), "--out", rel(shards_train), "--overwrite", "--quiet"], log)
    enough, few = split_by_channels(shards_train, a.min_channels)
    if few:
        excluded.update({os.path.relpath(p, RECORDINGS.resolve()): f"fewer than {a.min_channels} EEG/MEG channels (--min-channels)" for p in few})
        if not enough:
            raise SystemExit(f"--min-channels {a.min_channels}: no training recording has that many EEG/MEG channels")
        train = [p for p in train if p.resolve() in enough]
        Step(f"prepare training recordings with >= {a.min_channels} channels",
             ["-m", "data", "prepare", *map(rel, train), "--out", rel(shards_train), "--overwrite", "--quiet"], log)
    Step("prepare held-out recordings", ["-m", "data", "prepare", *map(rel, held), "--out", rel(shards_held), "--overwrite", "--quiet"], log)

    if a.tokenizer_package:
        tok_pkg = a.tokenizer_package
    else:
        tok_run, tok_pkg = out / "tokenizer_run", out / "tokenizer_pkg"
        if tok_run.exists():
            shutil.rmtree(tok_run)
        Step("fit tokenizer", ["-m", "tokenizer", "fit", "-c", a.tokenizer_config, "--data.train", rel(shards_train),
                               "--data.val", rel(shards_held), "--trainer.default_root_dir", rel(tok_run),
                               "--trainer.accelerator", "cpu", "--trainer.max_steps", tok_steps, "--trainer.max_time", tok_time,
                               "--model.warmup_steps", max(1, tok_steps // 20), "--trainer.enable_progress_bar", "false",
                               *shlex.split(a.tokenizer_args)], log)
        Step("export tokenizer", ["-m", "tokenizer", "export", rel(tok_run), "--out", rel(tok_pkg), "--overwrite"], log)

    tokens_train, tokens_held = out / "tokens_train", out / "tokens_heldout"
    Step("encode training tokens", ["-m", "tokenizer", "encode", "--tokenizer", rel(tok_pkg), "--shards", rel(shards_train),
                                    "--out", rel(tokens_train), "--overwrite", "--quiet"], log)
    Step("encode held-out tokens", ["-m", "tokenizer", "encode", "--tokenizer", rel(tok_pkg), "--shards", rel(shards_held),
                                    "--out", rel(tokens_held), "--overwrite", "--quiet"], log)

    run, val_dir, bb_pkg = out / "pretrain_run", out / "pretrain_validate", out / "backbone_pkg"
    for d in (run, val_dir):
        if d.exists():
            shutil.rmtree(d)
    common = ["-c", a.backbone_config, "--data.tokens", rel(tokens_train), "--data.val_tokens", rel(tokens_held),
              "--model.tokenizer", rel(tok_pkg), "--data.segment_windows", a.segment_windows, "--data.batch_size", a.batch_size,
              *shlex.split(a.pretrain_args)]
    Step("fit backbone", ["-m", "pretrain", "fit", *common, "--trainer.accelerator", "cpu", "--trainer.max_steps", pre_steps,
                          "--trainer.max_time", pre_time, "--model.warmup_steps", max(1, pre_steps // 10),
                          "--trainer.default_root_dir", rel(run), "--checkpoint_every_n_steps", 100,
                          "--trainer.enable_progress_bar", "false"], log)
    Step("validate backbone on held-out tokens", ["-m", "pretrain", "validate", *common, "--trainer.accelerator", "cpu",
                                                  "--trainer.default_root_dir", rel(val_dir),
                                                  "--ckpt_path", rel(run / "checkpoints" / "last.ckpt"),
                                                  "--trainer.enable_progress_bar", "false"], log)
    Step("export backbone", ["-m", "pretrain", "export", rel(run), "--out", rel(bb_pkg), "--overwrite"], log)
    wall = time.perf_counter() - t0
    machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    # --- report ----------------------------------------------------------------------------------------
    val = last_val_metrics(val_dir / "metrics.csv")
    levels = sorted(int(k.split("_l")[1]) for k in val if k.startswith("acc_l"))
    rows = [[lv, *(f"{val[f'{m}_l{lv}']:.2%}" if f"{m}_l{lv}" in val else "-"
                   for m in ("acc", "floor_acc", "spatial_acc", "framecopy_acc")),
             "beats all three" if all(val.get(f"acc_l{lv}", 0) > val.get(f"{m}_l{lv}", 1) for m in ("floor_acc", "spatial_acc", "framecopy_acc"))
             else "does NOT beat all three"] for lv in levels]
    bb_meta = json.loads((bb_pkg / "config.json").read_text())
    tm = {s: json.loads((d / "manifest.json").read_text()) for s, d in (("train", tokens_train), ("heldout", tokens_held))}
    sections = [
        ("Summary", f"{'QUICK smoke run: NOT a result. ' if q else ''}Whole command: **{wall / 60:.1f} min** wall on "
         f"{machine['cores']} ({machine['cpu']}; load average at start {machine['load average at start (1/5/15 min)']}, at end "
         f"{machine['load average at end (1/5/15 min)']}). Packages: tokenizer `{rel(tok_pkg)}`, backbone `{rel(bb_pkg)}` "
         f"({bb_meta['training'].get('global_step')} steps, masking `{bb_meta['training'].get('mask_mode')}`).\n\n"
         "Held-out masked-token accuracy (`python -m pretrain validate`, one mask per segment; every baseline is scored on "
         "the same masked positions, a copy that is undefined falls back to the unigram code):\n\n"
         + (_common.table(["level", "model", "unigram floor", "spatial copy", "frame copy", "verdict"], rows) if rows else "(no validation metrics)")
         + (f"\n\nCopies defined at {val.get('spatial_cover', float('nan')):.0%} (spatial) / {val.get('framecopy_cover', float('nan')):.0%} "
            "(frame) of the masked positions." if val else "")
         + (f"\n\nRegression target (`--model.regression_weight`): cosine between the predicted and the true codebook-space "
            f"latent of the masked positions **{val['latent_cos']:.3f}**, against {val.get('latent_cos_framecopy', float('nan')):.3f} "
            "for copying the nearest visible frame's latent." if "latent_cos" in val else "")),
        ("What it does", WHAT),
        ("Steps (wall time, peak RSS of the largest process)", "\n\n".join(
            f"{s.name}: {s.wall_s / 60:.1f} min, {_common.fmt_mb(s.peak_rss)}\n\n```\n{s.command}\n```" for s in log)),
        ("Recordings", f"Training ({len(train)}): " + ", ".join(f"`{rel(x)}`" for x in train)
         + f"; {tm['train']['n_windows']} windows.\n\nHeld out ({len(held)}; {tm['heldout']['n_windows']} windows):\n\n"
         + "\n".join(f"- `{r}`: {w}" for r, w in sorted(held_why.items()))
         + "\n\nExcluded:\n\n" + "\n".join(f"- `{r}`: {w}" for r, w in sorted(excluded.items()))),
        ("Machine", _common.machine_table(machine)),
    ]
    path = _common.write_markdown(out / "pretrain_all.md", "Pretraining on all real recordings", sections)
    (out / "steps.json").write_text(json.dumps({"command": _common.command_line(argv), "wall_s": wall, "machine": machine,
                                                "steps": [s.to_dict() for s in log], "val": val}, indent=1))
    print(f"\nwall {wall / 60:.1f} min; tokenizer {rel(tok_pkg)}, backbone {rel(bb_pkg)}; wrote {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
