"""Benchmark: time from `pgaasctl apply` to a replicating local pair, and `pgaasctl destroy`.

Prints figures; asserts nothing about speed. Exits non-zero only when pgaasctl misbehaves (a command
fails, the pair does not replicate, or destroy leaves a process or a node directory behind).

    .venv/bin/python bench/provision.py [--runs 5] [--replication synchronous]

Each run: `pgaasctl apply --auto-approve` on a spec holding one Pair of provider `local` (two nodes on
loopback addresses in 127.0.3.0/24, files under /dev/shm), the whole command in a fresh process; then,
from outside pgaasctl, the primary's pg_stat_replication is polled until the standby is `streaming`
(and `sync` for a synchronous pair): "apply -> replicating" is the time from starting apply to that.
Then `pgaasctl destroy --auto-approve`, timed, and a check that nothing of the pair is left.
The host operations apply reports on stderr are time-stamped as they arrive, to show where the time went.

Must run as root (like `make demo`): provider local runs PostgreSQL as the `postgres` OS user.

The workspace of local pairs (LocalBench) and the other shared helpers are in bench/common.py.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (
    ADDRESSES,
    TUNED_FAILOVER,
    Failure,
    LocalBench,
    fmt,
    machine,
    median_runs,
    print_done,
    tail,
)

PROVISION_TARGET_S = 10.0


# ---------------------------------------------------------------- polling the pair

def replication_rows(uri: str, password: str) -> list[tuple[str, str, str]]:
    """(application_name, state, sync_state) of the primary's walsenders."""
    with psycopg.connect(uri, password=password, autocommit=True, connect_timeout=2) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()]


def wait_replicating(uri: str, password: str, synchronous: bool, timeout: float = 60.0) -> tuple[float, list, int]:
    """Poll the primary until a standby streams (synchronously, if asked); returns (when, rows, polls)."""
    deadline = time.perf_counter() + timeout
    rows: list = []
    polls = 0
    while True:
        polls += 1
        try:
            rows = replication_rows(uri, password)
        except psycopg.Error as exc:
            rows = [("error", str(exc).strip(), "")]
        if any(state == "streaming" and (sync == "sync" or not synchronous) for _, state, sync in rows):
            return time.perf_counter(), rows, polls
        if time.perf_counter() > deadline:
            raise Failure(f"no standby {'streaming synchronously' if synchronous else 'streaming'} "
                          f"{timeout:.0f} s after apply; pg_stat_replication: {rows}")
        time.sleep(0.05)  # polling pg_stat_replication


# 'pair P: node N: WHAT: done' (since issue 6 followed by pgaasctl's own timing, ' (0.52s)')
DONE_LINE = re.compile(r"^pair [^:]+: (.+): done(?: \([0-9.]+s\))?$")


def operation_breakdown(events: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Where a command's time went, from its output lines as they arrived: up to the plan summary
    ('Plan: ...': interpreter start, spec loading, discovery, planning), each host operation (progress
    lines 'pair P: node N: WHAT: done (1.23s)'), and the rest (SQL changes, waiting for the standby, exit)."""
    out: list[tuple[str, float]] = []
    previous = 0.0
    for at, line in events:
        text = line.strip()
        if text.startswith("Plan:") and not out:
            out.append(("start + discovery + plan", at))
            previous = at
        elif (done := DONE_LINE.match(text)) is not None:
            what = done.group(1)
            out.append((what, at - previous))
            previous = at
    return out


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replication", choices=("synchronous", "asynchronous"), default="synchronous")
    args = parser.parse_args()

    synchronous = args.replication == "synchronous"
    bench = LocalBench("provision")
    status = 0
    print(f"pgaasctl provision bench: {args.runs} runs of apply/destroy of one {args.replication} local pair "
          f"(local_dir {bench.local_dir}, addresses {ADDRESSES}); {machine()}", flush=True)
    apply_times, ready_times, destroy_times, waits = [], [], [], []
    breakdowns: list[list[tuple[str, float]]] = []
    try:
        bench.write_pair("prov", TUNED_FAILOVER, args.replication)
        for run in range(args.runs):
            applied = bench.apply()
            uri = bench.uri("prov")  # a pgaasctl command of its own: not counted
            polled = time.perf_counter()
            ready_at, rows, polls = wait_replicating(uri, bench.admin_password("prov"), synchronous)
            # replicating at the first poll: it was when apply returned (apply waits for the standby itself)
            extra = ready_at - polled if polls > 1 else 0.0
            ready = applied.elapsed + extra
            ops = operation_breakdown(applied.events)
            apply_times.append(applied.elapsed)
            ready_times.append(ready)
            breakdowns.append(ops)
            _, empty, plan_out = bench.plan_is_empty()
            if not empty:
                status = 1
                print(f"CORRECTNESS FAILURE: the plan right after apply is not empty:\n{tail(plan_out, 20)}", flush=True)
            destroyed = bench.destroy()
            destroy_times.append(destroyed.elapsed)
            left = bench.running_processes() + bench.node_dirs()
            if left:
                status = 1
                print(f"CORRECTNESS FAILURE: destroy left behind: {left[:5]}", flush=True)
            standby = ", ".join(f"{a} {s}/{y}" for a, s, y in rows)
            when = "already when apply returned" if polls == 1 else f"{extra:.2f} s after apply returned"
            print(f"  run {run + 1}: apply {fmt(applied.elapsed)}, apply -> replicating {fmt(ready)} ({standby}, {when}); "
                  f"destroy {fmt(destroyed.elapsed)}", flush=True)
            rest = applied.elapsed - sum(t for _, t in ops)
            caught_up = re.search(r"standby caught up in ([0-9.]+)s", applied.proc.stdout)
            waits.append(float(caught_up.group(1)) if caught_up else float("nan"))
            print("    " + "; ".join(f"{what} {t:.2f}" for what, t in ops) + f"; the rest {rest:.2f}"
                  + (f" (of which apply's standby wait {caught_up.group(1)} s)" if caught_up else ""), flush=True)
        verdict = "met" if statistics.median(ready_times) < PROVISION_TARGET_S else "MISSED"
        print(f"apply -> replicating pair ({args.replication}): "
              + median_runs(ready_times, f" over {args.runs} runs (target < {PROVISION_TARGET_S:.0f} s: {verdict})"))
        print(f"apply command alone: {median_runs(apply_times)}")
        print(f"destroy: {median_runs(destroy_times)}")
        # per-operation medians, in the order apply runs them
        names = [what for what, _ in breakdowns[0]]
        parts = []
        for i, what in enumerate(names):
            values = [b[i][1] for b in breakdowns if len(b) > i and b[i][0] == what]
            parts.append(f"{what}: {statistics.median(values):.2f} s")
        rests = [a - sum(t for _, t in b) for a, b in zip(apply_times, breakdowns)]
        parts.append(f"the rest (discovery again, SQL changes, standby wait, exit): {statistics.median(rests):.2f} s, "
                     f"of which apply's standby wait {statistics.median(waits):.2f} s")
        print("where apply's time goes (median per host operation, measured between progress lines):")
        for part in parts:
            print(f"  {part}")
    except Failure as exc:
        print(f"FAILURE: {exc}", file=sys.stderr)
        status = 1
    finally:
        bench.cleanup()
        status |= bench.report_leftovers()
    print_done()
    return status


if __name__ == "__main__":
    sys.exit(main())
