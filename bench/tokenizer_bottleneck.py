"""Where a tokenizer package loses the signal: held-out EEG PCC decoded from the first k RVQ levels, and from the
continuous quantizer input (no quantization), beside the spread of that input over its dimensions.

    .venv/bin/python bench/tokenizer_bottleneck.py --shards SHARDS PKG [PKG ...]

If PCC barely moves from k = 1 to all levels and the continuous input decodes no better, the quantizer is not what
limits the tokens: the encoder and decoder are. The participation ratio (sum of PCA variances squared over the sum
of their squares) says over how many dimensions the quantizer input really spreads (codebook_dim is the most).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402


def level_pcc(model, shards: Path, batch_size: int = 16) -> dict[str, float]:
    """{"L1".."L<L>", "continuous": mean EEG PCC, "participation": of the quantizer input, "n": channel-windows}."""
    from data.dataset import WindowCollator, window_dataset
    from data.sensors import SensorType
    from tokenizer.losses import pearson

    ds, collate, q = window_dataset(shards), WindowCollator(max_channels=None), model.quantizer
    levels = model.config.rvq_levels
    pcc: dict[str, list[float]] = {**{f"L{k}": [] for k in range(1, levels + 1)}, "continuous": []}
    inputs = []
    for lo in range(0, len(ds), batch_size):
        batch = collate([ds[i] for i in range(lo, min(len(ds), lo + batch_size))])
        mask = batch["channel_mask"]
        eeg = mask & (batch["types"] == int(SensorType.EEG))
        target = batch["signal"].float()
        with torch.no_grad():
            sensor = model.sensor_encoder(batch["types"], batch["positions"], batch["orientations"], batch["channel_ids"])
            latents = model.encoder(target, sensor, mask)
            routing = model._routing(sensor, mask)
            z = q.unit_input(latents)
            _, indices, _ = q(latents)
            decoded = {f"L{k}": q.indices_to_codes(indices, levels=k) for k in range(1, levels + 1)}
            for name, code in (decoded | {"continuous": q.project_out(z)}).items():
                recon = model.decoder(code, sensor, mask, routing)
                pcc[name] += pearson(recon, target)[eeg].tolist()
        inputs.append(z.reshape(-1, z.shape[-1]))
    flat = torch.cat(inputs)
    var = torch.linalg.svdvals(flat - flat.mean(0)).square()
    out = {k: sum(v) / len(v) if v else float("nan") for k, v in pcc.items()}
    return out | {"participation": float(var.sum() ** 2 / var.square().sum()), "n": len(pcc["continuous"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("packages", nargs="+", help="tokenizer packages")
    p.add_argument("--shards", required=True, help="window shards (python -m data prepare), e.g. held-out recordings")
    args = p.parse_args(argv)
    from tokenizer.package import load_package

    results = []
    for path in args.packages:
        model = load_package(path).model.eval()
        results.append((path, model.config, level_pcc(model, Path(args.shards))))
    depth = max(cfg.rvq_levels for _, cfg, _ in results)
    rows = [[_common.rel(path), *(f"{r[f'L{k}']:.3f}" if f"L{k}" in r else "" for k in range(1, depth + 1)),
             f"{r['continuous']:.3f}", f"{r['participation']:.1f} of {cfg.codebook_dim}", r["n"]]
            for path, cfg, r in results]
    headers = ["package", *[f"PCC L1..{k}" for k in range(1, depth + 1)], "continuous", "participation", "EEG ch-windows"]
    print(_common.table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
