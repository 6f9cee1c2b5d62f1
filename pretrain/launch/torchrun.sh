#!/bin/bash
# Bare multi-node masked-token pretraining with torchrun (no scheduler). Run the same command on every
# node, changing only NODE_RANK; Lightning reads torchrun's environment (TorchElasticEnvironment).
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 pretrain/launch/torchrun.sh TOKENS TOKENIZER_PKG [options]   # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 pretrain/launch/torchrun.sh TOKENS TOKENIZER_PKG [options]   # node 1
#
# GPUS_PER_NODE processes per node; --trainer.num_nodes/devices are set to match. On one CPU machine:
#   NNODES=2 NODE_RANK=r MASTER_ADDR=127.0.0.1 GPUS_PER_NODE=1 ACCELERATOR=cpu pretrain/launch/torchrun.sh ...
# RUN must be on storage every node sees (only global rank 0 writes checkpoints and logs).
set -euo pipefail

TOKENS=${1:?usage: torchrun.sh TOKENS TOKENIZER_PKG [options]}
TOKENIZER=${2:?usage: torchrun.sh TOKENS TOKENIZER_PKG [options]}
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ACCELERATOR=${ACCELERATOR:-gpu}
CONFIG=${CONFIG:-pretrain/configs/base.yaml}
RUN=${RUN:-runs/pretrain/torchrun}
PY=${PY:-.venv/bin/python}

RESUME=()
if [ -e "$RUN/checkpoints/last.ckpt" ]; then RESUME=(--ckpt_path last); fi

exec "$PY" -m torch.distributed.run \
    --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS_PER_NODE" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m pretrain fit -c "$CONFIG" --data.tokens "$TOKENS" --model.tokenizer "$TOKENIZER" \
    --trainer.default_root_dir "$RUN" --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS_PER_NODE" \
    --trainer.accelerator "$ACCELERATOR" --trainer.strategy "${STRATEGY:-ddp}" \
    "${RESUME[@]}" "$@"
