"""Failover of a synchronous local pair: repmgrd promotes the standby when the primary dies; plan shows the
degraded pair and the rejoin; apply makes it whole; split brain is refused; switchover loses nothing.

Each test starts from a healthy pair (the fixture repairs or recreates it), so they do not depend on order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import pgaasctl.live.connect
from pgaasctl.hosts.ssh import CommandResult, SshSessions, SshTarget
from pgaasctl.live.connect import NodeAddress
from tests.support.local_pair import Lab, LocalPair, Writer, alive, no_traceback, signal_all, wait_until

TABLE = "ledger"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("failover", slot=1) as lab:
        lab.add_pair("fo", replication="synchronous")
        yield lab


@pytest.fixture
def fo(lab: Lab) -> LocalPair:
    pair = lab.pairs["fo"]
    pair.ensure_healthy()
    primary = pair.primary()
    pair.execute(primary, f"CREATE TABLE IF NOT EXISTS {TABLE} (n int PRIMARY KEY, at timestamptz DEFAULT now())")
    pair.execute(primary, f"TRUNCATE {TABLE}")
    return pair


def _uri(pair: LocalPair) -> str:
    result = pair.ws.connection(pair.name, "--role", "postgres")
    assert result.exit_code == 0, result.output
    uri = result.stdout.strip()
    assert "target_session_attrs=read-write" in uri
    return uri


def _commits_without_blocking(pair: LocalPair, node: str, timeout: float = 10.0) -> None:
    """A commit on `node` returns: a synchronous primary whose standby is gone would wait forever."""
    done = threading.Event()

    def write() -> None:
        pair.execute(node, f"INSERT INTO {TABLE} (n) VALUES (-1)")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(timeout), f"a commit on {node} blocked for {timeout:g}s: synchronous_standby_names was not cleared"


def _assert_degraded_plan(pair: LocalPair, old: str, new: str) -> str:
    plan = pair.ws.plan()
    assert plan.exit_code == 0, plan.output
    no_traceback(plan)
    assert f'Pair "fo": primary {new} ({pair.address(new)}:5432)' in plan.stdout, plan.output
    assert f"pair 'fo' is degraded: node {old} ({pair.address(old)}) is down" in plan.flat, plan.output
    assert f"node {old}: rejoin as a standby of {new}" in plan.flat, plan.output
    assert "synchronous_standby_names: -> *" in plan.flat, plan.output
    status = pair.ws.status_json()[0]
    assert status["degraded"] is True
    assert {n["name"]: n["role"] for n in status["nodes"]} == {old: "down", new: "primary"}
    assert any(f"node {old}: rejoin" in need for need in status["needs"]), status
    return plan.output


def _assert_made_whole(pair: LocalPair, old: str, new: str) -> None:
    applied = pair.ws.apply()
    assert applied.exit_code == 0, applied.output + pair.logs(old)
    assert pair.role_of(old) == "standby", pair.logs(old)
    pair.assert_whole(new)  # old primary streams from the new one, sync_state sync, synchronous_standby_names '*'
    pair.ws.assert_converged()
    [status] = pair.ws.status_json()
    assert status["degraded"] is False and {n["name"]: n["role"] for n in status["nodes"]} == {old: "standby", new: "primary"}


def test_failover_after_pg_ctl_immediate_loses_no_commit_and_apply_rejoins(fo: LocalPair) -> None:
    old = fo.primary()
    new = fo.other(old)
    uri = _uri(fo)
    with Writer(uri, fo.admin_password, TABLE) as writer:
        writer.wait_for_more(20, timeout=30)
        fo.stop_immediate(old)
        fo.wait_primary(new)
        writer.wait_for_more(20, timeout=30)  # the same connection string now reaches the new primary
        fo.wait_promoted(new)
    assert writer.servers[0] == fo.address(old) and writer.servers[-1] == fo.address(new), writer.servers
    # synchronous replication: every commit acknowledged by the old primary is on the new one
    present = {row[0] for row in fo.query(new, f"SELECT n FROM {TABLE}")}
    lost = sorted(set(writer.acked) - present)
    assert lost == [], f"{len(lost)} acknowledged commits missing on {new}: {lost[:20]}"

    # the promote hook dropped synchronous_standby_names: the lone primary does not block
    assert fo.value(new, "SHOW synchronous_standby_names") == ""
    _commits_without_blocking(fo, new)

    _assert_degraded_plan(fo, old, new)
    _assert_made_whole(fo, old, new)
    # the rejoined node has every row
    assert fo.value(old, f"SELECT count(*) FROM {TABLE} WHERE n > 0") == len(present)


def test_failover_after_kill_9_then_changes_land_on_the_new_primary(fo: LocalPair) -> None:
    old = fo.primary()
    new = fo.other(old)
    fo.kill_postmaster(old)
    fo.wait_promoted(new)

    # an object change planned while the pair is degraded: apply rejoins first, then writes on the new primary
    fo.ws.write("role.yaml", "kind: Role\nmetadata: {name: after_failover, pair: fo}\nspec: {login: true}\n")
    plan = _assert_degraded_plan(fo, old, new)
    assert "+ role.fo.after_failover" in plan
    _assert_made_whole(fo, old, new)
    for node in (new, old):
        assert fo.query(node, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'after_failover'") == [(True,)]

    # and a change to the healed pair goes to the new primary and reaches its standby before apply returns
    fo.ws.write("db.yaml", "kind: Database\nmetadata: {name: after_db, pair: fo}\nspec: {owner: after_failover}\n")
    plan = fo.ws.plan()
    assert f"primary {new}" in plan.stdout and "+ database.fo.after_db" in plan.stdout, plan.output
    fo.ws.must_apply()
    assert fo.query(old, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'after_db'") == [("after_failover",)]
    fo.ws.assert_converged()

    # the connection string follows the failover
    with psycopg.connect(_uri(fo), password=fo.admin_password) as conn:
        assert conn.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()").fetchone() == (fo.address(new), False)


TIMELINE_SQL = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


def _stop_guard(pair: LocalPair, node: str) -> None:
    """Fencing off on `node`: its guard stopped (what a person or a crash may do)."""
    pid = int((pair.node_dir(node) / "run" / "guard.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not alive(pid), 10, f"the guard of {node} to exit", interval=0.02)


def _promoted_with_rows(pair: LocalPair, old: str, new: str, rows: int = 100) -> int:
    """The primary `old` stops; repmgrd promotes `new`, which acknowledges `rows` commits. Returns old's timeline."""
    stale_timeline = pair.value(old, TIMELINE_SQL)
    pair.stop_immediate(old)
    pair.wait_promoted(new)
    pair.execute(new, f"INSERT INTO {TABLE} (n) SELECT generate_series(1, {rows})")  # acknowledged on the new primary
    assert pair.value(new, TIMELINE_SQL) == stale_timeline + 1
    wait_until(lambda: pair.value(new, "SELECT type FROM repmgr.nodes WHERE node_name = %s", (new,), dbname="repmgr")
               == "primary", 30, "repmgr to record the promotion")
    return stale_timeline


def test_an_old_primary_started_by_hand_is_fenced_by_its_guard(fo: LocalPair) -> None:
    old = fo.primary()
    new = fo.other(old)
    _promoted_with_rows(fo, old, new)
    fo.start_postgres(old)  # started by hand after the failover: a stale primary
    started = time.monotonic()
    wait_until(lambda: fo.role_of(old) is None, 10, f"the guard to fence {old}", interval=0.05)
    assert time.monotonic() - started < 5
    assert "fenced: a stale primary" in (fo.node_dir(old) / "log" / "guard.log").read_text()

    status = fo.ws.run("status", str(fo.ws.specs))
    assert status.exit_code == 2, status.output
    assert f"{old} was fenced" in status.flat and "fenced" in status.stdout, status.output
    plan = fo.ws.plan()
    assert f"node {old}: rejoin as a standby of {new}" in plan.flat, plan.output
    _assert_made_whole(fo, old, new)
    assert fo.value(old, f"SELECT count(*) FROM {TABLE} WHERE n > 0") == 100
    assert not (fo.node_dir(old) / "run" / "fenced").exists() or wait_until(
        lambda: not (fo.node_dir(old) / "run" / "fenced").exists(), 5, "the guard to lift the fence")


GUARD_SESSION = "SELECT pid, query_start FROM pg_stat_activity WHERE application_name = 'pgaasctl-guard'"


def _guard_sessions(pair: LocalPair, node: str, looks: int) -> set[int]:
    """The backends of the guard's sessions while it makes `looks` looks (each look starts a query on its session)."""
    pids: set[int] = set()
    seen: set[object] = set()

    def looked() -> bool:
        for pid, started in pair.query(node, GUARD_SESSION):
            pids.add(pid)
            seen.add(started)
        return len(seen) > looks

    wait_until(looked, 10, f"{looks} looks of the guard on {node}", interval=0.1)
    return pids


def test_the_guard_keeps_one_session_that_outlives_timeouts_and_terminations(fo: LocalPair) -> None:
    """A look asks on the guard's one open session (no psql, no backend started twice a second), and a session
    that ends is opened again by the next look: a DBA's idle_session_timeout, or a terminated backend."""
    primary = fo.primary()
    for node in (primary, fo.other(primary)):
        assert len(_guard_sessions(fo, node, 4)) == 1, f"the guard on {node} opened more than one session"
    guard_pid = (fo.node_dir(primary) / "run" / "guard.pid").read_text().split()[0]
    fo.execute(primary, "ALTER SYSTEM SET idle_session_timeout = '300ms'")
    fo.execute(primary, "SELECT pg_reload_conf()")
    try:
        assert len(_guard_sessions(fo, primary, 6)) == 1, "the guard's session ended at idle_session_timeout"
        [[backend]] = fo.query(primary, "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgaasctl-guard'")
        fo.execute(primary, "SELECT pg_terminate_backend(%s)", (backend,))
        wait_until(lambda: fo.query(primary, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                             "'pgaasctl-guard' AND pid <> %s", (backend,)), 10, "a new guard session")
    finally:
        fo.execute(primary, "ALTER SYSTEM RESET idle_session_timeout")
        fo.execute(primary, "SELECT pg_reload_conf()")
    assert (fo.node_dir(primary) / "run" / "guard.pid").read_text().split()[0] == guard_pid
    assert (fo.node_dir(primary) / "run" / "vip.track").read_text().strip() == "0"  # still an eligible primary
    assert "fenced" not in (fo.node_dir(primary) / "log" / "guard.log").read_text()


def test_plan_asks_ssh_only_of_a_node_sql_shows_unhealthy(fo: LocalPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A healthy pair is planned over SQL alone (its admin session reads the pid files, /proc, the fenced mark and
    pg_wal); a node whose guard stopped is asked over SSH as well, and the plan starts the guard again. `status`
    still asks every node over SSH for repmgr's own view of the cluster."""
    asked: list[str] = []
    run_over_ssh = SshSessions.run

    def counted(self: SshSessions, target: SshTarget, command: str, timeout: float | None = 120) -> CommandResult:
        asked.append(target.label)
        return run_over_ssh(self, target, command, timeout)

    monkeypatch.setattr(SshSessions, "run", counted)
    opened: list[tuple[str, str]] = []
    open_session = pgaasctl.live.connect._open

    def sessions(node: NodeAddress, dbname: str, *args: object) -> psycopg.Connection:
        opened.append((node.name, dbname))
        return open_session(node, dbname, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pgaasctl.live.connect, "_open", sessions)
    fo.ws.must_apply()  # the last apply saw which node is primary: the plan opens the standby's session in repmgr's
    opened.clear()
    plan = fo.ws.plan("--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    assert asked == [], f"a healthy pair's plan used SSH: {asked}"
    standby = fo.other(fo.primary())
    # two sessions: the primary's in the admin database, the standby's in repmgr's (repmgr.nodes is read there)
    assert sorted(opened) == sorted([(fo.primary(), "postgres"), (standby, "repmgr")]), opened
    status = fo.ws.run("status", str(fo.ws.specs))
    assert status.exit_code == 0, status.output
    assert all(any(node in label for label in asked) for node in fo.nodes), asked

    guard_pid = int((fo.node_dir(standby) / "run" / "guard.pid").read_text().split()[0])
    os.kill(guard_pid, signal.SIGTERM)
    wait_until(lambda: not alive(guard_pid), 10, f"the guard on {standby} to stop")
    asked.clear()
    plan = fo.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert f"node {standby}: start the fencing guard" in plan.flat, plan.output
    assert asked and all(standby in label for label in asked), asked
    applied = fo.ws.apply()
    assert applied.exit_code == 0, applied.output
    restarted = int((fo.node_dir(standby) / "run" / "guard.pid").read_text().split()[0])
    assert restarted != guard_pid and alive(restarted)
    fo.ws.assert_converged()


def test_split_brain_is_settled_by_evidence(fo: LocalPair) -> None:
    """Fencing is off on the old primary and it runs again after the failover: two primaries. The timelines say
    which one holds the acknowledged commits; plan names it and fences the other, apply heals the pair."""
    old = fo.primary()
    new = fo.other(old)
    _stop_guard(fo, old)
    stale_timeline = _promoted_with_rows(fo, old, new)
    (fo.node_dir(old) / "data" / "standby.signal").unlink(missing_ok=True)
    fo.start_postgres(old)
    assert fo.role_of(old) == "primary" and fo.role_of(new) == "primary"

    fo.ws.write("role.yaml", "kind: Role\nmetadata: {name: split_role, pair: fo}\n")
    plan = fo.ws.plan()
    assert plan.exit_code == 0, plan.output
    no_traceback(plan)
    assert f'Pair "fo": primary {new}' in plan.stdout, plan.output
    assert (f"node {old}: fence it: stop PostgreSQL ({old} is a stale primary on timeline {stale_timeline}; {new} was "
            f"promoted later (timeline {stale_timeline + 1}, forked from timeline {stale_timeline} at") in plan.flat
    assert "bytes of WAL" in plan.flat and f"node {old}: rejoin as a standby of {new}" in plan.flat, plan.output
    [status] = fo.ws.status_json()
    assert status["degraded"] is True and any("split brain settled by evidence" in w for w in status["warnings"])

    _assert_made_whole(fo, old, new)
    for node in (old, new):
        assert fo.query(node, "SELECT 1 FROM pg_roles WHERE rolname = 'split_role'") == [(1,)]
    assert fo.value(new, f"SELECT count(*) FROM {TABLE} WHERE n > 0") == 100
    fo.ws.remove("role.yaml")


@pytest.mark.parametrize("host_down", [False, True], ids=["postgres-down", "host-down"])
def test_a_stale_primary_never_gets_the_promoted_node_rewound_onto_it(fo: LocalPair, host_down: bool) -> None:
    """The promoted node is down and the old primary runs again: a routine rejoin would rewind away every commit
    made on the promoted node. The plan fences the stale primary, starts the promoted node and rejoins the stale
    one to it. With the promoted node's host down too, the plan cannot see its timeline: apply checks again before
    any rewind, refuses, and the next plan settles it."""
    old = fo.primary()
    new = fo.other(old)
    _stop_guard(fo, old)
    stale_timeline = _promoted_with_rows(fo, old, new)
    fo.stop_immediate(new)
    (fo.node_dir(old) / "data" / "standby.signal").unlink(missing_ok=True)
    fo.start_postgres(old)  # the stale primary, started by hand
    assert fo.role_of(old) == "primary"
    if host_down:
        fo.stop_sshd(new)
        assert "start the host" in fo.ws.plan().flat
        refused = fo.ws.apply()
        assert fo.sshd_pid(new) is not None  # apply started the host, then refused to rewind its node
        assert refused.exit_code == 1, refused.output
        no_traceback(refused)
        assert (f"node {new} ({fo.address(new)}) is down on timeline {stale_timeline + 1}, newer than the running "
                f"primary {old} ({fo.address(old)}) on timeline {stale_timeline}") in refused.flat, refused.output
        assert fo.role_of(new) is None  # untouched: not rewound, not started

    plan = fo.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert f"node {old}: fence it: stop PostgreSQL (a stale primary on timeline {stale_timeline}" in plan.flat
    assert f"node {new}: start PostgreSQL (the rightful primary)" in plan.flat, plan.output
    assert f"node {old}: rejoin as a standby of {new}" in plan.flat, plan.output
    _assert_made_whole(fo, old, new)
    assert fo.value(new, f"SELECT count(*) FROM {TABLE} WHERE n > 0") == 100


def test_switchover_swaps_roles_without_losing_a_commit(fo: LocalPair) -> None:
    old = fo.primary()
    new = fo.other(old)
    # a switchover to a node that is not a standby is refused
    refused = fo.ws.run("switchover", "fo", "--to", old, str(fo.ws.specs))
    assert refused.exit_code == 1 and f"'{old}' is not a standby of {old}" in refused.flat, refused.output
    no_traceback(refused)
    assert fo.role_of(old) == "primary"

    with Writer(_uri(fo), fo.admin_password, TABLE) as writer:
        writer.wait_for_more(20, timeout=30)
        result = fo.ws.run("switchover", "fo", str(fo.ws.specs))
        assert result.exit_code == 0, result.output + fo.logs(old) + fo.logs(new)
        assert f"{new} is the primary of 'fo'; {old} follows it" in result.flat
        writer.wait_for_more(20, timeout=30)
    assert fo.role_of(new) == "primary" and fo.role_of(old) == "standby"
    assert writer.servers[-1] == fo.address(new), writer.servers
    present = {row[0] for row in fo.query(new, f"SELECT n FROM {TABLE}")}
    lost = sorted(set(writer.acked) - present)
    assert lost == [], f"{len(lost)} acknowledged commits missing after the switchover: {lost[:20]}"
    fo.assert_whole(new)

    # nothing left for apply to do: the plan is clean, status healthy with repmgrd on both nodes
    fo.ws.assert_converged()
    [status] = fo.ws.status_json()
    assert status["degraded"] is False and status["needs"] == [], status
    assert {n["name"]: (n["role"], n["repmgrd"]) for n in status["nodes"]} == {new: ("primary", True), old: ("standby", True)}


def test_apply_never_touches_a_frozen_old_primary(fo: LocalPair) -> None:
    """Every process of the primary stopped with SIGSTOP: repmgrd fails over; apply must not write standby.signal
    into, stop or rewind the frozen server's data directory."""
    old = fo.primary()
    new = fo.other(old)
    postmaster = fo.postmaster_pid(old)
    frozen = [postmaster, *(int(p) for p in subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                                                            text=True, check=False).stdout.split())]
    signal_all(frozen, signal.SIGSTOP)
    try:
        fo.wait_promoted(new, timeout=60)
        applied = fo.ws.apply()
        assert applied.exit_code == 1, applied.output
        no_traceback(applied)
        assert f"postmaster pid {postmaster}) is frozen" in applied.flat and "kill -CONT" in applied.flat, applied.output
        assert not (fo.node_dir(old) / "data" / "standby.signal").exists()
    finally:
        signal_all(frozen, signal.SIGCONT)
    # resumed, it is a stale primary: stopping it lets apply rejoin it onto the new one
    fo.stop_postgres(old)
    _assert_made_whole(fo, old, new)


def test_status_tells_stalled_commits_and_failover_off(fo: LocalPair) -> None:
    primary = fo.primary()
    standby = fo.other(primary)
    [healthy] = fo.ws.status_json()
    assert healthy["degraded"] is False

    # the standby frozen: its connection stays up and looks streaming, but every commit waits for it
    postmaster = fo.postmaster_pid(standby)
    frozen = [postmaster, *(int(p) for p in subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                                                            text=True, check=False).stdout.split())]
    signal_all(frozen, signal.SIGSTOP)
    writer = threading.Thread(target=lambda: fo.execute(primary, f"INSERT INTO {TABLE} (n) VALUES (7)"), daemon=True)
    try:
        writer.start()
        stalled = wait_until(lambda: next((w for w in fo.ws.status_json()[0]["warnings"] if "replication stalled" in w),
                                          None), 20, "status to see the stalled commit")
        assert "1 commit(s) waiting for the synchronous standby" in stalled
        assert fo.ws.run("status", str(fo.ws.specs)).exit_code == 2
    finally:
        signal_all(frozen, signal.SIGCONT)
    writer.join(timeout=20)
    assert not writer.is_alive()

    # repmgrd gone on the standby: automatic failover is off there, and status says so
    pid = int((fo.node_dir(standby) / "run" / "repmgrd.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 10, "repmgrd to die")
    [status] = fo.ws.status_json()
    assert status["degraded"] is True
    assert f"automatic failover is off on {standby}: repmgrd is not running" in " ".join(status["warnings"])
    fo.ws.must_apply()  # starts repmgrd again
    assert fo.ws.status_json()[0]["degraded"] is False


def test_a_rejoin_whose_start_failed_is_not_rewound_again(fo: LocalPair) -> None:
    """pg_rewind ran, then PostgreSQL could not start (its port was taken). The next apply must only start the
    node: a second rewind runs crash recovery on it, which forks its WAL for good."""
    old = fo.primary()
    new = fo.other(old)
    fo.stop_immediate(old)
    fo.wait_promoted(new)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((fo.address(old), 5432))
        squatter.listen()
        first = fo.ws.apply()
        assert first.exit_code == 1 and "postgresql.log" in first.flat, first.output
        second_plan = fo.ws.plan()
        assert f"node {old}: start PostgreSQL (a standby of {new} already)" in second_plan.flat, second_plan.output
        second = fo.ws.apply()
        assert second.exit_code == 1, second.output
        assert "pg_rewind" not in second.flat
    _assert_made_whole(fo, old, new)
    fo.execute(new, f"INSERT INTO {TABLE} (n) VALUES (42)")
    wait_until(lambda: fo.value(old, f"SELECT count(*) FROM {TABLE} WHERE n = 42") == 1, 10, "the row on the standby")
