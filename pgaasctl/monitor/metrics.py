"""Metrics sampled from one node's catalog views: what a database owner watches (connections, transactions,
cache hits, sizes, replication, wraparound age, long and blocked sessions). Names follow postgres_exporter where it
has one, so dashboards made for it work; the rest are `pgaas_`. Counters are kept as PostgreSQL reports them
(cumulative since its stats reset); rates come from deltas (pgaasctl/monitor/rates.py)."""

from __future__ import annotations

from typing import Literal

import psycopg
from pydantic import BaseModel

Kind = Literal["gauge", "counter"]
TOP_STATEMENTS = 20  # statements sampled per node and round, by total time


class Sample(BaseModel):
    metric: str
    value: float
    database: str = ""  # "" for a value of the whole node
    label: str = ""  # a second dimension where the metric has one: a session state, a standby, a slot


class MetricInfo(BaseModel):
    name: str
    kind: Kind
    help: str
    label: str = ""  # the name of `Sample.label` in Prometheus (state, standby, slot_name)


METRICS = {m.name: m for m in [
    MetricInfo(name="pg_up", kind="gauge", help="1 when the node answered."),
    MetricInfo(name="pg_postmaster_uptime_seconds", kind="gauge", help="Seconds since PostgreSQL started."),
    MetricInfo(name="pg_settings_max_connections", kind="gauge", help="max_connections."),
    MetricInfo(name="pg_stat_activity_count", kind="gauge", help="Sessions by state.", label="state"),
    MetricInfo(name="pg_stat_database_numbackends", kind="gauge", help="Sessions connected to the database."),
    MetricInfo(name="pg_stat_database_xact_commit", kind="counter", help="Transactions committed."),
    MetricInfo(name="pg_stat_database_xact_rollback", kind="counter", help="Transactions rolled back."),
    MetricInfo(name="pg_stat_database_blks_hit", kind="counter", help="Blocks found in shared buffers."),
    MetricInfo(name="pg_stat_database_blks_read", kind="counter", help="Blocks read from disk."),
    MetricInfo(name="pg_stat_database_tup_returned", kind="counter", help="Rows returned by scans."),
    MetricInfo(name="pg_stat_database_tup_fetched", kind="counter", help="Rows fetched by index scans."),
    MetricInfo(name="pg_stat_database_tup_inserted", kind="counter", help="Rows inserted."),
    MetricInfo(name="pg_stat_database_tup_updated", kind="counter", help="Rows updated."),
    MetricInfo(name="pg_stat_database_tup_deleted", kind="counter", help="Rows deleted."),
    MetricInfo(name="pg_stat_database_deadlocks", kind="counter", help="Deadlocks detected."),
    MetricInfo(name="pg_stat_database_temp_bytes", kind="counter", help="Bytes written to temporary files."),
    MetricInfo(name="pg_stat_database_stats_reset", kind="gauge", help="When the database's statistics were last "
               "reset (Unix time; 0: never)."),
    MetricInfo(name="pg_database_size_bytes", kind="gauge", help="Database size on disk."),
    MetricInfo(name="pg_database_frozen_xid_age", kind="gauge", help="age(datfrozenxid): transactions towards "
               "wraparound."),
    MetricInfo(name="pgaas_longest_transaction_seconds", kind="gauge", help="Age of the oldest open transaction."),
    MetricInfo(name="pgaas_idle_in_transaction_sessions", kind="gauge", help="Sessions idle in a transaction."),
    MetricInfo(name="pgaas_blocked_sessions", kind="gauge", help="Sessions waiting for a lock another holds."),
    MetricInfo(name="pg_replication_lag_seconds", kind="gauge", help="A standby: seconds since the last replayed "
               "transaction's commit, 0 when it has replayed everything it received."),
    MetricInfo(name="pg_replication_lag_bytes", kind="gauge", help="A primary: WAL each standby has not replayed.",
               label="application_name"),
    MetricInfo(name="pg_replication_slot_retained_bytes", kind="gauge", help="WAL a replication slot holds back.",
               label="slot_name"),
    MetricInfo(name="pg_replication_slot_active", kind="gauge", help="1 while a slot has a consumer.",
               label="slot_name"),
    MetricInfo(name="pgaas_wal_position_bytes", kind="counter", help="A primary: WAL written since the cluster "
               "began (its current LSN), so its rate is the WAL written per second."),
    MetricInfo(name="pg_stat_statements_calls_total", kind="counter", help="Times a statement ran (the top "
               f"{TOP_STATEMENTS} by time).", label="queryid"),
    MetricInfo(name="pg_stat_statements_seconds_total", kind="counter", help="Seconds spent running a statement.",
               label="queryid"),
    MetricInfo(name="pg_stat_statements_rows_total", kind="counter", help="Rows a statement returned or changed.",
               label="queryid"),
]}

NODE_SQL = """
SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8,
       current_setting('max_connections')::float8,
       coalesce((SELECT extract(epoch FROM max(now() - xact_start)) FROM pg_stat_activity
                 WHERE xact_start IS NOT NULL AND backend_type = 'client backend'), 0)::float8,
       (SELECT count(*) FROM pg_stat_activity WHERE state IN ('idle in transaction',
                                                              'idle in transaction (aborted)'))::float8,
       (SELECT count(*) FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0)::float8,
       pg_is_in_recovery()
"""
STATES_SQL = """
SELECT coalesce(state, 'unknown'), count(*)::float8 FROM pg_stat_activity
WHERE backend_type = 'client backend' GROUP BY 1
"""
DATABASES_SQL = """
SELECT d.datname, s.numbackends, s.xact_commit, s.xact_rollback, s.blks_hit, s.blks_read, s.tup_returned,
       s.tup_fetched, s.tup_inserted, s.tup_updated, s.tup_deleted, s.deadlocks, s.temp_bytes,
       coalesce(extract(epoch FROM s.stats_reset), 0), pg_database_size(d.oid), age(d.datfrozenxid)
FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid
WHERE d.datallowconn AND NOT d.datistemplate
ORDER BY d.datname
"""
DATABASE_COLUMNS = ("numbackends", "xact_commit", "xact_rollback", "blks_hit", "blks_read", "tup_returned",
                    "tup_fetched", "tup_inserted", "tup_updated", "tup_deleted", "deadlocks", "temp_bytes")
STANDBY_LAG_SQL = """
SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8
"""
PRIMARY_LAG_SQL = """
SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(replay_lsn, '0/0'))::float8
FROM pg_stat_replication ORDER BY 1
"""
SLOTS_SQL = """
SELECT slot_name, active::int::float8,
       coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                     ELSE pg_current_wal_lsn() END, restart_lsn), 0)::float8
FROM pg_replication_slots ORDER BY 1
"""


# Only plain queries, whose constants pg_stat_statements replaced by $1, $2...: a utility statement keeps its text as
# written (ALTER ROLE ... PASSWORD '...'), and the store never holds a secret. pgaasctl's own (its admin user's)
# and repmgr's queries are left out.
STATEMENTS_SQL = r"""
SELECT coalesce(s.queryid, 0)::text, d.datname, sum(s.calls)::float8, (sum(s.total_exec_time) / 1000)::float8,
       sum(s.rows)::float8, min(s.query)
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE s.toplevel AND s.userid NOT IN (SELECT oid FROM pg_roles WHERE rolname IN (current_user, 'repmgr'))
  AND s.query ~* '^\s*(select|insert|update|delete|with|merge|values|table)\M' AND s.query !~* 'passw'
GROUP BY 1, 2
ORDER BY sum(s.total_exec_time) DESC
LIMIT %s
"""
STATEMENT_TEXT_LIMIT = 1000  # characters of a statement's text kept


class StatementText(BaseModel):
    queryid: str
    database: str
    query: str


def sample_statements(conn: psycopg.Connection) -> tuple[list[Sample], list[StatementText]]:
    """The top statements by time from pg_stat_statements (when the extension is there, in the session's database,
    and loaded); nothing otherwise."""
    try:
        if conn.execute("SELECT to_regclass('pg_stat_statements') IS NULL").fetchone()[0]:  # type: ignore[index]
            return [], []
        rows = conn.execute(STATEMENTS_SQL, (TOP_STATEMENTS,)).fetchall()
    except psycopg.Error:  # not in shared_preload_libraries yet (it counts from the next restart)
        return [], []
    samples: list[Sample] = []
    texts: list[StatementText] = []
    for queryid, database, calls, seconds, rows_total, query in rows:
        samples += [Sample(metric="pg_stat_statements_calls_total", value=calls, database=database, label=queryid),
                    Sample(metric="pg_stat_statements_seconds_total", value=seconds, database=database, label=queryid),
                    Sample(metric="pg_stat_statements_rows_total", value=rows_total, database=database, label=queryid)]
        texts.append(StatementText(queryid=queryid, database=database, query=" ".join(query.split())[:STATEMENT_TEXT_LIMIT]))
    return samples, texts


def sample_node(conn: psycopg.Connection) -> list[Sample]:
    """Everything this module knows how to read from one node, in one short read-only pass."""
    uptime, max_connections, longest, idle_in_tx, blocked, in_recovery = conn.execute(NODE_SQL).fetchone()  # type: ignore[misc]
    samples = [
        Sample(metric="pg_up", value=1.0),
        Sample(metric="pg_postmaster_uptime_seconds", value=uptime),
        Sample(metric="pg_settings_max_connections", value=max_connections),
        Sample(metric="pgaas_longest_transaction_seconds", value=longest),
        Sample(metric="pgaas_idle_in_transaction_sessions", value=idle_in_tx),
        Sample(metric="pgaas_blocked_sessions", value=blocked),
    ]
    samples += [Sample(metric="pg_stat_activity_count", value=count, label=state)
                for state, count in conn.execute(STATES_SQL).fetchall()]
    for row in conn.execute(DATABASES_SQL).fetchall():
        database = row[0]
        samples += [Sample(metric=f"pg_stat_database_{column}", value=float(value), database=database)
                    for column, value in zip(DATABASE_COLUMNS, row[1:13])]
        samples += [Sample(metric="pg_stat_database_stats_reset", value=float(row[13]), database=database),
                    Sample(metric="pg_database_size_bytes", value=float(row[14]), database=database),
                    Sample(metric="pg_database_frozen_xid_age", value=float(row[15]), database=database)]
    if in_recovery:
        samples.append(Sample(metric="pg_replication_lag_seconds", value=conn.execute(STANDBY_LAG_SQL).fetchone()[0]))  # type: ignore[index]
    else:
        samples += [Sample(metric="pg_replication_lag_bytes", value=lag, label=name)
                    for name, lag in conn.execute(PRIMARY_LAG_SQL).fetchall()]
        position = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8").fetchone()[0]  # type: ignore[index]
        samples.append(Sample(metric="pgaas_wal_position_bytes", value=position))
    for slot, active, retained in conn.execute(SLOTS_SQL).fetchall():
        samples += [Sample(metric="pg_replication_slot_active", value=active, label=slot),
                    Sample(metric="pg_replication_slot_retained_bytes", value=retained, label=slot)]
    return samples
