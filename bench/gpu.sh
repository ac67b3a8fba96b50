#!/usr/bin/env bash
# Check and measure everything GPU-specific on one CUDA machine, in under 8 minutes
# (the steps' time limits, kill grace included, add up to 470 s).
#
# Usage: bench/gpu.sh [OUTPUT_FOLDER]     (default: bench-gpu)
#
# Needs the project installed with a CUDA build of torch (pip install torch,
# then pip install -e ".[dev,bench]"), and no network: the models are random
# weights from configs and the tiny test model is built locally. Steps, each
# under its own time limit so one slow step cannot eat the others' time:
#   1. the device, torch build and bf16 support;
#   2. the CUDA tests (cached step against plain backprop, autocast, training,
#      shared cross-attention), tests/test_cuda.py;
#   3. generation, BART-large size, bf16, 16K and 64K tokens, beams 1 and 4,
#      model.generate against shared cross-attention;
#   4. training memory, BART-large size, bf16: the longest input the cached
#      step trains (goal: 1M tokens on a 141 GB H200).
# Everything printed also goes to OUTPUT_FOLDER/gpu.log and the generation
# results to OUTPUT_FOLDER/generate.json; the training benchmark writes its own
# section of docs/benchmarks.md. Copy the generation table there by hand.
set -uo pipefail

cd "$(dirname "$0")/.."
OUTPUT="${1:-bench-gpu}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUTPUT"
LOG="$OUTPUT/gpu.log"
: > "$LOG"
START=$(date +%s)
STATUS=0

# Run one step under a time limit, logging its output and exit status.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "==> $name (limit ${limit} s)" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local code=${PIPESTATUS[0]}
    if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
        echo "==> $name timed out after ${limit} s" | tee -a "$LOG"
        STATUS=1
    elif [ "$code" -ne 0 ]; then
        echo "==> $name failed with exit status $code" | tee -a "$LOG"
        STATUS=1
    fi
    echo "==> $name done at $(( $(date +%s) - START )) s" | tee -a "$LOG"
}

step "device" 30 "$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda)
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to torch: this script needs a GPU")
properties = torch.cuda.get_device_properties(0)
print("GPU", properties.name, f"{properties.total_memory / 1024**3:.0f} GiB", "bf16", torch.cuda.is_bf16_supported())
EOF
if [ "$STATUS" -ne 0 ]; then
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"

step "CUDA tests" 80 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py

step "generation" 140 "$PYTHON" bench/generate.py --device cuda --dtype bfloat16 --models large \
    --sizes 16384,65536 --beams 1,4 --tokens 64 --timeout 60 --no-sweep --no-write --output "$OUTPUT/generate.json"

# Writes its own section (train_memory_cuda_bfloat16_large) and results into docs/.
step "training memory" 180 "$PYTHON" bench/train_memory.py --device cuda --dtype bfloat16 --config large \
    --longest --longest-from 65536 --time-limit 160

echo "==> finished in $(( $(date +%s) - START )) s, status $STATUS" | tee -a "$LOG"
exit "$STATUS"
