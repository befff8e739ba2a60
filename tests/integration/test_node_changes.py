"""Nodes that change in the spec: a removed node is removed from the pair (repmgr, its slot, its host), a
renamed node gets a new repmgr node id, and the primary is never removed. Real sshd, PostgreSQL 15, repmgr."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from pgaasctl.store import open_store
from tests.support.local_pair import Lab, LocalPair, no_traceback, processes_mentioning, wait_until


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("nodes", slot=1) as lab:
        lab.add_pair("np", replication="synchronous")
        yield lab


@pytest.fixture
def np_(lab: Lab) -> LocalPair:
    pair = lab.pairs["np"]
    pair.ensure_healthy()
    return pair


def registered(pair: LocalPair, primary: str) -> dict[int, str]:
    return dict(pair.query(primary, "SELECT node_id, node_name FROM repmgr.nodes ORDER BY node_id", dbname="repmgr"))


def slots(pair: LocalPair, primary: str) -> list[str]:
    return [r[0] for r in pair.query(primary, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")]


def test_a_node_removed_from_the_spec_leaves_the_pair(np_: LocalPair) -> None:
    primary = np_.primary()
    standby = np_.other(primary)
    standby_dir = np_.node_dir(standby)
    np_.rewrite_spec(nodes=[{"name": primary}])

    plan = np_.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert f"node {standby} is no longer in the spec" in plan.flat
    assert (f"node {standby}: no longer in the spec: stop it, unregister it from repmgr, drop its replication slot, "
            "remove its host") in plan.flat
    assert "synchronous_standby_names: * ->" in plan.flat, plan.output  # a primary alone must not wait

    applied = np_.ws.apply()
    assert applied.exit_code == 0, applied.output
    no_traceback(applied)
    assert not standby_dir.exists() and processes_mentioning(str(standby_dir) + "/") == {}
    assert list(registered(np_, primary).values()) == [primary]
    assert slots(np_, primary) == []
    with psycopg.connect(host=np_.address(primary), port=5432, user="postgres", password=np_.admin_password,
                         dbname="postgres", autocommit=True, options="-c statement_timeout=5000") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS alone (x int)")
        conn.execute("INSERT INTO alone VALUES (1)")  # commits: nothing waits for the removed standby
    np_.ws.assert_converged()
    # back to two nodes: the standby is made again
    np_.ensure_healthy()


def test_a_renamed_node_gets_a_new_id_and_the_old_one_goes(np_: LocalPair) -> None:
    primary = np_.primary()
    old = np_.other(primary)
    before = registered(np_, primary)
    new = "np-c"
    np_.rewrite_spec(nodes=[{"name": primary}, {"name": new}])
    plan = np_.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert "not allocated" not in plan.output
    assert f"node {new}: create the host" in plan.flat and f"node {old}: no longer in the spec" in plan.flat
    applied = np_.ws.apply()
    assert applied.exit_code == 0, applied.output
    after = registered(np_, primary)
    assert sorted(after.values()) == sorted([primary, new])
    new_id = next(i for i, name in after.items() if name == new)
    assert new_id > max(before), (before, after)  # the removed node's id is not reused
    assert not np_.node_dir(old).exists()
    rows = np_.query(primary, "SELECT application_name, sync_state FROM pg_stat_replication")
    assert rows == [(new, "sync")], rows
    assert slots(np_, primary) == [f"repmgr_slot_{new_id}"]
    np_.ws.assert_converged()
    # leave the module's pair as the baseline declares it
    np_.ws.reset()
    assert np_.ws.apply().exit_code == 0
    np_.ensure_healthy()


def test_the_primary_is_never_removed(np_: LocalPair) -> None:
    primary = np_.primary()
    standby = np_.other(primary)
    np_.rewrite_spec(nodes=[{"name": standby}])
    plan = np_.ws.plan()
    assert plan.exit_code == 1, plan.output
    assert f"node {primary}" in plan.flat and "is the primary, but the spec no longer declares it" in plan.flat
    assert f"pgaasctl switchover np --to {standby}" in plan.flat
    assert np_.ws.apply().exit_code == 1
    np_.assert_whole(primary)


def test_node_files_from_an_older_pgaasctl_are_rewritten(np_: LocalPair) -> None:
    """A pair made before start.sh existed: its repmgr.conf starts PostgreSQL without the standby's floor."""
    store = open_store(np_.ws.store_url, mode="write")
    record = store.managed("np")["pair.np"]
    store.record("pair.np", "np", "pair", "np", {k: v for k, v in record.attributes.items() if k != "node_files"})
    store.close()
    for node in np_.nodes:
        (np_.etc(node) / "start.sh").unlink()  # as an older bootstrap left the node
    plan = np_.ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    for node in np_.nodes:
        assert f"node {node}: rewrite repmgr.conf and restart repmgrd" in plan.flat
    guards = {node: (np_.node_dir(node) / "run" / "guard.pid").read_text().split()[0] for node in np_.nodes}
    np_.ws.must_apply()
    for node in np_.nodes:
        assert (np_.etc(node) / "start.sh").is_file()
        assert (np_.node_dir(node) / "run" / "guard.pid").read_text().split()[0] != guards[node], "the guard restarted"
        wait_until(lambda node=node: np_.query(node, "SELECT 1 FROM pg_stat_activity WHERE application_name = "
                                                   "'pgaasctl-guard'"), 10, f"the new guard's session on {node}")
    np_.ws.assert_converged()
    np_.assert_whole()


def test_promote_by_hand_runs_the_hook_and_refuses_two_primaries(np_: LocalPair) -> None:
    np_.rewrite_spec(failover={"mode": "manual"})  # repmgrd will not promote: a person does
    np_.ws.must_apply()
    primary = np_.primary()
    standby = np_.other(primary)
    refused = np_.ws.run("promote", "np", standby, str(np_.ws.specs))
    assert refused.exit_code == 1 and "would make two primaries" in refused.flat, refused.output

    np_.stop_immediate(primary)
    plan = np_.ws.plan()
    assert plan.exit_code == 1 and f"pgaasctl promote np {standby}" in plan.flat, plan.output
    assert "repmgr standby promote" not in plan.flat
    promoted = np_.ws.run("promote", "np", standby, str(np_.ws.specs))
    assert promoted.exit_code == 0, promoted.output
    assert np_.role_of(standby) == "primary"
    assert np_.value(standby, "SHOW synchronous_standby_names") == ""  # the hook ran: commits do not wait
    np_.execute(standby, "CREATE TABLE IF NOT EXISTS after_promote (x int)")
    history = json.loads(np_.ws.run("history", str(np_.ws.specs), "--json").stdout)
    assert history[0]["operation"] == "promote" and history[0]["status"] == "applied"
    np_.ws.reset()
    np_.ws.must_apply()  # rejoins the old primary, back to automatic failover
    np_.assert_whole(standby)


def test_a_stopped_pair_never_loses_its_primary_to_a_spec_change(np_: LocalPair) -> None:
    primary = np_.primary()
    standby = np_.other(primary)
    np_.stop_postgres(standby)
    np_.stop_postgres(primary)  # a stopped pair (a reboot), the primary last
    np_.rewrite_spec(nodes=[{"name": standby}])
    for result in (np_.ws.plan(), np_.ws.apply()):
        assert result.exit_code == 1, result.output
        assert f"no node runs as primary, and {primary} ({np_.address(primary)})" in result.flat, result.output
        assert "it may be the primary" in result.flat
    assert np_.role_of(standby) is None and np_.role_of(primary) is None  # nothing was started or removed
    np_.ws.reset()
    np_.ws.must_apply()  # the pair starts, its former primary first
    assert np_.primary() == primary
