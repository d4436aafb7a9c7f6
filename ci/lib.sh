# Shared shell helpers for the ci/ scripts. Source it: `. "$(dirname "$0")/lib.sh"`.
# Everything here logs to stderr; stdout stays free for data (env files, ids).

ci_log() { printf '%s: %s\n' "${CI_SCRIPT_NAME:-ci}" "$*" >&2; }
ci_die() { ci_log "error: $*"; exit 1; }

# The directory where ci/ scripts keep state (pids, ports, data) between calls.
ci_state_dir() { printf '%s\n' "${CI_STATE_DIR:-${TMPDIR:-/tmp}/restbase-deploy-ci}"; }

# True if something accepts TCP connections on 127.0.0.1:$1.
ci_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a TCP port on 127.0.0.1 that nothing listens on right now (a later bind may still
# race with another process; callers retry on bind failure). Chosen in 20000-31999: below the
# kernel's ephemeral range, which outgoing connections take their local ports from, and above
# the test bed's ports.
ci_free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    if ! ci_port_open "$p"; then printf '%s\n' "$p"; return 0; fi
  done
  return 1
}

# Waits until 127.0.0.1:$1 accepts connections, at most $2 seconds (default 10), while the
# process $3 (optional pid) is alive. Returns non-zero on timeout or when the process died.
ci_wait_port() {
  local port=$1 secs=${2:-10} pid=${3:-} i
  for i in $(seq 1 $(( secs * 10 ))); do
    ci_port_open "$port" && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# True if the pid stored in file $1 is a live process.
ci_pidfile_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops the process whose pid is in file $1 (TERM, then KILL after 5 s) and removes the file.
ci_pidfile_stop() {
  local f=$1 pid i
  [ -s "$f" ] || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
