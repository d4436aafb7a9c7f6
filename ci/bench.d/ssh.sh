#!/usr/bin/env bash
# ci/bench ssh [--runs N] [--no-docs]
#   The applier's own time per host over ssh, against the target of at most 50 ms beyond the
#   service's own restart, readiness and checks. Release build, on the test bed (three targets
#   with their own sshd on loopback, HAProxy in front, the S3 server as the store; targets fetch
#   by presigned URL): the fleet test's first deploy to three clean hosts, one at a time
#   (`fleet_over_ssh_haproxy_prometheus_s3` of applier/tests/fleet.rs, which prints each step's
#   time per host), N runs (default 3). Each host's path is split into the service's own time
#   (stop, start, ready, checks) and the tool's (everything else: spec, port, depool, render,
#   switch, mark good, repool, the journal), and compared with two floors measured in the same
#   run over the same kind of shared ssh connection: `ssh tN true`, and one `applier host ...
#   status` request (ssh channel, remote shells, the applier process, its JSON). Starts the bed
#   (with its S3 server) when it is not up, and stops it again. Writes the applier-ssh block
#   of docs/BENCHMARKS.md unless --no-docs.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=3
docs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --no-docs) docs=0; shift ;;
    *) echo "usage: ci/bench ssh [--runs N] [--no-docs]" >&2; exit 64 ;;
  esac
done
CI_SCRIPT_NAME="bench ssh"
. ci/lib.sh
export CI_STATE_DIR="${CI_STATE_DIR:-${TMPDIR:-/tmp}/bench-ssh}"
mkdir -p "$CI_STATE_DIR"
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-ssh.XXXXXX")
started_bed=0
cleanup() {
  if [ -n "${master_ctl:-}" ]; then ssh -F "$TESTBED_SSH_CONFIG" -o ControlPath="$master_ctl" -O exit t1 >/dev/null 2>&1 || true; fi
  if [ "$started_bed" = 1 ]; then ci/testbed down >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ci_log "release build of the applier and its fleet test; debug builder (it only makes the artifacts)"
cargo build -q --release -p applier --bin applier
cargo build -q -p builder --bin builder
cargo test -q --release -p applier --test fleet --no-run 2>/dev/null
applier=${CARGO_TARGET_DIR:-$PWD/target}/release/applier

if ! ci/testbed status >/dev/null 2>&1; then
  ci_log "starting the test bed (and its S3 server)"
  ci/testbed up >/dev/null
  started_bed=1
fi
eval "$(ci/testbed env)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Floors: requests over one shared connection to t1, as the applier keeps one per host.
master_ctl=$work/cm
ssh -F "$TESTBED_SSH_CONFIG" -o BatchMode=yes -o ControlMaster=yes -o ControlPath="$master_ctl" \
  -o ControlPersist=120 -fN t1
floor() { # floor NAME REMOTE-COMMAND: 20 timed requests, one per line (ms)
  local i t0 t1
  for i in $(seq 1 20); do
    t0=$(date +%s%N)
    ssh -F "$TESTBED_SSH_CONFIG" -o BatchMode=yes -o ControlPath="$master_ctl" t1 "$2" </dev/null >/dev/null
    t1=$(date +%s%N)
    echo "$1 $(( (t1 - t0) / 1000000 ))"
  done
}
{
  floor ssh_true true
  floor host_status "exec sh -c 'exec \"\$@\"' applier-host $applier host --root $TESTBED_HOST_1_ROOT status"
} >"$work/floors"

for i in $(seq 1 "$runs"); do
  ci_log "run $i of $runs: the fleet test's first deploy over ssh"
  CI=true cargo test -q --release -p applier --test fleet -- fleet_over_ssh_haproxy_prometheus_s3 \
    --nocapture >"$work/run-$i.log" 2>&1 || { tail -40 "$work/run-$i.log" >&2; ci_die "the fleet test failed"; }
  grep 'fleet timings (first deploy' "$work/run-$i.log" >>"$work/timings" ||
    ci_die "run $i printed no timings line"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

out=$(RUNS=$runs LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
  python3 ci/bench.d/ssh_table.py "$work/timings" "$work/floors")
printf '%s\n' "$out"
if [ "$docs" = 1 ]; then
  . <(sed -n '/^bench_write_section()/,/^}/p' ci/bench)
  bench_write_section applier-ssh "$out"
fi
