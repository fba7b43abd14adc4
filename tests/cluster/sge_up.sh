#!/usr/bin/env bash
# sge_up.sh - bring up a single-node Son of Grid Engine 8.1.9 (Debian 12
# "bookworm" packages) on this machine, without systemd. Idempotent:
#   - installs gridengine-master/-exec/-client if missing (debconf preseeded),
#   - (re)applies the configuration below (safe to run again),
#   - starts sge_qmaster and sge_execd if they are not running (PIDs in /run/gridengine),
#   - waits until queue all.q accepts and runs a probe job, then prints "SGE READY".
# Stop with sge_down.sh. Must run as root.
#
# Tunables (environment):
#   SGE_SLOTS           slots of all.q on this host          (default: nproc)
#   SGE_HVMEM_DEFAULT   h_vmem given to jobs that request none (default: MemTotal/slots)
#   SGE_READY_TIMEOUT   seconds to wait for the queue          (default: 120)
set -euo pipefail

export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
export DEBIAN_FRONTEND=noninteractive
RUN=/run/gridengine
SPOOL=/var/spool/gridengine
COMMON=$SGE_ROOT/$SGE_CELL/common
LIBEXEC=/usr/lib/gridengine
H=$(hostname)
SLOTS=${SGE_SLOTS:-$(nproc)}
MEM_K=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
HVMEM_DEFAULT=${SGE_HVMEM_DEFAULT:-$(( MEM_K / SLOTS / 1024 ))M}
READY_TIMEOUT=${SGE_READY_TIMEOUT:-120}
PKGS="gridengine-master gridengine-exec gridengine-client"

log() { echo "[sge-up] $*" >&2; }
die() { echo "[sge-up] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# shellcheck source=sge_pids.sh
source "$(dirname "${BASH_SOURCE[0]}")/sge_pids.sh"

# ---------------------------------------------------------------- 1. hostname
# SGE needs the hostname to resolve. Only if it does not, map it to loopback.
if ! getent hosts "$H" >/dev/null; then
  log "hostname $H does not resolve: adding '127.0.0.1 $H' to /etc/hosts"
  echo "127.0.0.1 $H" >> /etc/hosts
fi

# ---------------------------------------------------------------- 2. install
installed() { dpkg-query -W -f='${Status}\n' $PKGS 2>/dev/null | grep -c '^install ok installed$' | grep -qx 3; }
if ! installed; then
  log "installing $PKGS"
  t0=$(date +%s)
  printf '%s\n' \
    "gridengine-common shared/gridengineconfig boolean true" \
    "gridengine-common shared/gridenginecell string $SGE_CELL" \
    "gridengine-common shared/gridenginemaster string $H" | debconf-set-selections
  # Keep maintainer scripts from starting daemons (this image already has such a policy-rc.d).
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  for i in 1 2 3; do apt-get -q update -o DPkg::Lock::Timeout=300 >/dev/null && break; sleep 5; done
  # bsd-mailx + dma satisfy gridengine-common's "bsd-mailx | mailx" without pulling exim4.
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
    $PKGS bsd-mailx dma >/tmp/sge-apt-install.log 2>&1 \
    || { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; tail -30 /tmp/sge-apt-install.log >&2; die "apt-get install failed"; }
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  log "installed in $(( $(date +%s) - t0 ))s"
fi

# ---------------------------------------------------------------- 3. cluster files
for d in "$SPOOL/qmaster" "$SPOOL/qmaster/job_scripts" "$SPOOL/spooldb" "$SPOOL/execd" "$COMMON"; do
  mkdir -p "$d"; chown sgeadmin:sgeadmin "$d"
done
[ -e "$COMMON/bootstrap" ] || install -m0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
if [ ! -e "$SPOOL/spooldb/sge" ]; then   # postinst skips this when debconf said "don't configure"
  log "initialising cluster spool"
  su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" sgeadmin >&2
fi
echo "$H" > "$COMMON/act_qmaster"; chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
# The hostname may resolve to 127.0.0.1, whose reverse name is "localhost": without this alias
# every client is refused with "client IP resolved to host name "localhost". This is not
# identical to clients host name "<host>"".
aliases=$H
ip=$(getent ahostsv4 "$H" | awk 'NR==1{print $1}' || true)
for n in localhost $( [ -n "$ip" ] && getent hosts "$ip" | awk '{for(i=2;i<=NF;i++) print $i}' || true ); do
  [ "$n" = "$H" ] || case " $aliases " in *" $n "*) ;; *) aliases="$aliases $n" ;; esac
done
echo "$aliases" > "$COMMON/host_aliases"
mkdir -p "$RUN"; chown sgeadmin:sgeadmin "$RUN"

# Daemons start from / with a clean environment, so jobs do not inherit this shell's variables
# (the execd passes its environment on to jobs: INHERIT_ENV defaults to true).
start_daemon() { # start_daemon qmaster|execd
  local var; var=$(echo "SGE_$1_PIDFILE" | tr a-z A-Z)
  ( cd / && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL" \
      "$var=$RUN/$1.pid" "/usr/sbin/sge_$1" </dev/null >"$RUN/$1.start.log" 2>&1 ) \
    || { cat "$RUN/$1.start.log" >&2; die "sge_$1 failed to start"; }
}

# ---------------------------------------------------------------- 4. qmaster
if p=$(pid_of qmaster); then
  log "sge_qmaster already running (pid $p)"
else
  log "starting sge_qmaster"; start_daemon qmaster
fi
for i in $(seq 1 150); do qconf -sh >/dev/null 2>&1 && break; sleep 0.2; done
qconf -sh >/dev/null 2>&1 || { tail -20 "$SPOOL/qmaster/messages" >&2; die "qmaster does not answer"; }

# ---------------------------------------------------------------- 5. configuration (idempotent)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
join_cont() { sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}'; }
setkv() { # setkv KEY VALUE... : replace the line starting with KEY (stdin -> stdout)
  local k=$1; shift
  awk -v k="$k" -v v="$*" '$1==k{printf "%-28s %s\n", k, v; next} {print}'
}
# global cluster configuration: the file name must be the configuration name ("global")
qconf -sconf global | join_cont \
  | setkv min_uid 0 | setkv min_gid 0 \
  | setkv load_report_time 00:00:05 \
  | setkv administrator_mail none \
  | setkv execd_params none \
  | setkv reporting_params "accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00" \
  > "$tmp/global"
qconf -Mconf "$tmp/global" >/dev/null 2>&1 || die "qconf -Mconf failed"
# scheduler: react within ~1 s instead of 15 s
qconf -ssconf | join_cont | setkv schedule_interval 0:0:1 | setkv flush_submit_sec 1 | setkv flush_finish_sec 1 > "$tmp/sched"
qconf -Msconf "$tmp/sched" >/dev/null 2>&1 || die "qconf -Msconf failed"
# h_vmem: requestable AND consumable (per slot), default for jobs that request none
qconf -sc | awk -v d="$HVMEM_DEFAULT" '$1=="h_vmem"{$5="YES";$6="YES";$7=d} {print}' > "$tmp/complex"
qconf -Mc "$tmp/complex" >/dev/null 2>&1 || die "qconf -Mc failed"
# hosts
in_list() { grep -qx -- "$1" <<<"$2"; }   # in_list NAME "$(qconf -sXX)"
in_list "$H" "$(qconf -sh 2>/dev/null || true)" || qconf -ah "$H" >/dev/null 2>&1 || die "qconf -ah failed"
in_list "$H" "$(qconf -ss 2>/dev/null || true)" || qconf -as "$H" >/dev/null 2>&1 || die "qconf -as failed"
cat > "$tmp/$H" <<EOF
hostname              $H
load_scaling          NONE
complex_values        h_vmem=${MEM_K}K
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
if in_list "$H" "$(qconf -sel 2>/dev/null || true)"; then qconf -Me "$tmp/$H" >/dev/null 2>&1; else qconf -Ae "$tmp/$H" >/dev/null 2>&1; fi \
  || die "exec host config failed"
# parallel environment "smp" (qsub -pe smp N)
cat > "$tmp/smp" <<'EOF'
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
if in_list smp "$(qconf -spl 2>/dev/null || true)"; then qconf -Mp "$tmp/smp" >/dev/null 2>&1; else qconf -Ap "$tmp/smp" >/dev/null 2>&1; fi \
  || die "pe config failed"
# queue all.q
queues=$(qconf -sql 2>/dev/null || true)
if in_list all.q "$queues"; then qconf -sq all.q; else qconf -sq; fi | join_cont \
  | setkv qname all.q | setkv hostlist "$H" | setkv load_thresholds NONE | setkv pe_list smp \
  | setkv slots "$SLOTS" | setkv shell /bin/bash | setkv shell_start_mode unix_behavior > "$tmp/all.q"
if in_list all.q "$queues"; then qconf -Mq "$tmp/all.q" >/dev/null 2>&1; else qconf -Aq "$tmp/all.q" >/dev/null 2>&1; fi \
  || die "queue config failed"

# ---------------------------------------------------------------- 6. execd
if p=$(pid_of execd); then
  log "sge_execd already running (pid $p)"
else
  log "starting sge_execd"; start_daemon execd
fi

# ---------------------------------------------------------------- 7. wait for the queue
deadline=$(( $(date +%s) + READY_TIMEOUT ))
while :; do
  # queue instance listed, with an empty "states" column (no a/u/E/d/s flags)
  line=$(qstat -f -q all.q 2>/dev/null | awk -v q="all.q@$H" '$1==q' || true)
  [ -n "$line" ] && [ -z "$(echo "$line" | awk '{print $6}')" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { qstat -f >&2 || true; die "queue all.q@$H not ready"; }
  sleep 0.5
done
left=$(( deadline - $(date +%s) )); [ "$left" -gt 5 ] || left=5
timeout "$left" qsub -sync y -b y -N sge_ready_probe -o /dev/null -j y /bin/true >/dev/null 2>&1 \
  || { qstat -f >&2 || true; die "probe job did not run"; }
echo "SGE READY (host $H, queue all.q, $SLOTS slots, h_vmem default $HVMEM_DEFAULT, qmaster pid $(pid_of qmaster), execd pid $(pid_of execd))"
