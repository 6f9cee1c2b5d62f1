#!/bin/bash
# Multi-node data preparation under SLURM: a job array whose tasks each prepare their share of the inputs into
# a per-rank part folder, then one dependent job that merges the parts into one shard directory with one
# manifest. Every task computes the same split from the same inputs (`data.shards.select_for_node`), so the
# inputs must be on storage every node sees, and OUT_PARTS too.
#
#   bash pretrain/launch/prepare_slurm.sh OUT INPUT [INPUT ...]         # 4 array tasks (NODES=4), 8 workers each
#   NODES=16 CPUS=32 bash pretrain/launch/prepare_slurm.sh OUT /data/bids_root
#
# Without SLURM (or to try the recipe on one machine), the same two steps by hand:
#   for r in 0 1; do python -m data prepare IN... --out OUT.parts/rank-$r --num-nodes 2 --node-rank $r --workers 1 & done; wait
#   python -m data merge OUT.parts/rank-* --out OUT
set -euo pipefail

OUT=${1:?usage: prepare_slurm.sh OUT INPUT [INPUT ...]}
shift
[ $# -ge 1 ] || { echo "usage: prepare_slurm.sh OUT INPUT [INPUT ...]" >&2; exit 2; }
NODES=${NODES:-4}
CPUS=${CPUS:-8}
TIME=${TIME:-04:00:00}
PY=${PY:-.venv/bin/python}
PARTS=${PARTS:-${OUT}.parts}
mkdir -p "$PARTS" runs/prepare

# printf %q keeps inputs with spaces intact inside --wrap
INPUTS=$(printf '%q ' "$@")
# each array task: SLURM_ARRAY_TASK_ID / _COUNT pick its share (python -m data prepare reads them)
ARRAY_JOB=$(sbatch --parsable --job-name=brainforge-prepare --array=0-$((NODES - 1)) --nodes=1 --ntasks=1 \
  --cpus-per-task="$CPUS" --time="$TIME" --output=runs/prepare/prepare-%A_%a.out \
  --wrap="$PY -m data prepare $INPUTS --out $(printf %q "$PARTS")/rank-\$SLURM_ARRAY_TASK_ID --workers $CPUS --quiet --overwrite")
# after every task succeeded: one dataset, one manifest (chunks hard-linked, so no second copy on the same file system)
sbatch --parsable --job-name=brainforge-prepare-merge --dependency=afterok:"$ARRAY_JOB" --nodes=1 --ntasks=1 \
  --cpus-per-task=1 --time=01:00:00 --output=runs/prepare/merge-%j.out \
  --wrap="$PY -m data merge $(printf %q "$PARTS")/rank-* --out $(printf %q "$OUT")"
echo "submitted array job $ARRAY_JOB ($NODES tasks) and its merge; parts in $PARTS, dataset in $OUT"
