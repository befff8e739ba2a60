"""The agent's kept SQL sessions (pgaasctl.live.kept), against a real PostgreSQL 15: reused from look to look,
never handed out mid-transaction, replaced when the server dropped them, and a hung backend is reported within the
node's connect_timeout instead of blocking the look."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest
from pydantic import SecretStr

from pgaasctl.errors import ConnectionFailed
from pgaasctl.live.connect import NodeAddress, connect
from pgaasctl.live.kept import ConnectionKeeper, KeptConnection, keeping
from pgaasctl.parallel import ThreadPool
from tests.support.pgserver import PgServer


@pytest.fixture
def node(pg: PgServer) -> NodeAddress:
    return NodeAddress(pair="p", name="a", host=pg.host, port=pg.port, user=pg.admin_user,
                       password=SecretStr(pg.admin_password), admin_database="postgres", sslmode="prefer",
                       connect_timeout=2)


@pytest.fixture
def keeper() -> Iterator[ConnectionKeeper]:
    kept = ConnectionKeeper()
    yield kept
    kept.close()


def _backend(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def test_a_session_closed_inside_keeping_is_reused_by_the_next_connect(node: NodeAddress,
                                                                       keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        with connect(node) as conn:
            first = _backend(conn)
        with connect(node) as conn:
            assert _backend(conn) == first
        other = connect(node, "template1")
        assert _backend(other) != first  # another database is another session
        other.close()
    assert (keeper.opened, keeper.reused) == (2, 1)


def test_outside_keeping_every_connection_is_new_and_really_closed(node: NodeAddress, keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        connect(node).close()
    conn = connect(node)
    assert not isinstance(conn, KeptConnection)
    conn.close()
    assert conn.closed
    assert keeper.opened == 1 and keeper.reused == 0


def test_a_session_left_in_a_transaction_is_not_kept(node: NodeAddress, keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        conn = connect(node)
        first = _backend(conn)
        conn.execute("BEGIN")
        conn.close()
        assert conn.closed
        with connect(node) as again:
            assert _backend(again) != first
            assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_non_autocommit_connections_are_never_kept(node: NodeAddress, keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        conn = connect(node, autocommit=False)
        assert not isinstance(conn, KeptConnection)
        conn.close()
    assert keeper.opened == 0


def test_a_session_the_server_ended_is_replaced(pg: PgServer, node: NodeAddress, keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        with connect(node) as conn:
            first = _backend(conn)
        pg.execute(f"SELECT pg_terminate_backend({first})")
        with connect(node) as conn:
            assert _backend(conn) != first
    assert keeper.opened == 2


def test_a_hung_backend_fails_within_the_connect_timeout(node: NodeAddress, keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        with connect(node) as conn:
            backend = _backend(conn)
        os.kill(backend, signal.SIGSTOP)  # its kernel still acknowledges every packet, as a frozen server's does
        try:
            started = time.monotonic()
            with pytest.raises(ConnectionFailed, match="did not answer within 2s"):
                connect(node)
            assert time.monotonic() - started < 4
        finally:
            os.kill(backend, signal.SIGCONT)
        with connect(node) as conn:  # the hung one was dropped: a new session
            assert _backend(conn) != backend


def test_sweep_ends_the_sessions_no_look_used_since_the_last_sweep(pg: PgServer, node: NodeAddress,
                                                                  keeper: ConnectionKeeper) -> None:
    with keeping(keeper):
        with connect(node) as conn:
            used = _backend(conn)
        with connect(node, "template1") as conn:
            unused = _backend(conn)
        assert keeper.sweep() == 2  # both were used since the start
        connect(node).close()
        assert keeper.sweep() == 1
    alive = {r[0] for r in pg.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgaasctl'")}
    assert used in alive and unused not in alive


def test_the_thread_pool_passes_the_keeper_to_its_tasks(node: NodeAddress, keeper: ConnectionKeeper) -> None:
    def backend() -> int:
        with connect(node) as conn:
            return _backend(conn)

    with keeping(keeper):
        with ThreadPool(max_workers=2) as pool:
            first = list(pool.map(lambda _: backend(), range(2)))
            again = list(pool.map(lambda _: backend(), range(2)))
    assert set(again) <= set(first)
    assert keeper.opened <= 2 and keeper.reused >= 2
