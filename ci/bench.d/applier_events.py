"""Splits an `applier deploy --format json` event stream into phases and per-host step times.

Usage: applier_events.py EVENTS.jsonl START_UNIX_MS END_UNIX_MS
Prints one JSON object (seconds) on stdout; used by `ci/bench applier`.

Events carry `ts` (RFC 3339, milliseconds) stamped when a step finished, so a step's time is
the gap to the previous event of the same host:
  stop         = stop - depool
  start+ready  = ready - switch          (spawn, then wait until the port accepts)
  checks       = last check - ready
  host total   = host_done - start of its batch
  overhead     = host total - stop - start+ready - checks
               (spec, port, depool, render, switch, mark_good, repool, journal and state
               records, and waiting on the other hosts of the batch for shared locks)
  journal save = depool - port and repool - mark_good (no-op steps with `pool: {driver: none}`:
               the gap is the journal save of the step before, including its lock wait)
A batch starts at the last event before its first step (the group event or the previous
batch's last host_done).
"""

import json
import statistics
import sys
from datetime import datetime


def ms(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000.0


def main():
    path, t_start, t_end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    events = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    for e in events:
        e["t"] = ms(e["ts"]) if "ts" in e else None
    fin = [e for e in events if e["event"] == "finished"]
    if not fin or fin[-1]["exit_code"] != 0:
        sys.exit(f"deploy did not succeed: {fin[-1] if fin else 'no finished event'}")
    plan = next(e for e in events if e["event"] == "plan")
    pre = [e["t"] for e in events if e["event"] == "preflight"]
    fetch = [e["t"] for e in events if e["event"] == "fetch"]
    done = [e for e in events if e["event"] == "host_done"]
    assert all(d["ok"] for d in done), "a host failed"

    # Per host: the times of its step events, in order.
    steps = {}
    for e in events:
        if e["event"] == "step":
            steps.setdefault(e["host"], {})[e["step"]] = e["t"]
        elif e["event"] == "check":
            steps.setdefault(e["host"], {})["check_last"] = e["t"]
        elif e["event"] == "host_done":
            steps.setdefault(e["host"], {})["done"] = e["t"]

    # Batches: in stream order, a run of hosts whose first step comes before any of them is
    # done. Its start is the event just before the first "spec" step.
    batches, cur, pending = [], None, set()
    prev_t = None
    for e in events:
        if e["event"] == "step" and e["step"] == "spec":
            if cur is None:
                cur = {"start": prev_t, "hosts": []}
            cur["hosts"].append(e["host"])
            pending.add(e["host"])
        elif e["event"] == "host_done" and cur is not None:
            pending.discard(e["host"])
            if not pending:
                batches.append(cur)
                cur = None
        if e.get("t") is not None:
            prev_t = e["t"]

    hosts = []
    batch_walls, batch_service = [], []
    for b in batches:
        svc_max = 0.0
        for h in b["hosts"]:
            s = steps[h]
            stop = s["stop"] - s["depool"]
            start_ready = s["ready"] - s["switch"]
            checks = s["check_last"] - s["ready"]
            total = s["done"] - b["start"]
            # With `pool: {driver: none}` the depool and repool steps do nothing: the gap before
            # each is the journal save of the step before it (including waiting for its lock).
            journal = ((s["depool"] - s["port"]) + (s["repool"] - s["mark_good"])) / 2
            hosts.append(
                {
                    "journal_save": journal,
                    "stop": stop,
                    "start_ready": start_ready,
                    "checks": checks,
                    "total": total,
                    "overhead": total - stop - start_ready - checks,
                }
            )
            svc_max = max(svc_max, stop + start_ready + checks)
        batch_walls.append(max(steps[h]["done"] for h in b["hosts"]) - b["start"])
        batch_service.append(svc_max)

    def mean(k):
        return statistics.mean(h[k] for h in hosts) / 1000.0

    def med(k):
        return statistics.median(h[k] for h in hosts) / 1000.0

    rolling = max(d["t"] for d in done) - (max(fetch) if fetch else max(pre))
    out = {
        "hosts": len(hosts),
        "batches": len(batches),
        "wall": (t_end - t_start) / 1000.0,
        "startup": (plan["t"] - t_start) / 1000.0,
        "preflight": (max(pre) - plan["t"]) / 1000.0,
        "prefetch": ((max(fetch) - max(pre)) / 1000.0) if fetch else 0.0,
        "rolling": rolling / 1000.0,
        "finish": (t_end - max(d["t"] for d in done)) / 1000.0,
        "batch_wall_sum": sum(batch_walls) / 1000.0,
        "batch_service_sum": sum(batch_service) / 1000.0,
        "host_total_mean": mean("total"),
        "stop_mean": mean("stop"),
        "start_ready_mean": mean("start_ready"),
        "checks_mean": mean("checks"),
        "overhead_mean": mean("overhead"),
        "overhead_median": med("overhead"),
        "overhead_max": max(h["overhead"] for h in hosts) / 1000.0,
        "journal_save_mean": mean("journal_save"),
        "journal_saves_per_host": 0,
        # The canary runs alone: its saves wait for no other host.
        "journal_save_canary": hosts[0]["journal_save"] / 1000.0,
    }
    # Every step record rewrites the journal; so do phase changes (2 per host on success).
    out["journal_saves_per_host"] = sum(
        1 for e in events if e["event"] in ("step", "fetch", "preflight")
    ) / max(1, len(hosts)) + 2 + (1 if any(e["event"] == "check" for e in events) else 0)
    # Rolling-phase wall time not spent waiting for the slowest service of each batch, per host.
    out["rolling_overhead_per_host"] = (out["rolling"] - out["batch_service_sum"]) / max(1, len(hosts))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
