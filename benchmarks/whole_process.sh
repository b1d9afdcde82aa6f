#!/usr/bin/env bash
# Whole-process times of sweep-A as a user types it: the NumPy script (prompts / Bartlett sampler) against
# `ttscale sweep` with a warm compile cache and with --no-cache, at m = 40 and m = 200; the fixed cost
# (64 prompts per cell, warm cache) and `ttscale --help`. Medians of 5 (--no-cache: of 3), /usr/bin/time.
#     bash benchmarks/whole_process.sh            (run from the repository root, in the installed environment)
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median() { python -c "import sys, statistics; v = [float(x) for x in sys.argv[1:]]; print(f'{statistics.median(v):.2f} s  (runs: {v})')" "$@"; }
timed() {  # timed N command...: median wall time of N runs, each on a fresh --out
  local n=$1; shift; local ts=()
  for _ in $(seq "$n"); do
    rm -rf "$out"/r.nc "$out"/r.nc.partial "$out"/r.npz
    /usr/bin/time -f %e -o "$out/t" "$@" > /dev/null || { echo "FAILED: $*" >&2; return 1; }
    ts+=("$(cat "$out/t")")
  done
  median "${ts[@]}"
}
sweep=(sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --k-max 32 --no-progress)
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for m in 40 200; do
  echo "m = $m  NumPy script, prompts:  $(timed 5 python benchmarks/numpy_sweep_a.py --m $m --out "$out/r.npz")"
  echo "m = $m  NumPy script, Bartlett: $(timed 5 python benchmarks/numpy_sweep_a.py --m $m --sampler wishart --out "$out/r.npz")"
  ttscale "${sweep[@]}" --m $m --prompts 4096 --out "$out/warm$m.nc" > /dev/null  # fills the cache
  echo "m = $m  ttscale, warm cache:    $(timed 5 ttscale "${sweep[@]}" --m $m --prompts 4096 --out "$out/r.nc")"
  echo "m = $m  ttscale --no-cache:     $(timed 3 ttscale --no-cache "${sweep[@]}" --m $m --prompts 4096 --out "$out/r.nc")"
done
ttscale "${sweep[@]}" --m 40 --prompts 64 --out "$out/warm64.nc" > /dev/null
echo "fixed cost (64 prompts/cell, warm): $(timed 5 ttscale "${sweep[@]}" --m 40 --prompts 64 --out "$out/r.nc")"
echo "ttscale --help:                     $(timed 5 ttscale --help)"
echo "ttscale sweep --help:               $(timed 3 ttscale sweep --help)"
