"""``python -m data``: prepare window shards, inspect recordings and shard directories."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from runkit.console import quiet_third_party, strip_verbose, verbose_requested

from .describe import describe
from .errors import BrainforgeDataError
from .preprocess import PreprocessingSpec
from .shards import merge, prepare, skip_message


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data", description="brainforge data stage: MNE recordings -> litdata window shards.",
                                epilog="--verbose (anywhere) or BRAINFORGE_LOG_LEVEL=DEBUG: also show third-party messages")
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser(
        "prepare",
        help="preprocess and window recordings into shards",
        description="Read recordings (any format MNE reads, folders searched recursively, or BIDS roots), "
        "preprocess them (resample, band-pass, notch, bad channels, robust scaling), cut fixed windows "
        "and write litdata shards plus manifest.json to OUT. Bad inputs are skipped and listed.",
    )
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="recording files, folders (recursive) or BIDS roots")
    pr.add_argument("--out", required=True, help="output shard directory (must not exist unless --overwrite)")
    pr.add_argument("--window-s", type=float, default=None, help="window length in seconds (default: the --spec file's, else 2.0 = 512 samples at 256 Hz)")
    pr.add_argument("--stride-s", type=float, default=None, help="step between window starts in seconds (default: the --spec file's, else the window length)")
    pr.add_argument("--workers", type=int, default=1,
                    help="worker processes, started once, each taking recordings until none is left (default 1: in this process)")
    pr.add_argument("--num-nodes", type=int, default=None,
                    help="prepare only this node's share of the inputs, out of NUM_NODES (default: $SLURM_ARRAY_TASK_COUNT, else 1); "
                    "join the parts with `python -m data merge`")
    pr.add_argument("--node-rank", type=int, default=None,
                    help="this node's rank, 0..NUM_NODES-1 (default: $SLURM_ARRAY_TASK_ID minus $SLURM_ARRAY_TASK_MIN, else 0)")
    pr.add_argument("--spec", default=None, help="a preprocessing.json to apply instead of the defaults")
    pr.add_argument("--line-freq", type=float, default=None, help="mains frequency in Hz (default: from the recording, else notch 50 and 60)")
    pr.add_argument("--chunk-s", type=float, default=None, help="seconds of input processed at a time; bounds memory (default: about 4M values per chunk, at least 60 s)")
    pr.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (atomically, at the end)")
    pr.add_argument("--strict", action="store_true", help="fail on the first bad input instead of skipping it")
    pr.add_argument("--allow-truncated", action="store_true", help="keep the readable part of truncated recordings "
                    "(fewer data records than the header declares), with a note in the manifest; default: skip them")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")

    mg = sub.add_parser(
        "merge",
        help="join the per-node outputs of a multi-node prepare into one dataset",
        description="Join shard directories written by `prepare --num-nodes N --node-rank r` (every rank once) into one "
        "shard directory with one index.json and one manifest.json. Chunks are hard-linked when OUT is on the same "
        "file system, else copied.",
    )
    mg.add_argument("parts", nargs="+", metavar="PART", help="the per-node shard directories")
    mg.add_argument("--out", required=True, help="output shard directory (must not exist unless --overwrite)")
    mg.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (atomically, at the end)")

    ins = sub.add_parser(
        "inspect",
        help="describe a recording or a shard directory",
        description="For a recording: channels by type, positions found/missing, sfreq, duration, annotations. "
        "For a shard directory: the manifest summary.",
    )
    ins.add_argument("path", help="a recording file/folder or a shard directory")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _node(args: argparse.Namespace) -> tuple[int, int]:
    """(num_nodes, node_rank) from the flags, else from a SLURM job array's environment, else (1, 0)."""
    env = os.environ
    num = args.num_nodes if args.num_nodes is not None else int(env.get("SLURM_ARRAY_TASK_COUNT", 1))
    if args.node_rank is not None:
        rank = args.node_rank
    elif "SLURM_ARRAY_TASK_ID" in env and args.num_nodes is None:
        rank = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    else:
        rank = 0
    if num < 1 or not 0 <= rank < num:
        raise BrainforgeDataError(f"--node-rank {rank} must be in 0..{num - 1} (--num-nodes {num})")
    return num, rank


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_third_party(verbose_requested(argv))
    args = _parser().parse_args(strip_verbose(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "prepare":
            spec = PreprocessingSpec.load(args.spec) if args.spec else PreprocessingSpec()
            if args.window_s is not None:  # a flag given overrides the spec file; an absent one keeps it
                spec.window_s = args.window_s
                spec.stride_s = args.window_s
            if args.stride_s is not None:
                spec.stride_s = args.stride_s
            if args.line_freq:
                spec.line_freq = args.line_freq
            num_nodes, node_rank = _node(args)
            m = prepare(
                args.inputs, args.out, spec, workers=args.workers, overwrite=args.overwrite,
                strict=args.strict, chunk_s=args.chunk_s, progress=not args.quiet,
                allow_truncated=args.allow_truncated, num_nodes=num_nodes, node_rank=node_rank,
            )
            part = f" (node {node_rank} of {num_nodes})" if num_nodes > 1 else ""
            print(f"wrote {m['n_windows']} windows from {m['n_recordings']} recording(s) to {args.out}{part}")
            for s in m["skipped"]:
                print(f"  skipped {skip_message(s)}")
            for r in m["recordings"]:
                if r.get("truncated"):
                    print(f"  kept truncated {r['path']}: {'; '.join(r['truncated'])}")
        elif args.cmd == "merge":
            m = merge(args.parts, args.out, overwrite=args.overwrite)
            print(f"merged {len(args.parts)} part(s): {m['n_windows']} windows from {m['n_recordings']} recording(s) in {args.out}")
        else:
            info = describe(args.path)
            print(json.dumps(info, indent=2, default=str) if args.json else info["text"])
    except BrainforgeDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
