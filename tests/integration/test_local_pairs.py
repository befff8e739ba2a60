"""Pairs of provider local: creation, every kind of change replicated before apply returns, status,
the connection string, failover settings, and destroy.

Real sshd, real PostgreSQL 15, real repmgr and repmgrd (see tests/support/local_pair.py).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.local_pair import (
    Lab,
    LocalPair,
    alive,
    listening,
    no_traceback,
    processes_mentioning,
)

FAILOVER = {"monitor_interval": "2s", "reconnect_attempts": 4, "reconnect_interval": 1, "connect_timeout": "3s"}
APP_PASSWORD = "shop-app-secret-1"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("local", slot=0) as lab:
        lab.add_pair("lp", replication="synchronous", failover=FAILOVER)
        yield lab


@pytest.fixture
def lp(lab: Lab) -> LocalPair:
    """The module's synchronous pair, created on first use, healthy and matching the baseline specs."""
    pair = lab.pairs["lp"]
    pair.ensure_healthy()
    return pair


def test_synchronous_pair_streams_with_repmgr(lp: LocalPair) -> None:
    primary = lp.primary()
    standby = lp.other(primary)
    lp.assert_whole(primary)  # streaming, sync_state sync, synchronous_standby_names = '*'
    assert lp.value(standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert lp.value(primary, "SHOW wal_log_hints") == "on"  # pg_rewind can rejoin a failed primary
    # repmgr knows both nodes, repmgrd runs on both
    show = lp.repmgr(primary, "cluster", "show", "--csv").stdout.split()
    expected = ["1,0,0", "2,0,1"] if primary == lp.nodes[0] else ["1,0,1", "2,0,0"]  # id,up,recovery
    assert sorted(show) == expected, show
    for node in lp.nodes:
        pid = int((lp.node_dir(node) / "run" / "repmgrd.pid").read_text().strip())
        assert alive(pid), f"repmgrd of {node} is not running"
        assert lp.sshd_pid(node) is not None
    lp.ws.assert_converged()


def test_failover_settings_reach_repmgr_conf(lp: LocalPair) -> None:
    for node in lp.nodes:
        conf = (lp.etc(node) / "repmgr.conf").read_text()
        for line in ("failover=automatic", "monitor_interval_secs=2", "reconnect_attempts=4", "reconnect_interval=1"):
            assert line in conf.splitlines(), (line, conf)
        assert "connect_timeout=3'" in conf
        assert f"node_name='{node}'" in conf

    # a change of them rewrites repmgr.conf and restarts repmgrd on both nodes
    before = {n: int((lp.node_dir(n) / "run" / "repmgrd.pid").read_text()) for n in lp.nodes}
    lp.rewrite_spec(failover={**FAILOVER, "reconnect_attempts": 5})
    plan = lp.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert "reconnect_attempts" in plan.flat and "4 -> 5" in plan.flat, plan.output
    lp.ws.must_apply()
    for node in lp.nodes:
        assert "reconnect_attempts=5" in (lp.etc(node) / "repmgr.conf").read_text().splitlines()
        pid = int((lp.node_dir(node) / "run" / "repmgrd.pid").read_text())
        assert pid != before[node] and alive(pid), f"repmgrd of {node} was not restarted"
    lp.ws.assert_converged()


OBJECTS = """
kind: Role
metadata: {{name: shop_app, pair: lp}}
spec: {{login: true, password: {{file: app.pw}}, connection_limit: {limit}, settings: {{statement_timeout: {timeout}}}}}
---
kind: Role
metadata: {{name: reporter, pair: lp}}
spec: {{login: true, member_of: [pg_read_all_stats]}}
---
kind: Database
metadata: {{name: shopdb, pair: lp}}
spec:
  owner: shop_app
  connection_limit: {limit}
  settings: {{work_mem: {db_work_mem}}}
  extensions: [{extensions}]
  schemas: [{{name: billing, owner: shop_app}}{more_schemas}]
---
kind: Grant
metadata: {{pair: lp}}
spec:
  role: reporter
  database: shopdb
  privileges: [CONNECT]
  schemas:
    billing: {{privileges: [USAGE], tables: [{tables}], default_privileges: {{tables: [{tables}]}}}}
"""


def _objects(limit: int = 20, timeout: str = "15s", db_work_mem: str = "2MB", extensions: str = "pgcrypto",
             more_schemas: str = "", tables: str = "SELECT") -> str:
    return OBJECTS.format(limit=limit, timeout=timeout, db_work_mem=db_work_mem, extensions=extensions,
                          more_schemas=more_schemas, tables=tables)


def _standby_view(lp: LocalPair, node: str) -> dict[str, object]:
    """What one node shows of the objects the test manages (read on a fresh connection)."""
    view: dict[str, object] = {}
    view["roles"] = lp.query(node, """
        SELECT r.rolname, r.rolcanlogin, r.rolconnlimit, coalesce(r.rolconfig, '{}'), left(a.rolpassword, 14)
        FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname IN ('shop_app', 'reporter') ORDER BY 1""")
    view["members"] = lp.query(node, """
        SELECT m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
        WHERE r.rolname = 'pg_read_all_stats' AND m.rolname = 'reporter'""")
    view["databases"] = lp.query(node, """
        SELECT d.datname, pg_get_userbyid(d.datdba), d.datconnlimit, s.setconfig
        FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
        WHERE d.datname = 'shopdb'""")
    view["work_mem"] = lp.value(node, "SHOW work_mem")
    if view["databases"]:
        view["extensions"] = lp.query(node, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
                                      dbname="shopdb")
        view["schemas"] = lp.query(node, """
            SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace
            WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('public', 'information_schema') ORDER BY 1""",
                                   dbname="shopdb")
        view["grants"] = lp.query(node, """
            SELECT has_database_privilege('reporter', 'shopdb', 'CONNECT'),
                   has_schema_privilege('reporter', 'billing', 'USAGE'),
                   (SELECT array_agg(a::text ORDER BY a::text) FROM pg_default_acl d, unnest(d.defaclacl) a
                    WHERE d.defaclnamespace = 'billing'::regnamespace AND a::text LIKE 'reporter=%')""", dbname="shopdb")
    return view


def test_every_kind_of_change_is_on_the_standby_when_apply_returns(lp: LocalPair) -> None:
    primary = lp.primary()
    standby = lp.other(primary)
    (lp.ws.specs / "app.pw").write_text(APP_PASSWORD + "\n")

    # create: roles, a database with a setting, an extension and a schema, a grant, a server setting
    lp.ws.write("objects.yaml", _objects())
    lp.rewrite_spec(settings={"work_mem": "8MB"})
    applied = lp.ws.must_apply()
    assert "standby caught up" in applied.stdout
    on_standby = _standby_view(lp, standby)  # no polling: apply returned after the standby replayed it all
    assert on_standby["roles"] == [
        ("reporter", True, -1, [], None),
        ("shop_app", True, 20, ["statement_timeout=15s"], "SCRAM-SHA-256$"),
    ]
    assert on_standby["members"] == [("reporter",)]
    assert on_standby["databases"] == [("shopdb", "shop_app", 20, ["work_mem=2MB"])]
    assert on_standby["extensions"] == [("pgcrypto",)]
    assert on_standby["schemas"] == [("billing", "shop_app")]
    assert on_standby["grants"] == [(True, True, ["reporter=r/shop_app"])]
    assert on_standby["work_mem"] == "8MB"  # ALTER SYSTEM ran on the standby too
    assert on_standby == _standby_view(lp, primary)
    # the password verifier replicated: the role logs in on the standby with it
    with psycopg.connect(host=lp.address(standby), port=5432, user="shop_app", password=APP_PASSWORD,
                         dbname="shopdb", connect_timeout=3) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    lp.ws.assert_converged()

    # update every one of them
    lp.ws.write("objects.yaml", _objects(limit=30, timeout="20s", db_work_mem="3MB", extensions="pgcrypto, citext",
                                         more_schemas=", {name: audit}", tables="SELECT, INSERT"))
    lp.rewrite_spec(settings={"work_mem": "16MB"})
    lp.ws.must_apply()
    on_standby = _standby_view(lp, standby)
    assert on_standby["roles"] == [
        ("reporter", True, -1, [], None),
        ("shop_app", True, 30, ["statement_timeout=20s"], "SCRAM-SHA-256$"),
    ]
    assert on_standby["databases"] == [("shopdb", "shop_app", 30, ["work_mem=3MB"])]
    assert on_standby["extensions"] == [("citext",), ("pgcrypto",)]
    assert on_standby["schemas"] == [("audit", "shop_app"), ("billing", "shop_app")]
    assert on_standby["grants"] == [(True, True, ["reporter=ar/shop_app"])]
    assert on_standby["work_mem"] == "16MB"
    lp.ws.assert_converged()

    # and drop them all
    lp.ws.remove("objects.yaml")
    lp.rewrite_spec()
    lp.ws.must_apply()
    on_standby = _standby_view(lp, standby)
    assert on_standby["roles"] == [] and on_standby["databases"] == [] and on_standby["members"] == []
    assert on_standby["work_mem"] == "4MB"  # ALTER SYSTEM RESET on both nodes
    lp.ws.assert_converged()


def test_status_text_and_json(lp: LocalPair) -> None:
    primary = lp.primary()
    standby = lp.other(primary)
    text = lp.ws.status()
    assert text.exit_code == 0, text.output
    assert "lp (local, synchronous): healthy" in text.flat
    assert f"{primary} {lp.address(primary)}:5432 primary running" in text.flat, text.output
    assert f"{standby} {lp.address(standby)}:5432 standby streaming, sync" in text.flat, text.output
    assert "warning" not in text.output and "apply would" not in text.output

    [pair] = lp.ws.status_json()
    assert pair["pair"] == "lp" and pair["provider"] == "local" and pair["replication"] == "synchronous"
    assert pair["degraded"] is False and pair["error"] is None and pair["needs"] == [] and pair["warnings"] == []
    nodes = {n["name"]: n for n in pair["nodes"]}
    assert set(nodes) == set(lp.nodes)
    assert nodes[primary]["role"] == "primary" and nodes[primary]["address"] == f"{lp.address(primary)}:5432"
    assert nodes[standby]["role"] == "standby" and nodes[standby]["replication"] == "streaming, sync"
    assert isinstance(nodes[standby]["lag_seconds"], float) and nodes[standby]["lag_bytes"] == 0
    assert nodes[primary]["repmgrd"] is True and nodes[standby]["repmgrd"] is True


def test_connection_uri_reaches_the_primary(lp: LocalPair) -> None:
    (lp.ws.specs / "app.pw").write_text(APP_PASSWORD + "\n")
    lp.ws.write("objects.yaml", _objects())
    lp.ws.must_apply()
    result = lp.ws.connection("lp", "--database", "shopdb", "--role", "shop_app")
    assert result.exit_code == 0, result.output
    uri = result.stdout.strip()
    a, b = lp.nodes
    assert uri.startswith(f"postgresql://shop_app@{lp.address(a)}:5432,{lp.address(b)}:5432/shopdb?")
    assert "target_session_attrs=read-write" in uri
    assert APP_PASSWORD not in uri
    primary = lp.primary()
    with psycopg.connect(uri, password=APP_PASSWORD) as conn:
        row = conn.execute("SELECT host(inet_server_addr()), pg_is_in_recovery(), current_user, current_database()").fetchone()
    assert row == (lp.address(primary), False, "shop_app", "shopdb")

    unknown = lp.ws.connection("lp", "--database", "nosuchdb")
    assert unknown.exit_code == 1 and "nosuchdb" in unknown.output
    no_traceback(unknown)


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_asynchronous_pair_from_nothing_and_destroy_leaves_nothing() -> None:
    with Lab.open("async", slot=3) as lab:
        pair = lab.add_pair("ap", replication="asynchronous")
        plan = lab.ws.plan()
        assert plan.exit_code == 0, plan.output
        assert 'Pair "ap": to be created, nodes ap-a, ap-b' in plan.stdout
        for step in ("node ap-a: create the host", "node ap-a: initdb, start PostgreSQL, repmgr primary register",
                     "node ap-b: clone a standby from ap-a", "node ap-a: start repmgrd", "node ap-b: start repmgrd"):
            assert step in plan.flat, plan.output
        applied = lab.ws.must_apply()
        assert "Apply complete!" in applied.stdout
        assert pair.primary() == "ap-a"
        pair.assert_whole("ap-a")  # sync_state async, synchronous_standby_names ''
        assert pair.value("ap-a", "SHOW synchronous_standby_names") == ""
        plan = lab.ws.plan("--detailed-exitcode")
        assert plan.exit_code == 0, plan.output
        assert "standby ap-b" in plan.stdout and "streaming, async" in plan.stdout
        # the node files, as the docstring of providers/local.py lays them out
        for node in pair.nodes:
            assert {"ssh", "data", "etc", "run", "log"} <= {p.name for p in pair.node_dir(node).iterdir()}
        assert stat.S_IMODE((pair.dir / "admin-password").stat().st_mode) == 0o600

        addresses = [pair.address(n) for n in pair.nodes]
        destroyed = lab.ws.destroy()
        assert destroyed.exit_code == 0, destroyed.output
        assert "Destroy complete!" in destroyed.stdout
        leftovers = processes_mentioning(str(lab.local_dir))
        assert leftovers == {}, leftovers
        assert not pair.dir.exists(), _files_under(pair.dir)
        # only the workspace's client key stays (it is not the pair's), and the .gitignore that keeps it out of git
        assert _files_under(lab.local_dir) == [".gitignore", "id_ed25519", "id_ed25519.pub"]
        assert (lab.local_dir / ".gitignore").read_text().splitlines()[-1] == "*"
        for address in addresses:
            assert not listening(address, 5432) and not listening(address, 2222)
        # the store forgot the pair: a plan would create it afresh, on the same addresses
        plan = lab.ws.plan()
        assert plan.exit_code == 0 and 'Pair "ap": to be created' in plan.stdout, plan.output
        assert json.loads(lab.ws.run("plan", str(lab.ws.specs), "--json").stdout)["summary"]["add"] == 1


def test_targeted_destroy_drops_only_its_target(lp: LocalPair) -> None:
    lp.ws.write("targets.yaml", "kind: Role\nmetadata: {name: keepme, pair: lp}\n---\n"
                                "kind: Role\nmetadata: {name: dropme, pair: lp}\n")
    lp.ws.must_apply()
    plan = lp.ws.run("plan", str(lp.ws.specs), "--destroy", "--target", "role.lp.dropme")
    assert plan.exit_code == 0, plan.output
    assert "- role.lp.dropme" in plan.stdout and "node " not in plan.stdout and "1 to destroy" in plan.stdout
    result = lp.ws.run("destroy", str(lp.ws.specs), "--target", "role.lp.dropme", "--auto-approve")
    assert result.exit_code == 0, result.output
    primary = lp.primary()
    assert lp.query(primary, "SELECT rolname FROM pg_roles WHERE rolname IN ('keepme', 'dropme')") == [("keepme",)]
    assert all(lp.sshd_pid(node) is not None for node in lp.nodes)  # the hosts are untouched
    lp.ws.remove("targets.yaml")
    lp.ws.must_apply()


def test_local_sockets_and_secrets_are_private(lp: LocalPair) -> None:
    for node in lp.nodes:
        for sub in ("etc", "run", "data", "log"):
            mode = stat.S_IMODE((lp.node_dir(node) / sub).stat().st_mode)
            assert mode == 0o700, f"{node}/{sub} is {oct(mode)}"
        assert stat.S_IMODE((lp.etc(node) / ".pgpass").stat().st_mode) == 0o600


def test_stopped_pair_is_started_but_unreviewed_changes_wait(lp: LocalPair) -> None:
    """A reboot stopped both nodes; meanwhile the specs changed. apply starts the pair, and runs nothing the
    plan could not show (it had no server to plan the objects against)."""
    primary = lp.primary()
    standby = lp.other(primary)
    for node in (standby, primary):
        lp.stop_postgres(node)
        lp.stop_sshd(node)
    lp.ws.write("late.yaml", "kind: Role\nmetadata: {name: late_role, pair: lp}\n")
    plan = lp.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert "planned once it is up" in plan.flat and "start PostgreSQL" in plan.flat
    assert "late_role" not in plan.stdout
    applied = lp.ws.apply()
    assert applied.exit_code == 1
    assert "needs changes the plan did not show: create role.lp.late_role" in applied.flat
    assert lp.role_of(primary) == "primary"  # the pair itself was started
    assert lp.query(primary, "SELECT 1 FROM pg_roles WHERE rolname = 'late_role'") == []
    lp.ws.must_apply()  # reviewed now
    assert lp.query(primary, "SELECT 1 FROM pg_roles WHERE rolname = 'late_role'") == [(1,)]
    lp.ws.remove("late.yaml")
    lp.ws.must_apply()
