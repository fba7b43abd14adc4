#!/usr/bin/env bash
# Submit one label-transfer run (scVI + XGBoost) to SGE.
# Same flags as `label_transfer.py run`, plus --gpu, --time, --queue, --gpu-resource, --pe, --cpus,
# --mem, --mem-safety, --calibration, --dry-run. Memory = diagnose's estimate / memfit safety;
# the submission is recorded in OUT_DIR/run_manifest.json. See docs/label_transfer.md.
# The python used (and given to the job) is $DCOEX_PYTHON, else the first python3 on PATH.
set -euo pipefail
PY="${DCOEX_PYTHON:-$(command -v python3)}"
exec "$PY" -m labeltransfer.submit --scheduler sge --python "$PY" "$@"
