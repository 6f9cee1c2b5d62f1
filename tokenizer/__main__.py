"""``python -m tokenizer``: fit | validate (LightningCLI), export, encode, eval.

    python -m tokenizer fit -c tokenizer/configs/tiny.yaml --data.train SHARDS [--trainer.max_steps 500]
    python -m tokenizer export runs/tokenizer/tiny --out PKG
    python -m tokenizer encode --tokenizer PKG --shards SHARDS --out TOKENS
    python -m tokenizer eval --tokenizer PKG --shards SHARDS [--plots DIR] [--json metrics.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runkit.entry import stage_main

TOOLS = ("export", "encode", "eval")


def _tools_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tokenizer", description="brainforge tokenizer tools (training: `fit -c CONFIG`).")
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="turn a training run into a tokenizer package")
    ex.add_argument("run", help="run directory (uses checkpoints/last.ckpt) or a .ckpt file")
    ex.add_argument("--out", required=True, help="package directory to write (config.json, model.safetensors, ...)")
    ex.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    en = sub.add_parser("encode", help="window shards -> token shards")
    en.add_argument("--tokenizer", required=True, help="tokenizer package directory")
    en.add_argument("--shards", required=True, help="window shard directory from `python -m data prepare`")
    en.add_argument("--out", required=True, help="token shard directory to write")
    en.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default 64)")
    en.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    en.add_argument("--quiet", action="store_true", help="no progress bar")
    ev = sub.add_parser("eval", help="reconstruction metrics (EEG/MEG), codebook usage, plots")
    ev.add_argument("--tokenizer", required=True, help="tokenizer package directory")
    ev.add_argument("--shards", required=True, help="window shards to evaluate on (held-out recordings)")
    ev.add_argument("--plots", default=None, help="directory for PNG plots")
    ev.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    ev.add_argument("--save-to-package", action="store_true", help="store the metrics in the package's metrics.json")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-windows", type=int, default=None, help="evaluate only the first N windows")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _tools(argv: list[str]) -> int:
    from data.errors import BrainforgeDataError
    from tokenizer.package import TokenizerPackageError

    args = _tools_parser().parse_args(argv)
    try:
        if args.cmd == "export":
            from tokenizer.export import export_run

            print(f"wrote tokenizer package {export_run(args.run, args.out, args.overwrite)}")
        elif args.cmd == "encode":
            from tokenizer.encode import encode_shards

            m = encode_shards(args.tokenizer, args.shards, args.out, args.batch_size, args.overwrite, not args.quiet)
            print(f"wrote {m['n_windows']} token windows {m['token_shape']} from {len(m['recordings'])} recording(s) to {args.out}")
        else:
            from tokenizer.evaluate import evaluate
            from tokenizer.package import METRICS_FILE

            m = evaluate(args.tokenizer, args.shards, args.plots, args.batch_size, args.max_windows, not args.quiet)
            text = json.dumps(m, indent=2)
            print(text)
            if args.json:
                Path(args.json).write_text(text)
            if args.save_to_package:
                path = Path(args.tokenizer) / METRICS_FILE
                old = json.loads(path.read_text()) if path.is_file() else {}
                path.write_text(json.dumps({**old, "eval": {**m, "shards": str(args.shards)}}, indent=2))
    except (BrainforgeDataError, TokenizerPackageError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    def run_cli(args: list[str] | None) -> None:
        from data.dataset import WindowDataModule
        from runkit.cli import RunDirCLI
        from tokenizer.lightning import TokenizerModule

        class TokenizerCLI(RunDirCLI):
            stage = "tokenizer"

        TokenizerCLI(TokenizerModule, WindowDataModule, args=args)

    return stage_main(argv, __doc__, TOOLS, _tools, run_cli, user_errors=_user_errors)


def _user_errors() -> tuple[type[Exception], ...]:
    from data.errors import BrainforgeDataError
    from tokenizer.package import TokenizerPackageError

    return BrainforgeDataError, TokenizerPackageError


if __name__ == "__main__":
    sys.exit(main())
