"""The ``python -m <stage>`` dispatch shared by the training stages (tokenizer, pretrain, finetune).

A first argument naming one of the stage's tools (``export``, ``encode``, ...) goes to its argparse tools;
anything else goes to the stage's LightningCLI (``fit``, ``validate``, ...). User errors (the stage's own error
types, `OptionError`) end as one ``error: ...`` line on stderr and exit status 2; ``--verbose`` adds the
traceback and third-party output. Kept free of heavy imports so that a tool does not pay for Lightning.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence

from runkit.console import quiet_third_party, strip_verbose, verbose_requested

USER_ERROR_STATUS = 2


class OptionError(ValueError):
    """A command-line option (or its YAML equivalent) that is missing or has an unusable value."""


def report_user_error(error: BaseException, verbose: bool) -> int:
    """Print ``error`` as one line on stderr (after its traceback when ``verbose``); the exit status."""
    if verbose:
        traceback.print_exception(error)
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_STATUS


def stage_main(
    argv: list[str] | None,
    doc: str,
    tools: Sequence[str],
    run_tools: Callable[[list[str]], int],
    run_cli: Callable[[list[str] | None], object],
    user_errors: Callable[[], tuple[type[BaseException], ...]] = tuple,
) -> int:
    """``argv`` None = the real command line (LightningCLI then reads ``sys.argv`` itself). ``user_errors``
    returns the stage's own error types that a LightningCLI run reports as one line (`OptionError` always is);
    it is called only when the run fails, so that the stage's modules load only when needed."""
    args = sys.argv[1:] if argv is None else argv
    verbose = verbose_requested(args)
    args = strip_verbose(args)
    if argv is None:
        sys.argv[1:] = args
    else:
        argv = args
    quiet_third_party(verbose)
    if args and args[0] in tools:
        return run_tools(args)
    if not args or args[0] in ("-h", "--help"):
        print(doc.strip() + "\n")  # the tools are not LightningCLI subcommands: name them before its help
    try:
        run_cli(argv)
    except Exception as e:
        if isinstance(e, (OptionError, *user_errors())):
            return report_user_error(e, verbose)
        raise
    return 0
