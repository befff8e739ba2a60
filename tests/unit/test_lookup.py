"""The lookup: what a look at a pair records, what changed between two looks (events), and how the store keeps
both. The agent's loop itself runs against real pairs in tests/integration/test_agent.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pgaasctl.durations import parse_duration
from pgaasctl.errors import PgaasError
from pgaasctl.monitor.endpoint import parse_listen
from pgaasctl.monitor.lookup import changes, from_status
from pgaasctl.monitor.models import LookupPair
from pgaasctl.status import NodeStatus, PairStatus
from pgaasctl.store import Store, open_store


def _status(primary: str = "a", standby_role: str = "standby", degraded: bool = False, fenced: str | None = None,
            error: str | None = None) -> PairStatus:
    other = "b" if primary == "a" else "a"
    nodes = [NodeStatus(name=primary, address=f"10.0.0.{1 if primary == 'a' else 2}:5432", role="primary", repmgrd=True),
             NodeStatus(name=other, address=f"10.0.0.{2 if primary == 'a' else 1}:5432", role=standby_role,
                        replication="streaming, sync" if standby_role == "standby" else None, lag_seconds=0.01,
                        lag_bytes=128, repmgrd=True, fenced=fenced)]
    return PairStatus(pair="orders", provider="local", replication="synchronous", nodes=[] if error else nodes,
                      degraded=degraded or error is not None, error=error,
                      warnings=["pair 'orders' is degraded: node b is down"] if degraded else [])


def _look(status: PairStatus, at: str, previous: LookupPair | None = None) -> LookupPair:
    return from_status(status, "agent", previous, at=at)


def test_a_look_records_roles_and_when_each_node_last_answered() -> None:
    first = _look(_status(), "2026-12-01T10:00:00.000+00:00")
    assert first.healthy and first.primary == "a"
    assert [(n.name, n.role, n.up, n.seen_at) for n in first.nodes] == [
        ("a", "primary", True, "2026-12-01T10:00:00.000+00:00"), ("b", "standby", True, "2026-12-01T10:00:00.000+00:00")]
    later = _look(_status(standby_role="down", degraded=True), "2026-12-01T10:00:05.000+00:00", first)
    down = next(n for n in later.nodes if n.name == "b")
    assert not down.up and down.seen_at == "2026-12-01T10:00:00.000+00:00"  # kept from when it last answered
    assert not later.healthy and later.reasons == ["pair 'orders' is degraded: node b is down"]


def test_the_first_look_at_a_pair_is_no_event() -> None:
    assert changes(None, _look(_status(), "t1")) == []


def test_a_new_primary_is_a_failover_or_when_planned_a_switchover() -> None:
    before = _look(_status("a"), "t1")
    after = _look(_status("b"), "t2", before)
    [failover] = changes(before, after)
    assert (failover.kind, failover.node, failover.detail, failover.at) == ("failover", "b", "b is the primary (was a)", "t2")
    [switchover] = changes(before, after, switching_over=True)
    assert switchover.kind == "switchover"


def test_nodes_going_down_and_up_and_the_pair_degrading_and_healing() -> None:
    whole = _look(_status(), "t1")
    broken = _look(_status(standby_role="down", degraded=True), "t2", whole)
    assert [(e.kind, e.node) for e in changes(whole, broken)] == [("node down", "b"), ("degraded", "")]
    healed = _look(_status(), "t3", broken)
    assert [(e.kind, e.node) for e in changes(broken, healed)] == [("node up", "b"), ("healthy", "")]
    assert changes(healed, _look(_status(), "t4", healed)) == []  # nothing changed, nothing said


def test_a_fenced_node_is_an_event_once() -> None:
    before = _look(_status(), "t1")
    fenced = _look(_status(standby_role="down", fenced="fenced: a stale primary", degraded=True), "t2", before)
    assert ("fenced", "b", "fenced: a stale primary") in [(e.kind, e.node, e.detail) for e in changes(before, fenced)]
    again = _look(_status(standby_role="down", fenced="fenced: a stale primary", degraded=True), "t3", fenced)
    assert [e.kind for e in changes(fenced, again)] == []


def test_a_pair_whose_state_cannot_be_established_keeps_its_last_node_facts() -> None:
    before = _look(_status(), "t1")
    unreadable = _look(_status(error="cannot reach any node\n  Check the network."), "t2", before)
    assert not unreadable.healthy and unreadable.error == "cannot reach any node"
    assert unreadable.nodes == before.nodes  # the last known facts, dated by their seen_at
    assert [(e.kind, e.detail) for e in changes(before, unreadable)] == [
        ("error", "cannot reach any node"), ("degraded", "cannot reach any node")]
    readable = _look(_status(), "t3", unreadable)
    assert [e.kind for e in changes(unreadable, readable)] == ["healthy"]


# ---------------------------------------------------------------- the store

@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///state/test.db", base=tmp_path)
    yield s
    s.close()


def test_the_store_keeps_one_lookup_per_pair_and_every_event(store: Store) -> None:
    first = _look(_status("a"), "2026-12-01T10:00:00.000+00:00")
    store.record_lookup(first, [])
    second = _look(_status("b"), "2026-12-01T10:00:01.000+00:00", first)
    store.record_lookup(second, changes(first, second))
    assert store.lookup("orders") == second and store.lookups() == [second]
    assert store.lookup("nothing") is None
    [event] = store.events("orders")
    assert (event.kind, event.node, event.at) == ("failover", "b", "2026-12-01T10:00:01.000+00:00")
    assert store.events("orders", since="2026-12-01T10:00:02") == [] and store.events("other") == []
    store.forget_pair("orders")
    assert store.lookup("orders") is None and len(store.events()) == 1  # the events stay, as history


def test_events_come_oldest_first_and_limit_keeps_the_newest(store: Store) -> None:
    look = _look(_status("a"), "t0")
    for second in range(5):
        primary = "b" if second % 2 == 0 else "a"
        after = _look(_status(primary), f"2026-12-01T10:00:0{second}.000+00:00", look)
        store.record_lookup(after, changes(look, after))
        look = after
    assert [e.at[17:19] for e in store.events(limit=3)] == ["02", "03", "04"]


# ---------------------------------------------------------------- command-line values

@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("24h", 86400.0),
                                                ("7d", 604800.0), ("3", 3.0), (" 1.5s ", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--interval") == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "5 parsecs", "1e3", "s"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(PgaasError) as caught:
        parse_duration(text, "--since")
    assert caught.value.message.startswith("--since:") and "500ms, 5s, 2m, 24h or 7d" in (caught.value.hint or "")


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9187") == ("127.0.0.1", 9187)
    assert parse_listen("[::1]:9187") == ("::1", 9187)
    for bad in ("9187", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":80", "host:http"):
        with pytest.raises(PgaasError):
            parse_listen(bad)


def test_a_store_from_before_monitoring_reads_as_empty_and_gains_the_tables_on_its_next_write(tmp_path: Path) -> None:
    import sqlite3

    open_store("sqlite:///old.db", base=tmp_path).close()
    with sqlite3.connect(tmp_path / "old.db") as raw:  # what a pgaasctl from before the agent left
        for table in ("lookup", "events", "series", "points", "points_hourly"):
            raw.execute(f"DROP TABLE {table}")
    reading = open_store("sqlite:///old.db", base=tmp_path, mode="read")
    try:
        assert reading.lookup("orders") is None and reading.events() == [] and reading.lookups() == []
        assert reading.samples("orders", "pg_up") == [] and reading.hourly("orders", "pg_up") == []
    finally:
        reading.close()
    writing = open_store("sqlite:///old.db", base=tmp_path, mode="write")
    try:
        writing.record_lookup(_look(_status(), "t1"), [])
        assert writing.lookup("orders") is not None
    finally:
        writing.close()


def test_a_failover_seen_through_a_look_without_a_primary_still_names_the_old_one() -> None:
    before = _look(_status("a"), "t1")
    between = _look(_status("a", standby_role="standby"), "t2", before)
    between.nodes[0].role, between.nodes[0].up = "down", False  # a is gone, b not promoted yet
    between = between.following(before)
    assert between.primary is None and between.last_primary == "a"
    after = _look(_status("b"), "t3", between)
    assert [e.detail for e in changes(between, after) if e.kind == "failover"] == ["b is the primary (was a)"]


def test_checks_carried_over_by_a_later_look_keep_the_time_the_agent_graded_them() -> None:
    from pgaasctl.monitor.lookup import merge_seen
    from pgaasctl.monitor.models import CheckResult, LookupNode

    graded = _look(_status(), "2026-12-01T10:00:00.000+00:00")
    graded.checks = [CheckResult(name="pair degraded", status="critical", value="degraded")]
    graded.checks_at = graded.checked_at
    by_apply = from_status(_status(), "apply", graded, at="2026-12-01T12:00:00.000+00:00")
    assert by_apply.checked_at == "2026-12-01T12:00:00.000+00:00"
    assert by_apply.checks == graded.checks and by_apply.checks_at == "2026-12-01T10:00:00.000+00:00"
    pushed = merge_seen("orders", [LookupNode(name="a", role="primary", up=True, address="")], "push", by_apply,
                        healthy_if_new=False)
    assert pushed.checks_at == "2026-12-01T10:00:00.000+00:00"
