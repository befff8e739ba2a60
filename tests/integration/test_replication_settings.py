"""Settings that replication depends on, on a real synchronous local pair (PostgreSQL 15, repmgr, sshd).

- the hot-standby parameters never keep a standby from starting (the issue: lowering max_connections, then a
  switchover, broke the pair), and `pgaasctl restart` changes them in the order PostgreSQL requires;
- parameters pgaasctl's replication owns are refused at plan time; shared_preload_libraries keeps repmgr;
- a failed start names the node's log and shows its last lines; a rejoin never re-clones after one;
- a failure inside a switchover is reported as itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.local_pair import Lab, LocalPair, Writer, no_traceback
from tests.support.workspace import Workspace

TABLE = "ticks"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("replset", slot=3) as lab:
        lab.add_pair("rs", replication="synchronous")
        yield lab


@pytest.fixture
def rs(lab: Lab) -> LocalPair:
    """The module's pair, healthy, with the baseline specs and no restart pending."""
    pair = lab.pairs["rs"]
    pair.ensure_healthy()
    restarted = pair.ws.run("restart", "rs", "--pending", str(pair.ws.specs))
    assert restarted.exit_code == 0, restarted.output
    return pair


def _setting(pair: LocalPair, name: str) -> dict[str, str]:
    return {node: pair.value(node, f"SHOW {name}") for node in pair.nodes}


def _restart(pair: LocalPair, *args: str) -> str:
    result = pair.ws.run("restart", pair.name, *args, str(pair.ws.specs))
    no_traceback(result)
    assert result.exit_code == 0, result.output + "".join(pair.logs(n) for n in pair.nodes)
    return result.flat


def test_lowered_hot_standby_parameter_survives_switchover_and_reclone(rs: LocalPair) -> None:
    old = rs.primary()
    new = rs.other(old)
    rs.rewrite_spec(settings={"max_connections": 150})
    plan = rs.ws.plan()
    assert "max_connections: 200 -> 150 (restart required)" in plan.flat, plan.output
    rs.ws.must_apply()  # ALTER SYSTEM on both nodes; both still run 200

    # the switchover of the issue: the old primary restarts as a standby while the new primary runs 200
    switched = rs.ws.run("switchover", "rs", str(rs.ws.specs))
    assert switched.exit_code == 0, switched.output + rs.logs(old)
    rs.assert_whole(new)
    assert _setting(rs, "max_connections") == {old: "200", new: "200"}

    # the plan and status say a restart is pending, per node, and how to do it
    plan = rs.ws.plan("--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert "max_connections = 150 takes effect only after a restart (the primary runs 200)" in plan.flat, plan.output
    assert "pgaasctl restart rs --pending" in plan.flat
    [status] = rs.ws.status_json()
    assert {n["name"]: n["pending_restart"] for n in status["nodes"]} == {old: ["max_connections"], new: ["max_connections"]}
    text = rs.ws.status()
    assert text.exit_code == 0, text.output
    assert "pending restart" in text.flat and f"{old} " in text.flat and "max_connections" in text.flat, text.output

    # a standby cloned afresh from the primary that still runs 200 starts too
    rs.stop_postgres(old)
    data = rs.node_dir(old) / "data"
    for entry in data.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    plan = rs.ws.plan()
    assert f"node {old}: re-clone a standby from {new}" in plan.flat, plan.output
    applied = rs.ws.apply()
    assert applied.exit_code == 0, applied.output + rs.logs(old)
    rs.assert_whole(new)
    assert _setting(rs, "max_connections") == {old: "200", new: "200"}

    # restart: lowering needs the primary first, in place, then the standby
    out = _restart(rs, "--pending")
    assert "max_connections is lowered (200 -> 150)" in out, out
    assert f"{new} (primary): restarted in place" in out and f"{old} (standby): restarted" in out, out
    assert "writes paused" in out, out
    assert rs.primary() == new
    rs.assert_whole(new)
    assert _setting(rs, "max_connections") == {old: "150", new: "150"}
    [status] = rs.ws.status_json()
    assert all(n["pending_restart"] == [] for n in status["nodes"]), status
    rs.ws.assert_converged()

    # nothing pending: nothing done, exit 0; the restart is in the history
    assert "no restart is pending" in _restart(rs, "--pending")
    history = rs.ws.run("history", "rs", str(rs.ws.specs))
    assert "restart" in history.flat and "applied" in history.flat, history.output


def test_raised_parameters_restart_standby_first_then_switch_over(rs: LocalPair) -> None:
    old = rs.primary()
    new = rs.other(old)
    rs.execute(old, f"CREATE TABLE IF NOT EXISTS {TABLE} (n int PRIMARY KEY)")
    rs.execute(old, f"TRUNCATE {TABLE}")
    rs.rewrite_spec(settings={"max_connections": 250, "shared_preload_libraries": "pg_stat_statements"})
    plan = rs.ws.plan()
    # repmgr is always kept, and the plan shows the merged value
    assert "shared_preload_libraries: repmgr -> pg_stat_statements, repmgr (restart required)" in plan.flat, plan.output
    rs.ws.must_apply()

    uri = rs.ws.connection("rs", "--role", "postgres").stdout.strip()
    with Writer(uri, rs.admin_password, TABLE) as writer:
        writer.wait_for_more(10, timeout=30)
        out = _restart(rs, "--pending")
        writer.wait_for_more(10, timeout=30)
    assert f"{new} (standby): restarted" in out and f"{old} (primary): restarted by switchover" in out, out
    assert "writes paused" in out, out
    present = {row[0] for row in rs.query(new, f"SELECT n FROM {TABLE}")}
    assert sorted(set(writer.acked) - present) == [], "acknowledged commits lost in the restart"
    assert rs.primary() == new
    rs.assert_whole(new)
    assert _setting(rs, "max_connections") == {old: "250", new: "250"}
    assert _setting(rs, "shared_preload_libraries") == {old: "pg_stat_statements, repmgr", new: "pg_stat_statements, repmgr"}
    [status] = rs.ws.status_json()
    assert all(n["repmgrd"] and n["pending_restart"] == [] for n in status["nodes"]), status
    rs.ws.assert_converged()


def test_owned_parameters_are_refused_at_plan_time(rs: LocalPair) -> None:
    primary = rs.primary()
    auto_conf = "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf' ORDER BY 1"
    before = rs.query(primary, auto_conf)
    rs.rewrite_spec(settings={
        "port": 5433, "listen_addresses": "*", "wal_level": "minimal", "max_wal_senders": 0, "hot_standby": "off",
        "primary_conninfo": "host=elsewhere", "unix_socket_directories": "/tmp", "wal_log_hints": "off",
        "max_replication_slots": 1, "work_mem": "8MB",
    })
    result = rs.ws.plan()
    no_traceback(result)
    assert result.exit_code == 1, result.output
    for expected in ("pair.rs: port is owned by pgaasctl", "pair.rs: listen_addresses is owned by pgaasctl",
                     "pair.rs: wal_level minimal", "pair.rs: max_wal_senders 0", "pair.rs: hot_standby off",
                     "pair.rs: primary_conninfo is owned by", "pair.rs: unix_socket_directories is owned by",
                     "pair.rs: wal_log_hints off", "pair.rs: max_replication_slots 1"):
        assert expected in result.flat, (expected, result.output)
    assert "work_mem" not in result.flat
    applied = rs.ws.apply()
    assert applied.exit_code == 1
    assert rs.query(primary, auto_conf) == before  # nothing was written


def test_existing_pair_without_ssh_refuses_only_what_cuts_pgaasctl_off(ws: Workspace) -> None:
    ws.pair(settings={"port": 5439, "listen_addresses": "'*'", "wal_level": "minimal", "max_wal_senders": 0})
    result = ws.plan()
    assert result.exit_code == 1, result.output
    assert "pair.main: port is owned by pgaasctl" in result.flat
    assert "pair.main: listen_addresses is owned by pgaasctl" in result.flat
    assert "wal_level" not in result.flat and "max_wal_senders" not in result.flat  # one server of the user's own
    ws.pair(settings={"wal_level": "minimal", "max_wal_senders": 0})
    assert ws.plan().exit_code == 0


def test_failed_start_names_the_log_and_is_never_recloned(rs: LocalPair) -> None:
    old = rs.primary()
    new = rs.other(old)
    version_file = rs.node_dir(old) / "data" / "PG_VERSION"
    inode = version_file.stat().st_ino
    conf = rs.etc(old) / "postgresql.conf"
    original = conf.read_text()
    # a bad hand edit: the node runs on, but cannot start again
    conf.write_text(original + "unix_socket_directories = '/nonexistent/pgaasctl-test'\n")
    try:
        switched = rs.ws.run("switchover", "rs", str(rs.ws.specs))
        no_traceback(switched)
        assert switched.exit_code == 1, switched.output
        flat = switched.flat
        # the failure itself comes first, with the log; the cleanup's failure only after it
        assert f"node {old}" in flat and "PostgreSQL did not start" in flat, switched.output
        assert f"{rs.node_dir(old)}/log/postgresql.log" in flat, switched.output
        assert 'could not create lock file "/nonexistent/pgaasctl-test/' in flat, switched.output
        if "unpause" in flat:
            assert flat.index("did not start") < flat.index("unpause"), switched.output
        assert rs.role_of(new) == "primary"

        # apply rejoins it: the start fails the same way, and the data directory is not wiped for it
        applied = rs.ws.apply()
        no_traceback(applied)
        assert applied.exit_code == 1, applied.output
        assert "PostgreSQL did not start" in applied.flat and "/nonexistent/pgaasctl-test/" in applied.flat
        assert "clone" not in applied.stderr, applied.output
        assert version_file.stat().st_ino == inode, "the node was re-cloned after a failed start"
    finally:
        conf.write_text(original)
    rs.ws.must_apply()
    assert version_file.stat().st_ino == inode, "the node was re-cloned"
    rs.assert_whole(new)


def test_lowering_and_raising_hot_standby_parameters_at_once_is_refused(rs: LocalPair) -> None:
    """No restart order suits both: the wrong one pauses the standby's replay until it is restarted again."""
    rs.rewrite_spec(settings={"max_connections": 150, "max_worker_processes": 16})
    rs.ws.must_apply()
    refused = rs.ws.run("restart", "rs", "--pending", str(rs.ws.specs))
    assert refused.exit_code == 1, refused.output
    assert "max_connections go down while max_worker_processes go up" in refused.flat
    assert "Change them in two steps" in refused.flat
    standby = rs.other(rs.primary())
    assert rs.value(standby, "SELECT pg_get_wal_replay_pause_state()") == "not paused"  # nothing was restarted
    rs.ws.reset()
    rs.ws.must_apply()  # back to the baseline: nothing is left pending, for the next test
