#!/usr/bin/env python3
"""Timing and summaries for `ci/bench pack` and `ci/bench fetch`.

  layers.py time RESULTS NAME CMD   runs `bash -c CMD` (stdout discarded) and appends
                                    "NAME<TAB>wall<TAB>cpu" to RESULTS (cpu = user+sys of
                                    every process it started); exits with CMD's status
  layers.py table RESULTS SPEC      prints a markdown table and, on the last line, a JSON object
                                    of medians; SPEC is JSON: {"rows": [[name, label], ...],
                                    "ref": name, "ref_label": "..."}; ratios are median wall
                                    time over the median of `ref`
"""
import json
import resource
import statistics
import subprocess
import sys
import time


def cmd_time(results, name, cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    rc = subprocess.run(["bash", "-c", cmd], stdout=subprocess.DEVNULL).returncode
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc == 0:
        with open(results, "a") as f:
            f.write(f"{name}\t{wall:.3f}\t{cpu:.3f}\n")
    try:
        print(f"{wall:.3f}s wall, {cpu:.3f}s cpu" + ("" if rc == 0 else f" (exit {rc})"))
    except BrokenPipeError:
        pass
    return rc


def load(results):
    runs = {}
    for line in open(results):
        name, wall, cpu = line.rstrip("\n").split("\t")
        runs.setdefault(name, []).append((float(wall), float(cpu)))
    return runs


def cmd_table(results, spec):
    spec = json.loads(spec)
    runs = load(results)
    med = {n: statistics.median(w for w, _ in v) for n, v in runs.items()}
    cpu = {n: statistics.median(c for _, c in v) for n, v in runs.items()}
    ref = spec["ref"]
    print(f"| pipeline | runs | median wall (s) | min-max (s) | median CPU (s) | wall / {spec['ref_label']} |")
    print("|---|---|---|---|---|---|")
    for name, label in spec["rows"]:
        v = runs.get(name)
        if not v:
            print(f"| {label} | 0 | failed | | | |")
            continue
        walls = [w for w, _ in v]
        print(
            f"| {label} | {len(v)} | {med[name]:.2f} | {min(walls):.2f}-{max(walls):.2f} "
            f"| {cpu[name]:.2f} | {med[name] / med[ref]:.2f} |"
        )
    print(json.dumps({"median": med, "cpu": cpu}))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "time":
        sys.exit(cmd_time(*sys.argv[2:]))
    if len(sys.argv) == 4 and sys.argv[1] == "table":
        cmd_table(*sys.argv[2:])
        return
    print(__doc__, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
