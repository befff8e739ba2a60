"""Health checks of a pair: one named check each, ok / warn / critical against the Workspace's thresholds
(monitoring.checks), with what was measured and a one-line remedy. Evaluated by the agent from its lookup, the
nodes' latest samples and the last hour of history; kept in the lookup, so `status`, the API and the console show
them without touching a node."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from pgaasctl.monitor.metrics import Sample
from pgaasctl.monitor.models import CheckResult, CheckStatus, LookupPair, StoredSample
from pgaasctl.monitor.rates import Point, increase
from pgaasctl.spec.models import HealthThresholds, Threshold

History = Callable[[str], list[StoredSample]]  # metric -> the pair's samples of the last hour, oldest first
WINDOW_SECONDS = 3600.0
MIN_GROWTH_WINDOW = 600.0  # growth per hour is extrapolated only from ten minutes of history or more
MIN_TRANSACTIONS = 100  # a rollback ratio over fewer transactions says nothing
MIN_BLOCKS = 1000  # nor does a cache hit ratio over fewer block requests
GIB = 1024 ** 3

CHECKS = ("pair degraded", "synchronous copy", "failover", "pending restart", "connections used", "cache hit",
          "rollback ratio", "replication lag", "inactive slots", "wraparound", "long transactions",
          "idle in transaction", "blocked sessions", "deadlocks", "database growth", "WAL growth")


# (check, metric, threshold, what was measured, remedy) of the checks that grade one gauge of a node
NODE_GAUGES = [
    ("long transactions", "pgaas_longest_transaction_seconds", "long_transaction_seconds",
     "a transaction open for {:.0f} s", "Find it in pg_stat_activity (xact_start) and end it: it holds back vacuum."),
    ("idle in transaction", "pgaas_idle_in_transaction_sessions", "idle_in_transaction_sessions",
     "{:.0f} session(s) idle in a transaction",
     "Fix the application's transaction handling; idle_in_transaction_session_timeout ends them."),
    ("blocked sessions", "pgaas_blocked_sessions", "blocked_sessions", "{:.0f} session(s) waiting for a lock",
     "pg_blocking_pids() names who holds the lock; end that transaction."),
]


def evaluate(lookup: LookupPair, latest: dict[str, list[Sample]], history: History,
             thresholds: HealthThresholds) -> list[CheckResult]:
    """Every check of the pair: the ones not ok, each for its node or database, and one ok line for every check
    that passes everywhere."""
    primary = lookup.primary
    data_nodes = [n for n in lookup.nodes if n.role != "witness"]
    found: list[CheckResult] = []
    if not lookup.healthy:
        found.append(CheckResult(name="pair degraded", status="critical", value=lookup.reasons[0] if lookup.reasons
                                 else "degraded", remedy="See `pgaasctl status`; `pgaasctl apply` makes the pair whole."))
    if lookup.replication == "synchronous" and primary is not None and not any(
            (n.replication or "").endswith("sync") and "async" not in (n.replication or "") for n in data_nodes):
        found.append(CheckResult(name="synchronous copy", status="critical", value="no synchronous standby",
                                 remedy="Every commit waits for a standby that is not there: `pgaasctl apply` "
                                        "starts or rejoins it."))
    found += [CheckResult(name="failover", status="critical", node=n.name, value="repmgrd is not running",
                          remedy="Automatic failover is off here: `pgaasctl apply` starts repmgrd.")
              for n in data_nodes if n.repmgrd is False and n.up]
    found += [CheckResult(name="pending restart", status="warn", node=n.name, value=", ".join(n.pending_restart),
                          remedy=f"`pgaasctl restart {lookup.pair}` applies them with a switchover.")
              for n in data_nodes if n.pending_restart]
    for node in data_nodes:
        if node.lag_seconds is not None:
            found += _graded("replication lag", node.lag_seconds, thresholds.replication_lag_seconds,
                             f"{node.lag_seconds:.1f} s behind the primary", node=node.name,
                             remedy="Look for a long query on the standby or a saturated link or disk.")
    for node, samples in latest.items():
        found += _node_checks(node, samples, thresholds)
    if primary is not None:
        found += _slot_checks(primary, latest.get(primary, []), thresholds.inactive_slot_bytes)
        found += _rate_checks(primary, history, thresholds)
    failing = {c.name for c in found if c.status != "ok"}
    return [c for c in found if c.status != "ok"] + [
        CheckResult(name=name, status="ok", value="") for name in CHECKS if name not in failing]


def _grade(value: float, threshold: Threshold, lower_is_worse: bool = False) -> CheckStatus:
    if lower_is_worse:
        return "critical" if value <= threshold.critical else "warn" if value <= threshold.warn else "ok"
    return "critical" if value >= threshold.critical else "warn" if value >= threshold.warn else "ok"


def _graded(name: str, value: float, threshold: Threshold, shown: str, remedy: str, node: str = "", database: str = "",
            lower_is_worse: bool = False) -> list[CheckResult]:
    status = _grade(value, threshold, lower_is_worse)
    return [] if status == "ok" else [CheckResult(name=name, status=status, value=shown, remedy=remedy, node=node,
                                                  database=database)]


def _value(samples: Iterable[Sample], metric: str) -> float | None:
    return next((s.value for s in samples if s.metric == metric), None)


def _node_checks(node: str, samples: list[Sample], thresholds: HealthThresholds) -> list[CheckResult]:
    found: list[CheckResult] = []
    max_connections = _value(samples, "pg_settings_max_connections")
    sessions = sum(s.value for s in samples if s.metric == "pg_stat_activity_count")
    if max_connections:
        found += _graded("connections used", sessions / max_connections, thresholds.connections_used,
                         f"{sessions:.0f} of max_connections {max_connections:.0f}", node=node,
                         remedy="Put a pooler in front (pgbouncer), or close idle sessions; raise max_connections "
                                "only with the memory for it.")
    for name, metric, limit, shown, remedy in NODE_GAUGES:
        value = _value(samples, metric)
        if value is not None:
            found += _graded(name, value, getattr(thresholds, limit), shown.format(value), node=node, remedy=remedy)
    for sample in samples:
        if sample.metric == "pg_database_frozen_xid_age":
            found += _graded("wraparound", sample.value, thresholds.wraparound_age,
                             f"age(datfrozenxid) {sample.value:,.0f}", node=node, database=sample.database,
                             remedy=f"VACUUM (FREEZE) the oldest tables of {sample.database}; check that autovacuum "
                                    "keeps up.")
    return found


def _slot_checks(primary: str, samples: list[Sample], threshold: Threshold) -> list[CheckResult]:
    active = {s.label: s.value for s in samples if s.metric == "pg_replication_slot_active"}
    found: list[CheckResult] = []
    for sample in samples:
        if sample.metric == "pg_replication_slot_retained_bytes" and not active.get(sample.label):
            found += _graded("inactive slots", sample.value, threshold,
                             f"slot {sample.label} is inactive and holds {sample.value / GIB:.2f} GiB of WAL",
                             node=primary, remedy=f"Reconnect its consumer, or drop it: "
                                                  f"SELECT pg_drop_replication_slot('{sample.label}').")
    return found


def _series(history: History, metric: str, node: str) -> dict[str, list[Point]]:
    """database -> points of one node's samples of `metric`."""
    series: dict[str, list[Point]] = {}
    for sample in history(metric):
        if sample.node == node:
            series.setdefault(sample.database, []).append(Point(at=sample.at, value=sample.value))
    return series


def _rate_checks(primary: str, history: History, thresholds: HealthThresholds) -> list[CheckResult]:
    found: list[CheckResult] = []
    for database, (ratio, total) in _ratios(history, primary, "pg_stat_database_xact_rollback",
                                            "pg_stat_database_xact_commit", MIN_TRANSACTIONS).items():
        found += _graded("rollback ratio", ratio, thresholds.rollback_ratio,
                         f"{ratio:.1%} of {total:.0f} transactions rolled back", node=primary, database=database,
                         remedy="Look for failing statements in the application's log or PostgreSQL's "
                                "(log_min_error_statement).")
    for database, (ratio, _) in _ratios(history, primary, "pg_stat_database_blks_hit", "pg_stat_database_blks_read",
                                        MIN_BLOCKS).items():
        found += _graded("cache hit", ratio, thresholds.cache_hit, f"{ratio:.1%} of block reads from memory",
                         node=primary, database=database, lower_is_worse=True,
                         remedy="The working set does not fit shared_buffers: raise it, or add memory.")
    for database, points in _series(history, "pg_stat_database_deadlocks", primary).items():
        deadlocks = increase(points).total
        found += _graded("deadlocks", deadlocks, thresholds.deadlocks_per_hour, f"{deadlocks:.0f} in the last hour",
                         node=primary, database=database,
                         remedy="Make transactions take their locks in one order; the log names the statements.")
    for database, points in _series(history, "pg_database_size_bytes", primary).items():
        per_hour = _growth_per_hour(points)
        if per_hour is not None:
            found += _graded("database growth", per_hour, thresholds.database_growth_bytes_per_hour,
                             f"{per_hour / GIB:.2f} GiB per hour", node=primary, database=database,
                             remedy="Check what writes (pg_stat_user_tables) and that the disk has room.")
    wal = _series(history, "pgaas_wal_position_bytes", primary).get("", [])
    per_hour = _growth_per_hour(wal)
    if per_hour is not None:
        found += _graded("WAL growth", per_hour, thresholds.wal_bytes_per_hour, f"{per_hour / GIB:.2f} GiB of WAL per "
                         "hour", node=primary, remedy="Check for bulk writes, and that archiving and standbys keep up.")
    return found


def _ratios(history: History, node: str, part: str, rest: str, minimum: float) -> dict[str, tuple[float, float]]:
    """database -> (part / (part + rest), part + rest) of two counters' growth over the window, where that total
    is at least `minimum`."""
    parts, rests = _series(history, part, node), _series(history, rest, node)
    found = {}
    for database in parts:
        grown, other = _grown(parts, database), _grown(rests, database)
        if grown + other >= minimum:
            found[database] = (grown / (grown + other), grown + other)
    return found


def _grown(series: dict[str, list[Point]], database: str) -> float:
    points = series.get(database, [])
    return increase(points).total if len(points) > 1 else 0.0


def _growth_per_hour(points: list[Point]) -> float | None:
    if len(points) < 2:
        return None
    seconds = (dt.datetime.fromisoformat(points[-1].at) - dt.datetime.fromisoformat(points[0].at)).total_seconds()
    if seconds < MIN_GROWTH_WINDOW:
        return None
    return (points[-1].value - points[0].value) / seconds * 3600.0
