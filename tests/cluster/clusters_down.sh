#!/usr/bin/env bash
# Stop both test clusters started by clusters_up.sh (by PID, see slurm_down.sh and sge_down.sh).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status_dir=${DCOEX_CLUSTER_STATUS_DIR:-/tmp/dcoex-clusters}
[[ $(id -u) == 0 ]] || { echo "clusters: not root, nothing to stop"; exit 0; }
bash "$here/slurm_down.sh" & p=$!
bash "$here/sge_down.sh"; r=$?
wait $p; r=$(( r | $? ))
rm -f "$status_dir"/*.status
exit $r
