"""``python -m finetune``: fit | validate | test (LightningCLI), export, predict, list.

    python -m finetune fit -c finetune/configs/probe.yaml --data.path TASK --model.backbone BACKBONE_PKG
    python -m finetune fit -c finetune/configs/full.yaml --data.path TASK --model.baseline eegnet   # braindecode baseline
    python -m finetune export RUN --registry REGISTRY --name NAME [--baseline-run BASELINE_RUN]
    python -m finetune predict --model REGISTRY/NAME[/VERSION] recording.edf [more.fif ...] [--json]
    python -m finetune list REGISTRY

TASK is an ``-epo.fif`` file (or several / a folder), a CSV manifest or a BIDS root (see finetune/data.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from runkit.entry import stage_main

TOOLS = ("export", "predict", "list")


def _print_prediction(result, as_json: bool) -> None:
    d = result.to_dict()
    if as_json:
        print(json.dumps(d))
        return
    s = d["summary"]
    probs = ", ".join(f"{k}={v:.3f}" for k, v in s["probabilities"].items())
    print(f"{d['recording']}: {s['label']} ({probs}; {s['n_windows']} windows; model {d['model']['name']} v{d['model']['version']})")
    for w in d["windows"]:
        wp = ", ".join(f"{k}={v:.3f}" for k, v in w["probabilities"].items())
        print(f"  {w['t0_s']:9.3f}-{w['t1_s']:9.3f} s  {w['label']:<16} {wp}")
    for msg in d["warnings"]:
        print(f"  warning: {msg}", file=sys.stderr)


def _tools(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune", description="brainforge fine-tuning tools (training: `fit -c CONFIG`).")
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="publish a fine-tuning run as the next version of a model package")
    ex.add_argument("run", help="fine-tuning run directory (its best checkpoint on validation) or a .ckpt file")
    ex.add_argument("--registry", required=True, help="registry folder; the package goes to REGISTRY/NAME/<next version>")
    ex.add_argument("--name", required=True, help="model name (letters, digits, '.', '_', '-')")
    ex.add_argument("--baseline-run", help="a baseline run (--model.baseline) on the same task: its test metrics go beside this model's")
    pr = sub.add_parser("predict", help="per-window and per-recording predictions of a packaged model")
    pr.add_argument("--model", required=True, help="REGISTRY/NAME (latest version) or REGISTRY/NAME/VERSION")
    pr.add_argument("inputs", nargs="+", help="recordings (any MNE format) or -epo.fif files")
    pr.add_argument("--json", action="store_true", help="one JSON object per input instead of a table")
    pr.add_argument("--batch-size", type=int, default=32)
    ls = sub.add_parser("list", help="models and versions in a registry")
    ls.add_argument("registry")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "predict":  # warnings about an input are part of its result (printed with it)
        for name in ("brainforge.data", "brainforge.finetune"):
            logging.getLogger(name).setLevel(logging.ERROR)

    from data.errors import BrainforgeDataError
    from finetune.errors import FinetuneDataError, ModelPackageError

    expected = (ModelPackageError, FinetuneDataError, BrainforgeDataError, FileNotFoundError, ValueError)
    try:
        if args.cmd == "export":
            from finetune.package import export_run

            out = export_run(args.run, args.registry, args.name, baseline_run=args.baseline_run)
            print(f"wrote model package {out}")
        elif args.cmd == "list":
            from finetune.package import list_models

            print(json.dumps(list_models(args.registry), indent=2))
        else:
            from finetune.package import load_model_package, resolve_version, split_model_path
            from finetune.predict import Predictor, predict_path

            registry, name, version = split_model_path(args.model)
            predictor = Predictor(load_model_package(resolve_version(registry, name, version)), batch_size=args.batch_size)
            failed = 0
            for path in args.inputs:
                try:
                    _print_prediction(predict_path(predictor, path), args.json)
                except expected as e:
                    failed += 1
                    print(f"error: {path}: {e}", file=sys.stderr)
            return 1 if failed else 0
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, trainer_defaults: dict[str, Any] | None = None) -> int:
    def run_cli(args: list[str] | None) -> None:
        from finetune.cli import FinetuneCLI
        from finetune.lightning import FinetuneDataModule, FinetuneModule

        FinetuneCLI(FinetuneModule, FinetuneDataModule, args=args, trainer_defaults=trainer_defaults)

    return stage_main(argv, __doc__, TOOLS, _tools, run_cli, user_errors=_user_errors)


def _user_errors() -> tuple[type[Exception], ...]:
    from data.errors import BrainforgeDataError
    from finetune.errors import FinetuneDataError, ModelPackageError
    from pretrain.package import BackbonePackageError
    from tokenizer.package import TokenizerPackageError

    return BrainforgeDataError, FinetuneDataError, ModelPackageError, TokenizerPackageError, BackbonePackageError


if __name__ == "__main__":
    sys.exit(main())
