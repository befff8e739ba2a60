"""Benchmark: time to discover 10 local pairs (20 nodes) with `pgaasctl status` and `pgaasctl plan`.

Prints figures; asserts nothing about speed. Exits non-zero only when pgaasctl misbehaves (a command
fails, a pair is not healthy after apply, or the plan right after the apply is not empty).

    .venv/bin/python bench/discovery.py [--pairs 10] [--runs 5]

One workspace (specs + SQLite store in a temp dir, node files under /dev/shm, addresses in
127.0.3.0/24) with --pairs synchronous pairs of provider `local`, created by one `pgaasctl apply`.
Then, each the whole command in a fresh process, median of --runs:

- `pgaasctl --help`: interpreter and imports, the floor under every figure;
- `pgaasctl status` on a spec dir holding one of the pairs (same store): one pair's discovery;
- `pgaasctl status` on all pairs: every node probed over SSH (repmgr cluster show / service status)
  and with pg_is_in_recovery(), the pairs in parallel;
- `pgaasctl plan --detailed-exitcode` with no changes (must exit 0): the same discovery plus the
  catalog reads of planning.

Target from the issue: discovery of 10 pairs under 1.5 s. Everything is destroyed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (
    ADDRESSES,
    TUNED_FAILOVER,
    Failure,
    LocalBench,
    fmt,
    load_average,
    machine,
    median_runs,
    print_done,
    startup_times,
    tail,
)

DISCOVERY_TARGET_S = 1.5


def timed_runs(bench: LocalBench, args: list[str], runs: int, specs: Path | None = None,
               expect: tuple[int, ...] = (0,)) -> list[float]:
    times = []
    for _ in range(runs):
        result = bench.pgaasctl(args, expect=expect, specs=specs)
        if args[0] == "plan" and result.proc.returncode != 0:
            raise Failure(f"plan with no changes exited {result.proc.returncode}:\n{tail(result.proc.stdout, 20)}")
        times.append(result.elapsed)
    return times


def against_target(times: list[float]) -> str:
    verdict = "met" if statistics.median(times) < DISCOVERY_TARGET_S else "MISSED"
    return median_runs(times, f" (target < {DISCOVERY_TARGET_S} s: {verdict})")


def busy_cpus(seconds: float = 3.0) -> float:
    """CPUs busy on the whole machine (from /proc/stat) over `seconds`: idle nodes plus any other work."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return sum(values) - values[3] - values[4], sum(values)
    busy0, total0 = sample()
    time.sleep(seconds)  # measuring, not waiting for anything
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    bench = LocalBench("discovery")
    status = 0
    names = [f"d{i:02d}" for i in range(1, args.pairs + 1)]
    print(f"pgaasctl discovery bench: {args.pairs} synchronous local pairs ({2 * args.pairs} nodes) in one workspace "
          f"(local_dir {bench.local_dir}, addresses {ADDRESSES}); {machine()}", flush=True)
    try:
        for name in names:
            bench.write_pair(name, TUNED_FAILOVER)
        applied = bench.apply()
        print(f"apply of {args.pairs} new pairs (one after another): {fmt(applied.elapsed)}", flush=True)
        pairs = bench.status()
        unhealthy = [p["pair"] for p in pairs if p["degraded"] or p["error"] or len(p["nodes"]) != 2
                     or not any(n["role"] == "primary" for n in p["nodes"])
                     or not any(n["role"] == "standby" and n["replication"] == "streaming, sync" for n in p["nodes"])]
        if len(pairs) != args.pairs or unhealthy:
            raise Failure(f"after apply, {len(pairs)} pairs in status, not whole and synchronous: {unhealthy}")
        print(f"all {args.pairs} pairs whole and synchronous; {load_average()}; machine busy "
              f"{busy_cpus():.2f} of {os.cpu_count()} CPUs with nothing measured running (idle nodes + other work)",
              flush=True)
        _, empty, plan_out = bench.plan_is_empty()
        if not empty:
            raise Failure(f"the plan right after apply is not empty:\n{tail(plan_out, 20)}")

        one = bench.spec_dir("specs-one")
        bench.write_pair(names[0], TUNED_FAILOVER, specs=one)

        startup = startup_times(bench.cli, bench.work, bench.env, args.runs)
        print(f"startup (pgaasctl --help): {median_runs(startup)}", flush=True)
        status_one = timed_runs(bench, ["status"], args.runs, specs=one)
        print(f"status, 1 pair (2 nodes): {median_runs(status_one)}", flush=True)
        status_all = timed_runs(bench, ["status"], args.runs)
        print(f"status, {args.pairs} pairs ({2 * args.pairs} nodes): {against_target(status_all)}", flush=True)
        plan_all = timed_runs(bench, ["plan", "--detailed-exitcode"], args.runs, expect=(0, 2))
        print(f"plan (no changes), {args.pairs} pairs: {against_target(plan_all)}", flush=True)
    except Failure as exc:
        print(f"FAILURE: {exc}", file=sys.stderr)
        status = 1
    finally:
        start = time.perf_counter()
        bench.cleanup()
        print(f"destroy of {args.pairs} pairs + cleanup: {fmt(time.perf_counter() - start)}")
        status |= bench.report_leftovers()
    print_done()
    return status


if __name__ == "__main__":
    sys.exit(main())
