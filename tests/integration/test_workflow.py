"""Terraform-style workflow: saved plans, locking, import, state commands, destroy, exit codes, secrets."""

from __future__ import annotations

import json

import pytest

from pgaasctl.apply.executor import advisory_key
from pgaasctl.store import open_store
from tests.support.workspace import Workspace

ROLE = "kind: Role\nmetadata: {{name: {name}, pair: main}}\nspec: {{login: true, password: {{env: APP_PW}}}}\n"


@pytest.fixture
def app_ws(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("APP_PW", "Very-Secret-Pw")
    ws.write("roles.yaml", ROLE.format(name="app"))
    return ws


def test_detailed_exitcode(app_ws: Workspace) -> None:
    assert app_ws.plan("--detailed-exitcode").exit_code == 2
    assert app_ws.plan().exit_code == 0
    app_ws.must_apply()
    assert app_ws.plan("--detailed-exitcode").exit_code == 0


def test_saved_plan_applies_exactly_and_holds_no_secret(app_ws: Workspace) -> None:
    planfile = app_ws.root / "tfplan"
    assert app_ws.plan("--out", str(planfile)).exit_code == 0
    text = planfile.read_text()
    assert "Very-Secret-Pw" not in text and "SCRAM" not in text and app_ws.server.admin_password not in text
    result = app_ws.run("apply", str(planfile))
    assert result.exit_code == 0, result.output
    assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == [(1,)]
    app_ws.assert_converged()


def test_saved_plan_refused_after_spec_change(app_ws: Workspace) -> None:
    planfile = app_ws.root / "tfplan"
    app_ws.plan("--out", str(planfile))
    app_ws.write("roles.yaml", ROLE.format(name="app") + "---\n" + ROLE.format(name="other"))
    result = app_ws.run("apply", str(planfile))
    assert result.exit_code == 1
    assert "is stale: the specs" in result.flat
    assert app_ws.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('app', 'other')") == []


def test_saved_plan_refused_after_any_edit_of_a_spec_file_and_not_after_a_rename(app_ws: Workspace) -> None:
    """The specs' fingerprint is the files' texts as the plan read them: a comment counts, a file's name not."""
    planfile = app_ws.root / "tfplan"
    app_ws.plan("--out", str(planfile))
    (app_ws.specs / "roles.yaml").rename(app_ws.specs / "renamed.yaml")
    assert app_ws.run("plan", str(app_ws.specs), "--out", str(app_ws.root / "again")).exit_code == 0
    assert json.loads((app_ws.root / "again").read_text())["spec_fingerprint"] == \
        json.loads(planfile.read_text())["spec_fingerprint"]
    app_ws.write("renamed.yaml", "# reviewed\n" + ROLE.format(name="app"))
    result = app_ws.run("apply", str(planfile))
    assert result.exit_code == 1 and "is stale: the specs" in result.flat
    assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []


def test_saved_plan_refused_after_live_change(app_ws: Workspace) -> None:
    planfile = app_ws.root / "tfplan"
    app_ws.plan("--out", str(planfile))
    app_ws.sql("CREATE ROLE sneaky")
    result = app_ws.run("apply", str(planfile))
    assert result.exit_code == 1
    assert "is stale: pair 'main' changed on the server" in result.flat
    assert app_ws.sql("SELECT rolname FROM pg_roles WHERE rolname = 'app'") == []


def test_apply_asks_for_yes(app_ws: Workspace) -> None:
    result = app_ws.run("apply", str(app_ws.specs), input="no\n")
    assert result.exit_code == 1 and "cancelled" in result.stdout
    assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []
    result = app_ws.run("apply", str(app_ws.specs), input="")
    assert result.exit_code == 1 and "pass --auto-approve" in result.flat
    result = app_ws.run("apply", str(app_ws.specs), input="yes\n")
    assert result.exit_code == 0, result.output
    assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == [(1,)]


def test_concurrent_apply_waits_then_names_the_holder(app_ws: Workspace) -> None:
    app_ws.write("workspace.yaml", "kind: Workspace\nspec: {lock_timeout: 0.3}\n")
    store = open_store(app_ws.store_url)
    assert store.try_lock("main", "apply", "alice@ops-host pid 4242")
    try:
        result = app_ws.apply()
        assert result.exit_code == 1
        assert "pair 'main' is locked by alice@ops-host pid 4242 (apply since" in result.flat
        assert "pgaasctl force-unlock main" in result.flat
        assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []
    finally:
        unlocked = app_ws.run("force-unlock", "main", str(app_ws.specs))
        assert "held by alice@ops-host pid 4242" in unlocked.stdout
    app_ws.must_apply()


def test_advisory_lock_on_the_primary_stops_a_second_writer(app_ws: Workspace) -> None:
    with app_ws.server.connect() as other:
        other.execute("SELECT pg_advisory_lock(%s)", (advisory_key("main"),))
        result = app_ws.apply()
        assert result.exit_code == 1
        assert "another apply is running on the primary" in result.flat
        assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []
    app_ws.must_apply()


def test_interrupted_apply_converges_on_rerun(ws: Workspace) -> None:
    ws.sql("CREATE DATABASE busy_template")
    ws.write("objects.yaml", """
        kind: Role
        metadata: {name: owner_a, pair: main}
        ---
        kind: Database
        metadata: {name: from_template, pair: main}
        spec: {owner: owner_a, template: busy_template}
    """)
    with ws.server.connect("busy_template"):
        failed = ws.apply()
        assert failed.exit_code == 1
        assert "database.main.from_template" in failed.flat and "being accessed by other users" in failed.flat
    assert "role.main.owner_a" in ws.run("state", "list").stdout
    rerun = ws.apply()
    assert rerun.exit_code == 0, rerun.output
    assert "1 added" in rerun.stdout
    ws.assert_converged()


def test_import_then_plan_shows_differences(ws: Workspace) -> None:
    ws.sql("CREATE ROLE legacy CONNECTION LIMIT 3")
    ws.write("r.yaml", "kind: Role\nmetadata: {name: legacy, pair: main}\nspec: {connection_limit: 3}\n")
    result = ws.run("import", "role.main.legacy", str(ws.specs))
    assert result.exit_code == 0, result.output
    assert ws.run("state", "list", str(ws.specs)).stdout.split() == ["role.main.legacy"]
    shown = json.loads(ws.run("state", "show", "role.main.legacy", str(ws.specs)).stdout)
    assert shown["kind"] == "role" and shown["attributes"]["connection_limit"] == 3
    assert ws.run("import", "role.main.legacy", str(ws.specs)).exit_code == 1  # already managed
    missing = ws.run("import", "role.main.ghost", str(ws.specs))
    assert missing.exit_code == 1 and "not declared in the specs" in missing.flat


def test_import_of_missing_object_is_refused(ws: Workspace) -> None:
    ws.write("r.yaml", "kind: Role\nmetadata: {name: nothere, pair: main}\n")
    result = ws.run("import", "role.main.nothere", str(ws.specs))
    assert result.exit_code == 1 and "does not exist" in result.flat


def test_state_rm_leaves_the_object_unmanaged(app_ws: Workspace) -> None:
    app_ws.must_apply()
    assert app_ws.run("state", "rm", "role.main.app", str(app_ws.specs)).exit_code == 0
    app_ws.remove("roles.yaml")
    app_ws.must_apply()
    assert app_ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == [(1,)]
    assert app_ws.run("state", "rm", "role.main.app", str(app_ws.specs)).exit_code == 1


def test_destroy_removes_every_managed_object_and_nothing_else(ws: Workspace) -> None:
    ws.sql("CREATE ROLE bystander")
    ws.write("objects.yaml", """
        kind: Role
        metadata: {name: owner_a, pair: main}
        ---
        kind: Role
        metadata: {name: reader_b, pair: main}
        ---
        kind: Database
        metadata: {name: doomed, pair: main}
        spec: {owner: owner_a, schemas: [s1]}
        ---
        kind: Grant
        metadata: {pair: main}
        spec: {role: reader_b, database: doomed, privileges: [CONNECT]}
    """)
    ws.must_apply()
    plan = ws.plan("--destroy")
    assert "Plan: 0 to add, 0 to change, 5 to destroy." in plan.stdout
    result = ws.run("destroy", str(ws.specs), "--auto-approve")
    assert result.exit_code == 0, result.output
    assert ws.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('owner_a', 'reader_b', 'bystander')") == [("bystander",)]
    assert ws.sql("SELECT 1 FROM pg_database WHERE datname = 'doomed'") == []
    assert ws.run("state", "list", str(ws.specs)).stdout.strip() == ""


def test_history_records_applies(app_ws: Workspace) -> None:
    app_ws.must_apply()
    result = app_ws.run("history", "main", str(app_ws.specs))
    assert "apply" in result.stdout and "applied" in result.stdout


def test_json_plan_is_machine_readable(app_ws: Workspace) -> None:
    data = json.loads(app_ws.plan("--json").stdout)
    assert data["summary"] == {"add": 1, "change": 1, "destroy": 0}
    change = next(c for c in data["pairs"][0]["changes"] if c["address"] == "role.main.app")
    assert change["action"] == "create"
    password = next(a for a in change["attributes"] if a["name"] == "password")
    assert password["after"] == "(sensitive)" and password["sensitive"] is True
    assert "Very-Secret-Pw" not in json.dumps(data)


def test_removing_a_pair_with_managed_objects_is_refused(app_ws: Workspace) -> None:
    app_ws.must_apply()
    app_ws.remove("pair-main.yaml")
    app_ws.remove("roles.yaml")
    result = app_ws.plan()
    assert result.exit_code == 1
    assert f"no spec documents under {app_ws.specs}" in result.flat  # not "No changes"
    app_ws.write("workspace.yaml", "kind: Workspace\n")
    result = app_ws.plan()
    assert result.exit_code == 1
    assert "managed objects on pair(s) main that are no longer in the specs" in result.flat


def test_grants_on_a_database_made_from_a_template_with_tables_converge_in_one_apply(ws: Workspace) -> None:
    ws.sql("CREATE DATABASE tmpl_with_tables")
    ws.sql("CREATE TABLE inherited (id int)", dbname="tmpl_with_tables")
    ws.write("objects.yaml", """
        kind: Role
        metadata: {name: reader, pair: main}
        ---
        kind: Database
        metadata: {name: copied, pair: main}
        spec: {template: tmpl_with_tables}
        ---
        kind: Grant
        metadata: {pair: main}
        spec: {role: reader, database: copied, schemas: {public: {tables: [SELECT]}}}
    """)
    ws.must_apply()
    assert ws.sql("SELECT has_table_privilege('reader', 'inherited', 'SELECT')", dbname="copied") == [(True,)]
    ws.assert_converged()


def test_saved_targeted_plan_applies_only_its_target(app_ws: Workspace) -> None:
    app_ws.write("more.yaml", "kind: Role\nmetadata: {name: later, pair: main}\n")
    planfile = app_ws.root / "tfplan"
    assert app_ws.plan("--target", "role.main.app", "--out", str(planfile)).exit_code == 0
    result = app_ws.run("apply", str(planfile))
    assert result.exit_code == 0, result.output
    assert app_ws.sql("SELECT rolname FROM pg_roles WHERE rolname IN ('app', 'later')") == [("app",)]


def test_drift_made_with_psql_is_detected(app_ws: Workspace) -> None:
    import subprocess

    app_ws.must_apply()
    server = app_ws.server
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p", str(server.port), "-U", "postgres",
         "-d", "postgres", "-c", "ALTER ROLE app NOLOGIN CONNECTION LIMIT 9"],
        env={"PGPASSWORD": server.admin_password, "PATH": "/usr/bin:/bin"}, check=True,
    )
    plan = app_ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2
    assert "login: false -> true" in plan.flat and "connection_limit: 9 -> -1" in plan.flat
