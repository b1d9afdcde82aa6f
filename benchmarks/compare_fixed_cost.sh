#!/usr/bin/env bash
# The CLI's fixed cost (sweep-A at 64 prompts per cell, warm caches) of another commit against the working tree,
# the two alternating run by run so that this noisy machine's drift falls on both alike.
#     bash benchmarks/compare_fixed_cost.sh REV [RUNS]      (from the repository root, in the installed environment)
# REV is checked out into a temporary worktree; each side runs `python -m ttscale.cli` from its own tree
# (PYTHONPATH, with the working directory outside both trees: `python -m` puts it first on the path) with its own
# TTSCALE_CACHE_DIR (the caches are per source, so sharing one would evict the other's), after one run that fills
# it. Prints which tree each side imports, then the median and every run of each side (/usr/bin/time, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: compare_fixed_cost.sh REV [RUNS]}; runs=${2:-12}
tmp=$(mktemp -d); here=$PWD
git worktree add -q --detach "$tmp/tree" "$rev"
trap 'git -C "$here" worktree remove --force "$tmp/tree"; rm -rf "$tmp"' EXIT
args=(sweep --d 20 --alpha 0:2:16 --n 5,10,20,40,80 --m 40 --k-max 32 --prompts 64 --no-progress --out "$tmp/r.nc")
one() {  # one SIDE ROOT [time]
  cd "$tmp"
  rm -f "$tmp/r.nc"
  if [ "${3:-}" = time ]; then
    TTSCALE_CACHE_DIR="$tmp/cache-$1" PYTHONPATH="$2" /usr/bin/time -f "$1 %e" -a -o "$tmp/times" \
      python -m ttscale.cli "${args[@]}" > /dev/null
  else
    TTSCALE_CACHE_DIR="$tmp/cache-$1" PYTHONPATH="$2" python -m ttscale.cli "${args[@]}" > /dev/null
  fi
}
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $rev vs the working tree, $runs runs each"
for side in "rev $tmp/tree" "tree $here"; do
  set -- $side
  echo "# $1 imports $(cd "$tmp" && PYTHONPATH="$2" python -c 'import ttscale; print(ttscale.__file__)')"
  one "$1" "$2"  # fills its cache
done
for _ in $(seq "$runs"); do one rev "$tmp/tree" time; one tree "$here" time; done
python - "$tmp/times" "$rev" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for side, label in (("rev", sys.argv[2]), ("tree", "working tree")):
    v = sorted(float(t) for s, t in rows if s == side)
    print(f"{label:14s} median {statistics.median(v):.2f} s  (runs: {v})")
PY
