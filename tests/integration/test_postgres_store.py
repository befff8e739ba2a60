"""The state store on PostgreSQL, for teams: same behaviour as SQLite, password never shown."""

from __future__ import annotations

import pytest

from pgaasctl.errors import LockHeld
from pgaasctl.store import open_store
from tests.support.pgserver import PgServer
from tests.support.workspace import Workspace


@pytest.fixture
def store_url(pg: PgServer) -> str:
    pg.execute("CREATE DATABASE pgaasctl_state")
    return f"postgresql://postgres:{pg.admin_password}@{pg.host}:{pg.port}/pgaasctl_state"


def test_apply_records_in_a_postgresql_store(ws: Workspace, store_url: str) -> None:
    ws.write("r.yaml", "kind: Role\nmetadata: {name: app, pair: main}\n")
    result = ws.run("apply", str(ws.specs), "--auto-approve", "--store", store_url)
    assert result.exit_code == 0, result.output
    assert ws.server.execute("SELECT address FROM objects ORDER BY 1", dbname="pgaasctl_state") == [
        ("pair.main",), ("role.main.app",)
    ]
    [(data,)] = ws.server.execute("SELECT data FROM lookup", dbname="pgaasctl_state")
    assert '"role":"primary"' in data and '"source":"apply"' in data
    listed = ws.run("state", "list", str(ws.specs), "--store", store_url)
    assert listed.stdout.split() == ["pair.main", "role.main.app"]
    converged = ws.run("plan", str(ws.specs), "--detailed-exitcode", "--store", store_url)
    assert converged.exit_code == 0, converged.output


def test_locks_work_across_connections(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    try:
        with first.locked("main", "apply", timeout=0):
            with pytest.raises(LockHeld) as held:
                with second.locked("main", "apply", timeout=0.2):
                    pass
            assert "pair 'main' is locked by" in held.value.message
        with second.locked("main", "apply", timeout=0):
            pass
    finally:
        first.close()
        second.close()


def test_unreachable_store_hides_the_password(ws: Workspace, pg: PgServer) -> None:
    url = f"postgresql://postgres:{pg.admin_password}@{pg.host}:1/nowhere"
    result = ws.run("state", "list", str(ws.specs), "--store", url)
    assert result.exit_code == 1
    assert "cannot open the state store postgresql://postgres@" in result.flat
    assert pg.admin_password not in result.output


def test_metrics_history_on_a_postgresql_store(store_url: str) -> None:
    from pgaasctl.monitor.metrics import Sample

    store = open_store(store_url)
    try:
        for minute in (0, 10, 20):
            store.record_samples("orders", "orders-a", f"2026-12-01T10:{minute:02d}:00.000+00:00",
                                 [Sample(metric="pg_database_size_bytes", value=float(minute), database="app")])
        assert [s.value for s in store.samples("orders", "pg_database_size_bytes")] == [0.0, 10.0, 20.0]
        assert store.roll_up(before="2026-12-01T11:00:00+00:00") == 3
        [hour] = store.hourly("orders", "pg_database_size_bytes")
        assert (hour.hour, hour.average, hour.count) == ("2026-12-01T10", 10.0, 3)
        store.prune(hourly_before="2026-12-02T00:00:00+00:00", events_before="2026-12-01T00:00:00+00:00")
        assert store.hourly("orders", "pg_database_size_bytes") == []
    finally:
        store.close()
