"""Task-adaptive pretraining: continue pretraining a backbone package on the *training part* of a labelled task's
recordings (labels unused), then export a package the ablation can fine-tune (``--backbone``).

Run from the repository root::

    .venv/bin/python bench/pretrain_task_adaptive.py --backbone runs/bench/pretrain_all_compact/backbone_pkg \\
        --tokenizer runs/bench/tokenizer_quality/package --steps 500
    .venv/bin/python bench/finetune_ablation.py --backbone runs/bench/pretrain_task_adaptive/backbone_pkg \\
        --tokenizer runs/bench/tokenizer_quality/package --arms pretrained --sets SCP1 ...

It does, through the real command lines (``OUT``, default ``runs/bench/pretrain_task_adaptive``):

1. Reads the task's epochs file (default SCP1) and keeps the epochs whose metadata ``split`` is ``train`` (the given
   training part; the test part is never read into pretraining). Each epoch is written as its own FIF recording
   (``OUT/recordings``), so no window straddles two trials.
2. ``python -m data prepare`` -> ``OUT/shards``; ``python -m tokenizer encode`` -> ``OUT/tokens``.
3. ``python -m pretrain fit --model.init_from BACKBONE`` at the package's own sizes (read from its config.json) for
   ``--steps`` steps, then ``python -m pretrain export`` -> ``OUT/backbone_pkg``.

With ``--from-scratch`` step 3 starts from a fresh initialisation instead (the same sizes): pretraining on the task
alone, the control that separates "more pretraining" from "pretraining on the task's own recordings".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import Step, rel  # noqa: E402

TASKS = ROOT.parent / "shared" / "data" / "tasks"
#: BackboneConfig fields a pretrain run takes from the tokenizer package or from its own options, not overrides
NOT_OVERRIDES = {"n_latent", "rvq_levels", "codebook_size", "codebook_dim", "embedding", "regression_head"}


def write_training_epochs(task: Path, out: Path) -> int:
    """One FIF recording per training epoch of ``task`` in ``out``; returns how many."""
    import mne

    mne.set_log_level("ERROR")
    epochs = mne.read_epochs(task, preload=True)
    if epochs.metadata is None or "split" not in epochs.metadata:
        raise SystemExit(f"{task}: no metadata column 'split' (train/test): cannot tell which epochs are training data")
    train = epochs[epochs.metadata["split"].astype(str).str.lower().eq("train").to_numpy()]
    if len(train) == 0:
        raise SystemExit(f"{task}: no epoch has split 'train'")
    out.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(train.get_data(copy=False)):
        mne.io.RawArray(data, train.info).save(out / f"epoch{i:04d}_raw.fif", overwrite=True)
    return len(train)


def backbone_options(package: Path) -> list[str]:
    """``pretrain fit`` options that rebuild the package's backbone: its sizes as overrides, its embedding and
    whether it has a regression head."""
    config = json.loads((package / "config.json").read_text())["config"]
    sizes = {k: v for k, v in config.items() if k not in NOT_OVERRIDES}
    return ["--model.overrides", json.dumps(sizes), "--model.embedding", config["embedding"],
            "--model.regression_weight", "1.0" if config.get("regression_head") else "0"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", type=Path, required=True, help="backbone package to continue from (its sizes are used)")
    p.add_argument("--tokenizer", type=Path, required=True, help="the tokenizer package the backbone was pretrained on")
    p.add_argument("--task", type=Path, default=TASKS / "self_regulation_scp1-epo.fif",
                   help="epochs file with a metadata column 'split' (default: SCP1)")
    p.add_argument("--steps", type=int, default=500, help="pretraining steps (default 500)")
    p.add_argument("--max-time", default="00:00:20:00", help="cap DD:HH:MM:SS (default 20 min)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4: a continued run)")
    p.add_argument("--from-scratch", action="store_true", help="fresh initialisation at the package's sizes (control)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "pretrain_task_adaptive")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    recordings, shards, tokens = a.out / "recordings", a.out / "shards", a.out / "tokens"
    n = write_training_epochs(a.task, recordings)
    print(f"{n} training epochs of {rel(a.task)} -> {rel(recordings)}", flush=True)
    Step("prepare", ["-m", "data", "prepare", rel(recordings), "--out", rel(shards), "--overwrite", "--quiet"])
    Step("encode", ["-m", "tokenizer", "encode", "--tokenizer", rel(a.tokenizer), "--shards", rel(shards),
                    "--out", rel(tokens), "--overwrite", "--quiet"])
    run = a.out / "pretrain_run"
    start = [] if a.from_scratch else ["--model.init_from", rel(a.backbone)]
    Step("fit", ["-m", "pretrain", "fit", "-c", "pretrain/configs/small.yaml", "--data.tokens", rel(tokens),
                 "--model.tokenizer", rel(a.tokenizer), *backbone_options(a.backbone), *start,
                 "--data.segment_windows", "1", "--data.batch_size", "16", "--model.lr", str(a.lr),
                 "--model.warmup_steps", str(max(1, a.steps // 10)), "--trainer.max_steps", str(a.steps),
                 "--trainer.max_time", a.max_time, "--trainer.accelerator", "cpu", "--trainer.default_root_dir", rel(run),
                 "--checkpoint_every_n_steps", "100", "--trainer.enable_progress_bar", "false"])
    Step("export", ["-m", "pretrain", "export", rel(run), "--out", rel(a.out / "backbone_pkg"), "--overwrite"])
    print(f"backbone package {rel(a.out / 'backbone_pkg')} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
