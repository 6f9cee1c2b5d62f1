"""Encode speed of tokenizer packages side by side: the same batch of real windows, interleaved repeats.

For a config change that `bench/tokenizer_throughput.py` (presets against LaBraM) does not cover, e.g. more latents:

    .venv/bin/python bench/tokenizer_encode_packages.py --shards SHARDS PKG_BEFORE PKG_AFTER

prints, per package, the median wall time of `BrainTokenizer.encode` (eval, no_grad) on one batch of ``--batch``
windows of ``SHARDS`` and the channel-seconds encoded per second, and each package's time over the first one's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


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
    models = [load_package(pkg).model.eval() for pkg in a.packages]
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for m in models:  # warm-up
            m.encode(batch["signal"], *geo)
        for _ in range(a.repeats):
            for m, t in zip(models, times, strict=True):
                t0 = time.perf_counter()
                m.encode(batch["signal"], *geo)
                t.append(time.perf_counter() - t0)
    channel_s = float(batch["channel_mask"].sum()) * batch["signal"].shape[-1] / models[0].config.sfreq
    ref = statistics.median(times[0])
    print(f"{len(batch['signal'])} windows, {int(batch['channel_mask'].sum())} channel-windows, {torch.get_num_threads()} threads")
    for pkg, t in zip(a.packages, times, strict=True):
        med = statistics.median(t)
        print(f"{pkg}: median {med * 1000:.0f} ms, {channel_s / med:,.0f} channel-seconds/s, {med / ref:.2f}x the first's time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
