#!/usr/bin/env bash
# The prepared GPU check: what a machine with a GPU runs, offline, in a few minutes.
#
#   benchmarks/gpu.sh [OUT_DIR]        # default OUT_DIR gpu-report
#
# From a checkout, without installing (PYTHONPATH): it needs only torch, numpy, scipy and typer
# (not SimpleITK, platformdirs or threadpoolctl), and no network. Writes into OUT_DIR:
#   info.txt            devices, torch, attention backends
#   golden.txt          both models against the official outputs, on the GPU
#   bench-precision.json  encoder/decoder/click times with the encoder in float32, float16 and
#                       bfloat16, next to the reference path and to float32, with agreement
#                       figures against float32 (golden scenarios included)
#   bench-compile.json  the same with torch.compile
#   bench-flash.json    with flash-attn, when it is installed
#   training.json       time and peak memory per fine-tuning (clicks, text) and distillation step
#   training-gpu.json   a tiny validated fine-tune under bfloat16 autocast (finite losses, Dice
#                       before and after, s/step, peak memory) and two NCCL processes against
#                       one (skipped with fewer than two GPUs)
#   gpu-tests.txt       the tests marked gpu (Testing/test_gpu.py) on DEVICE
# Settings (environment): DEVICE (cuda), PRECISIONS ("float32 float16 bfloat16"), COMPILE (1),
# QUICK (0: full runs; 1: CI-sized), GPU_TESTS (1), FASTSAM3D_SHARED_DIR (../shared: golden
# references and scans), GOLDEN ($FASTSAM3D_SHARED_DIR/golden).
# A part that fails is named at the end and makes the exit status 1; the other parts still run
# (device time is scarce: one failure must not cost the rest).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-report}
device=${DEVICE:-cuda}
golden=${GOLDEN:-${FASTSAM3D_SHARED_DIR:-../shared}/golden}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

run() {
    echo "+ fastsam3d $*" >&2
    python -m fastsam3d_core "$@"
}

failed=()
part() {  # part NAME COMMAND...: run it, and remember NAME if it fails
    local name=$1
    shift
    "$@" || { failed+=("$name"); echo "FAILED: $name" >&2; }
}

quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
precisions=()
for precision in ${PRECISIONS:-float32 float16 bfloat16}; do
    precisions+=(--precision "$precision")
done
agreement=()

part info eval 'run info | tee "$out/info.txt"'
if [ -d "$golden" ]; then
    part golden eval 'run check-golden "$golden" --device "$device" | tee "$out/golden.txt"'
    agreement=(--golden "$golden")
else
    echo "no golden references at $golden: skipped (set GOLDEN)" | tee "$out/golden.txt"
fi
part bench-precision run bench "${quick[@]}" --device "$device" "${precisions[@]}" \
    "${agreement[@]}" --json "$out/bench-precision.json"
if [ "${COMPILE:-1}" = 1 ]; then
    part bench-compile run bench "${quick[@]}" --device "$device" --compile \
        --json "$out/bench-compile.json"
fi
if python -c "import flash_attn" 2>/dev/null; then
    part bench-flash run bench "${quick[@]}" --device "$device" --backend flash \
        --json "$out/bench-flash.json"
fi
part training python benchmarks/bench_training.py --device "$device" \
    --steps "${TRAINING_STEPS:-4}" --json "$out/training.json"
part training-gpu python benchmarks/gpu_training.py --device "$device" \
    --json "$out/training-gpu.json"
if [ "${GPU_TESTS:-1}" = 1 ]; then
    part gpu-tests eval 'FASTSAM3D_GPU_TEST_DEVICE="$device" python -m pytest -q -m gpu \
        -p no:cacheprovider Testing/test_gpu.py 2>&1 | tee "$out/gpu-tests.txt"'
fi
echo "wrote $out/"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
