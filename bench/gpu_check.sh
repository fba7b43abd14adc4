#!/usr/bin/env bash
# The GPU check of dcoex.backend, for a machine with a CUDA GPU (docs/gpu.md):
#   1. the backend, device-parameter and memfit device tests, the gpu-marked ones included
#      (exact equality of the torch CUDA products with numpy; TF32 off; the device limit);
#      and tests/test_device_stages.py (stages 02a, 02b and 07 identical on the torch backend);
#   2. bench/gpu_backend.py: 02a tile sweeps (12,625 x 25 and 8,763 x 94) and 02b's B = 1000
#      weighted replicates, numpy vs torch, with equality of every result;
#   3. bench/gpu_stages.py: stages 02a, 02b and 07 on realistic data (4,000 genes x 128
#      samples, alpha 0.7, B = 200, 2 permutations) with --device cpu and on the GPU in the same
#      process: wall and CPU seconds, GPU peak, and equality of every output.
# Results go to $OUT (the device machine's return folder) when set, else bench/results/.
#
#   bash bench/gpu_check.sh [--allow-cpu] [gpu_backend.py arguments, e.g. --replicates 100]
# GPU_STAGES_ARGS (e.g. "--n-genes 800 --n-boot 50") sizes step 3.
#
# Without a GPU it stops (exit 2) unless --allow-cpu: then the same steps run on torch's CPU
# build (the gpu tests are skipped), which checks the script itself.
# Python: $DCOEX_PYTHON, else the repository's .venv, else python3; it needs torch, numpy,
# scipy, pytest, click, h5py and psutil (the machine may have no network: nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
allow_cpu=0
if [[ "${1:-}" == "--allow-cpu" ]]; then allow_cpu=1; shift; fi
if [[ -n "${DCOEX_PYTHON:-}" ]]; then py=$DCOEX_PYTHON
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3; fi
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"

if ! "$py" -c "import torch, numpy, scipy, pytest, click, h5py, psutil" 2>/dev/null; then
    echo "gpu_check: $py lacks one of torch, numpy, scipy, pytest, click, h5py, psutil" >&2
    exit 2
fi
cuda=$("$py" -c "import torch; print(int(torch.cuda.is_available()))")
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
if [[ "$cuda" != 1 ]]; then
    if [[ $allow_cpu != 1 ]]; then
        echo "gpu_check: torch sees no CUDA GPU (use --allow-cpu to check the CPU-torch path)" >&2
        exit 2
    fi
    echo "gpu_check: no CUDA GPU: running the CPU-torch path only"
fi

status=0
"$py" -m pytest -p no:cacheprovider -q -rs tests/test_backend.py tests/test_device_param.py \
    tests/test_memfit_device.py tests/test_device_stages.py 2>&1 | tee "$out/gpu_tests.txt" || status=1
"$py" bench/gpu_backend.py --out "$out/gpu_backend.json" "$@" || status=1
stage_args=(${GPU_STAGES_ARGS:-})
[[ $allow_cpu == 1 ]] && stage_args+=(--allow-cpu)
"$py" bench/gpu_stages.py --out "$out/gpu_stages.json" --work-dir "${TMPDIR:-/tmp}/dcoex_gpu_stages" \
    "${stage_args[@]}" 2>&1 | tee "$out/gpu_stages.txt" || status=1
echo "gpu_check: tests and bench written to $out (status $status)"
exit $status
