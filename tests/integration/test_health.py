"""Health checks driven by real conditions on a real pair, and back: a transaction held open, a session idle in a
transaction, a blocked session, connections filling up, an inactive slot holding WAL, the standby stopped, repmgrd
killed. Each round is `pgaasctl agent --once`; the Workspace's thresholds are lowered so a test needs seconds, not
hours."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator

import psycopg
import pytest

from pgaasctl.store import open_store
from tests.support.local_pair import Lab, LocalPair, wait_until

THRESHOLDS = {
    "long_transaction_seconds": {"warn": 1, "critical": 3600},
    "idle_in_transaction_sessions": {"warn": 1, "critical": 5},
    "blocked_sessions": {"warn": 1, "critical": 5},
    "connections_used": {"warn": 0.05, "critical": 0.9},
    "inactive_slot_bytes": {"warn": 1, "critical": 1024 ** 4},
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("health", slot=2) as lab:
        lab.add_pair("hc", replication="synchronous")
        yield lab


@pytest.fixture
def hc(lab: Lab) -> LocalPair:
    pair = lab.pairs["hc"]
    pair.ensure_healthy()
    doc = pair.ws.specs / "00-workspace.yaml"
    spec = json.loads(doc.read_text().split("spec: ", 1)[1])
    pair.ws.write("00-workspace.yaml", "kind: Workspace\nspec: " + json.dumps(
        {**spec, "monitoring": {"checks": THRESHOLDS}}) + "\n")  # reset() by the next test's ensure_healthy
    return pair


def _checks(pair: LocalPair) -> dict[str, tuple[str, str]]:
    """One agent round; then check name -> (status, node) of the worst result of each check."""
    result = pair.ws.run("agent", str(pair.ws.specs), "--once")
    assert result.exit_code in (0, 1), result.output
    store = open_store(pair.ws.store_url, mode="read")
    try:
        lookup = store.lookup(pair.name)
    finally:
        store.close()
    assert lookup is not None
    worst: dict[str, tuple[str, str]] = {}
    order = {"ok": 0, "warn": 1, "critical": 2}
    for check in lookup.checks:
        if check.name not in worst or order[check.status] > order[worst[check.name][0]]:
            worst[check.name] = (check.status, check.node)
    return worst


def test_everything_is_ok_on_a_quiet_healthy_pair(hc: LocalPair) -> None:
    assert {name: status for name, (status, _) in _checks(hc).items() if status != "ok"} == {}


def test_a_transaction_held_open_then_idle_then_ended(hc: LocalPair) -> None:
    primary = hc.primary()
    with hc.connect(primary) as held:
        held.autocommit = False
        held.execute("SELECT txid_current()")  # a transaction with an id, now idle in it
        wait_until(lambda: (hc.value(primary, "SELECT extract(epoch FROM max(now() - xact_start)) FROM "
                                              "pg_stat_activity WHERE state = 'idle in transaction'") or 0) >= 1.0,
                   10, "the transaction to be a second old")
        checks = _checks(hc)
        assert checks["long transactions"] == ("warn", primary)
        assert checks["idle in transaction"] == ("warn", primary)
        held.rollback()
    checks = _checks(hc)
    assert checks["long transactions"][0] == checks["idle in transaction"][0] == "ok"


def test_a_blocked_session_and_back(hc: LocalPair) -> None:
    primary = hc.primary()
    hc.execute(primary, "CREATE TABLE IF NOT EXISTS contended (n int)")
    with hc.connect(primary) as holder, hc.connect(primary) as waiter:
        holder.autocommit = False
        holder.execute("LOCK TABLE contended IN ACCESS EXCLUSIVE MODE")
        blocked = threading.Thread(target=_quietly, args=(waiter, "SET lock_timeout = '30s'; SELECT * FROM contended"))
        blocked.start()
        try:
            wait_until(lambda: hc.value(primary, "SELECT count(*) FROM pg_stat_activity WHERE "
                                                 "cardinality(pg_blocking_pids(pid)) > 0") >= 1, 10, "a blocked session")
            assert _checks(hc)["blocked sessions"] == ("warn", primary)
        finally:
            holder.rollback()
            blocked.join(timeout=30)
    assert _checks(hc)["blocked sessions"][0] == "ok"


def test_connections_filling_up_and_back(hc: LocalPair) -> None:
    primary = hc.primary()
    sessions = [hc.connect(primary) for _ in range(12)]  # 12+ of max_connections 200 > the 0.05 warn line
    try:
        assert _checks(hc)["connections used"] == ("warn", primary)
    finally:
        for session in sessions:
            session.close()
    assert _checks(hc)["connections used"][0] == "ok"


def test_an_inactive_slot_holding_wal_and_back(hc: LocalPair) -> None:
    primary = hc.primary()
    hc.execute(primary, "SELECT pg_create_physical_replication_slot('health_probe', true)")
    try:
        hc.execute(primary, "CREATE TABLE IF NOT EXISTS churn AS SELECT g FROM generate_series(1, 20000) g")
        assert _checks(hc)["inactive slots"] == ("warn", primary)
    finally:
        hc.execute(primary, "SELECT pg_drop_replication_slot('health_probe')")
        hc.execute(primary, "DROP TABLE IF EXISTS churn")
    assert _checks(hc)["inactive slots"][0] == "ok"


def test_the_standby_stopped_and_repmgrd_killed_and_apply_heals(hc: LocalPair) -> None:
    primary = hc.primary()
    standby = hc.other(primary)
    pid = int((hc.node_dir(primary) / "run" / "repmgrd.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z",
               10, "repmgrd to die")
    assert _checks(hc)["failover"] == ("critical", primary)
    hc.stop_immediate(standby)
    checks = _checks(hc)
    assert checks["pair degraded"][0] == "critical" and checks["synchronous copy"][0] == "critical"
    hc.ws.must_apply()
    wait_until(lambda: all(status == "ok" for status, _ in _checks(hc).values()), 30, "every check ok after apply")


def _quietly(conn: psycopg.Connection, sql: str) -> None:
    try:
        conn.execute(sql)
    except psycopg.Error:
        pass  # ends with the holder's rollback, or its lock_timeout
