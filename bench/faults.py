"""Benchmark: real faults on a synchronous pair on the namespace network, with a witness and a virtual IP.

Prints figures; asserts nothing about speed. Exits non-zero when pgaasctl misbehaves: an acknowledged commit is
missing, two primaries accept writes at once, a stale primary is not fenced, or `pgaasctl apply` does not make
the pair whole with an empty plan after it.

    .venv/bin/python bench/faults.py [--trials 10] [--faults kill9,hung,...] [--hold 15]

One pair (sync, nodes a and b, witness w, virtual IP) in namespaces on 10.213.250.0/24, files under /dev/shm,
failover settings at pgaasctl's defaults. Each trial:

1. Three writers commit a numbered row every 20 ms: one through `pgaasctl connection` (multi-host URI), one
   through `pgaasctl connection --virtual-ip`, and one through the URI with its own 2 s statement deadline (it
   breaks its session when a statement takes longer, as a driver's socket timeout does). A row counts as
   acknowledged once its INSERT returned.
2. After 2 s the fault is injected (see FAULTS). A watcher samples every 20 ms which node is primary (SQL)
   and which namespace holds the virtual IP.
3. Once both writers commit again (and the fault is healed, for faults that heal), the writers stop.
   Downtime per writer = the longest gap between two acknowledged commits from the fault on.
   Lost = acknowledged rows missing on the primary at the end. Time to fence = from the moment the old
   primary could serve again (resumed, started, partition healed) until it stops answering. VIP delay =
   from the promotion seen by the watcher until the new primary holds the address.
4. `pgaasctl apply` (timed: heal time) makes the pair whole; `plan --detailed-exitcode` must be empty.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Failure, LocalBench, machine, print_done  # noqa: E402
from bench.failover import TABLE, Writer  # noqa: E402
from tests.support.local_pair import signal_all  # noqa: E402

SUBNET = "10.213.250.0/24"
VIP = "10.213.250.200"
PAIR = "fault"
PG_BIN = "/usr/lib/postgresql/15/bin"
WARMUP_S = 2.0
CLIENT_DEADLINE_S = 2.0  # the third writer's own statement deadline
RECOVERY_BOUND_S = 60.0
FAULTS = {
    "kill9": "kill -9 of the primary's postmaster",
    "hung": "SIGSTOP of every process of the primary's node, SIGCONT after --hold s",
    "restarted": "the old primary started by hand after the failover (pg_ctl -m immediate, then pg_ctl start)",
    "partition-primary": "the primary's link to the bridge cut for --hold s (standby and witness see each other)",
    "partition-nodes": "primary and standby cut from each other for --hold s, the witness sees both",
    "partition-standby": "the standby's link to the bridge cut for --hold s: it sees no majority, no failover",
    "partition-witness": "the witness cut off for --hold s: nothing may change",
    "repmgrd-killed": "kill -9 of repmgrd on the standby; status must say degraded; apply restarts it",
    "load": "pgbench with 32 clients saturating the primary for 3 x --hold s: no failover may happen",
}


# ---------------------------------------------------------------- the pair

def pair_doc(reconnect_attempts: int | None = None) -> str:
    failover = "" if reconnect_attempts is None else f"  failover: {{reconnect_attempts: {reconnect_attempts}}}\n"
    return (f"kind: Pair\nmetadata: {{name: {PAIR}}}\nspec:\n  provider: local\n  replication: synchronous\n"
            "  nodes: [{name: a}, {name: b}]\n  witness: {name: w}\n"
            f"  virtual_ip: {VIP}\n  deletion_protection: false\n{failover}")


def keep_logs(bench: LocalBench, target: Path) -> None:
    """Copy every node's log directory to `target` (before the cleanup deletes them)."""
    for node in ("a", "b", "w"):
        source = bench.node_dir(PAIR, node) / "log"
        if source.is_dir():
            shutil.copytree(source, target / node, dirs_exist_ok=True)
    print(f"node logs kept in {target}")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Pair:
    bench: LocalBench
    address: dict[str, str] = field(default_factory=dict)

    def load_addresses(self) -> None:
        for node in ("a", "b", "w"):
            config = (self.bench.node_dir(PAIR, node) / "ssh" / "sshd_config").read_text()
            self.address[node] = next(l.split()[1].rsplit(":", 1)[0] for l in config.splitlines()
                                      if l.startswith("ListenAddress"))

    @property
    def password(self) -> str:
        return self.bench.admin_password(PAIR)

    def role(self, node: str) -> str | None:
        try:
            with psycopg.connect(host=self.address[node], user="postgres", password=self.password, dbname="postgres",
                                 connect_timeout=2, autocommit=True) as conn:
                return "standby" if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] else "primary"  # type: ignore[index]
        except psycopg.Error:
            return None

    def role_via_namespace(self, node: str) -> str | None:
        """The node's role asked from inside its own namespace (it may be cut off from the bridge)."""
        result = subprocess.run(
            ["ip", "netns", "exec", f"pgaas-{self.address[node]}", "runuser", "-u", "postgres", "--",
             f"{PG_BIN}/psql", "-X", "-A", "-t", "-h", str(self.bench.node_dir(PAIR, node) / "run"), "-d", "postgres",
             "-c", "SELECT pg_is_in_recovery()"], capture_output=True, text=True, check=False)
        return {"t": "standby", "f": "primary"}.get(result.stdout.strip())

    def primary(self) -> str:
        roles = {n: self.role(n) for n in ("a", "b")}
        primaries = [n for n, r in roles.items() if r == "primary"]
        if len(primaries) != 1:
            raise Failure(f"expected one primary, found {roles}")
        return primaries[0]

    def vip_holders(self) -> list[str]:
        found = []
        for node in ("a", "b"):
            shown = subprocess.run(["ip", "-n", f"pgaas-{self.address[node]}", "-4", "-o", "addr", "show"],
                                   capture_output=True, text=True, check=False).stdout
            if f" {VIP}/" in shown:
                found.append(node)
        return found

    def namespace_pids(self, node: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", f"pgaas-{self.address[node]}"], capture_output=True, text=True,
                             check=False).stdout
        return [int(p) for p in out.split()]

    def veth(self, node: str) -> str:
        return f"pgv{int.from_bytes(bytes(int(x) for x in self.address[node].split('.')), 'big'):08x}"

    def bridge(self) -> str:
        return f"pgbr{int.from_bytes(bytes(int(x) for x in SUBNET.split('/')[0].split('.')), 'big'):08x}"

    def as_server_user(self, node: str, command: list[str]) -> None:
        subprocess.run(["ip", "netns", "exec", f"pgaas-{self.address[node]}", "runuser", "-u", "postgres", "--",
                        *command], check=True, capture_output=True, timeout=120)

    def etc(self, node: str) -> str:
        return str(self.bench.node_dir(PAIR, node) / "etc")

    def healthy(self) -> str:
        """Apply until whole, the plan empty and the virtual IP on the primary; returns the primary."""
        for _ in range(3):
            self.bench.apply()
            status = self.bench.status()[0]
            if not status["degraded"] and not status["error"]:
                break
        else:
            raise Failure(f"the pair is not healthy after apply: {status}")
        _, empty, out = self.bench.plan_is_empty()
        if not empty:
            raise Failure(f"plan after apply is not empty:\n{out}")
        primary = self.primary()
        wait(lambda: self.vip_holders() == [primary], 10, "the virtual IP on the primary")
        return primary


def wait(predicate: Callable[[], object], bound: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > bound:
            raise Failure(f"timed out after {bound:.0f} s waiting for {what}")
        time.sleep(0.02)  # polling
    return time.monotonic() - start


# ---------------------------------------------------------------- one trial

@dataclass
class Watcher:
    """Samples every 20 ms: is the standby-to-be primary yet, and who holds the virtual IP."""

    pair: Pair
    node: str
    promoted_at: float | None = None
    vip_at: float | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(host=self.pair.address[self.node], user="postgres", autocommit=True,
                                           password=self.pair.password, dbname="postgres", connect_timeout=2)
                if self.promoted_at is None and not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    self.promoted_at = time.monotonic()
            except psycopg.Error:
                conn = None
            if self.vip_at is None and self.node in self.pair.vip_holders():
                self.vip_at = time.monotonic()
            time.sleep(0.02)  # the sampling period

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Result:
    downtime_uri: float
    downtime_deadline: float  # through the URI, by a client with a 2 s statement deadline
    downtime_vip: float
    lost: int
    fence: float | None
    vip_delay: float | None
    heal: float
    promotion: float | None  # from the fault to the standby's promotion
    failover: bool


def longest_gap(writer: Writer, since: float) -> float:
    times = [a.at for a in writer.acks]
    gaps = [b - a for a, b in zip(times, times[1:]) if b >= since]
    return max(gaps, default=0.0)


def trial(pair: Pair, fault: str, hold: float, next_n: int) -> tuple[Result, int]:
    old = pair.healthy()
    new = "b" if old == "a" else "a"
    uri = pair.bench.uri(PAIR)
    vip_uri = pair.bench.pgaasctl(["connection", PAIR, "--virtual-ip", "--role", "postgres"]).proc.stdout.strip()
    writers = [Writer(uri, pair.password, next_n), Writer(vip_uri, pair.password, next_n + 1_000_000),
               Writer(uri, pair.password, next_n + 2_000_000, deadline=CLIENT_DEADLINE_S)]
    for writer in writers:
        writer.start()
    time.sleep(WARMUP_S)  # acknowledged commits before the fault
    watcher = Watcher(pair, new)
    injected = time.time()
    injected_monotonic = time.monotonic()
    fence: float | None = None
    try:
        fence = inject(pair, fault, old, new, hold)
        for name, writer in zip(("URI", "VIP", "deadline URI"), writers):
            try:
                wait(lambda w=writer: bool(w.acks) and w.acks[-1].at > injected + 0.1 and w.acks[-1].at > time.time() - 0.5,
                     RECOVERY_BOUND_S, f"the {name} writer to commit again")
            except Failure as exc:
                raise Failure(f"{fault}: {exc}; its last errors: {[e for _, e in writer.errors[-3:]]}") from None
        time.sleep(1.0)  # acknowledged commits after recovery
    finally:
        stuck = [not w.stop() for w in writers]
        watcher.stop()
    if any(stuck):
        raise Failure(f"{fault}: a writer is stuck in a commit")
    primary = pair.primary()
    if fault not in ("partition-standby", "partition-witness", "repmgrd-killed", "load") and primary != new:
        raise Failure(f"{fault}: {new} should be the primary now, {primary} is")
    lost = count_lost(pair, primary, writers)
    vip_delay = (watcher.vip_at - watcher.promoted_at) if watcher.promoted_at and watcher.vip_at else None
    heal = pair.bench.apply().elapsed
    pair.healthy()
    result = Result(downtime_uri=longest_gap(writers[0], injected), downtime_vip=longest_gap(writers[1], injected),
                    downtime_deadline=longest_gap(writers[2], injected),
                    lost=lost, fence=fence, vip_delay=vip_delay, heal=heal, failover=watcher.promoted_at is not None,
                    promotion=watcher.promoted_at - injected_monotonic if watcher.promoted_at else None)
    return result, max(w.next_n for w in writers) + 1


def count_lost(pair: Pair, primary: str, writers: list[Writer]) -> int:
    acked = [a.n for w in writers for a in w.acks]
    with psycopg.connect(host=pair.address[primary], user="postgres", password=pair.password, dbname="postgres",
                         autocommit=True) as conn:
        present = {r[0] for r in conn.execute(f"SELECT n FROM {TABLE} WHERE n = ANY(%s)", (acked,)).fetchall()}
    return len(set(acked) - present)


def inject(pair: Pair, fault: str, old: str, new: str, hold: float) -> float | None:
    """Inject `fault`; returns the time to fence, where a stale primary comes back."""
    if fault == "kill9":
        pid = int((pair.bench.node_dir(PAIR, old) / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        return None
    if fault == "hung":
        pids = pair.namespace_pids(old)
        signal_all(pids, signal.SIGSTOP)
        try:
            wait(lambda: pair.role(new) == "primary", RECOVERY_BOUND_S, f"{new} to be promoted")
            time.sleep(max(0.0, hold - 0.0))  # the frozen time
        finally:
            signal_all(pids, signal.SIGCONT)
        return wait(lambda: pair.role(old) != "primary", 30, f"the guard to fence {old}")
    if fault == "restarted":
        pair.as_server_user(old, [f"{PG_BIN}/pg_ctl", "-D", pair.etc(old), "-m", "immediate", "-w", "stop"])
        wait(lambda: pair.role(new) == "primary", RECOVERY_BOUND_S, f"{new} to be promoted")
        log = str(pair.bench.node_dir(PAIR, old) / "log" / "postgresql.log")
        pair.as_server_user(old, [f"{PG_BIN}/pg_ctl", "-D", pair.etc(old), "-l", log, "-w", "start"])
        return wait(lambda: pair.role(old) != "primary", 30, f"the guard to fence {old}")
    if fault == "partition-primary":
        ip("link", "set", pair.veth(old), "nomaster")
        try:
            wait(lambda: pair.role(new) == "primary", RECOVERY_BOUND_S, f"{new} to be promoted")
            time.sleep(hold)
        finally:
            ip("link", "set", pair.veth(old), "master", pair.bridge())
        return wait(lambda: pair.role(old) != "primary", 30, f"the guard to fence {old}")
    if fault == "partition-nodes":
        a, b = pair.address[old], pair.address[new]
        ip("-n", f"pgaas-{a}", "route", "add", "blackhole", f"{b}/32")
        ip("-n", f"pgaas-{b}", "route", "add", "blackhole", f"{a}/32")
        try:
            wait(lambda: pair.role(new) == "primary", RECOVERY_BOUND_S, f"{new} to be promoted")
            time.sleep(hold)
        finally:
            ip("-n", f"pgaas-{a}", "route", "del", "blackhole", f"{b}/32")
            ip("-n", f"pgaas-{b}", "route", "del", "blackhole", f"{a}/32")
        return wait(lambda: pair.role(old) != "primary", 30, f"the guard to fence {old}")
    if fault == "partition-standby":
        ip("link", "set", pair.veth(new), "nomaster")
        try:
            time.sleep(hold)
            if pair.role_via_namespace(new) == "primary":
                raise Failure("partition-standby: the cut-off standby promoted itself")
        finally:
            ip("link", "set", pair.veth(new), "master", pair.bridge())
        return None
    if fault == "partition-witness":
        ip("link", "set", pair.veth("w"), "nomaster")
        try:
            time.sleep(hold)
        finally:
            ip("link", "set", pair.veth("w"), "master", pair.bridge())
        return None
    if fault == "load":
        result = subprocess.run(
            ["pgbench", "-h", pair.address[old], "-U", "postgres", "-c", "32", "-j", "2", "-T", str(int(hold * 3)),
             "postgres"], env={**os.environ, "PGPASSWORD": pair.password}, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise Failure(f"load: pgbench failed: {result.stderr.strip()[-300:]}")
        if pair.role(new) != "standby" or pair.role(old) != "primary":
            raise Failure("load: a failover happened under load (a false failover)")
        return None
    if fault == "repmgrd-killed":
        pid = int((pair.bench.node_dir(PAIR, new) / "run" / "repmgrd.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait(lambda: any("automatic failover is off" in w for w in pair.bench.status()[0]["warnings"]), 10,
             "status to say automatic failover is off")
        return None
    raise SystemExit(f"unknown fault {fault}")


# ---------------------------------------------------------------- figures

def summary(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} / {p95:.2f} / {ordered[-1]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--hold", type=float, default=15.0, help="seconds a freeze or partition lasts")
    parser.add_argument("--reconnect-attempts", type=int, default=None,
                        help="the pair's failover.reconnect_attempts (default: pgaasctl's)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the node logs here before the cleanup")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    print(f"bench/faults.py: {args.trials} trial(s) per fault, hold {args.hold:g} s; {machine()}")
    bench = LocalBench("faults", subnet=SUBNET)
    results: dict[str, list[Result]] = {}
    try:
        (bench.specs / f"pair-{PAIR}.yaml").write_text(pair_doc(args.reconnect_attempts))
        bench.apply()
        pair = Pair(bench)
        pair.load_addresses()
        with psycopg.connect(host=pair.address[pair.primary()], user="postgres", password=pair.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (n bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        if "load" in faults:  # pgbench's tables, made once (they replicate)
            subprocess.run(["pgbench", "-h", pair.address[pair.primary()], "-U", "postgres", "-i", "-s", "10",
                            "postgres"], env={**os.environ, "PGPASSWORD": pair.password}, capture_output=True,
                           check=True)
        next_n = 1
        for fault in faults:
            for number in range(1, args.trials + 1):
                result, next_n = trial(pair, fault, args.hold, next_n)
                results.setdefault(fault, []).append(result)
                promoted = "-" if result.promotion is None else f"{result.promotion:.2f} s"
                print(f"  {fault} #{number}: promotion {promoted}, downtime uri {result.downtime_uri:.2f} s, "
                      f"vip {result.downtime_vip:.2f} s, uri with deadline {result.downtime_deadline:.2f} s, "
                      f"lost {result.lost}, fence {'-' if result.fence is None else f'{result.fence:.2f} s'}, "
                      f"vip after promotion {'-' if result.vip_delay is None else f'{result.vip_delay:.2f} s'}, "
                      f"heal {result.heal:.2f} s", flush=True)
                if result.lost:
                    raise Failure(f"{fault}: {result.lost} acknowledged commit(s) lost")
    except Failure as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        if args.keep_logs:
            keep_logs(bench, args.keep_logs)
        bench.cleanup()
    print()
    print("fault | trials | promotion after the fault (median / p95 / max, s) | downtime via URI | via URI with a "
          f"{CLIENT_DEADLINE_S:g} s client deadline | via VIP | lost | "
          "time to fence | VIP after promotion | heal (apply)")
    for fault, rows in results.items():
        fences = [r.fence for r in rows if r.fence is not None]
        delays = [r.vip_delay for r in rows if r.vip_delay is not None]
        promotions = [r.promotion for r in rows if r.promotion is not None]
        print(f"{fault} | {len(rows)} | {summary(promotions)} | {summary([r.downtime_uri for r in rows])} | "
              f"{summary([r.downtime_deadline for r in rows])} | "
              f"{summary([r.downtime_vip for r in rows])} | "
              f"{sum(r.lost for r in rows)} | {summary(fences)} | {summary(delays)} | {summary([r.heal for r in rows])}")
    print_done()
    return bench.report_leftovers()


if __name__ == "__main__":
    sys.exit(main())
