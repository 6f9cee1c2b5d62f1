"""Forward + backward time of `tokenizer.layers.LatentMaps` (an einsum) against one batched matrix product per latent
(`torch.bmm`), on the shapes of `small`'s training step (8 windows x 8 frames, 16 latents, width 128):

    .venv/bin/python bench/latent_maps_speed.py [--repeats 200]

prints the median time per call of each, interleaved, and their ratio. It asks whether the maps' matrix product is
why `latent_maps` trains fewer steps in the same time (it is not: bmm / einsum 0.89-0.91x, a millisecond
or two of a 300 ms step).
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
    p.add_argument("--repeats", type=int, default=200, help="timed calls per variant (default 200)")
    a = p.parse_args(argv)
    from tokenizer.layers import LatentMaps

    maps = LatentMaps(16, 128)
    x = torch.randn(64, 16, 128, requires_grad=True)

    def bmm(rows: torch.Tensor) -> torch.Tensor:
        return torch.bmm(rows.transpose(0, 1), maps.weight).transpose(0, 1)

    torch.testing.assert_close(maps(x), bmm(x))
    times = _common.interleaved({"LatentMaps (einsum)": lambda: maps(x).square().sum().backward(),
                                 "bmm": lambda: bmm(x).square().sum().backward()}, a.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k}: median {v * 1e3:.2f} ms forward + backward")
    print(f"bmm / LatentMaps: {med['bmm'] / med['LatentMaps (einsum)']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
