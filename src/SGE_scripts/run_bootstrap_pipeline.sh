#!/usr/bin/env bash
# dcoex pipeline driver for SGE: plans memory per stage with memfit and submits
# 00 -> 01 -> 02a -> 02b -> 03 -> 03b. Flags are identical for SLURM and SGE: see --help.
# The implementation is shared (python -m dcoex.pipeline); only the scheduler name differs.
# Python: $DCOEX_PYTHON, else the project's .venv, else python3 on PATH.
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
py=${DCOEX_PYTHON:-}
[[ -z $py && -x $here/../../.venv/bin/python ]] && py=$here/../../.venv/bin/python
[[ -z $py ]] && py=$(command -v python3)
[[ -z $py ]] && { echo "run_bootstrap_pipeline: error: no python found (set DCOEX_PYTHON)" >&2; exit 2; }
exec "$py" -m dcoex.pipeline --scheduler sge "$@"
