#!/usr/bin/env bash
# Stop the single-node SLURM started by slurm_up.sh: cancel jobs, then stop each daemon by its PID file
# (only if /proc/PID/exe is the expected binary). Prints "SLURM STOPPED".
set -u
alive() { [[ -n $1 && -r /proc/$1/stat ]] && [[ $(awk '{print $3}' /proc/$1/stat) != Z ]]; }
stop() { # stop PIDFILE EXE
  local f=$1 p i; [[ -f $f ]] || return 0
  p=$(tr -dc 0-9 < "$f"); alive "$p" && [[ $(readlink /proc/$p/exe) == "$(readlink -f "$2")" ]] || return 0
  kill -TERM "$p" 2>/dev/null
  for i in $(seq 1 80); do alive "$p" || return 0; sleep 0.25; done
  kill -KILL "$p" 2>/dev/null
}
command -v squeue >/dev/null && scontrol ping >/dev/null 2>&1 && squeue -h -o %A 2>/dev/null | sort -u | xargs -r scancel 2>/dev/null
stop /run/slurm/slurmd.pid /usr/sbin/slurmd
stop /run/slurm/slurmctld.pid /usr/sbin/slurmctld
stop /run/slurm/slurmdbd.pid /usr/sbin/slurmdbd
stop /run/mysqld/mysqld.pid /usr/sbin/mariadbd
stop /run/munge/munged.pid /usr/sbin/munged
echo "SLURM STOPPED"
