"""The table and verdicts of `ci/bench fleet` from the JSON lines the runs wrote.

Usage: fleet_table.py RESULTS.jsonl
Each line is one run: the object `examples/fleet.rs` prints, plus `label` and, from
/usr/bin/time -v, `max_rss_mb` (and for the real-process runs `applier_v1`: the `applier
deploy` binary's own wall time and peak memory on the cold deploy). Prints markdown on stdout:
the table, then one line of verdicts.
"""

import json
import sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]


def f(x, d=2):
    return "-" if x is None else f"{x:.{d}f}"


rows = [
    "| run | hosts | batches | deploy wall (s) | preflight + prefetch (s) | rolling (s) | floor (s) | rolling / floor | wall / floor | peak RSS (MB) | store requests per host (env records + artifacts) | journal bytes per step |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in runs:
    art = r["artifact_requests"] / r["hosts"]
    rows.append(
        f"| {r['label']} | {r['hosts']} | {r['batches']} | {f(r['wall_s'])} | {f(r['preflight_and_prefetch_s'])} "
        f"| {f(r['rolling_s'])} | {f(r['floor_s'])} | {f(r['rolling_over_floor'], 3)} | {f(r['wall_over_floor'], 3)} "
        f"| {f(r['max_rss_mb'], 1)} | {f(r['env_record_requests_per_host'])} + {f(art)} "
        f"| {f(r['journal_bytes_written'] / max(r['journal_steps'], 1), 0)} |"
    )
print("\n".join(rows))

print()
print(
    "| run | hosts | plan (s) | plan, one host after another (s) | deploy wall (s) | one host after another, at least (s) | wall / that | journal written (KB) | rewritten whole each write (KB) | ratio | naive rewrites' own time (s) |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    jb, nb = r["journal_bytes_written"], r["naive_journal_bytes_written"]
    print(
        f"| {r['label']} | {r['hosts']} | {f(r['plan_s'], 3)} | {f(r['plan_serial_s'], 3)} "
        f"| {f(r['wall_s'])} | {f(r['serial_s'])} | {f(r['wall_over_serial'], 3)} "
        f"| {jb / 1024:.0f} | {nb / 1024:.0f} | {f(nb / max(jb, 1), 1)}x | {f(r['naive_journal_write_s'])} |"
    )

real = [r for r in runs if r.get("applier_v1")]
if real:
    print()
    print("| `applier deploy` binary, v1 onto empty hosts | wall (s) | peak RSS (MB) |")
    print("|---|---|---|")
    for r in real:
        a = r["applier_v1"]
        print(f"| {r['label']} | {f(a['wall_s'])} | {f(a['max_rss_mb'], 1)} |")

ok = all(r["status"] == "succeeded" for r in runs)
wall = all(r["rolling_over_floor"] <= 1.1 for r in runs)
mem = all(r["max_rss_mb"] < 256 for r in runs + [r["applier_v1"] for r in real])
growth = []
for store in sorted({r["store"] for r in runs if r["fleet"] == "memory"}):
    mem_runs = sorted(
        (r for r in runs if r["fleet"] == "memory" and r["store"] == store), key=lambda r: r["hosts"]
    )
    if len(mem_runs) >= 2:
        a, b = mem_runs[0], mem_runs[-1]
        growth.append(
            (store, a["hosts"], b["hosts"], a["store_requests_per_host"], b["store_requests_per_host"])
        )
# One fleet size per store: nothing to compare, so not "met".
const = bool(growth) and all(b <= 1.1 * a for (_, _, _, a, b) in growth)
worst = max(runs, key=lambda r: r["rolling_over_floor"])
print()
print(
    "targets: every deploy succeeded: {}; rolling wall within 1.1x of the floor: {} (worst {:.3f}, {}); "
    "peak memory under 256 MB: {} (max {:.1f} MB); store requests per host constant: {} ({})".format(
        "yes" if ok else "NO",
        "met" if wall else "NOT met",
        worst["rolling_over_floor"],
        worst["label"],
        "met" if mem else "NOT met",
        max(r["max_rss_mb"] for r in runs),
        "met" if const else ("NOT met" if growth else "not measured"),
        "; ".join(f"{s}: {a:.2f} at {n1} hosts, {b:.2f} at {n2}" for (s, n1, n2, a, b) in growth)
        or "one fleet size only",
    )
)
