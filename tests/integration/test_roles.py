"""Kind Role on a real server: every attribute created, changed, drifted, destroyed."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.support.workspace import Workspace


def role(name: str, spec: str = "{}", pair: str = "main") -> str:
    return f"kind: Role\nmetadata: {{name: {name}, pair: {pair}}}\nspec: {spec}\n"


def row(ws: Workspace, name: str) -> tuple:
    rows = ws.server.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit,"
        " rolconnlimit, to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM pg_roles WHERE rolname = %s",
        params=(name,),
    )
    return rows[0] if rows else ()


def test_create_with_every_attribute(ws: Workspace) -> None:
    ws.write("r.yaml", role("parent") + "---\n" + role(
        "app",
        "{login: true, superuser: false, createdb: true, createrole: true, replication: true, bypassrls: true,"
        " inherit: false, connection_limit: 7, valid_until: '2031-02-03T00:00:00Z', member_of: [parent, pg_monitor],"
        " settings: {work_mem: 16MB, search_path: 'app, public'}}",
    ))
    result = ws.must_apply()
    assert "2 added" in result.stdout
    assert row(ws, "app") == (True, False, True, True, True, True, False, 7, "2031-02-03")
    members = ws.sql("SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                     " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'app' ORDER BY 1")
    assert members == [("parent",), ("pg_monitor",)]
    config = ws.sql("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'app'")
    assert sorted(config[0][0]) == ["search_path=app, public", "work_mem=16MB"]
    ws.assert_converged()


@pytest.mark.parametrize(
    ("before", "after", "column", "expected"),
    [
        ("{login: false}", "{login: true}", 0, True),
        ("{createdb: false}", "{createdb: true}", 2, True),
        ("{createrole: true}", "{createrole: false}", 3, False),
        ("{replication: false}", "{replication: true}", 4, True),
        ("{bypassrls: false}", "{bypassrls: true}", 5, True),
        ("{inherit: true}", "{inherit: false}", 6, False),
        ("{connection_limit: 3}", "{connection_limit: -1}", 7, -1),
        ("{valid_until: '2030-01-01T00:00:00Z'}", "{valid_until: '2032-05-06T12:00:00+02:00'}", 8, "2032-05-06"),
        ("{superuser: false}", "{superuser: true}", 1, True),
    ],
)
def test_change_each_attribute(ws: Workspace, before: str, after: str, column: int, expected: object) -> None:
    ws.write("r.yaml", role("app", before))
    ws.must_apply()
    ws.write("r.yaml", role("app", after))
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "~ role.main.app" in plan.stdout
    ws.must_apply()
    assert row(ws, "app")[column] == expected
    ws.assert_converged()


def test_membership_and_settings_changes(ws: Workspace) -> None:
    ws.write("r.yaml", role("a") + "---\n" + role("b") + "---\n" + role("app", "{member_of: [a], settings: {work_mem: 8MB, lock_timeout: 5s}}"))
    ws.must_apply()
    ws.write("r.yaml", role("a") + "---\n" + role("b") + "---\n" + role("app", "{member_of: [b], settings: {work_mem: 16MB}}"))
    plan = ws.plan()
    assert "member_of: [a] -> [b]" in plan.flat
    assert "settings.lock_timeout: 5s -> (none)" in plan.flat
    ws.must_apply()
    members = ws.sql("SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                     " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'app'")
    assert members == [("b",)]
    config = ws.sql("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'app'")
    assert config[0][0] == ["work_mem=16MB"]
    ws.assert_converged()


def test_setting_units_compare_like_postgres(ws: Workspace) -> None:
    ws.write("r.yaml", role("app", "{settings: {work_mem: 8MB, statement_timeout: 30s}}"))
    ws.must_apply()
    ws.sql("ALTER ROLE app SET work_mem = '8192kB'")
    ws.sql("ALTER ROLE app SET statement_timeout = 30000")
    ws.assert_converged()


def test_password_set_checked_and_drift_detected(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PASSWORD", "first-Secret-1")
    ws.write("r.yaml", role("app", "{login: true, password: {env: APP_PASSWORD}}"))
    plan = ws.plan("--sql")
    assert "first-Secret-1" not in plan.output and "SCRAM-SHA-256" not in plan.output
    result = ws.must_apply()
    assert "first-Secret-1" not in result.output
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user="app", password="first-Secret-1", dbname="postgres"):
        pass
    ws.assert_converged()

    ws.sql("ALTER ROLE app PASSWORD 'changed-by-hand'")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2
    assert "password: (sensitive) -> (sensitive)" in plan.flat
    assert "changed-by-hand" not in plan.output
    ws.must_apply()
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user="app", password="first-Secret-1", dbname="postgres"):
        pass

    monkeypatch.setenv("APP_PASSWORD", "second-Secret-2")
    assert ws.plan("--detailed-exitcode").exit_code == 2
    ws.must_apply()
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user="app", password="second-Secret-2", dbname="postgres"):
        pass
    ws.assert_converged()
    store_text = (ws.root / "state" / "pgaasctl.db").read_bytes()
    assert b"second-Secret-2" not in store_text and b"SCRAM-SHA-256" not in store_text


def test_md5_password_by_hand_is_drift(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PASSWORD", "pw-one")
    ws.write("r.yaml", role("app", "{login: true, password: {env: APP_PASSWORD}}"))
    ws.must_apply()
    ws.sql("SET password_encryption = 'md5'; ALTER ROLE app PASSWORD 'pw-one'")
    assert ws.sql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'app'") == [("md5",)]
    with pytest.raises(psycopg.OperationalError):  # pg_hba says scram-sha-256: the right password, refused
        psycopg.connect(host=ws.server.host, port=ws.server.port, user="app", password="pw-one", dbname="postgres")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "password: (sensitive) -> (sensitive) (stored as md5; rewritten as SCRAM-SHA-256)" in plan.flat
    ws.must_apply()
    assert ws.sql("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'app'") == [("SCRAM-SHA-256$",)]
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user="app", password="pw-one", dbname="postgres"):
        pass
    ws.assert_converged()


def test_password_from_file(ws: Workspace) -> None:
    (ws.specs / "app.pw").write_text("from-a-file\n")
    ws.write("r.yaml", role("app", "{login: true, password: {file: app.pw}}"))
    ws.must_apply()
    with psycopg.connect(host=ws.server.host, port=ws.server.port, user="app", password="from-a-file", dbname="postgres"):
        pass


def test_destroy_role_that_owns_objects(ws: Workspace) -> None:
    ws.write("r.yaml", role("owner_role", "{login: true}"))
    ws.must_apply()
    ws.sql("CREATE DATABASE handmade OWNER owner_role")
    ws.sql("CREATE TABLE owned_by_role (id int)", dbname="handmade")
    ws.sql("ALTER TABLE owned_by_role OWNER TO owner_role", dbname="handmade")
    ws.sql("GRANT SELECT ON owned_by_role TO PUBLIC", dbname="handmade")
    ws.remove("r.yaml")
    plan = ws.plan()
    assert "- role.main.owner_role" in plan.stdout
    assert "reassigned to postgres" in plan.stdout
    ws.must_apply()
    assert ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'owner_role'") == []
    assert ws.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_role'", dbname="handmade") == [("postgres",)]
    assert ws.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'handmade'") == [("postgres",)]
    ws.assert_converged()


def test_unmanaged_roles_are_never_touched(ws: Workspace) -> None:
    ws.sql("CREATE ROLE handmade LOGIN")
    ws.write("r.yaml", role("app"))
    ws.must_apply()
    ws.remove("r.yaml")
    plan = ws.plan()
    assert "handmade" not in plan.stdout
    ws.must_apply()
    assert ws.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('handmade', 'app')") == [("handmade",)]


def test_a_hand_made_role_is_adopted_only_when_asked_and_a_destroy_says_so(ws: Workspace) -> None:
    ws.sql("CREATE ROLE legacy CONNECTION LIMIT 2")
    ws.write("r.yaml", role("legacy", "{connection_limit: 4}"))
    refused = ws.plan()
    assert refused.exit_code == 1 and "role.main.legacy already exists" in refused.flat, refused.output
    assert "pgaasctl import role.main.legacy" in refused.flat and "adopt: true" in refused.flat
    assert ws.apply().exit_code == 1
    assert ws.sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'legacy'") == [(2,)]  # nothing happened

    ws.write("r.yaml", role("legacy", "{connection_limit: 4, adopt: true}"))
    plan = ws.plan()
    assert "~ role.main.legacy" in plan.stdout and "starts managing" in plan.stdout
    assert "connection_limit: 2 -> 4" in plan.flat
    ws.must_apply()
    listed = {o["address"]: o for o in json.loads(ws.run("state", "list", "--json").stdout)}
    assert listed["role.main.legacy"]["origin"] == "adopted" and listed["role.main.legacy"]["origin_by"]
    ws.assert_converged()

    ws.remove("r.yaml")
    destroy_plan = ws.plan()
    assert "- role.main.legacy" in destroy_plan.stdout
    assert "adopted by" in destroy_plan.flat and "pgaasctl did not create it" in destroy_plan.flat


def test_names_that_need_quoting(ws: Workspace) -> None:
    ws.write("r.yaml", role("App-Reader$1", "{login: true}"))
    ws.must_apply()
    assert ws.sql("SELECT rolname FROM pg_roles WHERE rolname = 'App-Reader$1'") == [("App-Reader$1",)]
    ws.assert_converged()


def test_role_changes_reach_members_in_dependency_order(ws: Workspace) -> None:
    # members declared before their parents in the file still apply in one run
    ws.write("r.yaml", role("c", "{member_of: [b]}") + "---\n" + role("b", "{member_of: [a]}") + "---\n" + role("a"))
    ws.must_apply()
    ws.remove("r.yaml")
    ws.must_apply()
    assert ws.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('a', 'b', 'c')") == []


def test_expiry_set_by_hand_is_drift(ws: Workspace) -> None:
    ws.write("r.yaml", role("app", "{login: true}"))
    ws.must_apply()
    ws.sql("ALTER ROLE app VALID UNTIL '2001-01-01'")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2 and "valid_until: 2001-01-01T00:00:00Z -> infinity" in plan.flat
    ws.must_apply()
    assert ws.sql("SELECT rolvaliduntil::text FROM pg_roles WHERE rolname = 'app'") == [("infinity",)]
    ws.assert_converged()


def test_destroy_role_with_privileges_on_a_database(ws: Workspace) -> None:
    ws.write("r.yaml", role("r2"))
    ws.must_apply()
    ws.sql("CREATE DATABASE appdb")
    ws.sql("GRANT CONNECT ON DATABASE appdb TO r2")
    ws.remove("r.yaml")
    ws.must_apply()
    assert ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'r2'") == []
    ws.assert_converged()
