#!/usr/bin/env bash
# The whole GPU benchmark job in one call, for a lent H100/H200 (or --cpu/--quick: a tiny CPU smoke test).
#
#   bash benchmarks/gpu.sh            # on the accelerator machine, from the repository root
#   bash benchmarks/gpu.sh --cpu      # same Python, tiny sizes, JAX on the CPU (checks the script)
#
# 1. If .whl/ holds wheels (jax, jaxlib, the CUDA plugin, ttscale's dependencies: xarray, netCDF4, cftime, ...), install them
#    offline: pip install --no-index --no-deps --target /tmp/site .whl/*.whl, and put /tmp/site
#    and the repository on PYTHONPATH.
# 2. sweep-A scaled to 10⁶ prompts per cell (both sampling schemes): steady-state time, compile,
#    achieved FLOP/s and bytes/s against a roofline measured on the same device
#    (benchmarks/gpu_sweep.py).
# 3. benchmarks/gpu_gpt2.py if present (owned by the GPT-2 work).
# Output goes to stdout and to $OUT (default /tmp/ttscale-gpu): gpu_sweep.json, gpu.log.
set -euo pipefail

CPU=0
for arg in "$@"; do
  case "$arg" in
    --cpu|--quick) CPU=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/ttscale-gpu}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c "import jax" 2>/dev/null; then
  PY="$ROOT/.venv/bin/python"
else
  PY="$(command -v python3 || command -v python)"
fi

if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
  echo "# installing wheels from .whl/ into /tmp/site (offline, no deps)" | tee -a "$LOG"
  "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/site "$ROOT"/.whl/*.whl 2>&1 | tee -a "$LOG"
  export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "$CPU" = 1 ]; then
  export JAX_PLATFORMS=cpu
  SWEEP_ARGS=(--cpu)
else
  SWEEP_ARGS=(--prompts 1000000)
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$LOG"
fi

echo "# python: $PY; $("$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())')" | tee -a "$LOG"
"$PY" "$ROOT/benchmarks/gpu_sweep.py" "${SWEEP_ARGS[@]}" --json "$OUT/gpu_sweep.json" 2>&1 | tee -a "$LOG"

if [ -f "$ROOT/benchmarks/gpu_gpt2.py" ]; then
  if [ "$CPU" = 1 ]; then GPT_ARGS=(--size tiny); else GPT_ARGS=(--size full); fi
  GPT_ARGS+=(--out "$OUT/gpt2" --no-progress)
  "$PY" "$ROOT/benchmarks/gpu_gpt2.py" "${GPT_ARGS[@]}" 2>&1 | tee -a "$LOG" || echo "# gpu_gpt2.py failed (see above)" | tee -a "$LOG"
else
  echo "# benchmarks/gpu_gpt2.py not present: GPT-2 part skipped" | tee -a "$LOG"
fi
echo "# done; log and JSON in $OUT" | tee -a "$LOG"
