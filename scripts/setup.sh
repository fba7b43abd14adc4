#!/usr/bin/env bash
# Install everything dcoex needs into ./.venv (idempotent). Debian 12, Python 3.11.
#   bash scripts/setup.sh          everything: the pipeline, the test tools and the label
#                                  transfer extra (PyTorch, scvi-tools, XGBoost)
#   bash scripts/setup.sh --core   only what the co-expression pipeline needs (no PyTorch,
#                                  scvi-tools or XGBoost): what scripts/demo.sh uses
# Debian packages: python3-venv (if venv is missing) and hdf5-tools (h5diff); the test
# clusters' packages (slurm-wlm, munge, mariadb, gridengine-*) are installed by
# tests/cluster/clusters_up.sh. PyTorch is installed as exactly torch==2.13.0 BEFORE
# scvi-tools, which keeps it the local CPU build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${DCOEX_VENV:-$PWD/.venv}
PYTHON=${PYTHON:-python3}
core=0
case ${1:-} in
    --core) core=1 ;;
    "") ;;
    *) echo "setup: unknown argument '$1' (usage: setup.sh [--core])" >&2; exit 2 ;;
esac

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "setup: please install the Debian packages: ${missing[*]}" >&2
        return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

if command -v dpkg >/dev/null 2>&1; then
    command -v h5diff >/dev/null 2>&1 || apt_install hdf5-tools
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
fi

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ((core)); then
    "$VENV/bin/pip" install -q -e .
    echo "setup: dcoex (co-expression pipeline only) installed in $VENV"
    exit 0
fi
"$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -e '.[test,labels]'
echo "setup: dcoex installed in $VENV"
