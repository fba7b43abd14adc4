#!/usr/bin/env bash
# Set everything up (Python packages, Debian packages, a real single-node SLURM and SGE
# on loopback), lint (ruff) and run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh || exit 1
VENV=${DCOEX_VENV:-$PWD/.venv}

clusters=0
if [[ -f tests/cluster/clusters_up.sh ]]; then
    if bash tests/cluster/clusters_up.sh; then
        clusters=1
    else
        echo "test: the test clusters did not start (see above)" >&2
        [[ ${CI:-} == true ]] && exit 1
    fi
fi

# Lint first (configuration: [tool.ruff] in pyproject.toml); the tests still run, but any
# finding makes the whole run fail.
lint=0
"$VENV/bin/ruff" check lib src tests bench || lint=$?
# Parallel workers (pytest-xdist; tests/conftest.py keeps each module, and all the cluster
# modules together, on one worker): the cluster tests mostly wait on the schedulers, so the
# other worker runs the rest meanwhile. DCOEX_TEST_WORKERS=0 runs everything in one process.
workers=${DCOEX_TEST_WORKERS:-2}
parallel=()
((workers > 0)) && parallel=(-n "$workers")
"$VENV/bin/python" -m pytest -ra "${parallel[@]}" "$@"
rc=$?
((rc == 0 && lint != 0)) && { echo "test: ruff check found problems (see above)" >&2; rc=1; }
if ((clusters)) && [[ -f tests/cluster/clusters_down.sh && -z ${DCOEX_KEEP_CLUSTERS:-} ]]; then
    bash tests/cluster/clusters_down.sh >/dev/null 2>&1 || true
fi
exit $rc
