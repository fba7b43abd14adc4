# sge_pids.sh - sourced by sge_up.sh and sge_down.sh: find the Grid Engine daemons by PID.
# Needs RUN (our pidfiles), SPOOL (SGE's spool) and LIBEXEC (the daemons' folder) set.

# alive PID: the process exists and is not a zombie
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# running PID BINARY: alive and runs $LIBEXEC/BINARY
running() { alive "$1" && [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$LIBEXEC/$2" ]; }
# pid_of qmaster|execd: the first live PID in our pidfile or SGE's spool pidfile
pid_of() {
  local f p
  for f in "$RUN/$1.pid" "$SPOOL/qmaster/qmaster.pid" "$SPOOL"/execd/*/execd.pid; do
    case "$f" in *"$1"*) ;; *) continue ;; esac
    [ -r "$f" ] || continue
    p=$(tr -dc 0-9 < "$f")
    if running "$p" "sge_$1"; then echo "$p"; return 0; fi
  done
  return 1
}
