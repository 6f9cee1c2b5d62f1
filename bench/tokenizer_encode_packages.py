"""Encode speed of tokenizer packages side by side: the same batch of real windows, interleaved repeats.

For a config change that `bench/tokenizer_throughput.py` (presets against LaBraM) does not cover, e.g. more latents:

    .venv/bin/python bench/tokenizer_encode_packages.py --shards SHARDS PKG_BEFORE PKG_AFTER

prints, per package, the median wall time of `BrainTokenizer.encode` (eval, no_grad) on one batch of ``--batch``
windows of ``SHARDS`` and the channel-seconds encoded per second, and each package's time over the first one's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("packages", nargs="+", help="tokenizer packages (the first is the reference)")
    p.add_argument("--shards", required=True, help="window shards (python -m data prepare)")
    p.add_argument("--batch", type=int, default=32, help="windows per batch (default 32)")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions per package (default 7)")
    a = p.parse_args(argv)

    from data.dataset import WindowCollator, window_dataset
    from tokenizer.package import load_package

    ds = window_dataset(a.shards)
    batch = WindowCollator(max_channels=None)([ds[i] for i in range(min(a.batch, len(ds)))])
    geo = (batch["types"], batch["positions"], batch["orientations"], batch["channel_mask"], batch["channel_ids"])
    models = {pkg: load_package(pkg).model.eval() for pkg in a.packages}

    def encode(model):
        return lambda: model.encode(batch["signal"], *geo)

    with torch.no_grad():
        times = _common.interleaved({pkg: encode(m) for pkg, m in models.items()}, a.repeats)
    channel_s = float(batch["channel_mask"].sum()) * batch["signal"].shape[-1] / models[a.packages[0]].config.sfreq
    ref = statistics.median(times[a.packages[0]])
    print(f"{len(batch['signal'])} windows, {int(batch['channel_mask'].sum())} channel-windows, {torch.get_num_threads()} threads")
    for pkg, t in times.items():
        med = statistics.median(t)
        print(f"{pkg}: median {med * 1000:.0f} ms, {channel_s / med:,.0f} channel-seconds/s, {med / ref:.2f}x the first's time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
