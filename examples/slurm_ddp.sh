#!/bin/bash
# Dynamic Training on several GPU nodes under SLURM: one torchrun per node, one process per GPU.
#   sbatch examples/slurm_ddp.sh my.yaml runs/x
# Submit the same line again after a time-out or a crash: it resumes from runs/x/checkpoint.pt.
# Effective batch = training.batch_size x (nodes x GPUs per node); scale training.lr to match (docs/training.md).
#SBATCH --job-name=longmd-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch slurm_ddp.sh CONFIG.yaml RUN_DIR}
OUT=${2:?usage: sbatch slurm_ddp.sh CONFIG.yaml RUN_DIR}
GPUS=${SLURM_GPUS_ON_NODE:-4}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RESUME=""
if [ -f "$OUT/checkpoint.pt" ]; then RESUME=--resume; fi

export OMP_NUM_THREADS=$((SLURM_CPUS_PER_TASK / GPUS))
export LONGMD_CACHE=${LONGMD_CACHE:-$PWD/.longmd-cache}  # shared storage: the neighbour lists are built once

srun torchrun \
    --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS" \
    --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$HEAD:29500" \
    -m longmd train "$CONFIG" --out "$OUT" --device cuda $RESUME
