"""Run planned changes on the primary, one change at a time, and record each in the store when it succeeded."""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pgaasctl.errors import LockHeld, PgaasError
from pgaasctl.live.connect import connect
from pgaasctl.plan.build import LivePair
from pgaasctl.plan.model import Change, Statement, count_changes
from pgaasctl.store import Store
from pgaasctl.store.store import Origin

_ALREADY_EXISTS = {"42710", "42P04"}  # duplicate_object (a role), duplicate_database

ProgressCallback = Callable[[str, Change, str], None]  # (pair, change, "start" | "done" | "failed")


class ApplyFailed(PgaasError):
    """A statement failed. Changes before it are applied and recorded; a rerun converges."""


@dataclass
class ApplyResult:
    pair: str
    done: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # add / change / destroy, of what ran
    standby_wait: float | None = None


def advisory_key(pair: str) -> int:
    return int.from_bytes(hashlib.sha256(f"pgaasctl:{pair}".encode()).digest()[:8], "big", signed=True)


def take_advisory_lock(conn: psycopg.Connection, pair: str) -> None:
    """pg_advisory_lock on the primary, so two pgaasctl (even with different stores) never write at once.
    Held by the session: it ends when the connection closes."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(pair),)).fetchone()[0]  # type: ignore[index]
    if not got:
        holder = conn.execute(
            """SELECT a.pid, a.usename, coalesce(host(a.client_addr), 'local'), a.application_name
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.objid = (%s::bigint & 4294967295)::oid AND l.granted LIMIT 1""",
            (advisory_key(pair),),
        ).fetchone()
        who = f"backend pid {holder[0]} ({holder[1]} from {holder[2]}, {holder[3]})" if holder else "another session"
        raise LockHeld(f"pair {pair!r}: another apply is running on the primary: {who} holds pgaasctl's advisory lock")


def waves(changes: list[Change]) -> list[list[Change]]:
    """Runs of consecutive changes of one kind and direction (the plan is already in dependency order)."""
    out: list[tuple[tuple[bool, str], list[Change]]] = []
    for change in changes:
        key = (change.action == "delete", change.kind)
        if out and out[-1][0] == key:
            out[-1][1].append(change)
        else:
            out.append((key, [change]))
    return [wave for _, wave in out]


def _lane(change: Change) -> str | None:
    """Changes in one lane run one after another; None: free to run beside anything in its wave."""
    if change.action == "delete":
        return "delete"  # DROP OWNED and REVOKE touch ACLs of objects shared between roles
    if change.kind == "grant":
        return f"grants in {change.name.split('.', 1)[0]}"  # one database's ACL and its schemas' ACLs
    return None


FREE_SLOTS_SQL = """SELECT current_setting('max_connections')::int
    - current_setting('superuser_reserved_connections')::int
    - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"""


def session_budget(conn: psycopg.Connection, wanted: int) -> int:
    """Sessions pgaasctl may open besides `conn`: what the workspace allows, and at most half the slots free now."""
    free = conn.execute(FREE_SLOTS_SQL).fetchone()[0]  # type: ignore[index]
    return max(1, min(wanted, int(free) // 2))


class Executor:
    """Applies a pair's changes wave by wave; inside a wave, independent changes run on parallel sessions.

    Sessions on the primary are bounded by `sessions` (the Workspace's, lowered to half the server's free slots):
    each worker thread keeps at most its share, one per database it works in, and closes the least recently used
    when it needs another."""

    def __init__(self, live: LivePair, store: Store, on_progress: ProgressCallback | None = None,
                 workers: int = 4, sessions: int = 8) -> None:
        self.live = live
        self.store = store
        self.on_progress = on_progress or (lambda pair, change, status: None)
        self.workers = max(1, workers)
        self.sessions = max(1, sessions)
        self._per_thread = self.sessions
        self._local = threading.local()
        self._opened: list[psycopg.Connection] = []
        self._opened_lock = threading.Lock()

    @property
    def pair(self) -> str:
        return self.live.plan.pair

    def _connection(self, database: str | None) -> psycopg.Connection:
        """This thread's session on `database` (None: the admin database)."""
        cache: dict[str | None, psycopg.Connection] = getattr(self._local, "connections", None) or {}
        self._local.connections = cache
        conn = cache.pop(database, None)
        if conn is None or conn.closed:
            assert self.live.state is not None, "statements need the pair's primary"
            while len(cache) >= self._per_thread:  # this thread's share is used: close its least recent session
                self._close(cache.pop(next(iter(cache))))
            conn = connect(self.live.state.primary.address, database)
            with self._opened_lock:
                self._opened.append(conn)
        cache[database] = conn  # the most recent last
        return conn

    def _close(self, conn: psycopg.Connection) -> None:
        conn.close()
        with self._opened_lock:
            if conn in self._opened:
                self._opened.remove(conn)

    def _standby_connections(self) -> list[psycopg.Connection]:
        """Sessions on the reachable standbys, for statements every node must run."""
        if self.live.state is None:
            return []
        out = []
        for node in self.live.state.standbys:
            key = f"standby:{node.name}"
            cache: dict[str | None, psycopg.Connection] = getattr(self._local, "connections", None) or {}
            self._local.connections = cache
            conn = cache.get(key)
            if conn is None or conn.closed:
                conn = connect(node.address)
                cache[key] = conn
                with self._opened_lock:
                    self._opened.append(conn)
            out.append(conn)
        return out

    def _close_all(self) -> None:
        with self._opened_lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()

    def run(self) -> ApplyResult:
        result = ApplyResult(pair=self.pair, counts=count_changes(self.live.plan.changes))
        if self.live.state is not None:
            budget = session_budget(self.live.state.connection, self.sessions)
            self.workers = min(self.workers, budget)
            self._per_thread = max(1, budget // self.workers)
        try:
            for wave in waves(self.live.plan.changes):
                self._run_wave(wave, result)
                self._close_all()  # a later wave may drop a database these sessions sit in
        finally:
            self._close_all()
        return result

    def _run_wave(self, wave: list[Change], result: ApplyResult) -> None:
        inside = {c.address for c in wave}
        waiting_on = {c.address: {a for a in c.refers_to() if a in inside and a != c.address} for c in wave}
        # Changes that write the same catalog row (a database's or schema's ACL...) must not overlap:
        # PostgreSQL answers "tuple concurrently updated". Chain them in plan order.
        last_in_lane: dict[str, str] = {}
        for change in wave:
            lane = _lane(change)
            if lane is not None:
                if lane in last_in_lane:
                    waiting_on[change.address].add(last_in_lane[lane])
                last_in_lane[lane] = change.address
        with ThreadPoolExecutor(max_workers=min(self.workers, len(wave))) as pool:
            try:
                failure = self._drive(pool, wave, waiting_on, result)
            except BaseException:
                # Ctrl-C or SIGTERM reach this thread only: cancel what the workers run on the server, or the
                # pool would wait for a statement that may block forever (on a lock, say) before unwinding.
                self._cancel_all()
                raise
        if failure is not None:
            raise failure

    def _drive(self, pool: ThreadPoolExecutor, wave: list[Change], waiting_on: dict[str, set[str]],
               result: ApplyResult) -> ApplyFailed | None:
        """Submit changes as their dependencies finish, in plan order among those ready; after a failure, let the
        running ones end, start no more. Linear in the wave's size: a change finishing looks only at its waiters."""
        order = {c.address: i for i, c in enumerate(wave)}
        by_address = {c.address: c for c in wave}
        waiters: dict[str, list[str]] = defaultdict(list)
        unfinished = {address: len(deps) for address, deps in waiting_on.items()}
        for address, deps in waiting_on.items():
            for dep in deps:
                waiters[dep].append(address)
        ready = [(order[a], a) for a, n in unfinished.items() if n == 0]
        heapq.heapify(ready)
        running: dict[Future[None], Change] = {}
        failure: ApplyFailed | None = None
        while ready or running:
            while failure is None and ready and len(running) < self.workers:
                change = by_address[heapq.heappop(ready)[1]]
                running[pool.submit(self._apply_change, change)] = change
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                change = running.pop(future)
                error = future.exception()
                if error is None:
                    result.done.append(change.address)
                    for waiter in waiters.get(change.address, ()):
                        unfinished[waiter] -= 1
                        if unfinished[waiter] == 0:
                            heapq.heappush(ready, (order[waiter], waiter))
                elif isinstance(error, psycopg.Error) and failure is None:
                    failure = ApplyFailed(
                        f"{change.address}: {_describe(error)}",
                        "The changes before it were applied and recorded; fix the cause and run apply again to converge.",
                    )
                elif not isinstance(error, psycopg.Error):
                    raise error
        return failure

    def _cancel_all(self) -> None:
        with self._opened_lock:
            opened = list(self._opened)
        for conn in opened:
            try:
                conn.cancel()
            except psycopg.Error:
                pass  # a session that is gone runs nothing

    def _apply_change(self, change: Change) -> None:
        self.on_progress(self.pair, change, "start")
        origin: Origin = "adopted" if change.action == "adopt" else "created"
        if change.action in ("create", "adopt") and change.record is not None:
            # Intent first: if the process dies between the server's commit and the record below, the store
            # still knows pgaasctl may have made this object, and the next plan treats it as managed.
            self.store.record_intent(change.address, self.pair, change.kind, change.name, change.record, origin)
        try:
            self._run_statements(change.statements)
        except psycopg.Error as exc:
            if change.action == "create" and (exc.sqlstate in _ALREADY_EXISTS or self._absent(change)):
                # made by someone else meanwhile, or the failure left nothing behind: not ours either way
                self._forget_unconfirmed(change.address)
            self.on_progress(self.pair, change, "failed")
            raise
        if change.record is None:
            self.store.forget(change.address)
        else:
            self.store.record(change.address, self.pair, change.kind, change.name, change.record, origin)
        self.on_progress(self.pair, change, "done")

    def _absent(self, change: Change) -> bool:
        """Whether the server certainly holds no object of this change (False when it cannot be asked)."""
        catalog = {"role": "SELECT 1 FROM pg_roles WHERE rolname = %s",
                   "database": "SELECT 1 FROM pg_database WHERE datname = %s"}.get(change.kind)
        if catalog is None:
            return False
        try:
            with connect(self.live.state.primary.address) as conn:  # type: ignore[union-attr]
                return conn.execute(catalog, (change.name,)).fetchone() is None
        except (psycopg.Error, PgaasError):
            return False  # the outcome is unknown: the intent stays

    def _forget_unconfirmed(self, address: str) -> None:
        managed = self.store.managed_object(address)
        if managed is not None and managed.pending:
            self.store.forget(address)

    def _run_statements(self, statements: list[Statement]) -> None:
        i = 0
        while i < len(statements):
            statement = statements[i]
            conn = self._connection(statement.database)
            if not statement.transactional:
                conn.execute(statement.query)
                if statement.every_node:
                    for standby in self._standby_connections():
                        standby.execute(statement.query)
                i += 1
                continue
            # Consecutive transactional statements on one database commit together, sent as one string: PostgreSQL
            # runs several statements of one simple query as one transaction (all or nothing), so neither BEGIN and
            # COMMIT nor a round trip per statement is needed. The statements carry no parameters.
            run = 1
            while i + run < len(statements) and statements[i + run].transactional and \
                    statements[i + run].database == statement.database:
                run += 1
            conn.execute(sql.SQL("; ").join(queued.query for queued in statements[i:i + run]))
            i += run


def wait_for_standbys(live: LivePair, timeout: float) -> float | None:
    """Wait until every reachable standby has replayed the primary's current WAL position."""
    if live.state is None:
        return None
    standbys = live.state.standbys
    if not standbys:
        return None
    started = time.monotonic()
    target = live.state.connection.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    for node in standbys:
        with connect(node.address) as conn:
            while True:
                caught_up = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)
                ).fetchone()[0]  # type: ignore[index]
                if caught_up:
                    break
                if time.monotonic() - started > timeout:
                    raise PgaasError(
                        f"pair {live.plan.pair!r}: standby {node.name} did not replay the changes within {timeout:g}s",
                        "The changes are applied on the primary; check replication with `pgaasctl plan`.",
                    )
                time.sleep(0.05)  # polling the replay position
    return time.monotonic() - started


def _describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).splitlines()[0]
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if diag.message_hint:
        text += f"; hint: {diag.message_hint}"
    return text
