#!/bin/bash
# The CPU-size GPT-2 runs behind results/gpt2/README.md, one after the other (resumable: rerun skips
# finished training). OUT defaults to runs/gpt2_explore; per-run logs and wall times land there.
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/gpt2_explore}
mkdir -p "$OUT"
run() { name=$1; shift; start=$(date +%s); nice ttscale gpt2 --size cpu --out "$OUT/$name" --no-progress "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? wall=$(( $(date +%s) - start ))s args=$*" >> "$OUT/times.txt"; }
# claim 1 (k compensates n) and the baseline overthinking setting, per format and protocol
run garg --ns 20,40                                   # garg format, self-rollout K_train = 8, stop-gradient
run pair --format pair --ns 20,40                     # pair format, same training
run pair_single --format pair --protocol single_step --ns 20,40   # training only at k = 1
# overthinking candidates (tilted train, Σ = I), pair format (the one a 2-layer width-32 model learns at this budget)
run pair_steep --format pair --scenarios tilted --ns 20 --alpha 2     # λ_i ∝ 1/i²: the m = ∞ theory diverges too
run pair_dn --format pair --scenarios tilted --d 5 --ns 8             # d close to n, m = n = 8
run pair_noise --format pair --scenarios tilted --ns 20 --noise 0.5   # label noise σ = 0.5
run pair_k16 --format pair --scenarios tilted --ns 20 --k-train 16 --k-max 24   # longer K_train
run pair_through --format pair --scenarios tilted --ns 20 --gradient-through    # gradients through the estimates
