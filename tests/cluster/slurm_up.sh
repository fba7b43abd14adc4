#!/usr/bin/env bash
# Start a real single-node SLURM (munge, MariaDB, slurmdbd, slurmctld, slurmd) on this machine, as root,
# without systemd, bound to loopback. Idempotent: installs missing packages (apt-get), (re)writes the
# configuration, starts only daemons that are not running, waits for a probe job; prints "SLURM READY".
# Stop with slurm_down.sh (by PID files). Tunables: SLURM_MAX_ARRAY (MaxArraySize, default 10001).
set -euo pipefail
log() { echo "[slurm-up] $*" >&2; }
die() { echo "[slurm-up] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
export DEBIAN_FRONTEND=noninteractive
need=""
for p in slurmctld slurmd slurmdbd munge mariadb-server slurm-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || need="$need $p"
done
if [[ -n $need ]]; then
  log "installing$need"
  made_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1; fi
  apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 $need >/tmp/slurm-apt-install.log 2>&1 \
    || { [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/slurm-apt-install.log >&2; die "apt-get install failed"; }
  [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
fi
# alive PIDFILE EXE: the PID in the file runs (not a zombie) the expected executable
alive() { local p; [[ -f $1 ]] && p=$(tr -dc 0-9 < "$1") && [[ -n $p && -r /proc/$p/stat ]] \
  && [[ $(awk '{print $3}' /proc/$p/stat) != Z ]] && [[ $(readlink /proc/$p/exe) == "$(readlink -f "$2")" ]]; }
H=$(hostname -s)
getent hosts "$H" >/dev/null || echo "127.0.0.1 $H" >> /etc/hosts
# munge
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
alive /run/munge/munged.pid /usr/sbin/munged || (cd / && runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1)
# MariaDB for slurmdbd, loopback only. mariadbd does not daemonize: own session, no inherited fds.
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mysqladmin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; then
  (cd / && exec setsid -f /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
     --pid-file=/run/mysqld/mysqld.pid --bind-address=127.0.0.1 </dev/null >/var/log/mariadb-slurm.log 2>&1)
  for i in $(seq 1 60); do mysqladmin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
mysql --socket=/run/mysqld/mysqld.sock -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" \
  || die "MariaDB does not answer (see /var/log/mariadb-slurm.log)"
# configuration: memory is a scheduled resource (CR_Core_Memory) enforced by sampling (OverMemoryKill)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
CPUS=$(nproc)
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmdbpass
CONF
chmod 600 /etc/slurm/slurmdbd.conf
cat > /etc/slurm/slurm.conf.new <<CONF
ClusterName=local
SlurmctldHost=$H
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MaxArraySize=${SLURM_MAX_ARRAY:-10001}
MinJobAge=60
ReturnToService=2
MpiDefault=none
NodeName=$H CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf || { mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf; changed=1; }
rm -f /etc/slurm/slurm.conf.new
alive /run/slurm/slurmdbd.pid /usr/sbin/slurmdbd || (cd / && exec setsid -f /usr/sbin/slurmdbd </dev/null >/dev/null 2>&1)
for i in $(seq 1 40); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
if alive /run/slurm/slurmctld.pid /usr/sbin/slurmctld; then
  ((changed)) && { log "configuration changed: scontrol reconfigure"; scontrol reconfigure || true; }
else
  (cd / && exec setsid -f /usr/sbin/slurmctld </dev/null >/dev/null 2>&1)
fi
for i in $(seq 1 40); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer (see /var/log/slurm/slurmctld.log)"
alive /run/slurm/slurmd.pid /usr/sbin/slurmd || (cd / && exec setsid -f /usr/sbin/slurmd </dev/null >/dev/null 2>&1)
sacctmgr -n list account format=account | grep -qw default || sacctmgr -i add account default cluster=local >/dev/null
sacctmgr -n list user format=user | grep -qw root || sacctmgr -i add user root account=default >/dev/null
for i in $(seq 1 60); do sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break; sleep 0.5; done
scontrol update nodename="$H" state=resume >/dev/null 2>&1 || true
sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)' || die "node $H is not up: $(sinfo -h -o '%T %E')"
# probe job; when others' jobs already occupy the node, a responding controller and an up node are enough
if [[ -z $(squeue -h -o %i 2>/dev/null) ]]; then
  timeout "${SLURM_READY_TIMEOUT:-60}" srun --mem=50M -t 1 -J slurm_ready_probe true || die "probe job did not run (see /var/log/slurm/)"
fi
echo "SLURM READY (node $H, $CPUS CPUs, RealMemory ${MEM}M, MaxArraySize ${SLURM_MAX_ARRAY:-10001})"
