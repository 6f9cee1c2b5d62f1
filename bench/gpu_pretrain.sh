#!/usr/bin/env bash
# Pretraining throughput and MFU of the `base` backbone in bf16-mixed on one GPU, in under 5 minutes.
#
#   bash bench/gpu_pretrain.sh               # on a GPU machine, from the repository root
#   bash bench/gpu_pretrain.sh --cpu-smoke   # no GPU: 3 steps of the `tiny` preset on CPU (checks the path only)
#   bash bench/gpu_pretrain.sh --steps 500 --compile   # any option of bench/pretrain_gpu.py
#
# Needs only the repository: makes .venv with `make install` if it is missing. Tokens are made from the
# bundled recordings in tests/data (see bench/pretrain_gpu.py); the run goes through `python -m pretrain fit
# -c pretrain/configs/base.yaml` and prints step time, tokens/s, samples/s, FLOPs per step and MFU
# (against the detected GPU's dense bf16 peak, e.g. 989 TFLOP/s for H100 SXM and H200).
# Outputs: runs/bench/gpu_pretrain/ (result_<preset>.json) and a copy of the printout in
# runs/bench/gpu_pretrain/gpu_pretrain.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    make install
fi
mkdir -p runs/bench/gpu_pretrain
{
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC') bash bench/gpu_pretrain.sh $*"
    echo "# git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
    else
        echo "# no nvidia-smi"
    fi
    .venv/bin/python -c "import torch; print('# torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    # a 5-minute cap on the GPU job (tokens from the bundled recordings + 300 steps of base); none for
    # --cpu-smoke, whose time depends on how busy the CPU is (GPU_PRETRAIN_TIMEOUT=seconds overrides)
    cap="${GPU_PRETRAIN_TIMEOUT:-300}"
    case " $* " in *" --cpu-smoke "*) cap="${GPU_PRETRAIN_TIMEOUT:-0}" ;; esac
    rc=0
    timeout "$cap" .venv/bin/python bench/pretrain_gpu.py --preset base --precision bf16-mixed --steps 300 "$@" || rc=$?
    if [ "$rc" -eq 124 ]; then echo "gpu_pretrain: stopped by the ${cap} s cap (GPU_PRETRAIN_TIMEOUT)"; fi
    exit "$rc"
} 2>&1 | tee runs/bench/gpu_pretrain/gpu_pretrain.log
exit "${PIPESTATUS[0]}"
