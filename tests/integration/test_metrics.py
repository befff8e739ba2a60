"""Metrics sampled from a real PostgreSQL 15 equal what psql reads from the same views, and real conditions
(a transaction held open, a blocked session, a replication slot) show in them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pgaasctl.monitor.metrics import METRICS, Sample, sample_node
from tests.support.local_pair import wait_until
from tests.support.pgserver import PgServer


@pytest.fixture
def conn(pg: PgServer) -> Iterator[psycopg.Connection]:
    with pg.connect() as connection:
        yield connection


def _value(samples: list[Sample], metric: str, database: str = "", label: str = "") -> float:
    [found] = [s.value for s in samples if (s.metric, s.database, s.label) == (metric, database, label)]
    return found


def test_every_sample_is_a_known_metric(conn: psycopg.Connection) -> None:
    samples = sample_node(conn)
    assert {s.metric for s in samples} <= set(METRICS)
    assert _value(samples, "pg_up") == 1.0


def test_values_equal_what_the_views_say(pg: PgServer, conn: psycopg.Connection) -> None:
    pg.execute("CREATE DATABASE metrics_probe")
    pg.execute("CREATE TABLE filler AS SELECT g AS n FROM generate_series(1, 20000) g", dbname="metrics_probe")
    samples = sample_node(conn)
    [(size, max_connections, age)] = pg.execute(
        "SELECT pg_database_size('metrics_probe')::float8, current_setting('max_connections')::float8, "
        "age(datfrozenxid)::float8 FROM pg_database WHERE datname = 'metrics_probe'")
    assert _value(samples, "pg_database_size_bytes", "metrics_probe") == size
    assert _value(samples, "pg_settings_max_connections") == max_connections
    assert _value(samples, "pg_database_frozen_xid_age", "metrics_probe") == age
    # counters only grow between two reads: the sample lies between psql's reads before and after it
    def commits() -> float:
        return float(pg.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = 'metrics_probe'")[0][0])
    before = commits()
    sampled = _value(sample_node(conn), "pg_stat_database_xact_commit", "metrics_probe")
    assert before <= sampled <= commits()
    # the filling session's statistics are flushed as its backend exits, a moment after the client closed it
    wait_until(lambda: _value(sample_node(conn), "pg_stat_database_tup_inserted", "metrics_probe") >= 20000, 10,
               "the inserts of the finished session in pg_stat_database", interval=0.05)


def test_a_transaction_held_open_and_a_blocked_session_show(pg: PgServer, conn: psycopg.Connection) -> None:
    pg.execute("CREATE TABLE IF NOT EXISTS contended (n int)")
    with pg.connect(autocommit=False) as holder, pg.connect(autocommit=False) as waiter:
        holder.execute("LOCK TABLE contended IN ACCESS EXCLUSIVE MODE")
        time.sleep(1.1)  # the transaction's age is what is measured: it must have one
        waiter.execute("SET lock_timeout = '20s'")
        waiter_pid = waiter.info.backend_pid
        blocked = threading.Thread(target=lambda: _ignore(lambda: waiter.execute("SELECT * FROM contended")))
        blocked.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # polling until the waiter is seen waiting for the lock
                if pg.execute(f"SELECT cardinality(pg_blocking_pids({waiter_pid})) > 0")[0][0]:
                    break
                time.sleep(0.05)
            samples = sample_node(conn)
            assert _value(samples, "pgaas_blocked_sessions") >= 1.0
            assert _value(samples, "pgaas_longest_transaction_seconds") >= 1.0
            assert _value(samples, "pg_stat_activity_count", label="active") >= 1.0
        finally:
            holder.rollback()
            blocked.join(timeout=20)
            waiter.rollback()
    idle = pg.connect(autocommit=False)
    try:
        idle.execute("SELECT 1")  # now idle in a transaction
        assert _value(sample_node(conn), "pgaas_idle_in_transaction_sessions") >= 1.0
    finally:
        idle.close()


def test_a_replication_slot_and_the_wal_it_holds(pg: PgServer, conn: psycopg.Connection) -> None:
    pg.execute("SELECT pg_create_physical_replication_slot('metrics_slot', true)")
    try:
        pg.execute("CREATE TABLE IF NOT EXISTS churn AS SELECT g FROM generate_series(1, 50000) g")
        samples = sample_node(conn)
        assert _value(samples, "pg_replication_slot_active", label="metrics_slot") == 0.0
        assert _value(samples, "pg_replication_slot_retained_bytes", label="metrics_slot") > 1_000_000
    finally:
        pg.execute("SELECT pg_drop_replication_slot('metrics_slot')")
        pg.execute("DROP TABLE IF EXISTS churn")


def _ignore(action: Callable[[], object]) -> None:
    try:
        action()
    except psycopg.Error:
        pass  # the blocked statement ends with the holder's rollback, or its lock_timeout


def test_a_stats_reset_between_samples_counts_from_zero_not_negative(pg: PgServer, conn: psycopg.Connection) -> None:
    from pgaasctl.monitor.rates import Point, increase

    pg.execute("CREATE DATABASE reset_probe")

    def commits() -> Point:
        value = _value(sample_node(conn), "pg_stat_database_xact_commit", "reset_probe")
        return Point(at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), value=value)

    def work(transactions: int) -> None:
        with pg.connect(dbname="reset_probe") as session:
            for _ in range(transactions):
                session.execute("SELECT 1")  # autocommit: one committed transaction each

    first = commits()
    work(200)
    second = commits()
    with pg.connect(dbname="reset_probe") as session:
        session.execute("SELECT pg_stat_reset()")
    work(50)
    third = commits()
    assert third.value < second.value  # the counter went back
    grown = increase([first, second, third])
    assert grown.resets == 1
    assert 250 <= grown.total <= 270  # the work, plus a few transactions of the sessions themselves


def test_statements_are_nothing_until_the_extension_is_there_and_loaded(pg: PgServer, conn: psycopg.Connection) -> None:
    from pgaasctl.monitor.metrics import sample_statements

    assert sample_statements(conn) == ([], [])  # no extension in this database
    pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    try:
        assert sample_statements(conn) == ([], [])  # created, but not in shared_preload_libraries: no error either
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable
    finally:
        pg.execute("DROP EXTENSION pg_stat_statements")
