#!/usr/bin/env bash
# The GPU check of "Performance and memory" (README), as one short script: the CUDA tests, then
# `lmscope bench` on random-init models of real shapes (no weights needed):
#   Llama-3-8B shape, bfloat16: 200, 1000, 2000 tokens (median of 3), then 4000 (one run);
#   SmolLM2-135M shape, float32: 4000 tokens (one run);
# then the attention kernel's block shapes timed on one chunk of the 8B shape at 1000 and 4000
# tokens (kernel_sweep.py: which BLOCK_J, BLOCK_Q and warps to ship); first, a 200-token trace's
# kernel launches and host waits per stage, beside the CUDA profiler's count (launch-count/count.py:
# the README's launch counts were made on a CPU; this checks them against a GPU's).
# Logs and JSON go to $OUT (the device tool's folder) or ./gpu-check-out.
#
# Run from the repository root on a machine with CUDA, PyTorch, transformers, numba and pyarrow
# (the device image has them). What it lacks travels as wheels in .whl/ (see the device
# README for the pip download line): jsonschema, jsonschema-specifications, referencing,
# rpds-py and gguf at the versions .venv holds (`.venv/bin/pip freeze`).
set -uo pipefail
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/daemon"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_compiled_loops.py tests/test_triton_kernel.py \
    2>&1 | tee "$out/tests.log" | tail -3

python3 tools/launch-count/count.py 200 --device cuda 2>&1 | tee "$out/launch-count.txt" | tail -10

bench() {  # name, then lmscope bench arguments
    local name=$1
    shift
    python3 -m lmscope bench --device cuda --json "$out/$name.json" "$@" 2>&1 \
        | tee "$out/$name.txt" | tail -8
}
bench llama3-8b --shape llama3-8b --dtype bfloat16 --lengths 200,1000,2000 --repeats 3
bench llama3-8b-4000 --shape llama3-8b --dtype bfloat16 --lengths 4000 --repeats 1
bench smollm2-4000 --shape smollm2 --dtype float32 --lengths 4000 --repeats 1
python3 tools/gpu-check/kernel_sweep.py --lengths 1000,4000 --json "$out/kernel-sweep.json" 2>&1 \
    | tee "$out/kernel-sweep.txt" | tail -4
