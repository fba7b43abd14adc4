#!/usr/bin/env bash
# Start the real single-node SLURM and SGE test clusters (both at once: their ports do not clash).
# Used by scripts/test.sh before pytest. Prints one status line per cluster and writes it to
# ${DCOEX_CLUSTER_STATUS_DIR:-/tmp/dcoex-clusters}/<name>.status, which tests/cluster_util.py shows
# as the reason when it skips. Exit status: 0 when both run, or when they cannot be started here
# (not root; no apt-get) outside CI; non-zero when a start failed, or could not be tried under CI=true.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status_dir=${DCOEX_CLUSTER_STATUS_DIR:-/tmp/dcoex-clusters}
mkdir -p "$status_dir"
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  why="cannot start test clusters: $( [[ $(id -u) != 0 ]] && echo "not root" || echo "no apt-get" )"
  for c in slurm sge; do echo "$why" > "$status_dir/$c.status"; done
  echo "clusters: $why; cluster tests will be skipped"
  [[ ${CI:-} == true ]] && exit 1
  exit 0
fi
t0=$(date +%s)
# Both clusters start at once (their ports do not clash); but when packages must be installed,
# SLURM's up script runs first so the two apt-get runs do not contend for the dpkg/apt locks.
missing=0
for p in slurmctld slurmd slurmdbd munge mariadb-server slurm-client gridengine-master gridengine-exec gridengine-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing=1
done
bash "$here/slurm_up.sh" >"$status_dir/slurm.log" 2>&1 & ps=$!
((missing)) && { echo "clusters: installing packages (first start)"; wait $ps; rs=$?; ps=; }
bash "$here/sge_up.sh" >"$status_dir/sge.log" 2>&1 & pg=$!
rc=0
for c in slurm sge; do
  if [[ $c == slurm ]]; then if [[ -n $ps ]]; then wait $ps; r=$?; else r=$rs; fi; else wait $pg; r=$?; fi
  if ((r == 0)); then
    tail -1 "$status_dir/$c.log" > "$status_dir/$c.status"
    echo "clusters: $(cat "$status_dir/$c.status")"
  else
    echo "$c failed to start: $(grep -i error "$status_dir/$c.log" | tail -1)" > "$status_dir/$c.status"
    echo "clusters: $(cat "$status_dir/$c.status") (full log: $status_dir/$c.log)"
    rc=1
  fi
done
echo "clusters: started in $(( $(date +%s) - t0 )) s"
exit $rc
