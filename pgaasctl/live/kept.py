"""Connections kept from one look to the next, for the agent.

A new session costs the server a fork, a SCRAM exchange and a cold catalog cache (about 20 ms of CPU here); the
agent looks at every node every few seconds. Inside `keeping(keeper)`, connect() hands out a kept session when one
is idle for that node and database (after checking, within the node's connect_timeout, that it still answers) and
close() gives it back instead of ending it. Only autocommit sessions are kept, and only while nothing is left
open in them. Everywhere else (plan, apply, status) every connection is new: the context variable is unset.

Threads do not inherit context variables; pgaasctl.parallel.ThreadPool passes them on to its tasks.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg import pq

KeptKey = tuple[str, int, str, str, str, str]  # host, port, user, database, sslmode, password

_current: ContextVar[ConnectionKeeper | None] = ContextVar("pgaasctl_connection_keeper", default=None)


class KeptConnection(psycopg.Connection[Any]):
    """A session whose close() gives it back to its keeper while it is fit to be used again."""

    _keeper: ConnectionKeeper | None = None
    _kept_key: KeptKey | None = None

    def close(self) -> None:
        keeper, key = self._keeper, self._kept_key
        if keeper is not None and key is not None and keeper.give_back(key, self):
            return
        super().close()

    def end(self) -> None:
        """Close it for good."""
        self._keeper = None
        super().close()


class Unanswered(Exception):
    """A kept session did not answer within the deadline: the server hangs."""


class ConnectionKeeper:
    """Idle sessions per (node address, database), handed to one thread at a time."""

    def __init__(self) -> None:
        self._idle: dict[KeptKey, list[KeptConnection]] = {}
        self._used: set[int] = set()  # id() of sessions handed out since the last sweep
        self._lock = threading.Lock()
        self.opened = 0  # sessions opened over the keeper's life (a figure for the benchmark and tests)
        self.reused = 0

    def lease(self, key: KeptKey, timeout: float) -> KeptConnection | None:
        """An idle session for `key` that answers, or None. Raises Unanswered when the one tried hangs."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
                self._used.add(id(conn))
            try:
                if _answers(conn, timeout):
                    self.reused += 1
                    return conn
            except Unanswered:
                conn.end()
                raise
            conn.end()  # the server restarted or dropped it: try the next, else a new session

    def adopt(self, key: KeptKey, conn: KeptConnection) -> KeptConnection:
        conn._keeper, conn._kept_key = self, key
        with self._lock:
            self.opened += 1
            self._used.add(id(conn))
        return conn

    def give_back(self, key: KeptKey, conn: KeptConnection) -> bool:
        if conn.closed or conn.broken or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        with self._lock:
            self._idle.setdefault(key, []).append(conn)
        return True

    def sweep(self) -> int:
        """Close the idle sessions no one used since the last sweep (a node gone from the specs, a changed
        password); returns how many are kept."""
        with self._lock:
            stale = [c for conns in self._idle.values() for c in conns if id(c) not in self._used]
            self._idle = {k: [c for c in conns if id(c) in self._used] for k, conns in self._idle.items()}
            self._idle = {k: conns for k, conns in self._idle.items() if conns}
            self._used.clear()
            kept = sum(len(conns) for conns in self._idle.values())
        for conn in stale:
            conn.end()
        return kept

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.end()


def current_keeper() -> ConnectionKeeper | None:
    return _current.get()


@contextmanager
def keeping(keeper: ConnectionKeeper) -> Iterator[None]:
    token = _current.set(keeper)
    try:
        yield
    finally:
        _current.reset(token)


def _answers(conn: KeptConnection, timeout: float) -> bool:
    """SELECT 1 on the session, waiting at most `timeout` seconds: a stopped server whose kernel still acknowledges
    every packet would otherwise block the caller for ever. False when the session is broken."""
    pgconn = conn.pgconn
    deadline = time.monotonic() + timeout
    try:
        pgconn.send_query(b"SELECT 1")
        while pgconn.flush() != 0:
            _wait(pgconn.socket, deadline, write=True)
        while True:
            pgconn.consume_input()
            if pgconn.is_busy():
                _wait(pgconn.socket, deadline)
                continue
            result = pgconn.get_result()
            if result is None:
                return True
            if result.status != pq.ExecStatus.TUPLES_OK:
                return False
    except psycopg.OperationalError:
        return False


def _wait(fd: int, deadline: float, write: bool = False) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Unanswered()
    ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
    if not any(ready):
        raise Unanswered()
