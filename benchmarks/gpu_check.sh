#!/usr/bin/env bash
# One call on a GPU machine: the default job on CUDA (bf16, transformers backend) and the benchmark.
#   bash benchmarks/gpu_check.sh WORK_DIR [LOG_DIR]   (python3 with CUDA torch and selfreward installed; from the repo root)
# Logs (run.log, bench.log) are copied to LOG_DIR when given.
# The job runs from OUT_DIR so that the installed package, not the source tree, is imported.
set -u
out=$(realpath "${1:-gpu_check}")
repo=$(pwd)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, outlines, selfreward; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'outlines', outlines.__version__, torch.cuda.get_device_name())"
start=$(date +%s)
(cd "$out" && timeout "${JOB_TIMEOUT:-240}" python3 -m selfreward tracking=disabled hydra.run.dir="$out/run" > "$out/run.log" 2>&1)
echo "main job: rc=$? in $(( $(date +%s) - start )) s"
grep -E "^ +[0-9]+ +[0-9.]+|^iter|Error|error" "$out/run.log" | tail -8
python3 - "$out/run" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("iter_*/metrics.json")):
    m = json.loads(f.read_text())
    print(f.parent.name, {k[5:]: round(v, 1) for k, v in m.items() if k.startswith("time/")})
PY
start=$(date +%s)
timeout "${BENCH_TIMEOUT:-300}" python3 "$repo/benchmarks/bench.py" --quick 2>&1 | tr '\r' '\n' | grep -v "it/s\|s/it" > "$out/bench.log"
echo "bench: rc=${PIPESTATUS[0]} in $(( $(date +%s) - start )) s"
grep -v "^ *$\|Warning\|warn" "$out/bench.log" | tail -14
[ -n "${2:-}" ] && mkdir -p "$2" && cp "$out"/*.log "$out"/run/summary.json "$2"/ 2>/dev/null
exit 0
