#!/usr/bin/env bash
# ci/bench restbase [--no-docs]
#   The builder and a 3-host deploy on upstream RESTBase (ci/restbase-repo: e5a608a plus the
#   adoption commit; sqlite3 4.2.0 and four other node-gyp modules), release builds, in one run:
#     cold build      empty store, empty npm cache   vs `npm ci` alone (same inputs, fresh cache):
#                                                      the step a deploy repository also needs
#     same commit     already built: nothing to do
#     source-only     a README change: dependency layer reused, npm not run
#                                                    vs `npm ci` with the warm cache (what a
#                                                      deploy-repository rebuild runs)
#     --rebuild       npm re-run with the warm cache, layer compared file by file, blobs re-hashed
#                                                    vs that `npm ci` alone
#     deploy          `applier deploy` of the first build to 3 local hosts (canary, then one
#                     at a time), then of the source-only change (rolling)
#                                                    vs the floor per host: unpack both layers
#                                                      with tar and start RESTBase to its port
#     host layers     one host root, through the real target code (the applier's `layerbench`
#                     example): fetch of the source-only change and prune of the first release
#                                                    vs a host without the layer store: every
#                                                      layer unpacked into the release, and
#                                                      removing such a release
#   Writes the builder-restbase block of docs/BENCHMARKS.md unless --no-docs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
docs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-docs) docs=0; shift ;;
    *) echo "usage: ci/bench restbase [--no-docs]" >&2; exit 64 ;;
  esac
done
CI_SCRIPT_NAME="bench restbase"
. ci/lib.sh
if [ -z "$(npm config get nodedir 2>/dev/null | grep -v '^null$\|^undefined$')" ] && [ -f /usr/include/node/node.h ]; then
  export npm_config_nodedir=/usr
fi

cargo build --release -q -p builder -p applier --bin builder --bin applier --example layerbench
builder=$root/target/release/builder
applier=$root/target/release/applier
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-restbase.XXXXXX")
pids_file=$work/pids
cleanup() {
  for h in h1 h2 h3; do [ -d "$work/hosts/$h" ] && "$applier" host --root "$work/hosts/$h" stop >/dev/null 2>&1 || true; done
  [ -f "$pids_file" ] && while read -r p; do kill "$p" 2>/dev/null || true; done <"$pids_file"
  rm -rf "$work"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
timed() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; t1=$(date +%s%N); secs "$t0" "$t1"; }

repo=$work/repo
ci/restbase-repo "$repo" >/dev/null
first=$(git -C "$repo" rev-parse HEAD)
store=$work/store
cache=$work/npm-cache

ci_log "cold build (empty store, empty npm cache)"
t_cold=$(timed "$builder" build --repo "$repo" --store "$store" --npm-cache "$cache")
id1=$("$builder" build --repo "$repo" --store "$store" 2>/dev/null)

ci_log "baseline: npm ci alone, fresh cache"
npm_dir=$work/npm-alone
mkdir -p "$npm_dir"
git -C "$repo" archive HEAD package.json package-lock.json vendor | tar -x -C "$npm_dir"
t_npm_cold=$(cd "$npm_dir" && timed npm ci --no-audit --no-fund --cache "$work/npm-cache-alone")

ci_log "same commit again"
t_same=$(timed "$builder" build --repo "$repo" --store "$store")

ci_log "source-only change"
printf '\nDeployed with the deploy toolchain.\n' >>"$repo/README.md"
git -C "$repo" -c user.name=Bench -c user.email=bench@example.invalid commit -qam "README"
second=$(git -C "$repo" rev-parse HEAD)
t_src=$(timed "$builder" build --repo "$repo" --store "$store" --npm-cache "$cache")

ci_log "baseline: npm ci with a warm cache"
rm -rf "$npm_dir/node_modules"
t_npm_warm=$(cd "$npm_dir" && timed npm ci --no-audit --no-fund --cache "$cache")

ci_log "--rebuild of the first commit (npm again, layers compared, blobs re-hashed)"
t_rebuild=$(timed "$builder" build --repo "$repo" --store "$store" --npm-cache "$cache" --rev "$first" --rebuild)

deps_size=$("$builder" show --store "$store" "$id1" --format json | python3 -c 'import json,sys; m=json.load(sys.stdin)["manifest"]; print(" ".join(str(l["size"]) for l in m["layers"]), m["layers"][1]["entries"])')

ci_log "deploy to 3 local hosts"
mkdir -p "$work/hosts"
python3 - "$work" "$store" <<'PY'
import json, socket, sys
work, store = sys.argv[1], sys.argv[2]
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
db = "services.0.conf.spec.paths./{domain:localhost}/{api:sys}.x-modules.1.spec.paths./table.x-modules.0.options.conf.dbname"
hosts = {h: {"root": f"{work}/hosts/{h}", "port": port(),
             "values": {"services.0.conf.host": "127.0.0.1", db: f"{work}/hosts/{h}/db.sqlite3"}}
         for h in ["h1", "h2", "h3"]}
cfg = {"store": store, "lease_ttl": "2m", "envs": {"rb": {
    "service_env": "test", "group_size": 1, "ready_timeout": "120s",
    "groups": [{"name": "canary", "hosts": ["h1"]}, {"name": "rest", "hosts": ["h2", "h3"]}],
    "pool": {"driver": "none"}, "checks": {"disable": ["metrics"]}, "hosts": hosts}}}
open(f"{work}/deploy.yaml", "w").write(json.dumps(cfg, indent=1))
PY
t_deploy1=$(timed "$applier" --config "$work/deploy.yaml" deploy "$first" --env rb)
t_deploy2=$(timed "$applier" --config "$work/deploy.yaml" deploy "$second" --env rb)
for h in h1 h2 h3; do
  link=$(readlink "$work/hosts/$h/current")
  [ "${link##*/}" = "$second" ] || ci_die "$h serves $link, not $second"
done

ci_log "floor: unpack both layers with tar and start RESTBase to its port, 3 hosts in a row"
blob() { printf '%s/blobs/sha256/%s' "$store" "${1#sha256:}"; }
read -r d_src d_deps <<<"$("$builder" show --store "$store" "$first" --format json | python3 -c 'import json,sys; m=json.load(sys.stdin)["manifest"]; print(m["layers"][0]["digest"], m["layers"][1]["digest"])')"
t0=$(date +%s%N)
for h in f1 f2 f3; do
  d=$work/floor/$h
  mkdir -p "$d"
  tar -xf "$(blob "$d_src")" -C "$d"
  tar -xf "$(blob "$d_deps")" -C "$d"
  p=$(ci_free_port)
  sed -e "s/port: 7231/port: $p/" -e "s#/var/lib/restbase/db.sqlite3#$d/db.sqlite3#" "$d/deploy/env/test.yaml" >"$d/config.yaml"
  (cd "$d" && exec node server.js -c config.yaml >"$d/log" 2>&1) &
  pid=$!
  echo "$pid" >>"$pids_file"
  ci_wait_port "$p" 120 "$pid" || ci_die "floor RESTBase on $h did not bind (log: $(tail -3 "$d/log"))"
  kill "$pid"
done
t1=$(date +%s%N)
t_floor=$(secs "$t0" "$t1")
ci_log "host layer store: fetch of the source-only change and prune, one host root (layerbench)"
lb=$("$root/target/release/examples/layerbench" "$store" "$first" "$second" "$work/layerbench")
read -r lb_cold lb_src lb_full lb_prune lb_prune_full lb_entries <<<"$(python3 -c '
import json, sys
j = json.loads(sys.argv[1])
print(" ".join("%.2f" % j[k] for k in ["cold_fetch", "source_only_fetch", "source_only_full_unpack", "prune", "prune_full_copy"]), j["entries"])
' "$lb")"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
read -r src_bytes deps_bytes deps_entries <<<"$deps_size"
section=$(cat <<DOC
<!-- builder-restbase:begin (written by ci/bench restbase) -->
### builder and a 3-host deploy on upstream RESTBase

Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, release builds, load average $load_before before and
$load_after after (other work shares this machine). Reproduce: \`ci/bench restbase\`.

Input: \`ci/restbase-repo\` (upstream e5a608a plus the adoption commit): npm 11 compiles sqlite3
4.2.0, dtrace-provider, gc-stats, heapdump and unix-dgram with node-gyp. Layers: source
$(awk -v b="$src_bytes" 'BEGIN{printf "%.1f MB", b/1e6}'), dependencies $(awk -v b="$deps_bytes" 'BEGIN{printf "%.1f MB", b/1e6}') ($deps_entries entries). One run each, in this order.

| step | seconds | compared with | seconds | ratio |
|---|---|---|---|---|
| cold build (empty store, empty npm cache) | $t_cold | \`npm ci\` alone, fresh cache | $t_npm_cold | $(ratio "$t_cold" "$t_npm_cold") |
| same commit again (already built) | $t_same | | | |
| source-only change (dependency layer reused, npm not run) | $t_src | \`npm ci\`, warm cache | $t_npm_warm | $(ratio "$t_src" "$t_npm_warm") |
| \`--rebuild\` (npm again, layer compared, every blob re-hashed) | $t_rebuild | \`npm ci\`, warm cache | $t_npm_warm | $(ratio "$t_rebuild" "$t_npm_warm") |
| deploy to 3 hosts (first) | $t_deploy1 | floor: tar x both layers + start to port, 3 hosts | $t_floor | $(ratio "$t_deploy1" "$t_floor") |
| rolling deploy of the source-only change | $t_deploy2 | same floor | $t_floor | $(ratio "$t_deploy2" "$t_floor") |
| one host: cold fetch of the first build (both layers) | $lb_cold | | | |
| one host: fetch of the source-only change (source unpacked, dependency tree linked) | $lb_src | before the layer store: every layer unpacked into the release (nothing downloaded) | $lb_full | $(ratio "$lb_src" "$lb_full") |
| one host: prune of the first release, the second current | $lb_prune | before: removing a release holding its own copy of every layer | $lb_prune_full | $(ratio "$lb_prune" "$lb_prune_full") |

The cold build's own work beyond npm is walking, packing and hashing \`node_modules\` and
uploading. A deploy adds to the floor what the floor skips: prefetch and digest checks,
rendering, checks (\`GET /\`, \`GET /localhost/v1/\`, the log scan), and per host the stop of the
running release and a wait for its port to be free. The one-host rows run the target's own
fetch and prune (\`cargo run --release -p applier --example layerbench -- STORE FIRST SECOND
WORK\`): a release of the source-only change holds $lb_entries entries, its dependency tree hard
links into the host's layer store.
<!-- builder-restbase:end -->
DOC
)
printf '%s\n' "$section"
if [ "$docs" = 1 ]; then
  # shellcheck disable=SC1091
  . <(sed -n '/^bench_write_section()/,/^}/p' ci/bench)
  bench_write_section builder-restbase "$section"
fi
