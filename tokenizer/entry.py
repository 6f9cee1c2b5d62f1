"""The ``python -m <stage>`` dispatch shared by the training stages (tokenizer, pretrain, finetune).

A first argument naming one of the stage's tools (``export``, ``encode``, ...) goes to its argparse tools;
anything else goes to the stage's LightningCLI (``fit``, ``validate``, ...). Kept free of heavy imports so
that a tool does not pay for Lightning.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def stage_main(
    argv: list[str] | None,
    doc: str,
    tools: Sequence[str],
    run_tools: Callable[[list[str]], int],
    run_cli: Callable[[list[str] | None], object],
) -> int:
    """``argv`` None = the real command line (LightningCLI then reads ``sys.argv`` itself)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in tools:
        return run_tools(args)
    if not args or args[0] in ("-h", "--help"):
        print(doc.strip() + "\n")  # the tools are not LightningCLI subcommands: name them before its help
    run_cli(argv)
    return 0
