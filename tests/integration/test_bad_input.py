"""Bad input: a clear message naming file:line and field (or object and reason), exit 1, nothing changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgserver import PgServer
from tests.support.workspace import Workspace, pair_yaml


def snapshot(ws: Workspace) -> tuple:
    return (
        ws.sql("SELECT rolname, rolcanlogin, rolconnlimit FROM pg_roles ORDER BY 1"),
        ws.sql("SELECT datname, datconnlimit FROM pg_database ORDER BY 1"),
        ws.sql("SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf' ORDER BY 1"),
    )


@pytest.fixture
def unchanged(ws: Workspace) -> Iterator[Workspace]:
    """Yields the workspace; afterwards asserts the server is exactly as before."""
    before = snapshot(ws)
    yield ws
    assert snapshot(ws) == before


GOOD_ROLE = "kind: Role\nmetadata: {name: app, pair: main}\nspec: {login: true}\n"


def fails(ws: Workspace, *expected: str, command: str = "plan") -> str:
    for args in ([command, str(ws.specs)] if command == "validate" else None, ["plan", str(ws.specs)],
                 ["apply", str(ws.specs), "--auto-approve"]):
        if args is None:
            continue
        result = ws.run(*args)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        for text in expected:
            assert text in result.flat, f"{text!r} not in {result.flat!r}"
    return result.flat


def test_malformed_yaml(unchanged: Workspace) -> None:
    path = unchanged.write("bad.yaml", GOOD_ROLE + "---\nkind: Role\nmetadata: {name: x, pair: main\n")
    fails(unchanged, f"{path}:6: malformed YAML: while parsing a flow mapping", "at line 7", command="validate")


def test_unknown_kind(unchanged: Workspace) -> None:
    path = unchanged.write("bad.yaml", GOOD_ROLE + "---\nkind: Databse\nmetadata: {name: x, pair: main}\n")
    fails(unchanged, f"{path}:5: kind: unknown kind 'Databse'; expected one of Pair, Role, Database, Grant, Workspace",
          command="validate")


def test_unknown_field(unchanged: Workspace) -> None:
    path = unchanged.write("bad.yaml", "kind: Role\nmetadata: {name: app, pair: main}\nspec:\n  login: true\n  conection_limit: 4\n")
    fails(unchanged, f"{path}:5: Role 'app': spec.conection_limit: unknown field", command="validate")


def test_wrong_type(unchanged: Workspace) -> None:
    path = unchanged.write("bad.yaml", "kind: Role\nmetadata: {name: app, pair: main}\nspec:\n  connection_limit: lots\n")
    fails(unchanged, f"{path}:4: Role 'app': spec.connection_limit: Input should be a valid integer", command="validate")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ('"x; DROP ROLE postgres; --"', "contains"),
        ("\"it's\"", "contains \"'\""),
        ("a" * 64, "is 64 bytes; PostgreSQL allows at most 63"),
        ("é" * 32, "is 64 bytes"),
        ("pg_mine", "starts with pg_"),
        ("1abc", "must start with a letter or _"),
    ],
)
def test_invalid_names_are_rejected_before_any_sql(unchanged: Workspace, name: str, reason: str) -> None:
    path = unchanged.write("bad.yaml", f"kind: Database\nmetadata:\n  name: {name}\n  pair: main\n")
    fails(unchanged, f"{path}:3: Database", "metadata.name", reason, command="validate")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("kind: Role\nmetadata: {name: app, pair: nowhere}\n", "pair 'nowhere' is not declared"),
        ("kind: Database\nmetadata: {name: db, pair: main}\nspec: {owner: ghost}\n", "owner 'ghost' is not a role declared"),
        ("kind: Role\nmetadata: {name: app, pair: main}\nspec: {member_of: [ghost]}\n", "member_of 'ghost' is not a role declared"),
        ("kind: Grant\nmetadata: {pair: main}\nspec: {role: ghost, database: postgres}\n", "role 'ghost' is not a role declared"),
        ("kind: Role\nmetadata: {name: postgres, pair: main}\n", "is the admin user pgaasctl connects as"),
    ],
)
def test_missing_references(unchanged: Workspace, doc: str, message: str) -> None:
    path = unchanged.write("bad.yaml", doc)
    fails(unchanged, str(path), message, command="validate")


def test_duplicate_object_across_files(unchanged: Workspace) -> None:
    first = unchanged.write("a.yaml", GOOD_ROLE)
    second = unchanged.write("b.yaml", GOOD_ROLE)
    fails(unchanged, f"{second}:1: role.main.app is declared twice (first at {first}:1)", command="validate")


def test_missing_password_env_var(unchanged: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    unchanged.write("r.yaml", GOOD_ROLE + "---\nkind: Role\nmetadata: {name: other, pair: main}\nspec: {password: {env: NO_SUCH_PASSWORD}}\n")
    fails(unchanged, "role.main.other: environment variable NO_SUCH_PASSWORD is not set")


def test_unreachable_server_names_node_and_address(unchanged: Workspace) -> None:
    unchanged.write("pair-main.yaml", pair_yaml(unchanged.server).replace(f"port: {unchanged.server.port}", "port: 1"))
    unchanged.write("r.yaml", GOOD_ROLE)
    fails(unchanged, f"node main-a of pair main ({unchanged.server.host}:1) is unreachable")


def test_wrong_admin_password(unchanged: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGAASCTL_TEST_ADMIN_PASSWORD", "not-the-password")
    unchanged.write("r.yaml", GOOD_ROLE)
    flat = fails(unchanged, "node main-a of pair main", "authentication failed for user 'postgres'")
    assert "not-the-password" not in flat


def test_permission_denied_on_the_server(pg: PgServer, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    pg.execute("CREATE ROLE weak LOGIN PASSWORD 'weak-pw'")
    unchanged = ws
    before = snapshot(ws)
    monkeypatch.setenv("WEAK_PW", "weak-pw")
    spec = pair_yaml(pg).replace("admin_user: postgres", "admin_user: weak").replace(
        "admin_password: {env: PGAASCTL_TEST_ADMIN_PASSWORD}", "admin_password: {env: WEAK_PW}"
    )
    unchanged.write("pair-main.yaml", spec)
    unchanged.write("r.yaml", GOOD_ROLE)
    fails(unchanged, f"reading the catalog on node main-a of pair main ({pg.host}:{pg.port}) failed: "
                     "permission denied for view pg_file_settings", "Check that 'weak' is a superuser")
    # allowed to read the catalog, but not to create roles: the first statement fails, nothing is applied
    pg.execute("GRANT SELECT ON pg_file_settings TO weak")
    pg.execute("GRANT EXECUTE ON FUNCTION pg_show_all_file_settings() TO weak")
    result = unchanged.apply()
    assert result.exit_code == 1
    assert "role.main.app: permission denied to create role" in result.flat
    assert "Traceback" not in result.output
    assert snapshot(ws) == before


def test_destroy_of_protected_database(ws: Workspace) -> None:
    ws.write("db.yaml", "kind: Database\nmetadata: {name: precious, pair: main}\nspec: {deletion_protection: true}\n")
    ws.must_apply()
    ws.remove("db.yaml")
    before = snapshot(ws)
    for result in (ws.plan(), ws.apply(), ws.run("destroy", str(ws.specs), "--auto-approve")):
        assert result.exit_code == 1
        assert "database.main.precious: deletion_protection is on" in result.flat
    assert snapshot(ws) == before


def test_invalid_setting_value_changes_nothing(unchanged: Workspace) -> None:
    unchanged.write("r.yaml", GOOD_ROLE)
    unchanged.pair(settings={"work_mem": "lots"})
    fails(unchanged, "parameter work_mem: expects a number with a unit, got 'lots'")


# ---------------------------------------------------------------- inputs that used to get through (issue 6)

@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('kind: Role\nmetadata: {name: "canary\\n", pair: main}\n', "metadata.name: name 'canary\\n' contains '\\n'"),
        ('kind: Database\nmetadata: {name: "canarydb\\n", pair: main}\n', "metadata.name: name 'canarydb\\n' contains '\\n'"),
        ('kind: Database\nmetadata: {name: db, pair: main}\nspec: {schemas: ["sch\\n"]}\n', "spec.schemas.0.name: schema 'sch\\n' contains '\\n'"),
        ('kind: Role\nmetadata: {name: app, pair: main}\nspec: {settings: {work_mem: "4MB\\0"}}\n',
         "spec.settings: work_mem: contains a control character (U+0000)"),
        ("kind: Role\nmetadata: {name: app, pair: main}\nspec: {connection_limit: true}\n",
         "spec.connection_limit: expected a number, got true"),
        ("kind: Database\nmetadata: {name: db, pair: main}\nspec: {connection_limit: 2147483648}\n",
         "spec.connection_limit: Input should be less than or equal to 2147483647"),
        ("kind: Database\nmetadata: {name: db, pair: main}\nspec: {schemas: [information_schema]}\n",
         "information_schema is PostgreSQL's own schema (reserved)"),
        ('kind: Role\nmetadata: {name: app, pair: main}\nspec: {settings: {search_path: \'"a,b", public\'}}\n',
         "setting search_path: item '\"a' cannot be kept as written"),
        ("kind: Role\nmetadata: {name: a, pair: main}\nspec: {member_of: [b]}\n---\n"
         "kind: Role\nmetadata: {name: b, pair: main}\nspec: {member_of: [a]}\n", "member_of cycle a -> b -> a"),
        ("kind: Role\nmetadata: {name: app, pair: main}\nspec:\n  x: " + "[" * 5000 + "]" * 5000 + "\n",
         "nested more than 64 levels deep"),
    ],
    ids=["role-newline", "database-newline", "schema-newline", "nul-in-setting", "bool-as-int", "int4-overflow",
         "information_schema", "search_path-comma", "member_of-cycle", "deep-yaml"],
)
def test_inputs_that_used_to_get_through_are_refused_by_validate(unchanged: Workspace, doc: str, message: str) -> None:
    path = unchanged.write("bad.yaml", doc)
    flat = fails(unchanged, str(path), message, command="validate")
    assert "superuser" not in flat


def test_a_nul_in_a_pair_setting_is_a_validation_error(unchanged: Workspace) -> None:
    unchanged.pair(settings={"work_mem": '"4MB\\0"'})
    fails(unchanged, "spec.settings: work_mem: contains a control character (U+0000)", command="validate")


def test_admin_database_is_checked_as_a_name(unchanged: Workspace) -> None:
    unchanged.write("pair-main.yaml", pair_yaml(unchanged.server).replace(
        "connect_timeout: 2}", "connect_timeout: 2, admin_database: 'postgres\\n\\! touch /tmp/x'}"))
    fails(unchanged, "spec.nodes.0.admin_database", command="validate")


def test_schema_and_reference_problems_are_reported_in_one_run(unchanged: Workspace) -> None:
    path = unchanged.write("bad.yaml", "kind: Role\nmetadata: {name: app, pair: main}\nspec: {member_of: [ghost]}\n---\n"
                                       "kind: Role\nmetadata: {name: other, pair: main}\nspec: {login: maybe}\n")
    flat = fails(unchanged, command="validate")
    assert flat.index(f"{path}:3: role.main.app: member_of 'ghost'") < flat.index(f"{path}:7: Role 'other': spec.login")


def test_upper_case_suffixes_are_read_and_hidden_directories_skipped(ws: Workspace) -> None:
    ws.write("roles.YAML", GOOD_ROLE)
    ws.write(".github/workflows/ci.yml", "on: push\njobs: {build: {runs-on: ubuntu-latest}}\n")
    result = ws.run("validate", str(ws.specs))
    assert result.exit_code == 0, result.output
    assert "1 pair, 1 role" in result.flat
    ws.must_apply()
    (ws.specs / "roles.YAML").rename(ws.specs / "roles.Yml")
    ws.assert_converged()  # renaming a file is not a destroy


def test_a_directory_without_specs_is_an_error_not_no_changes(ws: Workspace) -> None:
    empty = ws.root / "nothing-here"
    empty.mkdir()
    (empty / "README.md").write_text("specs go here\n")
    for command in ("validate", "plan"):
        result = ws.run(command, str(empty))
        assert result.exit_code == 1, result.output
        assert f"no spec documents under {empty}" in result.flat
        assert "No changes" not in result.output and "Traceback" not in result.output


def test_a_password_file_that_is_a_fifo_fails_at_once(unchanged: Workspace) -> None:
    import os
    import time

    os.mkfifo(unchanged.specs / "app.pw")
    unchanged.write("r.yaml", "kind: Role\nmetadata: {name: app, pair: main}\nspec: {password: {file: app.pw}}\n")
    started = time.monotonic()
    fails(unchanged, f"role.main.app: password file {unchanged.specs / 'app.pw'} is a FIFO, not a regular file",
          "Point file: at a regular file")
    assert time.monotonic() - started < 30


def test_a_password_file_that_is_not_utf8_names_the_file(unchanged: Workspace) -> None:
    (unchanged.specs / "app.pw").write_bytes(b"caf\xe9\n")
    unchanged.write("r.yaml", "kind: Role\nmetadata: {name: app, pair: main}\nspec: {password: {file: app.pw}}\n")
    fails(unchanged, f"role.main.app: password file {unchanged.specs / 'app.pw'} is not UTF-8 text")
