"""Benchmark: a fleet of local pairs made, planned and destroyed by single commands.

Prints figures; asserts nothing about speed. Exits non-zero when pgaasctl misbehaves (a command fails, the plan
after the apply is not empty, something is left behind).

    .venv/bin/python bench/fleet.py [--pairs 20] [--parallel 4] [--plans 3]

`--pairs` local pairs of two asynchronous nodes on loopback addresses (127.0.3.0/24), declared in one workspace:
1. one `pgaasctl apply` creates them all, up to `--parallel` at once (Workspace parallel_pairs); the baseline is
   the same apply with parallel_pairs 1 for the first `--baseline` pairs (default 4), scaled per pair;
2. `pgaasctl plan` with no changes, `--plans` times: wall clock, and pgaasctl's own CPU (user + system of the
   process, from the kernel's accounting of this bench's children); then a plan of one pair of the same
   workspace, so the CPU each pair more costs is known apart from start-up: the figure that scales (in a real
   fleet the nodes are other machines);
3. one `pgaasctl destroy` of them all.
Between 1 and 2 it measures, for 10 s, how much CPU the running fleet itself costs the machine (every node's
PostgreSQL, repmgrd, fencing guard and sshd), as a share of a core per pair.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Failure, LocalBench, fmt, machine, print_done  # noqa: E402


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has run (user, nice, system, irq, softirq), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def background_share(seconds: float = 10.0) -> float:
    """The share of one core the machine spends while the bench waits: the running nodes' own background."""
    before = machine_busy_seconds()
    time.sleep(seconds)  # a measuring window, not a synchronisation
    return (machine_busy_seconds() - before) / seconds


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_pairs(bench: LocalBench, names: list[str], specs: Path, parallel: int) -> None:
    text = bench.workspace_doc().rstrip("}\n") + f", parallel_pairs: {parallel}}}\n"
    (specs / "workspace.yaml").write_text(text)
    for name in names:
        bench.write_pair(name, replication="asynchronous", specs=specs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--baseline", type=int, default=4)
    parser.add_argument("--plans", type=int, default=3)
    args = parser.parse_args()
    bench = LocalBench("fleet")
    status = 0
    print(f"fleet: {args.pairs} pairs of two nodes, {args.parallel} at once; {machine()}", flush=True)
    try:
        serial = bench.spec_dir("serial")
        write_pairs(bench, [f"s{i:02d}" for i in range(args.baseline)], serial, 1)
        one_by_one = bench.apply(serial).elapsed
        bench.destroy(serial)
        for path in serial.glob("pair-*.yaml"):
            path.unlink()
        print(f"  baseline: {args.baseline} pairs one at a time: {fmt(one_by_one)} ({fmt(one_by_one / args.baseline)} "
              "per pair)", flush=True)

        names = [f"f{i:02d}" for i in range(args.pairs)]
        write_pairs(bench, names, bench.specs, args.parallel)
        created = bench.apply()
        print(f"  apply creating {args.pairs} pairs: {fmt(created.elapsed)} ({fmt(created.elapsed / args.pairs)} per "
              f"pair; one at a time would be about {fmt(one_by_one / args.baseline * args.pairs)})", flush=True)
        idle = background_share()
        print(f"  the running fleet's background (PostgreSQL, repmgrd, the guards, sshd), nothing else running: "
              f"{idle * 100:.0f}% of a core, {idle * 100 / args.pairs:.1f}% per pair", flush=True)
        walls, cpus = [], []
        for _ in range(args.plans):
            before = children_cpu()
            wall, empty, output = bench.plan_is_empty()
            cpus.append(children_cpu() - before)
            walls.append(wall)
            if not empty:
                status = 1
                print(f"CORRECTNESS FAILURE: the plan after the apply is not empty:\n{output[-2000:]}", flush=True)
        single = []
        for _ in range(args.plans):  # the same process with one pair: start-up, imports and spec loading
            before = children_cpu()
            bench.pgaasctl(["plan"], specs=bench.specs / f"pair-{names[0]}.yaml")
            single.append(children_cpu() - before)
        marginal = (statistics.median(cpus) - statistics.median(single)) / max(1, args.pairs - 1)
        print(f"  plan with no changes: median {fmt(statistics.median(walls))} wall; pgaasctl's CPU median "
              f"{fmt(statistics.median(cpus))} ({statistics.median(cpus) / args.pairs * 1000:.0f} ms per pair); "
              f"a plan of one pair {fmt(statistics.median(single))}, so each pair more costs "
              f"{marginal * 1000:.0f} ms of CPU", flush=True)
        destroyed = bench.destroy()
        print(f"  destroy of {args.pairs} pairs: {fmt(destroyed.elapsed)}", flush=True)
        for path in bench.specs.glob("pair-*.yaml"):
            path.unlink()
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        bench.cleanup()
    status = max(status, bench.report_leftovers())
    print_done()
    return status


if __name__ == "__main__":
    sys.exit(main())
