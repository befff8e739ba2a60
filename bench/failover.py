"""Benchmark: client-side downtime and lost commits when the primary of a synchronous local pair dies.

Prints figures; asserts nothing about speed. Exits non-zero when pgaasctl misbehaves: a command fails,
an acknowledged commit is missing on the new primary, no failover happens within the bound, or the
pair is not whole and synchronous again after `pgaasctl apply`.

    .venv/bin/python bench/failover.py [--trials 10] [--interval 0.02] [--no-default-trial]

One synchronous pair of provider `local` (two loopback addresses in 127.0.3.0/24, files under /dev/shm),
failover settings monitor_interval 1s, reconnect_attempts 3, reconnect_interval 1s, connect_timeout 2s.
Each trial:

1. A writer thread commits a numbered row every --interval seconds through the URI of
   `pgaasctl connection` (multi-host, target_session_attrs=read-write), psycopg in autocommit mode. A
   row counts as acknowledged only once its INSERT (= COMMIT) returned; on any error the writer drops
   the connection and reconnects (every 20 ms for the first 10 s of an outage, then every 100 ms),
   using a new number for the next row. Each ack records the time and the node that acknowledged it.
2. After 2 s of acks the primary is killed: odd trials `pg_ctl -m immediate stop`, even trials
   `kill -9` of the postmaster (pid from data/postmaster.pid). repmgrd promotes the standby.
3. Downtime (client side) = first ack by the new primary - last ack by the old one. The new primary's
   postgresql.log (millisecond timestamps) splits it, in the order things happened: promote request
   (failure detection by repmgrd), ready for read-write (promotion), synchronous_standby_names
   cleared (promote hook, before or after the promotion), first ack (client reconnect + commit).
4. `pgaasctl apply` (timed) rejoins the old primary as a standby (pg_rewind) and restores synchronous
   replication, the writer still running: the longest gap between acks during that apply is printed.
   Then the writer stops, every acknowledged row of the trial is looked up on the primary (missing rows
   = lost commits), `pgaasctl status --json` must show the pair whole and synchronous, and `pgaasctl
   plan` must be empty.

The nodes swap roles with every trial. Then, unless --no-default-trial, the Pair's failover block is set
to repmgr's defaults (monitor_interval_secs=2, reconnect_attempts=6, reconnect_interval=10; our
connect_timeout 2s kept) and applied; the bench checks that repmgr.conf was rewritten and repmgrd
restarted on both nodes (if not, it says so and makes a second pair with those settings), and runs
one more trial with pg_ctl -m immediate.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (
    ADDRESSES,
    REPMGR_DEFAULT_FAILOVER,
    TUNED_FAILOVER,
    Failure,
    LocalBench,
    fmt,
    machine,
    median_runs,
    print_done,
    tail,
)

PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"
DOWNTIME_TARGET_S = 5.0
WARMUP_S = 2.0  # acks on the primary before the kill (also lets repmgrd settle after an apply)
AFTER_S = 1.0  # acks on the new primary before the rejoin starts
FAILOVER_BOUND_S = {"tuned": 60.0, "default": 240.0}
SETTLE_BOUND_S = 30.0
TABLE = "bench_failover"


# ---------------------------------------------------------------- the writer

@dataclass
class Ack:
    n: int
    at: float  # time.time(), comparable with the server logs' timestamps
    host: str


@dataclass
class Writer:
    """Commits a numbered row every `interval` seconds; records what was acknowledged, and by whom."""

    uri: str
    password: str
    next_n: int
    interval: float = 0.02
    acks: list[Ack] = field(default_factory=list)
    in_doubt: list[int] = field(default_factory=list)  # the INSERT raised: committed or not, unknown
    local_only: list[int] = field(default_factory=list)  # the sync wait was cancelled: not acknowledged
    errors: list[tuple[float, str]] = field(default_factory=list)
    connects: int = 0
    failed_connects: int = 0
    deadline: float | None = None  # seconds a statement may take before the client breaks its session itself

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._conn: psycopg.Connection | None = None
        self._warned = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop; False if the writer is stuck (e.g. a commit waiting for a standby that is gone)."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive() and self._conn is not None:
            try:
                self._conn.cancel_safe(timeout=2)
            except psycopg.Error as exc:  # best effort: the thread is a daemon
                self._record_error(exc)
            self._thread.join(5)
        return not self._thread.is_alive()

    def acks_by(self, host: str | None = None) -> list[Ack]:
        acks = list(self.acks)
        return acks if host is None else [a for a in acks if a.host == host]

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if "synchronous replication" in (diag.message_primary or ""):
            self._warned = True

    def _connect(self) -> None:
        try:
            conn = psycopg.connect(self.uri, password=self.password, autocommit=True)
        except psycopg.Error as exc:
            self.failed_connects += 1
            self._record_error(exc)
            return
        conn.add_notice_handler(self._notice)
        self.connects += 1
        self._conn = conn

    def _record_error(self, exc: Exception) -> None:
        if len(self.errors) < 10000:
            self.errors.append((time.time(), str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))

    def _run(self) -> None:
        due = time.perf_counter()
        outage_started: float | None = None
        while not self._stop.is_set():
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # the writer's cadence
            step = self.interval
            if outage_started is not None and time.perf_counter() - outage_started > 10:
                step = max(step, 0.1)
            due = max(due + step, time.perf_counter())
            if self._conn is None:
                self._connect()
                if self._conn is None:
                    if outage_started is None:
                        outage_started = time.perf_counter()
                    continue
            n = self.next_n
            self.next_n += 1
            self._warned = False
            timer = None
            if self.deadline is not None:
                timer = threading.Timer(self.deadline, _break_session, (self._conn,))
                timer.start()
            try:
                self._conn.execute(f"INSERT INTO {TABLE} (n) VALUES (%s)", (n,))
            except psycopg.Error as exc:
                self.in_doubt.append(n)
                self._record_error(exc)
                try:
                    self._conn.close()
                except psycopg.Error:
                    pass
                self._conn = None
                if outage_started is None:
                    outage_started = time.perf_counter()
                continue
            finally:
                if timer is not None:
                    timer.cancel()
            now = time.time()
            if self._warned:
                self.local_only.append(n)
                continue
            self.acks.append(Ack(n, now, self._conn.info.host))
            outage_started = None
        if self._conn is not None:
            self._conn.close()


def _break_session(conn: psycopg.Connection) -> None:
    """The client's own deadline passed: shut its socket down, as a driver's socket timeout does. The statement
    under way fails at once (its outcome unknown, so not counted as acknowledged) and the writer reconnects."""
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # the session ended meanwhile


# ---------------------------------------------------------------- the pair

@dataclass
class Roles:
    primary: str
    standby: str
    address: dict[str, str]  # node -> host address
    healthy: bool
    detail: str


def roles_of(bench: LocalBench, pair: str) -> Roles:
    entry = next(p for p in bench.status() if p["pair"] == pair)
    nodes = entry["nodes"]
    primary = next((n["name"] for n in nodes if n["role"] == "primary"), "")
    standby = next((n["name"] for n in nodes if n["role"] == "standby"), "")
    sync = any(n["role"] == "standby" and (n["replication"] or "").endswith("sync") and "async" not in (n["replication"] or "")
               for n in nodes)
    healthy = bool(primary and standby and sync and not entry["degraded"] and not entry["error"]
                   and all(n["repmgrd"] for n in nodes))
    detail = "; ".join(f"{n['name']} {n['role']} {n['replication'] or ''} repmgrd={n['repmgrd']}".strip() for n in nodes)
    if entry["degraded"]:
        detail += " (degraded)"
    if entry["error"]:
        detail += f" error: {entry['error']}"
    return Roles(primary, standby, {n["name"]: n["address"].rsplit(":", 1)[0] for n in nodes}, healthy, detail)


def wait_healthy(bench: LocalBench, pair: str) -> Roles:
    deadline = time.perf_counter() + SETTLE_BOUND_S
    while True:
        roles = roles_of(bench, pair)
        if roles.healthy:
            return roles
        if time.perf_counter() > deadline:
            raise Failure(f"pair {pair} is not whole and synchronous {SETTLE_BOUND_S:.0f} s after apply: {roles.detail}")
        time.sleep(0.5)  # polling pgaasctl status


def kill_primary(bench: LocalBench, pair: str, node: str, method: str) -> None:
    base = bench.node_dir(pair, node)
    if method == "pg_ctl":
        proc = subprocess.run(["runuser", "-u", "postgres", "--", PG_CTL, "-D", str(base / "etc"), "-m", "immediate", "stop"],
                              capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise Failure(f"pg_ctl -m immediate stop of {node} failed: {proc.stderr.strip()}")
    else:
        pid = int((base / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)


def repmgr_settings(bench: LocalBench, pair: str, node: str) -> dict[str, str]:
    text = (bench.node_dir(pair, node) / "etc" / "repmgr.conf").read_text()
    keys = ("monitor_interval_secs", "reconnect_attempts", "reconnect_interval")
    return {k: v for k, v in (line.split("=", 1) for line in text.splitlines() if "=" in line) if k in keys}


def repmgrd_pid(bench: LocalBench, pair: str, node: str) -> str:
    try:
        return (bench.node_dir(pair, node) / "run" / "repmgrd.pid").read_text().strip()
    except OSError:
        return "?"


# ---------------------------------------------------------------- where the downtime went

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+) ")
MILESTONES = (
    ("promote", "received promotion request"),
    ("promote", "received promote request"),
    ("ready", "database system is ready to accept connections"),
    ("hook", 'parameter "synchronous_standby_names" changed to ""'),
)


def log_milestones(log: Path, offset: int) -> dict[str, float]:
    """Times (epoch) of the promotion milestones in a node's postgresql.log, after byte `offset`."""
    found: dict[str, float] = {}
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        for key, needle in MILESTONES:
            if key not in found and needle in line:
                stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
                # the server logs in log_timezone: UTC, or else taken to be this machine's local time
                found[key] = (stamp.replace(tzinfo=UTC) if m.group(2) in ("UTC", "GMT") else stamp).timestamp()
    return found


def log_excerpt(path: Path, offset: int, lines: int = 12) -> list[str]:
    """The last lines a log gained after byte `offset`."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return [f"({path} unreadable)"]
    return [line for line in text.splitlines() if line.strip()][-lines:]


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------- one trial

@dataclass
class TrialResult:
    label: str
    method: str
    old: str
    new: str
    downtime: float
    lost: int
    acked: int
    in_doubt: int
    in_doubt_committed: int
    local_only: int
    rejoin: float
    rejoin_gap: float
    breakdown: str
    failed: list[str]
    notes: list[str]


def count_missing(uri: str, password: str, numbers: list[int]) -> tuple[int, list[int]]:
    with psycopg.connect(uri, password=password, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT a.n FROM unnest(%s::bigint[]) AS a(n) WHERE NOT EXISTS (SELECT 1 FROM {TABLE} b WHERE b.n = a.n) "
            "ORDER BY a.n", (numbers,)).fetchall()
    missing = [r[0] for r in rows]
    return len(missing), missing[:10]


def count_present(uri: str, password: str, numbers: list[int]) -> int:
    if not numbers:
        return 0
    with psycopg.connect(uri, password=password, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {TABLE} WHERE n = ANY(%s)", (numbers,)).fetchone()[0]  # type: ignore[index]


def wait_for(predicate: Any, bound: float, what: str) -> None:
    deadline = time.perf_counter() + bound
    while not predicate():
        if time.perf_counter() > deadline:
            raise Failure(f"{what} did not happen within {bound:.0f} s")
        time.sleep(0.02)  # polling the writer's acks


def trial(bench: LocalBench, pair: str, label: str, method: str, next_n: int, interval: float, bound: float) -> tuple[TrialResult, int]:
    roles = wait_healthy(bench, pair)
    uri = bench.uri(pair)
    password = bench.admin_password(pair)
    old, new = roles.primary, roles.standby
    old_host, new_host = roles.address[old], roles.address[new]
    failed: list[str] = []
    notes: list[str] = []
    writer = Writer(uri, password, next_n, interval)
    writer.start()
    try:
        wait_for(lambda: len(writer.acks_by(old_host)) >= 1, 30, f"a first commit on {old}")
        first = writer.acks_by(old_host)[0].at
        wait_for(lambda: time.time() - first >= WARMUP_S, WARMUP_S + 5, "warm-up")
        new_log = bench.node_dir(pair, new) / "log" / "postgresql.log"
        offset = log_size(new_log)
        killed_at = time.time()
        kill_primary(bench, pair, old, method)
        try:
            wait_for(lambda: bool(writer.acks_by(new_host)), bound, f"a commit on {new} after killing {old}")
        except Failure:
            lines = log_excerpt(bench.node_dir(pair, new) / "log" / "repmgr.log", 0, 8)
            raise Failure(f"no commit on {new} within {bound:.0f} s of killing {old} (pgaasctl status: "
                          f"{roles_of(bench, pair).detail}); {new} repmgr.log ends:\n"
                          + "\n".join(f"      {line}" for line in lines)) from None
        first_new = writer.acks_by(new_host)[0].at
        last_old = writer.acks_by(old_host)[-1].at
        downtime = first_new - last_old
        wait_for(lambda: time.time() - first_new >= AFTER_S, AFTER_S + 5, "acks on the new primary")
        # read the log only now: the postmaster logs "ready to accept connections" when it reaps the startup
        # process, which can be after the first commit on the promoted node (read at once, it was sometimes missing)
        marks = log_milestones(new_log, offset)
        # in the order they happened (the promote hook may clear synchronous_standby_names before or after promoting)
        events = sorted([(marks[key], name) for key, name in (("promote", "promote request"), ("ready", "read-write"),
                                                              ("hook", "sync names cleared")) if key in marks]
                        + [(first_new, "first ack")])
        parts = []
        previous = killed_at
        for at, name in events:
            parts.append(f"{name} +{at - previous:.2f}")
            previous = at
        breakdown = f"last ack {last_old - killed_at:+.2f} vs kill; kill -> " + ", ".join(parts)
        # rejoin, the writer still running
        before_apply = time.time()
        rejoin_logs = {n: log_size(bench.node_dir(pair, n) / "log" / "repmgr.log") for n in (old, new)}
        try:
            rejoin_time = bench.apply().elapsed
        except Failure as exc:
            # a pgaasctl failure: report it with repmgrd's log lines, then apply once more to go on measuring
            failed_at = time.time()
            rejoin_time = failed_at - before_apply
            error = next((line for line in str(exc).splitlines() if line.startswith("Error:")), tail(str(exc), 1))
            ops = [line.strip() for line in str(exc).splitlines() if line.strip().startswith("pair ")]
            failed.append(f"rejoin apply failed [{error}] after {rejoin_time:.2f} s, at "
                          f"{datetime.fromtimestamp(failed_at):%H:%M:%S.%f}; host operations: {' | '.join(ops)}")
            notable = [line for line in log_excerpt(bench.node_dir(pair, old) / "log" / "repmgr.log", rejoin_logs[old], 400)
                       if any(k in line for k in ("reconnected", "set_repmgrd_pid", "switching", "restored", "starting up"))]
            notes.append(f"{old} repmgr.log since the apply started (the old repmgrd registering itself again):\n"
                         + "\n".join(f"      {line}" for line in notable[-6:] or ["(no reconnect/registration line yet)"]))
            again = bench.apply()
            notes.append(f"a second apply succeeded in {again.elapsed:.2f} s (counted in the rejoin time)")
            rejoin_time += again.elapsed
        after_apply = time.time()
        during = [a.at for a in writer.acks if before_apply - 1 <= a.at <= after_apply + 0.5]
        gaps = [b - a for a, b in itertools.pairwise(during)]
        rejoin_gap = max(gaps) if gaps else float("nan")
        if not any(a.at > after_apply for a in writer.acks):
            wait_for(lambda: any(a.at > after_apply for a in writer.acks), 30, "a commit after the rejoin")
    finally:
        stuck = not writer.stop()
    if stuck:
        failed.append("the writer was stuck in a commit when asked to stop")
    acked = [a.n for a in writer.acks]
    lost, sample = count_missing(uri, password, acked)
    if lost:
        failed.append(f"{lost} acknowledged commits missing on the new primary (e.g. {sample})")
    committed_in_doubt = count_present(uri, password, writer.in_doubt)
    roles_after = wait_healthy(bench, pair)
    if roles_after.primary != new:
        failed.append(f"after the rejoin the primary is {roles_after.primary}, expected {new}")
    _, empty, plan_out = bench.plan_is_empty()
    if not empty:
        failed.append(f"plan after the rejoin is not empty:\n{tail(plan_out, 15)}")
    result = TrialResult(
        label=label, method=method, old=old, new=new, downtime=downtime, lost=lost, acked=len(acked),
        in_doubt=len(writer.in_doubt), in_doubt_committed=committed_in_doubt, local_only=len(writer.local_only),
        rejoin=rejoin_time, rejoin_gap=rejoin_gap, breakdown=breakdown, failed=failed, notes=notes,
    )
    return result, writer.next_n


def show(result: TrialResult) -> None:
    kill = "pg_ctl -m immediate" if result.method == "pg_ctl" else "kill -9 postmaster"
    print(f"  {result.label}: {kill} of {result.old}: downtime {fmt(result.downtime)}, lost {result.lost} of "
          f"{result.acked} acked, {result.in_doubt} in doubt ({result.in_doubt_committed} of them committed)"
          + (f", {result.local_only} committed locally only (sync wait cancelled)" if result.local_only else "")
          + f"; {result.new} now primary; rejoin apply {fmt(result.rejoin)} "
          f"(longest commit gap during it {result.rejoin_gap:.2f} s)", flush=True)
    print(f"    {result.breakdown}", flush=True)
    for item in result.failed:
        print(f"    FAILURE: {item}", flush=True)
    for item in result.notes:
        print(f"    {item}", flush=True)


def create_table(bench: LocalBench, pair: str) -> None:
    with psycopg.connect(bench.uri(pair), password=bench.admin_password(pair), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (n bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between the writer's commits")
    parser.add_argument("--no-default-trial", action="store_true", help="skip the trial with repmgr's default settings")
    args = parser.parse_args()

    bench = LocalBench("failover")
    status = 0
    print(f"pgaasctl failover bench: synchronous local pair (local_dir {bench.local_dir}, addresses {ADDRESSES}), "
          f"writer every {args.interval * 1000:.0f} ms; {machine()}", flush=True)
    results: list[TrialResult] = []
    try:
        bench.write_pair("fo", TUNED_FAILOVER)
        created = bench.apply()
        create_table(bench, "fo")
        print(f"pair created in {fmt(created.elapsed)}; failover settings {TUNED_FAILOVER}", flush=True)
        next_n = 1
        aborted = False
        for k in range(args.trials):
            method = "pg_ctl" if k % 2 == 0 else "kill9"
            try:
                result, next_n = trial(bench, "fo", f"trial {k + 1:2d}", method, next_n, args.interval,
                                       FAILOVER_BOUND_S["tuned"])
            except Failure as exc:
                print(f"  trial {k + 1}: FAILURE: {exc}", flush=True)
                status = 1
                aborted = True
                break
            show(result)
            results.append(result)
            if result.failed:
                status = 1
        if results:
            downtimes = [r.downtime for r in results]
            median = statistics.median(downtimes)
            verdict = "met" if median < DOWNTIME_TARGET_S else "MISSED"
            lost = [r.lost for r in results]
            print(f"downtime over {len(results)} trials (tuned: {TUNED_FAILOVER}): "
                  + median_runs(downtimes, f", max {fmt(max(downtimes))} "
                                           f"(target median < {DOWNTIME_TARGET_S:.0f} s: {verdict})"))
            for method, name in (("pg_ctl", "pg_ctl -m immediate"), ("kill9", "kill -9 postmaster")):
                some = [r.downtime for r in results if r.method == method]
                if some:
                    print(f"  {name}: {median_runs(some, f' over {len(some)}')}")
            print(f"lost commits per trial: {lost} (target: 0 in every trial: "
                  f"{'met' if not any(lost) else 'MISSED'})")
            rejoins = [r.rejoin for r in results]
            print(f"rejoin apply (pg_rewind + sync restored): median {fmt(statistics.median(rejoins))}, "
                  f"max {fmt(max(rejoins))}; longest commit gap during it: median "
                  f"{statistics.median(r.rejoin_gap for r in results):.2f} s, max {max(r.rejoin_gap for r in results):.2f} s",
                  flush=True)
            bad = [r for r in results if r.failed]
            if bad:
                kinds: dict[str, int] = {}
                for r in bad:
                    for f in r.failed:
                        kind = f.split("]", 1)[0] + "]" if "[" in f else f.splitlines()[0]
                        kinds[kind] = kinds.get(kind, 0) + 1
                print(f"pgaasctl failures in {len(bad)} of {len(results)} trials: "
                      + "; ".join(f"{kind} x{count}" for kind, count in kinds.items()), flush=True)

        if not args.no_default_trial and not aborted:
            status |= default_trial(bench, next_n, args.interval)
    except Failure as exc:
        print(f"FAILURE: {exc}", file=sys.stderr)
        status = 1
    finally:
        bench.cleanup()
        status |= bench.report_leftovers()
    print_done()
    return status


def default_trial(bench: LocalBench, next_n: int, interval: float) -> int:
    """One trial with repmgr's default failover settings, applied to the existing pair if pgaasctl can."""
    pair = "fo"
    nodes = ["fo-a", "fo-b"]
    before = {n: repmgrd_pid(bench, pair, n) for n in nodes}
    bench.write_pair(pair, REPMGR_DEFAULT_FAILOVER)
    changed = bench.apply()
    wanted = {"monitor_interval_secs": "2", "reconnect_attempts": "6", "reconnect_interval": "10"}
    settings = {n: repmgr_settings(bench, pair, n) for n in nodes}
    after = {n: repmgrd_pid(bench, pair, n) for n in nodes}
    rewritten = all(settings[n] == wanted for n in nodes)
    restarted = all(before[n] != after[n] for n in nodes)
    print(f"failover settings -> repmgr defaults {REPMGR_DEFAULT_FAILOVER}: apply {fmt(changed.elapsed)}; "
          f"repmgr.conf rewritten on both nodes: {'yes' if rewritten else 'NO'}; repmgrd restarted on both: "
          f"{'yes' if restarted else 'NO'} (pids {before} -> {after})", flush=True)
    status = 0
    if not (rewritten and restarted):
        print(f"  GAP: changing the failover block of an existing pair did not reach repmgrd ({settings}); "
              "making a second pair with the default settings for this trial", flush=True)
        status = 1
        bench.write_pair(pair, TUNED_FAILOVER)
        pair = "fodefault"
        bench.write_pair(pair, REPMGR_DEFAULT_FAILOVER)
        bench.apply()
        create_table(bench, pair)
    try:
        result, _ = trial(bench, pair, "default settings", "pg_ctl", next_n, interval, FAILOVER_BOUND_S["default"])
    except Failure as exc:
        print(f"  default-settings trial: FAILURE: {exc}", flush=True)
        return 1
    show(result)
    print(f"downtime with repmgr's default settings: {fmt(result.downtime)} (vs the tuned median above)", flush=True)
    return status | (1 if result.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
