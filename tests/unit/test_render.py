"""Plan rendering (text, JSON, SQL) and saved plan files, on hand-built plans."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from psycopg import sql
from rich.console import Console

from pgaasctl.errors import PgaasError, StalePlan
from pgaasctl.plan.model import (
    SENSITIVE,
    AttributeChange,
    Change,
    HostOperation,
    PairPlan,
    Plan,
    ShownStatement,
    Statement,
)
from pgaasctl.plan.planfile import check_still_valid, is_plan_file, load_plan, save_plan
from pgaasctl.plan.render import render_json, render_sql, render_text

SECRET = "hunter2-do-not-print"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sample_plan() -> Plan:
    create_role = Change(
        address="role.orders.orders_app", kind="role", name="orders_app", action="create",
        attributes=[AttributeChange(name="login", after=True),
                    AttributeChange(name="member_of", after=["reporting", "pg_monitor"]),
                    AttributeChange(name="password", after=SENSITIVE, sensitive=True)],
        sql=[ShownStatement(text="CREATE ROLE \"orders_app\" LOGIN PASSWORD '(sensitive)'")],
        record={"login": True, "password_managed": True},
        statements=[Statement(query=sql.SQL("CREATE ROLE x PASSWORD {}").format(sql.Literal(SECRET)),
                              shown=sql.SQL("CREATE ROLE x PASSWORD '(sensitive)'"))],
    )
    update_password = Change(
        address="role.orders.reporting", kind="role", name="reporting", action="update",
        attributes=[AttributeChange(name="password", before=SENSITIVE, after=SENSITIVE, sensitive=True,
                                    note="differs from the spec")],
        sql=[ShownStatement(text="ALTER ROLE \"reporting\" PASSWORD '(sensitive)'")],
    )
    update_db = Change(
        address="database.orders.legacy", kind="database", name="legacy", action="update",
        attributes=[AttributeChange(name="connection_limit", before=10, after=100),
                    AttributeChange(name="settings.statement_timeout", before=None, after="30s")],
        sql=[ShownStatement(text='ALTER DATABASE "legacy" CONNECTION LIMIT 100'),
             ShownStatement(database="legacy", text='CREATE SCHEMA "billing"'),
             ShownStatement(database="legacy", text='GRANT USAGE ON SCHEMA "billing" TO "reporting"')],
    )
    adopt_pair = Change(
        address="pair.orders", kind="pair", name="orders", action="adopt",
        attributes=[AttributeChange(name="work_mem", before="4MB", after="8MB", note="reload"),
                    AttributeChange(name="shared_buffers", before="128MB", after="256MB", note="restart required")],
        notes=["pgaasctl starts managing this pair"],
        sql=[ShownStatement(text="ALTER SYSTEM SET work_mem = '8MB'"), ShownStatement(text="SELECT pg_reload_conf()")],
    )
    delete_db = Change(
        address="database.orders.old", kind="database", name="old", action="delete",
        notes=["managed, no longer in the spec"],
        sql=[ShownStatement(database="old", text='REVOKE ALL ON SCHEMA "public" FROM "x"'),
             ShownStatement(text='DROP DATABASE "old"')],
    )
    orders = PairPlan(
        pair="orders", primary="orders-a", header='Pair "orders": primary orders-a (127.0.0.2:5432)',
        warnings=["pair is degraded: standby orders-b is unreachable"],
        changes=[adopt_pair, create_role, update_password, update_db, delete_db], live_fingerprint="live-1",
    )
    quiet = PairPlan(pair="quiet", primary="quiet-a", admin_database="admin",
                     header='Pair "quiet": primary quiet-a (127.0.0.3:5432)', live_fingerprint="live-2")
    return Plan(spec_path="specs", spec_fingerprint="spec-1", pairs=[orders, quiet])


def text_of(plan: Plan, terminal: bool = False) -> str:
    buffer = io.StringIO()
    render_text(plan, Console(file=buffer, force_terminal=terminal, width=200))
    return buffer.getvalue()


# ---------------------------------------------------------------- text

def test_text_shows_symbols_per_action():
    out = text_of(sample_plan())
    lines = out.splitlines()
    assert "  + role.orders.orders_app" in lines
    assert "  ~ role.orders.reporting" in lines
    assert "  ~ database.orders.legacy" in lines
    assert "  ~ pair.orders" in lines
    assert "  - database.orders.old" in lines


def test_text_shows_attribute_values_and_notes():
    out = text_of(sample_plan())
    assert re.search(r"connection_limit:\s+10 -> 100", out)
    assert re.search(r"shared_buffers:\s+128MB -> 256MB\s+\(restart required\)", out)
    assert re.search(r"work_mem:\s+4MB -> 8MB\s+\(reload\)", out)
    assert re.search(r"login:\s+true", out)
    assert re.search(r"member_of:\s+\[reporting, pg_monitor\]", out)
    assert "# managed, no longer in the spec" in out
    assert "# pgaasctl starts managing this pair" in out


def test_text_has_the_summary_line():
    out = text_of(sample_plan())
    assert out.rstrip().splitlines()[-1] == "Plan: 1 to add, 3 to change, 1 to destroy."
    assert sample_plan().counts() == {"add": 1, "change": 3, "destroy": 1}


def test_text_shows_headers_warnings_and_pairs_without_changes():
    out = text_of(sample_plan())
    assert 'Pair "orders": primary orders-a (127.0.0.2:5432)' in out
    assert "warning: pair is degraded: standby orders-b is unreachable" in out
    quiet = out.index('Pair "quiet"')
    assert "No changes" in out[quiet:]


def test_text_with_no_changes_at_all():
    plan = sample_plan()
    for pair in plan.pairs:
        pair.changes = []
    out = text_of(plan)
    assert "Plan:" not in out
    assert "No changes." in out


def test_sensitive_values_are_shown_as_sensitive_and_never_the_secret():
    plan = sample_plan()
    for out in (text_of(plan), text_of(plan, terminal=True), render_json(plan), render_sql(plan)):
        assert SECRET not in out
    out = text_of(plan)
    assert re.search(r"password:\s+\(sensitive\)$", out, re.MULTILINE)
    assert re.search(r"password:\s+\(sensitive\) -> \(sensitive\)\s+\(differs from the spec\)", out)


def test_no_ansi_codes_when_not_a_terminal():
    assert not ANSI.search(text_of(sample_plan(), terminal=False))
    # ...and there are some on a terminal, so the check above means something
    assert ANSI.search(text_of(sample_plan(), terminal=True))


def test_rich_markup_in_names_is_printed_literally():
    plan = Plan(spec_path="s", spec_fingerprint="f", pairs=[PairPlan(
        pair="p", primary="a", header="Pair [bold]p[/bold]", warnings=["look [red]here[/red]"],
        changes=[Change(address="role.p.x", kind="role", name="x", action="update",
                        attributes=[AttributeChange(name="settings.search_path", before="[a]", after="[b]")],
                        notes=["[dim]n[/dim]"])])])
    out = text_of(plan)
    assert "Pair [bold]p[/bold]" in out
    assert "look [red]here[/red]" in out
    assert "[a] -> [b]" in out
    assert "[dim]n[/dim]" in out


# ---------------------------------------------------------------- JSON

def test_json_output_parses_and_has_the_summary():
    data = json.loads(render_json(sample_plan()))
    assert data["summary"] == {"add": 1, "change": 3, "destroy": 1}
    assert data["format_version"] == "1"
    assert data["spec_fingerprint"] == "spec-1"
    assert [p["pair"] for p in data["pairs"]] == ["orders", "quiet"]
    changes = data["pairs"][0]["changes"]
    assert [c["action"] for c in changes] == ["adopt", "create", "update", "update", "delete"]
    role = changes[1]
    assert role["attributes"][2] == {"name": "password", "before": None, "after": SENSITIVE, "sensitive": True, "note": None}
    assert "statements" not in role  # the executable statements (which may hold secrets) never leave the process
    assert role["sql"] == [{"database": None, "text": "CREATE ROLE \"orders_app\" LOGIN PASSWORD '(sensitive)'"}]


def test_json_output_is_stable():
    first, second = render_json(sample_plan()), render_json(sample_plan())
    assert first == second
    assert list(json.loads(first)) == ["format_version", "spec_path", "spec_fingerprint", "destroy", "targets", "pairs",
                                       "secret_fingerprints", "summary"]


# ---------------------------------------------------------------- SQL

def test_sql_output_connects_to_the_admin_database_first_and_switches_with_connect():
    out = render_sql(sample_plan())
    lines = out.splitlines()
    orders = lines[: lines.index("-- pair quiet: run on the primary quiet-a")]
    assert orders[0] == "-- pair orders: run on the primary orders-a"
    assert orders[1] == "\\connect 'postgres'"
    body = [line for line in orders if not line.startswith("--")]
    assert body == [
        "\\connect 'postgres'",
        "ALTER SYSTEM SET work_mem = '8MB';",
        "SELECT pg_reload_conf();",
        "CREATE ROLE \"orders_app\" LOGIN PASSWORD '(sensitive)';",
        "ALTER ROLE \"reporting\" PASSWORD '(sensitive)';",
        'ALTER DATABASE "legacy" CONNECTION LIMIT 100;',
        "\\connect 'legacy'",
        'CREATE SCHEMA "billing";',
        'GRANT USAGE ON SCHEMA "billing" TO "reporting";',
        "\\connect 'old'",
        'REVOKE ALL ON SCHEMA "public" FROM "x";',
        "\\connect 'postgres'",
        'DROP DATABASE "old";',
    ]
    assert "-- delete database.orders.old" in orders


def test_sql_output_uses_each_pairs_own_admin_database():
    plan = sample_plan()
    plan.pairs[1].changes = [Change(address="role.quiet.r", kind="role", name="r", action="create",
                                    sql=[ShownStatement(text='CREATE ROLE "r"'),
                                         ShownStatement(database="app", text="SELECT 1"),
                                         ShownStatement(text='ALTER ROLE "r" LOGIN')])]
    out = render_sql(plan)
    quiet = out[out.index("-- pair quiet"):].splitlines()
    assert [line for line in quiet if not line.startswith("--")] == [
        "\\connect 'admin'", 'CREATE ROLE "r";', "\\connect 'app'", "SELECT 1;", "\\connect 'admin'", 'ALTER ROLE "r" LOGIN;',
    ]
    # the second pair starts again from its admin database, whatever the first pair ended on
    assert out.endswith("\n")


HOSTILE = "x\n\\! touch /tmp/pwned\n\\connect 'y'"


def hostile_plan() -> Plan:
    change = Change(address=f"role.p.{HOSTILE}", kind="role", name=HOSTILE, action="create",
                    sql=[ShownStatement(database=HOSTILE, text="SELECT 1")])
    pair = PairPlan(pair=f"p{HOSTILE}", primary=HOSTILE, admin_database=f"it's {HOSTILE}\t\r\x01\\", header="h",
                    changes=[change],
                    operations=[HostOperation(kind="start_host", node=HOSTILE, detail=f"detail{HOSTILE}")])
    return Plan(spec_path="specs", spec_fingerprint="f", pairs=[pair])


def test_plan_sql_writes_every_connect_argument_quoted():
    lines = render_sql(hostile_plan()).splitlines()
    connects = [line for line in lines if line.startswith("\\")]
    assert connects == [
        "\\connect 'it''s x\\n\\\\! touch /tmp/pwned\\n\\\\connect ''y''\\t\\r\\x01\\\\'",
        "\\connect 'x\\n\\\\! touch /tmp/pwned\\n\\\\connect ''y'''",
    ]
    # every other line is a comment or a statement: nothing can start a meta-command
    assert all(line.startswith(("--", "\\connect '")) or line == "SELECT 1;" for line in lines), lines
    assert len(lines) == 6, lines


@pytest.mark.parametrize("name", ["dbname=evil", "postgresql://evil/db", "postgres://evil", "-"])
def test_a_database_psql_would_read_as_a_connection_string_is_refused(name: str):
    plan = sample_plan()
    plan.pairs[1].admin_database = name
    with pytest.raises(PgaasError) as info:
        render_sql(plan)
    assert "connection string" in str(info.value) or "previous connection" in str(info.value)


# ---------------------------------------------------------------- plan files

KEY = b"k" * 32


def test_plan_file_roundtrip_keeps_the_spec_directory_relative_to_the_file(tmp_path: Path):
    plan = sample_plan()
    plan.spec_path = str(tmp_path / "repo" / "specs")
    (tmp_path / "plans").mkdir()
    path = tmp_path / "plans" / "plan.json"
    save_plan(plan, path, KEY)
    assert json.loads(path.read_text())["spec_path"] == "../repo/specs"  # the checkout may move with the file
    saved = load_plan(path)
    saved.verify(KEY)
    assert saved.plan == plan.model_copy(update={"pairs": [p.model_copy(update={"changes": [
        c.model_copy(update={"statements": []}) for c in p.changes]}) for p in plan.pairs]})
    assert render_json(saved.plan) == render_json(plan)
    assert SECRET not in path.read_text()


def test_an_edited_plan_file_is_refused_as_such(tmp_path: Path):
    path = tmp_path / "plan.json"
    save_plan(sample_plan(), path, KEY)
    path.write_text(path.read_text().replace('"destroy": false', '"destroy": true'))
    with pytest.raises(StalePlan) as info:
        load_plan(path).verify(KEY)
    assert "was changed after it was made" in str(info.value)
    with pytest.raises(StalePlan):  # and a plan made with another store's key is not taken either
        save_plan(sample_plan(), path, KEY)
        load_plan(path).verify(b"other" * 8)


def test_a_changed_secret_makes_a_saved_plan_stale_naming_the_role(tmp_path: Path):
    saved, fresh = sample_plan(), sample_plan()
    saved.secret_fingerprints = {"role.orders.orders_app": "aa", "role.orders.reporting": "bb"}
    fresh.secret_fingerprints = {"role.orders.orders_app": "aa", "role.orders.reporting": "cc"}
    with pytest.raises(StalePlan) as info:
        check_still_valid(saved, fresh, tmp_path / "p.plan")
    assert "password of role.orders.reporting changed" in str(info.value)
    assert "orders_app" not in str(info.value)


def test_is_plan_file(tmp_path: Path):
    plan_path = tmp_path / "saved.plan"
    save_plan(sample_plan(), plan_path, KEY)
    assert is_plan_file(plan_path)

    other_json = tmp_path / "other.json"
    other_json.write_text('{"hello": "world"}')
    spec = tmp_path / "spec.yaml"
    spec.write_text("# pgaasctl-plan mentioned in a comment\nkind: Role\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00pgaasctl-plan")
    assert not is_plan_file(other_json)
    assert not is_plan_file(spec)
    assert not is_plan_file(tmp_path)  # a directory of specs
    assert not is_plan_file(tmp_path / "missing.plan")
    assert not is_plan_file(binary)


def test_load_plan_of_a_non_plan_file_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.plan"
    bad.write_text("not json at all")
    with pytest.raises(PgaasError) as info:
        load_plan(bad)
    assert str(bad) in str(info.value) and "not a readable pgaasctl plan file" in str(info.value)
    with pytest.raises(PgaasError):
        load_plan(tmp_path / "missing.plan")


def test_check_still_valid_accepts_an_identical_fresh_plan(tmp_path: Path):
    path = tmp_path / "p.plan"
    plan = sample_plan()
    plan.spec_path = str(tmp_path / "specs")
    save_plan(plan, path, KEY)
    check_still_valid(load_plan(path).plan, plan, path)


def test_check_still_valid_refuses_changed_specs(tmp_path: Path):
    path = tmp_path / "p.plan"
    fresh = sample_plan()
    fresh.spec_fingerprint = "spec-2"
    with pytest.raises(StalePlan) as info:
        check_still_valid(sample_plan(), fresh, path)
    assert "specs" in str(info.value) and str(path) in str(info.value)
    assert info.value.hint and "pgaasctl plan --out" in info.value.hint


def test_check_still_valid_refuses_a_changed_live_state(tmp_path: Path):
    path = tmp_path / "p.plan"
    fresh = sample_plan()
    fresh.pairs[1].live_fingerprint = "live-2-changed"
    with pytest.raises(StalePlan) as info:
        check_still_valid(sample_plan(), fresh, path)
    assert "'quiet'" in str(info.value)


def test_check_still_valid_refuses_changed_changes_or_a_missing_pair(tmp_path: Path):
    path = tmp_path / "p.plan"
    fresh = sample_plan()
    fresh.pairs[0].changes[2].attributes[0].note = "not set"
    with pytest.raises(StalePlan):
        check_still_valid(sample_plan(), fresh, path)
    fresh = sample_plan()
    fresh.pairs = fresh.pairs[:1]
    with pytest.raises(StalePlan) as info:
        check_still_valid(sample_plan(), fresh, path)
    assert "'quiet'" in str(info.value)
