#!/usr/bin/env bash
# ci/bench analysis [--windows N] [--base R] [--no-docs]
#   The canary analysis' decisions on the test bed's real traffic (applier/benches/analysis.rs):
#   the fixture on t1..t3 behind HAProxy with random 5xx at R (default 0.05) on t2 and t3 and
#   2R on t1, load through HAProxy, N (default 20) disjoint 24 s windows read from Prometheus;
#   per window t2 against t3 (equal noise) and t1 against t3 (2x regression), judged by the
#   Mann-Whitney analysis and by fixed thresholds in the same windows: false aborts, misses,
#   time to detect. Starts the bed if it is not up (and stops it again). Writes the analysis
#   block of docs/BENCHMARKS.md unless --no-docs.
set -euo pipefail
cd "$(dirname "$0")/../.."
docs=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --windows | --base) args+=("$1" "$2"); shift 2 ;;
    --no-docs) docs=0; shift ;;
    *) echo "usage: ci/bench analysis [--windows N] [--base R] [--no-docs]" >&2; exit 64 ;;
  esac
done
CI_SCRIPT_NAME="bench analysis"
. ci/lib.sh
started=0
if ! ci/testbed status >/dev/null 2>&1; then
  ci_log "starting the test bed"
  ci/testbed up >/dev/null
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then ci/testbed down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
out=$(mktemp "${TMPDIR:-/tmp}/bench-analysis.XXXXXX")
cargo bench -q -p applier --bench analysis --profile dev -- "${args[@]}" >"$out"
cat "$out"
if [ "$docs" = 1 ]; then
  . <(sed -n '/^bench_write_section()/,/^}/p' ci/bench)
  bench_write_section analysis "$(cat "$out")"
fi
rm -f "$out"
