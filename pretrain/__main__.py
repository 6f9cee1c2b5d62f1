"""``python -m pretrain``: fit | validate (LightningCLI), export.

    python -m pretrain fit -c pretrain/configs/small.yaml --data.tokens TOKENS --model.tokenizer PKG [--trainer.max_steps N]
    python -m pretrain fit -c pretrain/configs/small.yaml ... --ckpt_path last      # resume the run directory
    python -m pretrain export runs/pretrain/small --out BACKBONE_PKG
    python -m pretrain import brainomni BrainOmni_tiny/ --out PKG       # a released BrainOmni checkpoint folder

Every ``--trainer.*`` option works (devices, num_nodes, strategy=ddp|fsdp, precision=bf16-mixed, ...);
under ``torchrun`` or SLURM ``srun`` Lightning picks the cluster environment up itself.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from runkit.entry import stage_main

TOOLS = ("export", "import")


def _tools(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain", description="brainforge pretraining tools (training: `fit -c CONFIG`).")
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="turn a pretraining run into a backbone package")
    ex.add_argument("run", help="run directory (uses checkpoints/last.ckpt) or a .ckpt file")
    ex.add_argument("--out", required=True, help="package directory to write (config.json, model.safetensors)")
    ex.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    im = sub.add_parser("import", help="convert a published model's checkpoint folder into brainforge packages")
    im.add_argument("family", choices=["brainomni"], help="model family of the checkpoint")
    im.add_argument("checkpoint", help="released folder: model_cfg.json + BrainOmni.pt (or BrainTokenizer.pt)")
    im.add_argument("--out", required=True, help="package directory to write (a BrainOmni folder: backbone package "
                    "with its tokenizer package in OUT/tokenizer/; a BrainTokenizer folder: tokenizer package)")
    im.add_argument("--tokenizer", default=None, help="BrainTokenizer folder, when BrainOmni.pt holds no tokenizer weights")
    im.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    from data.errors import BrainforgeDataError
    from pretrain.package import BackbonePackageError, export_run

    try:
        if args.cmd == "import":
            from pretrain.brainomni.convert import BrainOmniCheckpointError, import_checkpoint

            try:
                out = import_checkpoint(args.checkpoint, args.out, args.tokenizer, args.overwrite)
            except BrainOmniCheckpointError as e:
                raise ValueError(str(e)) from e
            print(f"wrote {args.family} package {out}")
            return 0
        print(f"wrote backbone package {export_run(args.run, args.out, args.overwrite)}")
    except (BackbonePackageError, BrainforgeDataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, trainer_defaults: dict[str, Any] | None = None) -> int:
    """``trainer_defaults`` (e.g. extra callbacks) is for scripts that embed the CLI."""

    def run_cli(args: list[str] | None) -> None:
        from pretrain.cli import PretrainCLI
        from pretrain.data import PretrainDataModule
        from pretrain.lightning import PretrainModule

        PretrainCLI(PretrainModule, PretrainDataModule, args=args, trainer_defaults=trainer_defaults)

    return stage_main(argv, __doc__, TOOLS, _tools, run_cli, user_errors=_user_errors)


def _user_errors() -> tuple[type[Exception], ...]:
    from data.errors import BrainforgeDataError
    from pretrain.package import BackbonePackageError
    from tokenizer.package import TokenizerPackageError

    return BrainforgeDataError, TokenizerPackageError, BackbonePackageError


if __name__ == "__main__":
    sys.exit(main())
