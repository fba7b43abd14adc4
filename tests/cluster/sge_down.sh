#!/usr/bin/env bash
# sge_down.sh - stop the single-node Grid Engine started by sge_up.sh, by PID only.
#   1. deletes every job still queued/running (so nothing is re-run at the next start),
#   2. stops sge_execd (SIGTERM, SIGKILL after 20 s), then any shepherd/job left behind,
#      using the PIDs recorded in the execd spool (active_jobs/*/pid, job_pid),
#   3. stops sge_qmaster (SIGTERM = controlled shutdown, SIGKILL after 30 s).
# PIDs come from /run/gridengine/{qmaster,execd}.pid (written by the daemons when started by
# sge_up.sh) or SGE's own pidfiles in the spool; a PID is only signalled if
# /proc/PID/exe is the matching Grid Engine binary. Safe to run when nothing is running.
set -uo pipefail

export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
RUN=/run/gridengine
SPOOL=/var/spool/gridengine
LIBEXEC=/usr/lib/gridengine
log() { echo "[sge-down] $*" >&2; }

# shellcheck source=sge_pids.sh
source "$(dirname "${BASH_SOURCE[0]}")/sge_pids.sh"
stop_pid() { # stop_pid PID NAME GRACE_SECONDS
  local p=$1 n=$2 g=$3 i
  kill -TERM "$p" 2>/dev/null || return 0
  for i in $(seq 1 $(( g * 10 ))); do alive "$p" || { log "$n (pid $p) stopped"; return 0; }; sleep 0.1; done
  log "$n (pid $p) still alive after ${g}s: SIGKILL"; kill -KILL "$p" 2>/dev/null
  for i in $(seq 1 50); do alive "$p" || return 0; sleep 0.1; done
}

qm=$(pid_of qmaster || true)
ex=$(pid_of execd || true)

# 1. delete all jobs while both daemons are still up
if [ -n "$qm" ] && qstat >/dev/null 2>&1; then
  if [ -n "$(qstat -u '*' 2>/dev/null)" ]; then
    log "deleting remaining jobs"
    qdel -u '*' >/dev/null 2>&1 || true
    for i in $(seq 1 50); do [ -z "$(qstat -u '*' 2>/dev/null)" ] && break; sleep 0.2; done
    [ -z "$(qstat -u '*' 2>/dev/null)" ] || qdel -f -u '*' >/dev/null 2>&1 || true
  fi
fi

# 2. execd, then whatever it left behind (shepherds and their job process groups)
[ -n "$ex" ] && stop_pid "$ex" sge_execd 20
for d in "$SPOOL"/execd/*/active_jobs/*/; do
  [ -d "$d" ] || continue
  sp=$(tr -dc 0-9 < "$d/pid" 2>/dev/null || true)
  jp=$(tr -dc 0-9 < "$d/job_pid" 2>/dev/null || true)
  if [ -n "$jp" ] && alive "$jp"; then log "killing job process group $jp"; kill -KILL -- "-$jp" 2>/dev/null || kill -KILL "$jp" 2>/dev/null; fi
  if [ -n "$sp" ] && running "$sp" sge_shepherd; then stop_pid "$sp" sge_shepherd 5; fi
done

# 3. qmaster (controlled shutdown takes ~5-10 s)
[ -n "$qm" ] && stop_pid "$qm" sge_qmaster 30

rm -f "$RUN/qmaster.pid" "$RUN/execd.pid"
if pid_of qmaster >/dev/null || pid_of execd >/dev/null; then log "ERROR: a daemon is still running"; exit 1; fi
echo "SGE STOPPED"
