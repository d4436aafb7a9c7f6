"""The applier-ssh block of docs/BENCHMARKS.md, from the fleet test's timings lines and the
floors measured beside them (ci/bench.d/ssh.sh).

    ssh_table.py TIMINGS FLOORS

TIMINGS: one `fleet timings (first deploy, ...)` line per run; per host it holds
`tN: path X s (drain+depool X s, checks X s; ms: <step> <ms>, ..., done <ms>)`, each step's
time from the step before it. FLOORS: `<name> <ms>` lines.
"""

import os
import re
import statistics
import sys

OWN = {"stop", "start", "ready"}
HOST = re.compile(r"(t\d+): path ([\d.]+)s \(drain\+depool [\d.]+s, checks ([\d.]+)s; ms: ([^)]*)\)")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def parse(path):
    """Per run, per host: (path ms, checks ms, {step: ms}, done ms)."""
    runs = []
    for line in open(path):
        hosts = {}
        for name, path_s, checks_s, steps in HOST.findall(line):
            gaps = {}
            done = 0
            for part in steps.split(", "):
                step, ms = part.rsplit(" ", 1)
                if step == "done":
                    done = int(ms)
                else:
                    gaps[step] = gaps.get(step, 0) + int(ms)
            hosts[name] = (float(path_s) * 1000, float(checks_s) * 1000, gaps, done)
        if hosts:
            runs.append(hosts)
    return runs


def main():
    runs = parse(sys.argv[1])
    floors = {}
    for line in open(sys.argv[2]):
        name, ms = line.split()
        floors.setdefault(name, []).append(int(ms))
    if not runs:
        sys.exit("ssh_table.py: no timings lines")
    steps = []
    for r in runs:
        for _, _, gaps, _ in r.values():
            for s in gaps:
                if s not in steps:
                    steps.append(s)
    hosts = sorted(runs[0])
    rows = []  # (label, {host: [ms per run]})

    def col(f):
        return {h: [f(r[h]) for r in runs if h in r] for h in hosts}

    for s in steps:
        if s in ("mark_good", "mark-good"):
            # The checks run between ready and mark good: the step's own time is the rest.
            rows.append(("mark good, less the checks before it", col(lambda x: x[2].get(s, 0) - x[1])))
        else:
            rows.append((s, col(lambda x, s=s: x[2].get(s, 0))))
    rows.append(("after the last step (host done)", col(lambda x: x[3])))
    rows.append(("checks", col(lambda x: x[1])))

    def own(x):
        return sum(v for k, v in x[2].items() if k in OWN) + x[1]

    def tool(x):
        return sum(x[2].values()) + x[3] - own(x)

    med = lambda d: " / ".join(f"{median(d[h]):.0f}" for h in hosts)
    tool_all = [tool(r[h]) for r in runs for h in hosts if h in r]
    own_all = [own(r[h]) for r in runs for h in hosts if h in r]
    f_status = floors.get("host_status", [])

    print("<!-- applier-ssh:begin (written by ci/bench ssh) -->")
    print("## applier over SSH: the tool's own time per host")
    print()
    print(f"Measured by `ci/bench ssh` (release build), {len(runs)} runs, load average "
          f"{os.environ.get('LOAD_BEFORE', '?')} before and {os.environ.get('LOAD_AFTER', '?')} after, "
          "on the test bed: three targets with their own `sshd` on loopback, HAProxy in front, "
          "the S3 server as the store, the fixture service; the first deploy to three clean "
          "hosts, one at a time. Each step's time is from the step before it (ms, median of the "
          "runs, t1 / t2 / t3); stop, start, ready and the checks are the service's own.")
    print()
    print(f"| per host, ms ({' / '.join(hosts)}) | median |")
    print("|---|---|")
    for label, d in rows:
        print(f"| {label} | {med(d)} |")
    print(f"| **the service's own: stop + start + ready + checks** | **{med(col(own))}** |")
    print(f"| **the tool's own: everything else** | **{med(col(tool))}** |")
    print()
    print("Floors in the same run, over one shared ssh connection to t1 (20 requests each):")
    print()
    print("| request | median ms | min-max ms |")
    print("|---|---|---|")
    for name, label in (("ssh_true", "`ssh t1 true`"), ("host_status", "`applier host --root R status` over ssh")):
        xs = floors.get(name, [])
        if xs:
            print(f"| {label} | {median(xs):.0f} | {min(xs)}-{max(xs)} |")
    print()
    verdict = "met" if median(tool_all) <= 50 else "NOT met"
    per_request = median(f_status)
    print(f"Target: at most 50 ms per host beyond the service's own time: {verdict} "
          f"(median {median(tool_all):.0f} ms over {len(tool_all)} host paths; the service's own "
          f"{median(own_all):.0f} ms). One request over ssh costs at least the floor's "
          f"{per_request:.0f} ms, so the tool's share is "
          f"{median(tool_all) / per_request:.1f} such requests' worth.")
    print("<!-- applier-ssh:end -->")


if __name__ == "__main__":
    main()
