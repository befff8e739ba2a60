"""Benchmark: the agent (pgaasctl agent) over a fleet of local pairs.

Prints figures; asserts nothing about speed. Exits non-zero only when the agent misbehaves (the lookup never
follows a failover, a round fails).

    .venv/bin/python bench/agent.py [--pairs 10] [--rounds 10] [--failovers 5]

1. Round time: `--pairs` synchronous local pairs (loopback network, default failover settings); the agent's round
   in this process, median of `--rounds`, lookup only and with metric sampling, against a baseline measured in
   the same process: `pgaasctl status` of the same pairs as a whole command (the same discovery, plus Python's
   start-up).
2. Cost on each monitored server per round: CPU seconds of one primary's PostgreSQL (postmaster and its children,
   reaped ones included) and of its sshd, over `--rounds` rounds, divided by the rounds.
3. Lookup staleness after a failover: kill -9 of a primary; from the moment the standby is primary (polled every
   10 ms) until the agent's lookup names it (polled every 10 ms). With pushes (Workspace monitoring.agent_url, the
   agent listening) and without (the agent not listening: the next round finds it), the agent's interval 5 s.
4. Store growth: the SQLite store's size after rounds with sampling, per pair per sampling round, extrapolated to
   a day at the default metrics_interval (15 s), and the steady state under the default retention (48 h raw).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Failure, LocalBench, machine, print_done  # noqa: E402
from pgaasctl.monitor.agent import Agent  # noqa: E402
from pgaasctl.monitor.endpoint import serve  # noqa: E402

AGENT_INTERVAL = 5.0
METRICS_INTERVAL = 15.0
RAW_RETENTION_DAYS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def descendants_cpu(root: int) -> float:
    """CPU seconds of every live descendant of `root` (each with its reaped children): an SSH connection's
    commands are the great-grandchildren of the listening sshd (its privileged and its user process between)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS
    total = 0.0
    for pid in cpu:
        ancestor = parents.get(pid)
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor == root:
            total += cpu[pid]
    return total


def sshd_pid(node_dir: Path) -> int:
    config = f"{node_dir}/ssh/sshd_config"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "sshd" in command.split(" ")[0] and config in command:
                return int(entry.name)
    raise Failure(f"no sshd for {node_dir}")


def server_cpu(bench: LocalBench, pair: str, node: str) -> tuple[float, float]:
    """(PostgreSQL, sshd) CPU seconds so far of one node."""
    postmaster = int((bench.node_dir(pair, node) / "data" / "postmaster.pid").read_text().split()[0])
    sshd = sshd_pid(bench.node_dir(pair, node))
    return (cpu_seconds(postmaster) + descendants_cpu(postmaster), cpu_seconds(sshd) + descendants_cpu(sshd))


def role(bench: LocalBench, pair: str, address: str) -> str | None:
    try:
        with psycopg.connect(host=address, user="postgres", password=bench.admin_password(pair), dbname="postgres",
                             connect_timeout=2, autocommit=True) as conn:
            return "standby" if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] else "primary"  # type: ignore[index]
    except psycopg.Error:
        return None


def poll(predicate, bound: float, what: str, step: float = 0.01) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)  # polling
    raise Failure(f"timed out after {bound:g} s waiting for {what}")


def staleness(bench: LocalBench, agent: Agent, pair: str) -> float:
    """kill -9 of the pair's primary; seconds from the standby's promotion to the lookup naming it."""
    [entry] = [p for p in bench.status() if p["pair"] == pair]
    nodes = {n["name"]: n for n in entry["nodes"]}
    old = next(name for name, n in nodes.items() if n["role"] == "primary")
    new = next(name for name, n in nodes.items() if n["role"] == "standby")
    address = nodes[new]["address"].rsplit(":", 1)[0]
    pid = int((bench.node_dir(pair, old) / "data" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    promoted = poll(lambda: role(bench, pair, address) == "primary", 60, f"{new} to be promoted")

    def seen() -> bool:
        lookup = next((x for x in agent.snapshot().lookups if x.pair == pair), None)
        return lookup is not None and lookup.primary == new

    followed = poll(seen, 60, "the lookup to follow")
    bench.apply()  # the old primary rejoins
    return followed - promoted


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(ordered):.3f} s, max {ordered[-1]:.3f} s ({len(ordered)} runs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--failovers", type=int, default=5)
    args = parser.parse_args()
    print(f"bench/agent.py: {args.pairs} pair(s), {args.rounds} round(s), {args.failovers} failover(s); {machine()}")
    bench = LocalBench("agent")
    port = free_port()
    (bench.specs / "workspace.yaml").write_text(bench.workspace_doc().rstrip().rstrip("}")
                                                + f", monitoring: {{agent_url: 'http://127.0.0.1:{port}'}}}}\n")
    names = [f"f{i:02d}" for i in range(args.pairs)]
    try:
        for name in names:
            bench.write_pair(name, failover={})
        created = bench.apply()
        print(f"  {args.pairs} pairs created in {created.elapsed:.1f} s")
        agent = Agent(path=bench.specs, store_flag=f"sqlite:///{bench.store}", interval=AGENT_INTERVAL)

        # 1. round time, against `pgaasctl status` of the same pairs
        baseline = [bench.pgaasctl(["status", "--json"], expect=(0, 1, 2)).elapsed for _ in range(3)]
        with_samples, lookup_only = [], []
        for _ in range(args.rounds):
            agent._sampled_at.clear()  # every pair due: a round with metric sampling
            started = time.monotonic()
            report = agent.round()
            with_samples.append(time.monotonic() - started)
            if report.errors:
                raise Failure(f"a round could not read {report.errors} pair(s)")
            started = time.monotonic()
            agent.round()  # sampled a moment ago: the lookup alone
            lookup_only.append(time.monotonic() - started)
        print(f"  baseline `pgaasctl status` of {args.pairs} pairs (a whole command): {summary(baseline)}")
        print(f"  agent round, lookup only:        {summary(lookup_only)}; "
              f"{statistics.median(lookup_only) / statistics.median(baseline):.2f} x the baseline")
        print(f"  agent round, with metric samples: {summary(with_samples)}; "
              f"{statistics.median(with_samples) / statistics.median(baseline):.2f} x the baseline")

        # 2. cost on one monitored server per round
        pair = names[0]
        primary = next(n["name"] for n in next(p for p in bench.status() if p["pair"] == pair)["nodes"]
                       if n["role"] == "primary")
        opened = agent._keeper.opened
        started, before = time.monotonic(), server_cpu(bench, pair, primary)
        for _ in range(args.rounds):
            agent.round()
        after, spent = server_cpu(bench, pair, primary), time.monotonic() - started
        # the node's own background (repmgrd's and the guard's sessions) over as long, without the agent
        idle_before = server_cpu(bench, pair, primary)
        time.sleep(spent)  # measuring an idle period of the same length, not waiting for anything
        idle_after = server_cpu(bench, pair, primary)
        pg_cost, ssh_cost = ((b - a - (ib - ia)) / args.rounds * 1000
                             for a, b, ia, ib in zip(before, after, idle_before, idle_after))
        idle_pg = (idle_after[0] - idle_before[0]) / spent * 1000
        print(f"  CPU per round on one primary ({pair}/{primary}), lookup rounds, less the node's own background "
              f"({idle_pg:.0f} ms per second: repmgrd and the fencing guard): PostgreSQL {pg_cost:.1f} ms, sshd "
              f"(discovery over SSH) {ssh_cost:.1f} ms; SQL sessions opened in {args.rounds} rounds: "
              f"{agent._keeper.opened - opened} (kept: {agent._keeper.reused} reuses so far)")

        # 3. lookup staleness after a failover, with pushes and without
        stop = threading.Event()
        runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        server, _ = serve(agent, f"127.0.0.1:{port}")
        runner.start()
        try:
            pushed = [staleness(bench, agent, names[i % len(names)]) for i in range(args.failovers)]
            server.shutdown()
            server.server_close()
            unpushed = [staleness(bench, agent, names[(i + 1) % len(names)]) for i in range(max(1, args.failovers // 2))]
        finally:
            stop.set()
            agent.wake()
            runner.join(timeout=60)
        print(f"  lookup staleness after a failover, with pushes: {summary(pushed)} (target < 1 s)")
        print(f"  lookup staleness after a failover, pushes lost (rounds every {AGENT_INTERVAL:g} s): {summary(unpushed)}")

        # 4. store growth per pair per day
        size_before = bench.store.stat().st_size
        sampling_rounds = 5
        for _ in range(sampling_rounds):
            agent._sampled_at.clear()
            agent.round()
        grown = (bench.store.stat().st_size - size_before) / sampling_rounds / args.pairs
        per_day = grown * 86400 / METRICS_INTERVAL
        print(f"  store growth: {grown / 1024:.1f} KiB per pair per sampling round; {per_day / 1024 ** 2:.1f} MiB per "
              f"pair per day at metrics_interval {METRICS_INTERVAL:g} s; steady state under {RAW_RETENTION_DAYS} days "
              f"of raw samples about {RAW_RETENTION_DAYS * per_day / 1024 ** 2:.0f} MiB per pair, plus hourly rollups")
    except Failure as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        bench.cleanup()
    print_done()
    return bench.report_leftovers()


if __name__ == "__main__":
    sys.exit(main())
