"""Health checks graded from a lookup, the nodes' latest samples and an hour of history; and rates that survive a
counter reset. Real conditions driving each check on a real server are in tests/integration/test_health.py."""

from __future__ import annotations

import datetime as dt

import pytest

from pgaasctl.monitor.health import CHECKS, evaluate
from pgaasctl.monitor.metrics import Sample
from pgaasctl.monitor.models import CheckResult, LookupNode, LookupPair, StoredSample
from pgaasctl.monitor.rates import Point, increase
from pgaasctl.spec.models import HealthThresholds

START = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)


def _at(seconds: float) -> str:
    return (START + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _lookup(healthy: bool = True, standby_replication: str = "streaming, sync", repmgrd: bool = True,
            lag: float = 0.0, pending: list[str] | None = None) -> LookupPair:
    return LookupPair(pair="orders", healthy=healthy, reasons=[] if healthy else ["node b is down"], checked_at=_at(0),
                      source="agent", replication="synchronous", nodes=[
                          LookupNode(name="a", role="primary", up=True, address="a:5432", repmgrd=True),
                          LookupNode(name="b", role="standby", up=True, address="b:5432", repmgrd=repmgrd,
                                     replication=standby_replication, lag_seconds=lag, pending_restart=pending or []),
                      ])


def _node(sessions: float = 5, longest: float = 0, idle: float = 0, blocked: float = 0, age: float = 1000,
          slot_active: float = 1, slot_bytes: float = 0) -> list[Sample]:
    return [Sample(metric="pg_settings_max_connections", value=100), Sample(metric="pg_stat_activity_count",
            value=sessions, label="active"), Sample(metric="pgaas_longest_transaction_seconds", value=longest),
            Sample(metric="pgaas_idle_in_transaction_sessions", value=idle),
            Sample(metric="pgaas_blocked_sessions", value=blocked),
            Sample(metric="pg_database_frozen_xid_age", value=age, database="app"),
            Sample(metric="pg_replication_slot_active", value=slot_active, label="s1"),
            Sample(metric="pg_replication_slot_retained_bytes", value=slot_bytes, label="s1")]


def _history(series: dict[str, list[float]], step: float = 60.0) -> dict[str, list[StoredSample]]:
    return {metric: [StoredSample(node="a", database="" if metric == "pgaas_wal_position_bytes" else "app", label="",
                                  at=_at(i * step), value=v) for i, v in enumerate(values)]
            for metric, values in series.items()}


def _checks(lookup: LookupPair | None = None, primary: list[Sample] | None = None,
            history: dict[str, list[StoredSample]] | None = None, **limits: dict[str, float]) -> dict[str, CheckResult]:
    thresholds = HealthThresholds(**limits)
    found = evaluate(lookup or _lookup(), {"a": primary or _node(), "b": _node()}, lambda m: (history or {}).get(m, []),
                     thresholds)
    assert {c.name for c in found} == set(CHECKS)  # every check says something, ok included
    return {c.name: c for c in found}


def test_a_healthy_pair_is_ok_everywhere() -> None:
    assert {c.status for c in _checks().values()} == {"ok"}


@pytest.mark.parametrize(("primary", "check", "status"), [
    (_node(sessions=80), "connections used", "warn"),
    (_node(sessions=95), "connections used", "critical"),
    (_node(longest=400), "long transactions", "warn"),
    (_node(longest=4000), "long transactions", "critical"),
    (_node(idle=1), "idle in transaction", "warn"),
    (_node(blocked=7), "blocked sessions", "critical"),
    (_node(age=600_000_000), "wraparound", "warn"),
    (_node(slot_active=0, slot_bytes=2 * 1024 ** 3), "inactive slots", "warn"),
    (_node(slot_active=1, slot_bytes=20 * 1024 ** 3), "inactive slots", "ok"),  # an active slot's consumer reads it
])
def test_node_conditions(primary: list[Sample], check: str, status: str) -> None:
    result = _checks(primary=primary)[check]
    assert result.status == status
    if status != "ok":
        assert result.node == "a" and result.value and result.remedy


def test_pair_conditions() -> None:
    assert _checks(_lookup(healthy=False))["pair degraded"].status == "critical"
    assert _checks(_lookup(standby_replication="streaming, async"))["synchronous copy"].status == "critical"
    assert _checks(_lookup(repmgrd=False))["failover"].node == "b"
    assert _checks(_lookup(lag=30))["replication lag"].status == "warn"
    assert _checks(_lookup(lag=90))["replication lag"].status == "critical"
    pending = _checks(_lookup(pending=["shared_buffers"]))["pending restart"]
    assert (pending.status, pending.value) == ("warn", "shared_buffers") and "pgaasctl restart orders" in pending.remedy


def test_rates_from_the_last_hour() -> None:
    busy = {"pg_stat_database_xact_commit": [0, 900, 1800], "pg_stat_database_xact_rollback": [0, 100, 200]}
    assert _checks(history=_history(busy))["rollback ratio"].status == "warn"  # 10%
    few = {"pg_stat_database_xact_commit": [0, 10], "pg_stat_database_xact_rollback": [0, 10]}
    assert _checks(history=_history(few))["rollback ratio"].status == "ok"  # 20 transactions say nothing
    cold = {"pg_stat_database_blks_hit": [0, 8000], "pg_stat_database_blks_read": [0, 2000]}
    assert _checks(history=_history(cold))["cache hit"].status == "critical"  # 80%
    assert _checks(history=_history({"pg_stat_database_deadlocks": [3, 5]}))["deadlocks"].status == "warn"
    gib = 1024 ** 3
    growing = {"pg_database_size_bytes": [0, gib, 2 * gib], "pgaas_wal_position_bytes": [0, 3 * gib, 6 * gib]}
    result = _checks(history=_history(growing, step=600))  # over 20 minutes: 6 GiB per hour, 18 GiB of WAL
    assert (result["database growth"].status, result["WAL growth"].status) == ("warn", "warn")
    short = _checks(history=_history(growing, step=60))  # 2 minutes of history: too short to extrapolate
    assert (short["database growth"].status, short["WAL growth"].status) == ("ok", "ok")


def test_thresholds_come_from_the_workspace() -> None:
    assert _checks(primary=_node(sessions=30), connections_used={"warn": 0.2, "critical": 0.5})[
        "connections used"].status == "warn"


def test_the_worst_check_is_the_pairs_headline() -> None:
    lookup = _lookup()
    lookup.checks = [CheckResult(name="a", status="warn", value=""), CheckResult(name="b", status="critical", value=""),
                     CheckResult(name="c", status="critical", value=""), CheckResult(name="d", status="ok", value="")]
    assert lookup.worst_check is not None and lookup.worst_check.name == "b"
    lookup.checks = [CheckResult(name="d", status="ok", value="")]
    assert lookup.worst_check is None


def test_increase_across_a_counter_reset() -> None:
    points = [Point(at=_at(0), value=100), Point(at=_at(10), value=150), Point(at=_at(20), value=30),
              Point(at=_at(30), value=50)]
    grown = increase(points)
    assert (grown.total, grown.resets, grown.seconds) == (50 + 30 + 20, 1, 30.0)
    assert grown.per_second == pytest.approx(100 / 30)
    assert increase(points[:1]).per_second is None
