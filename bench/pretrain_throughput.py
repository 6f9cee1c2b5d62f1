"""Benchmark of the masked-token backbone's training speed against braindecode's LaBraM.

Run from the repository root::

    .venv/bin/python bench/pretrain_throughput.py          # warm-up + median of 7 steps per model (~5-10 min on 2 busy cores)
    .venv/bin/python bench/pretrain_throughput.py --quick  # warm-up + 1 timed step per model; writes under runs/bench only

It measures, in one process, and prints a table and writes ``bench/results/pretrain_throughput.md``:

1. One training step = forward + masked-token cross-entropy + backward + gradient clipping (1.0) + AdamW
   step, on a batch of B segments of the same 10 s of signal, for:
   - ours: `pretrain.model.MaskedTokenModel` fed the tokens of 10 s (16 latents x 40 frames x 4 RVQ levels,
     the sizes of the tokenizer's ``small`` config), 50% of the latent x frame positions masked (fresh
     mask per sample), predicting all 4 levels (4 x 1024 logits) at each masked position;
   - peer: ``braindecode.models.Labram`` (its own patch embedding of the raw signal, transformer over all
     channel x patch tokens plus [CLS]) fed C = 64 channels x 2560 samples (10 s at 256 Hz, 1 s patches of
     256 samples, which makes its width 256), with the *same* masked-token head on its patch tokens: 50% of
     them, 4 x 1024 logits each.
   Both heads, optimizers and loss are identical; only the backbones differ.
2. Three pairings: (a) matched width and depth (both d256 x 8 layers, 4 heads = our ``small``);
   (b) equal parameter count: LaBraM made deeper until its trainable parameters match our ``small``'s;
   (c) equal parameter count the other way: our backbone made shallower to match LaBraM d256 x 8.
3. Model FLOPs per training step, counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
   convolutions and attention, forward and backward), so that a GPU run can turn step time into MFU.

"Tokens" are each model's own sequence positions, so tokens/s is not comparable across models: ours =
latent x frame positions (16 x 40 = 640 per 10 s, whatever the channel count), LaBraM = channel x patch
tokens (64 x 10 = 640 per 10 s at 64 channels; it grows with the channel count). Samples/s (10 s segments
per second) is the like-for-like throughput, and the ratio in the aim. Our tokens come from the frozen
tokenizer, precomputed once into token shards before pretraining, so tokenizing is not in our step; LaBraM's
own pretraining also runs a frozen VQ tokenizer on every step to make its targets, which is not in its
step here either (its targets are given), so the comparison is, if anything, kind to LaBraM.
Inputs are random (fixed seed): tokens uniform over the codebook, signal standard normal; step time does
not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import _common  # noqa: E402

from pretrain.model import MaskedTokenModel, build_config, sample_mask  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pretrain_throughput.md"
WHAT = __doc__.split("pretrain_throughput.md``:\n\n")[1].split('\n\n"Tokens" are')[0]
TOKENS_NOTE = '"Tokens" are' + __doc__.split('\n\n"Tokens" are')[1]
AIM_RATIO = 1.5
SFREQ, SEGMENT_S, PATCH = 256, 10, 256
N_LATENT, LEVELS, K, CODE_DIM, FRAMES_PER_S = 16, 4, 1024, 64, 4  # tokenizer "small": 8 frames per 2 s window


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------
# Models and their training steps


class Side:
    """A model + its batch + its training step; ``tokens_per_sample`` = its own sequence positions per 10 s."""

    def __init__(self, name: str, model: nn.Module, step: Callable[[], torch.Tensor], params: int,
                 tokens_per_sample: int, token_desc: str, arch: str) -> None:
        self.name, self.model, self.step, self.params = name, model, step, params
        self.tokens_per_sample, self.token_desc, self.arch = tokens_per_sample, token_desc, arch


def adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)


def ours(batch: int, n_layers: int, device: torch.device, d_model: int = 256, n_heads: int = 4, preset: str = "small") -> Side:
    torch.manual_seed(0)
    cfg = build_config(preset, {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads},
                       n_latent=N_LATENT, rvq_levels=LEVELS, codebook_size=K, codebook_dim=CODE_DIM)
    model = MaskedTokenModel(cfg, torch.randn(LEVELS, K, CODE_DIM)).to(device).train()
    t = FRAMES_PER_S * SEGMENT_S
    g = torch.Generator().manual_seed(1)
    indices = torch.randint(0, K, (batch, N_LATENT, t, LEVELS), generator=g).to(device)
    valid = torch.ones(batch, t, dtype=torch.bool, device=device)
    opt = adamw([p for p in model.parameters() if p.requires_grad])
    mask_gen = torch.Generator().manual_seed(2)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        mask = sample_mask(valid, N_LATENT, 0.5, mask_gen)
        logits = model(indices, mask, valid)  # [M, L, K]
        loss = F.cross_entropy(logits.float().flatten(0, 1), indices[mask].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return Side(f"ours d{d_model}x{n_layers}", model, step, trainable(model), N_LATENT * t,
                f"{N_LATENT} latents x {t} frames", f"factorised spatial/temporal attention, SwiGLU, d{d_model} x {n_layers} layers, {n_heads} heads")


class LabramMTM(nn.Module):
    """braindecode's Labram backbone + the same masked-token head as ours (L x K logits per masked patch)."""

    def __init__(self, n_chans: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        from braindecode.models import Labram

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.backbone = Labram(n_chans=n_chans, n_times=SFREQ * SEGMENT_S, sfreq=SFREQ, n_outputs=2, patch_size=PATCH,
                                   num_layers=num_layers, num_heads=num_heads)
        self.backbone.final_layer.requires_grad_(False)  # its classifier is not used here
        d = self.backbone.embed_dim
        self.head = nn.Linear(d, LEVELS * K)
        self.register_buffer("input_chans", torch.arange(n_chans + 1), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] signal, mask [B, C*P] bool -> logits [M, L, K] at the masked patch tokens."""
        feats = self.backbone.forward_features(x, self.input_chans, return_patch_tokens=True)  # [B, C*P, d]
        return self.head(feats[mask]).unflatten(-1, (LEVELS, K))


def labram(batch: int, n_chans: int, num_layers: int, device: torch.device, num_heads: int = 4) -> Side:
    torch.manual_seed(0)
    model = LabramMTM(n_chans, num_layers, num_heads).to(device).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n_chans, SFREQ * SEGMENT_S, generator=g).to(device)
    n_tok = n_chans * (SFREQ * SEGMENT_S // PATCH)
    targets = torch.randint(0, K, (batch, n_tok, LEVELS), generator=g).to(device)
    valid = torch.ones(batch, n_tok, dtype=torch.bool, device=device)
    opt = adamw([p for p in model.parameters() if p.requires_grad])
    mask_gen = torch.Generator().manual_seed(2)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        mask = sample_mask(valid, 1, 0.5, mask_gen)[:, 0]  # [B, C*P], 50% per sample
        logits = model(x, mask)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets[mask].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    d = model.backbone.embed_dim
    return Side(f"LaBraM d{d}x{num_layers}", model, step, trainable(model), n_tok,
                f"{n_chans} channels x {SFREQ * SEGMENT_S // PATCH} patches",
                f"braindecode Labram, full attention over {n_tok}+1 tokens, d{d} x {num_layers} layers, {num_heads} heads, MLP x4")


def step_flops(side: Side) -> int:
    """FLOPs of one training step (forward + backward; the optimizer's elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        side.step()
    return int(counter.get_total_flops())


def analytic_ours_flops(batch: int, d: int, n_layers: int, hidden: int) -> int:
    """Matmul + attention FLOPs of one training step of ours (3x forward: forward, grad wrt inputs and
    weights), excluding the frozen codebook lookup. Per position and layer: spatial + temporal projections
    2 x 8 d^2, SwiGLU 6 d hidden, attention scores and weighted sums 4 d (N + T); the input projection
    2 x 64 d per position; the head 2 d L K per masked position."""
    t = FRAMES_PER_S * SEGMENT_S
    pos = batch * N_LATENT * t
    per_pos_layer = 16 * d * d + 6 * d * hidden + 4 * d * (N_LATENT + t)
    fwd = pos * (n_layers * per_pos_layer + 2 * CODE_DIM * d) + (pos // 2) * 2 * d * LEVELS * K
    return 3 * fwd


# ----------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 timed step per model after the warm-up; results under runs/bench only")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per model (default 7, --quick 1)")
    p.add_argument("--batch", type=int, default=16, help="10 s segments per batch (default 16, as pretrain/configs/small.yaml)")
    p.add_argument("--channels", type=int, default=64, help="LaBraM's channel count (default 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (1 if args.quick else 7)
    results = ROOT / "runs" / "bench" / "pretrain_throughput_quick.md" if args.quick else RESULTS
    machine = _common.machine_description(("torch", "braindecode"))
    machine["torch threads"] = str(torch.get_num_threads())
    machine["device"] = str(device)
    t_start = time.perf_counter()

    # (a) matched width and depth
    our_small = ours(args.batch, 8, device)
    lab_matched = labram(args.batch, args.channels, 8, device)
    # (b) LaBraM deepened to our small's trainable parameters; (c) ours made shallower to LaBraM d256x8's
    lab_counts = {n: trainable(LabramMTM(args.channels, n, 4)) for n in range(8, 17)}
    lab_layers = min(lab_counts, key=lambda n: abs(lab_counts[n] - our_small.params))
    our_counts = {n: trainable(MaskedTokenModel(build_config("small", {"n_layers": n}, n_latent=N_LATENT, rvq_levels=LEVELS,
                                                                      codebook_size=K, codebook_dim=CODE_DIM), torch.zeros(LEVELS, K, CODE_DIM)))
                  for n in range(2, 9)}
    our_layers = min(our_counts, key=lambda n: abs(our_counts[n] - lab_matched.params))
    lab_equal = labram(args.batch, args.channels, lab_layers, device)
    our_equal = ours(args.batch, our_layers, device)
    sides = {s.name: s for s in (our_small, lab_matched, lab_equal, our_equal)}
    pairings = [
        ("(a) matched width and depth", our_small.name, lab_matched.name),
        ("(b) equal parameters (LaBraM deepened to ours)", our_small.name, lab_equal.name),
        ("(c) equal parameters (ours made shallower to LaBraM's)", our_equal.name, lab_matched.name),
    ]
    print(f"models: {', '.join(f'{s.name} {s.params / 1e6:.2f} M' for s in sides.values())}", flush=True)

    flops = {}
    for name, side in sides.items():
        flops[name] = step_flops(side)
        print(f"{name}: {flops[name] / 1e9:,.1f} GFLOP per step", flush=True)
    analytic = analytic_ours_flops(args.batch, 256, 8, our_small.model.config.ffn_hidden)

    def timed(side: Side) -> Callable[[], object]:
        def run() -> object:
            out = side.step()
            sync(device)
            return out
        return run

    print(f"timing: warm-up + {repeats} steps per model, round-robin", flush=True)
    times = _common.interleaved({n: timed(s) for n, s in sides.items()}, repeats=repeats, warmup=True)
    machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    med = {n: statistics.median(t) for n, t in times.items()}
    best = {n: min(t) for n, t in times.items()}

    rows = []
    for name, s in sides.items():
        t = times[name]
        rows.append([name, f"{s.params / 1e6:.2f} M", s.token_desc, f"{med[name]:.3f} s ({min(t):.3f}-{max(t):.3f})",
                     f"{args.batch / med[name]:.2f}", f"{args.batch * s.tokens_per_sample / med[name]:,.0f}",
                     f"{flops[name] / 1e9:,.0f}", f"{flops[name] / med[name] / 1e9:,.1f}"])
    head = ["model", "trainable params", "tokens per 10 s sample", "step time, median (min-max)", "samples/s", "tokens/s",
            "GFLOP / step", "achieved GFLOP/s"]
    pair_rows = []
    for label, a, b in pairings:
        ratio = med[b] / med[a]  # samples/s ours over samples/s LaBraM (same batch)
        pair_rows.append([label, f"{a} ({sides[a].params / 1e6:.2f} M)", f"{b} ({sides[b].params / 1e6:.2f} M)",
                          f"{ratio:.2f}x", f"{best[b] / best[a]:.2f}x", f"{flops[b] / flops[a]:.2f}x"])
    eq_ratios = [med[pairings[1][2]] / med[pairings[1][1]], med[pairings[2][2]] / med[pairings[2][1]]]
    eq_best = [best[pairings[1][2]] / best[pairings[1][1]], best[pairings[2][2]] / best[pairings[2][1]]]
    aim_met = all(r >= AIM_RATIO for r in eq_ratios + eq_best)
    verdict = (f"Aim (>= {AIM_RATIO}x LaBraM's training throughput at equal parameter count): "
               + ("MET" if aim_met else "MISSED") + f" on this CPU: by median step time {eq_ratios[0]:.2f}x (b) and "
               f"{eq_ratios[1]:.2f}x (c); by fastest step {eq_best[0]:.2f}x (b) and {eq_best[1]:.2f}x (c) "
               "(met only if all four are >= the aim).")
    wall = time.perf_counter() - t_start
    ffn = our_small.model.config.ffn_hidden
    sections = [
        ("Summary", _common.table(["pairing", "ours", "LaBraM", "training throughput ours / LaBraM (median step)",
                                   "same, fastest step", "LaBraM FLOPs / ours"], pair_rows) + "\n\n" + verdict
         + ("\n\nQUICK smoke run (1 timed step): not a result." if args.quick else "")),
        ("What was measured", WHAT + "\n\n" + TOKENS_NOTE),
        ("Command", "```\n" + _common.command_line() + "\n```\n\n" + f"Warm-up step, then {repeats} timed steps per model, "
         f"round-robin over the models (background load hits each alike); median, min and max. Batch {args.batch} segments of "
         f"{SEGMENT_S} s; same process, same {torch.get_num_threads()} torch threads, device {device}, float32. "
         f"Whole script: {wall / 60:.1f} min."),
        ("Machine", _common.machine_table(machine)),
        ("Per model", _common.table(head, rows) + "\n\nArchitectures:\n\n"
         + "\n".join(f"- {s.name}: {s.arch}" for s in sides.values())),
        ("FLOPs (for MFU)",
         f"FlopCounterMode counts, per training step of batch {args.batch}: "
         + ", ".join(f"{n} {f / 1e9:,.1f} GFLOP" for n, f in flops.items())
         + f". Analytic check for ours d256x8 (3 x forward matmuls and attention; SwiGLU hidden {ffn}): "
           f"{analytic / 1e9:,.1f} GFLOP, {analytic / flops[our_small.name]:.2f}x the counter's figure. "
           "MFU on an accelerator = GFLOP / step / step time / peak FLOP/s (e.g. 989 TFLOP/s dense bf16 for an "
           "H100 SXM); `bench/gpu_pretrain.sh` does that for `base` in bf16."),
    ]
    path = _common.write_markdown(results, "Benchmark: pretraining throughput, our backbone vs braindecode LaBraM", sections)
    print("\n" + _common.table(head, rows))
    print("\n" + _common.table(["pairing", "ours", "LaBraM", "ours / LaBraM (median)", "(fastest)", "LaBraM FLOPs / ours"], pair_rows))
    print("\n" + verdict)
    print(f"\nwall time {wall / 60:.1f} min; wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
