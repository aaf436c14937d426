#!/usr/bin/env bash
# GPU checks and benchmarks behind docs/results.md, in one go (about 8 minutes on one H100):
#   tests   the test suite with CUDA present (CUDA-only tests included)
#   speed   MD throughput of EGNN (small, paper) vs the ASE loop vs MACE, DT step cost vs S up to 11, data costs
#   nccl    torchrun with the NCCL backend (1 process per GPU), then a GPU simulate of the model it wrote
# Usage: benchmarks/gpu_suite.sh OUT     (longmd importable, mace-torch installed for the MACE rows)
set -u
OUT=${1:?usage: benchmarks/gpu_suite.sh OUT}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name: rc=$? in $((SECONDS - start)) s"
    grep -v -i "warn\|visitor(node)\|torch.load(f=" "$OUT/$name.log" | tail -n 4
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
stage tests 200 python -m pytest -q -x -p no:cacheprovider
stage speed 330 python benchmarks/speed.py --out "$OUT" --device cuda --steps 50 --s-max 11 --reps 2 \
    --mace-channels 32,128
stage nccl 150 bash -c "torchrun --standalone --nproc_per_node 1 -m longmd train demo --device cuda \
    --out $OUT/nccl_run --set training.s_max=2 --set training.max_epochs_per_s=2 --set training.threads=4 \
    && python -m longmd simulate $OUT/nccl_run/best.pt example:h2_pd6_graphene --device cuda --replicas 32 \
    --steps 400 --ensemble nve --no-progress --out $OUT/nccl_sim"
