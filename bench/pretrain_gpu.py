"""Pretraining throughput and MFU of a backbone preset on one GPU, through the real ``python -m pretrain fit``.

Run by ``bench/gpu_pretrain.sh`` (see there); by hand from the repository root::

    .venv/bin/python bench/pretrain_gpu.py                      # base, bf16-mixed, 300 steps on cuda:0
    .venv/bin/python bench/pretrain_gpu.py --cpu-smoke          # 3 steps of the `tiny` preset on CPU (checks the path)

Tokens: the bundled recordings in ``tests/data`` are prepared (`data.prepare`), encoded by a tokenizer of the
``small`` config (16 latents, 4 RVQ levels of 1024 codes: the sizes the backbone is built for) whose codebooks
are k-means-initialised on those windows but which is otherwise untrained, and written as token shards
(`tokenizer.encode.encode_shards`). Step time does not depend on which codes they are. Then
``python -m pretrain fit -c pretrain/configs/<preset>.yaml`` runs in this process with a timing callback:
each optimizer step is timed from ``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward,
clipping, optimizer step; CUDA synchronised at both ends); the first ``--warmup`` steps are left out; one
step just after the warm-up is counted with ``torch.utils.flop_counter.FlopCounterMode`` (and not timed).
Prints the median step time, tokens/s (latent x frame positions), samples/s (10 s segments) and
MFU = FLOPs per step / step time / the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "data"
RECORDINGS = ["test_subsecond.edf", "test.edf", "sample_audvis_5s_raw.fif", "test_edf_stim_channel.edf"]
SMOKE_RECORDINGS = ["test_subsecond.edf"]  # 1 channel, 349 windows: cheap to encode on a busy CPU
#: dense bf16 peak (no sparsity) in TFLOP/s by a name fragment of torch.cuda.get_device_name(); first match wins
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("H20", 148.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
    ("RTX 4090", 165.0), ("V100", 125.0),
]


def peak_tflops(name: str) -> float | None:
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if fragment.lower() in name.lower():
            return tflops
    return None


def make_tokens(out: Path, recordings: list[str]) -> tuple[Path, Path]:
    """(token shard dir, tokenizer package) from the bundled recordings; reused when already there."""
    from data import WindowDataModule, prepare, window_dataset
    from tokenizer.encode import encode_shards
    from tokenizer.lightning import TokenizerModule
    from tokenizer.package import save_package

    shards, pkg, tokens = out / "shards", out / "tokenizer_pkg", out / "tokens"
    if (tokens / "manifest.json").is_file() and (pkg / "model.safetensors").is_file():
        return tokens, pkg
    t0 = time.perf_counter()
    prepare([FIXTURES / r for r in recordings if (FIXTURES / r).exists()], shards, overwrite=True, progress=False)
    torch.manual_seed(0)
    module = TokenizerModule("small")
    module.configure_model()
    dm = WindowDataModule(str(shards), batch_size=64, max_channels=32)
    batch = next(iter(dm._loader(window_dataset(shards), train=False)))
    module.model.train()
    with torch.no_grad():
        module.model(batch)  # k-means initialisation of the codebooks on real windows
    save_package(module.model.eval(), pkg, preprocessing=dm.preprocessing)
    encode_shards(pkg, shards, tokens, batch_size=64, overwrite=True, progress=False)
    n = json.loads((tokens / "manifest.json").read_text())["n_windows"]
    print(f"tokens: {n} windows of bundled recordings -> {tokens} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return tokens, pkg


class StepTimer(L.Callback):
    """Wall time of every optimizer step after ``warmup``; FLOPs of step ``warmup`` (not timed)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.positions, self.batch = warmup, [], 0, 0
        self.flops: int | None = None
        self._counter = None
        self._t0 = 0.0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        if trainer.global_step == self.warmup and self.flops is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        b, n, t, _ = batch["indices"].shape
        self.positions, self.batch = b * n * t, b
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        dt = time.perf_counter() - self._t0
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops, self._counter = int(self._counter.get_total_flops()), None
        elif trainer.global_step > self.warmup:
            self.times.append(dt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base", help="pretrain/configs/<preset>.yaml (default base)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="steps left out of the timing (default 30)")
    p.add_argument("--batch-size", type=int, default=None, help="segments per step (default: the config's)")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--compile", action="store_true", help="--model.compile true")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU (default: from its name)")
    p.add_argument("--out", type=Path, default=None, help="outputs (default runs/bench/gpu_pretrain, --cpu-smoke: gpu_pretrain_smoke)")
    p.add_argument("--cpu-smoke", action="store_true", help="3 steps of the `tiny` preset on CPU in float32 (no GPU figures)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.preset, args.steps, args.warmup, args.precision = "tiny", 3, 1, "32-true"
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch; use --cpu-smoke to check the path on CPU")
    args.out = args.out or ROOT / "runs" / "bench" / ("gpu_pretrain_smoke" if args.cpu_smoke else "gpu_pretrain")
    args.out.mkdir(parents=True, exist_ok=True)
    tokens, pkg = make_tokens(args.out, SMOKE_RECORDINGS if args.cpu_smoke else RECORDINGS)
    run = args.out / f"run_{args.preset}"
    fit = ["fit", "-c", f"pretrain/configs/{args.preset}.yaml", "--data.tokens", str(tokens), "--model.tokenizer", str(pkg),
           "--trainer.max_steps", str(args.steps), "--trainer.precision", args.precision,
           "--model.warmup_steps", str(max(1, args.steps // 10)), "--trainer.default_root_dir", str(run),
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--checkpoint_every_n_steps", str(10 * args.steps), "--trainer.log_every_n_steps", "50",
           "--trainer.accelerator", "cpu" if args.cpu_smoke else "gpu", "--trainer.devices", "1"]
    if args.batch_size:
        fit += ["--data.batch_size", str(args.batch_size)]
    if args.compile:
        fit += ["--model.compile", "true"]
    if args.cpu_smoke:
        fit += ["--data.num_workers", "0"]
    timer = StepTimer(args.warmup)
    from pretrain.__main__ import main as pretrain_main

    print("python -m pretrain " + " ".join(fit), flush=True)
    t0 = time.perf_counter()
    pretrain_main(fit, trainer_defaults={"callbacks": [timer]})
    wall = time.perf_counter() - t0
    if not timer.times:
        raise SystemExit("no timed steps (raise --steps above --warmup)")
    step = statistics.median(timer.times)
    device = torch.cuda.get_device_name(0) if not args.cpu_smoke else "CPU"
    peak = args.peak_tflops or (None if args.cpu_smoke else peak_tflops(device))
    res = {
        "device": device, "preset": args.preset, "precision": args.precision, "steps": args.steps,
        "timed_steps": len(timer.times), "batch": timer.batch, "positions_per_step": timer.positions,
        "step_s_median": step, "step_s_min": min(timer.times), "step_s_max": max(timer.times),
        "tokens_per_s": timer.positions / step, "samples_per_s": timer.batch / step,
        "flops_per_step": timer.flops, "achieved_tflops": (timer.flops / step / 1e12) if timer.flops else None,
        "peak_bf16_tflops": peak, "fit_wall_s": wall,
    }
    res["mfu"] = res["achieved_tflops"] / peak if peak and res["achieved_tflops"] else None
    (args.out / f"result_{args.preset}.json").write_text(json.dumps(res, indent=1))
    print(f"\ndevice {device}, preset {args.preset}, {args.precision}, batch {timer.batch} x {timer.positions // max(1, timer.batch)} "
          f"positions, {len(timer.times)} timed steps after {args.warmup} warm-up")
    print(f"step time median {step * 1e3:.1f} ms (min {min(timer.times) * 1e3:.1f}, max {max(timer.times) * 1e3:.1f})")
    print(f"tokens/s {res['tokens_per_s']:,.0f} (latent x frame positions), samples/s {res['samples_per_s']:,.1f}")
    if timer.flops:
        print(f"FLOPs per step {timer.flops / 1e12:.3f} TFLOP (FlopCounterMode), achieved {res['achieved_tflops']:.1f} TFLOP/s")
    print("MFU " + (f"{res['mfu']:.1%} of {peak:g} TFLOP/s dense bf16" if res["mfu"] is not None
                    else "n/a (" + ("CPU smoke run" if args.cpu_smoke else f"unknown peak for {device!r}: pass --peak-tflops") + ")"))
    print(f"fit wall time {wall:.0f} s; result in {args.out / f'result_{args.preset}.json'}")
    return 0 if math.isfinite(step) else 1


if __name__ == "__main__":
    sys.exit(main())
