"""Run planned changes on the primary, one change at a time, and record each in the store when it succeeded."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from pgaasctl.errors import LockHeld, PgaasError
from pgaasctl.live.connect import connect
from pgaasctl.plan.build import LivePair
from pgaasctl.plan.model import Change, Statement
from pgaasctl.store import Store

ProgressCallback = Callable[[str, Change, str], None]  # (pair, change, "start" | "done" | "failed")


class ApplyFailed(PgaasError):
    """A statement failed. Changes before it are applied and recorded; a rerun converges."""


@dataclass
class ApplyResult:
    pair: str
    done: list[str] = field(default_factory=list)
    standby_wait: float | None = None


def advisory_key(pair: str) -> int:
    return int.from_bytes(hashlib.sha256(f"pgaasctl:{pair}".encode()).digest()[:8], "big", signed=True)


def take_advisory_lock(conn: psycopg.Connection, pair: str) -> None:
    """pg_advisory_lock on the primary, so two pgaasctl (even with different stores) never write at once."""
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


def release_advisory_lock(conn: psycopg.Connection, pair: str) -> None:
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(pair),))


class Executor:
    def __init__(self, live: LivePair, store: Store, on_progress: ProgressCallback | None = None) -> None:
        self.live = live
        self.store = store
        self.on_progress = on_progress or (lambda pair, change, status: None)
        self._connections: dict[str, psycopg.Connection] = {}

    @property
    def pair(self) -> str:
        return self.live.plan.pair

    def _connection(self, database: str | None) -> psycopg.Connection:
        if database is None:
            return self.live.state.connection
        if database not in self._connections:
            self._connections[database] = connect(self.live.state.primary.address, database)
        return self._connections[database]

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def run(self) -> ApplyResult:
        result = ApplyResult(pair=self.pair)
        try:
            for change in self.live.plan.changes:
                self.on_progress(self.pair, change, "start")
                try:
                    self._run_change(change)
                except psycopg.Error as exc:
                    self.on_progress(self.pair, change, "failed")
                    raise ApplyFailed(
                        f"{change.address}: {_describe(exc)}",
                        f"{len(result.done)} change(s) before it were applied and recorded; "
                        "fix the cause and run apply again to converge.",
                    ) from None
                if change.record is None:
                    self.store.forget(change.address)
                else:
                    self.store.record(change.address, self.pair, change.kind, change.name, change.record)
                result.done.append(change.address)
                self.on_progress(self.pair, change, "done")
        finally:
            self.close()
        return result

    def _run_change(self, change: Change) -> None:
        statements: list[Statement] = change.statements
        i = 0
        while i < len(statements):
            statement = statements[i]
            if statement.query.as_string().startswith("DROP DATABASE"):
                self._drop_cached(change.name)
            conn = self._connection(statement.database)
            if not statement.transactional:
                conn.execute(statement.query)
                i += 1
                continue
            # consecutive transactional statements on one database commit together
            with conn.transaction():
                while i < len(statements) and statements[i].transactional and statements[i].database == statement.database:
                    conn.execute(statements[i].query)
                    i += 1

    def _drop_cached(self, database: str) -> None:
        conn = self._connections.pop(database, None)
        if conn is not None:
            conn.close()


def wait_for_standbys(live: LivePair, timeout: float) -> float | None:
    """Wait until every reachable standby has replayed the primary's current WAL position."""
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
