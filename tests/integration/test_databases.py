"""kind: Database against a real PostgreSQL 15: every action, checked in the catalog, then a converged plan."""

from __future__ import annotations

import json

import psycopg

from tests.support.workspace import Result, Workspace

ROLES = """
    kind: Role
    metadata: {name: app_owner, pair: main}
    ---
    kind: Role
    metadata: {name: other_owner, pair: main}
    ---
    kind: Role
    metadata: {name: audit-owner, pair: main}
"""


def flat(result: Result) -> str:
    """Output with whitespace collapsed (rich wraps long lines at 80 columns when not on a terminal)."""
    return " ".join(result.output.split())


def database_yaml(name: str, spec: str = "{}") -> str:
    """A Database document; `spec` is a YAML block (already indented by 2) or a flow mapping."""
    if spec.lstrip().startswith("{"):
        return f"kind: Database\nmetadata: {{name: {name}, pair: main}}\nspec: {spec.strip()}\n"
    return f"kind: Database\nmetadata: {{name: {name}, pair: main}}\nspec:\n{spec}"


def write_db(ws: Workspace, name: str, spec: str = "{}", file: str | None = None) -> None:
    ws.write(file or f"db-{name}.yaml", database_yaml(name, spec))


def database_row(ws: Workspace, name: str) -> tuple | None:
    rows = ws.sql(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, datconnlimit, datallowconn"
        f" FROM pg_database WHERE datname = '{name}'"
    )
    return rows[0] if rows else None


def db_settings(ws: Workspace, name: str) -> dict[str, str]:
    rows = ws.sql(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
        f" WHERE d.datname = '{name}' AND s.setrole = 0"
    )
    return dict(item.split("=", 1) for item in rows[0][0]) if rows else {}


def extensions(ws: Workspace, dbname: str) -> dict[str, tuple[str, str]]:
    rows = ws.sql(
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname <> 'plpgsql'",
        dbname=dbname,
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def schemas(ws: Workspace, dbname: str) -> dict[str, str]:
    rows = ws.sql(
        "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace"
        " WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'",
        dbname=dbname,
    )
    return dict(rows)


def database_exists(ws: Workspace, name: str) -> bool:
    return ws.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == [(1,)]


# ---------------------------------------------------------------- create


def test_create_database_with_every_attribute(ws: Workspace) -> None:
    ws.must_apply()  # the pair itself is adopted first, so the counts below are about the database
    ws.write("roles.yaml", ROLES)
    write_db(ws, "shop", """
  owner: app_owner
  encoding: UTF8
  locale: C.UTF-8
  template: template0
  connection_limit: 20
  settings: {statement_timeout: 30s, work_mem: 8MB}
  extensions: [pgcrypto, {name: hstore, schema: public}]
  schemas: [sales, {name: audit, owner: audit-owner}]
""")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "+ database.main.shop" in plan.stdout
    assert "Plan: 4 to add, 0 to change, 0 to destroy." in plan.stdout

    ws.must_apply()

    assert database_row(ws, "shop") == ("app_owner", "UTF8", "C.UTF-8", "C.UTF-8", 20, True)
    assert db_settings(ws, "shop") == {"statement_timeout": "30s", "work_mem": "8MB"}
    assert extensions(ws, "shop") == {"pgcrypto": ("1.3", "public"), "hstore": ("1.8", "public")}
    assert schemas(ws, "shop") == {"public": "pg_database_owner", "sales": "app_owner", "audit": "audit-owner"}
    # the per-database settings are really in effect for new sessions
    assert ws.sql("SELECT current_setting('statement_timeout'), current_setting('work_mem')", dbname="shop") == [
        ("30s", "8MB")
    ]
    ws.assert_converged()


def test_create_database_without_connections(ws: Workspace) -> None:
    write_db(ws, "archive", "{allow_connections: false, connection_limit: 3}")
    ws.must_apply()
    assert database_row(ws, "archive") == ("postgres", "UTF8", "C.UTF-8", "C.UTF-8", 3, False)
    try:
        ws.sql("SELECT 1", dbname="archive")
    except psycopg.OperationalError as exc:
        assert "not currently accepting connections" in str(exc)
    else:
        raise AssertionError("connected to a database created with allow_connections: false")
    ws.assert_converged()


def test_create_database_without_connections_with_contents(ws: Workspace) -> None:
    """allow_connections: false together with extensions/schemas: either apply builds the contents before
    closing the door, or the plan refuses up front; an apply that fails halfway or a plan that never
    converges is wrong."""
    write_db(ws, "vault", "{allow_connections: false, extensions: [pgcrypto], schemas: [keys]}")
    plan = ws.plan()
    if plan.exit_code == 1:  # refused up front, with a reason
        assert "allow_connections" in flat(plan), plan.output
        assert not database_exists(ws, "vault")
        return
    assert plan.exit_code == 0, plan.output
    ws.must_apply()
    assert database_row(ws, "vault")[5] is False
    ws.sql("ALTER DATABASE vault ALLOW_CONNECTIONS true")
    assert extensions(ws, "vault") == {"pgcrypto": ("1.3", "public")}
    assert "keys" in schemas(ws, "vault")
    ws.sql("ALTER DATABASE vault ALLOW_CONNECTIONS false")
    ws.assert_converged()


def test_extension_installed_into_a_declared_schema(ws: Workspace) -> None:
    """The schema an extension goes into may be one the same spec declares: it must be created first."""
    write_db(ws, "geo", "{schemas: [ext], extensions: [{name: hstore, schema: ext}]}")
    ws.must_apply()
    assert extensions(ws, "geo") == {"hstore": ("1.8", "ext")}
    assert schemas(ws, "geo")["ext"] == "postgres"
    ws.assert_converged()


def test_quoted_database_name(ws: Workspace) -> None:
    ws.write("roles.yaml", ROLES)
    write_db(ws, "app-db", "{owner: audit-owner, settings: {work_mem: 4MB}, schemas: [my-schema], extensions: [citext]}")
    ws.must_apply()
    assert database_row(ws, "app-db")[0] == "audit-owner"
    assert db_settings(ws, "app-db") == {"work_mem": "4MB"}
    assert schemas(ws, "app-db")["my-schema"] == "audit-owner"
    assert "citext" in extensions(ws, "app-db")
    ws.assert_converged()


# ---------------------------------------------------------------- update


def test_change_every_mutable_attribute(ws: Workspace) -> None:
    ws.write("roles.yaml", ROLES)
    write_db(ws, "shop", """
  owner: app_owner
  connection_limit: 10
  settings: {statement_timeout: 30s, work_mem: 8MB}
  extensions: [pgcrypto]
  schemas: [sales, {name: audit, owner: audit-owner}, scratch]
""")
    ws.must_apply()
    ws.assert_converged()
    # an undeclared setting made by hand: never reset, since it was never declared
    ws.sql("ALTER DATABASE shop SET lock_timeout = '5s'")
    ws.assert_converged()

    # owner, connection_limit, a setting value, a removed setting, an added extension,
    # a removed extension, an added schema, a schema owner, a removed empty schema
    write_db(ws, "shop", """
  owner: other_owner
  connection_limit: 50
  settings: {statement_timeout: 1min}
  extensions: [hstore]
  schemas: [sales, {name: audit, owner: app_owner}, reports]
""")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    text = flat(plan)
    assert "~ database.main.shop" in text
    for expected in (
        "owner: app_owner -> other_owner", "connection_limit: 10 -> 50", "settings.statement_timeout: 30s -> 1min",
        "settings.work_mem: 8MB -> (none)", "extensions.hstore: installed", "extensions.pgcrypto: 1.3 -> (none)",
        "schemas.reports: owner other_owner", "schemas.sales.owner: app_owner -> other_owner",
        "schemas.audit.owner: audit-owner -> app_owner", "schemas.scratch: owner app_owner -> (none)",
    ):
        assert expected in text, (expected, text)
    assert "lock_timeout" not in text
    ws.must_apply()

    assert database_row(ws, "shop") == ("other_owner", "UTF8", "C.UTF-8", "C.UTF-8", 50, True)
    assert db_settings(ws, "shop") == {"statement_timeout": "1min", "lock_timeout": "5s"}
    assert extensions(ws, "shop") == {"hstore": ("1.8", "public")}
    # sales has no owner of its own: it follows the database owner
    assert schemas(ws, "shop") == {
        "public": "pg_database_owner", "sales": "other_owner", "audit": "app_owner", "reports": "other_owner",
    }
    ws.assert_converged()


def test_allow_connections_toggle(ws: Workspace) -> None:
    write_db(ws, "quiet", "{connection_limit: 4}")
    ws.must_apply()
    write_db(ws, "quiet", "{connection_limit: 4, allow_connections: false}")
    plan = ws.plan()
    assert "allow_connections: true -> false" in flat(plan), plan.output
    ws.must_apply()
    assert database_row(ws, "quiet")[4:] == (4, False)
    ws.assert_converged()

    write_db(ws, "quiet", "{connection_limit: 4}")
    ws.must_apply()
    assert database_row(ws, "quiet")[4:] == (4, True)
    assert ws.sql("SELECT 1", dbname="quiet") == [(1,)]
    ws.assert_converged()


def test_closing_connections_of_a_database_with_contents(ws: Workspace) -> None:
    """A managed database with extensions and schemas cannot be closed to connections: pgaasctl could no
    longer look inside it, so the plan refuses up front and nothing changes."""
    write_db(ws, "shop", "{extensions: [pgcrypto], schemas: [sales]}")
    ws.must_apply()
    write_db(ws, "shop", "{extensions: [pgcrypto], schemas: [sales], allow_connections: false}")
    for result in (ws.plan(), ws.apply()):
        assert result.exit_code == 1, result.output
        assert "database.main.shop: allow_connections is false, so pgaasctl cannot manage its extensions" in flat(result)
    assert database_row(ws, "shop")[5] is True


def test_extension_version_update(ws: Workspace) -> None:
    versions = {r[0] for r in ws.sql("SELECT version FROM pg_available_extension_versions WHERE name = 'hstore'")}
    assert {"1.7", "1.8"} <= versions
    write_db(ws, "kv", "{extensions: [{name: hstore, version: '1.7'}]}")
    ws.must_apply()
    assert extensions(ws, "kv") == {"hstore": ("1.7", "public")}
    ws.assert_converged()

    write_db(ws, "kv", "{extensions: [{name: hstore, version: '1.8'}]}")
    plan = ws.plan()
    assert "extensions.hstore: 1.7 -> 1.8" in flat(plan), plan.output
    ws.must_apply()
    assert extensions(ws, "kv") == {"hstore": ("1.8", "public")}
    ws.assert_converged()

    # version omitted afterwards: "never updated", and no diff
    write_db(ws, "kv", "{extensions: [hstore]}")
    ws.must_apply()
    assert extensions(ws, "kv") == {"hstore": ("1.8", "public")}
    ws.assert_converged()


def test_removing_a_non_empty_schema_is_refused(ws: Workspace) -> None:
    write_db(ws, "shop", "{schemas: [sales, keep]}")
    ws.must_apply()
    ws.sql("CREATE TABLE sales.orders (id int); CREATE SEQUENCE sales.order_ids", dbname="shop")

    write_db(ws, "shop", "{schemas: [keep]}")
    plan = ws.plan()
    assert plan.exit_code == 1, plan.output
    message = flat(plan)
    assert "database.main.shop" in message
    assert "schema sales" in message
    assert "holds 2 objects" in message
    assert "Traceback" not in plan.output

    applied = ws.apply()
    assert applied.exit_code == 1, applied.output
    assert set(schemas(ws, "shop")) == {"public", "sales", "keep"}
    assert ws.sql("SELECT count(*) FROM sales.orders", dbname="shop") == [(0,)]

    # once emptied by hand, the schema is dropped
    ws.sql("DROP TABLE sales.orders; DROP SEQUENCE sales.order_ids", dbname="shop")
    ws.must_apply()
    assert set(schemas(ws, "shop")) == {"public", "keep"}
    ws.assert_converged()


def test_create_only_attributes_cannot_change(ws: Workspace) -> None:
    write_db(ws, "shop", "{encoding: UTF8, locale: C.UTF-8, template: template0}")
    ws.must_apply()
    ws.assert_converged()

    write_db(ws, "shop", "{encoding: SQL_ASCII, locale: C.UTF-8, template: template0}")
    plan = ws.plan()
    assert plan.exit_code == 1, plan.output
    message = flat(plan)
    assert "database.main.shop" in message and "encoding" in message and "fixed at creation" in message

    write_db(ws, "shop", "{encoding: UTF8, locale: C, template: template0}")
    plan = ws.plan()
    assert plan.exit_code == 1, plan.output
    message = flat(plan)
    assert "database.main.shop" in message and "locale" in message and "fixed at creation" in message

    assert database_row(ws, "shop")[1:4] == ("UTF8", "C.UTF-8", "C.UTF-8")
    # the spelling UTF-8 is the same encoding: not an error, nothing to run on the server
    write_db(ws, "shop", "{encoding: UTF-8, locale: C.UTF-8, template: template0}")
    plan = ws.plan("--json")
    assert plan.exit_code == 0, plan.output
    assert all(not c["sql"] for p in json.loads(plan.stdout)["pairs"] for c in p["changes"])
    ws.must_apply()
    ws.assert_converged()


# ---------------------------------------------------------------- destroy


def test_destroy_drops_the_database_even_with_open_connections(ws: Workspace) -> None:
    write_db(ws, "temp-db", "{extensions: [pgcrypto]}")
    write_db(ws, "kept", "{}")
    ws.must_apply()

    with psycopg.connect(ws.server.dsn("temp-db"), autocommit=True) as held:
        held.execute("SELECT 1")
        ws.remove("db-temp-db.yaml")
        plan = ws.plan("--detailed-exitcode")
        assert plan.exit_code == 2, plan.output
        assert "- database.main.temp-db" in plan.stdout
        assert "1 open connection(s) will be terminated" in flat(plan)
        assert "Plan: 0 to add, 0 to change, 1 to destroy." in plan.stdout
        ws.must_apply()
        assert not database_exists(ws, "temp-db")
        assert held.closed or held.broken or _connection_dead(held)

    assert database_exists(ws, "kept")
    assert "database.main.temp-db" not in ws.run("state", "list", str(ws.specs)).stdout
    ws.assert_converged()


def _connection_dead(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_deletion_protection_turns_destroy_into_an_error(ws: Workspace) -> None:
    write_db(ws, "ledger", "{deletion_protection: true}")
    ws.must_apply()
    ws.remove("db-ledger.yaml")

    plan = ws.plan()
    assert plan.exit_code == 1, plan.output
    message = flat(plan)
    assert "database.main.ledger" in message and "deletion_protection" in message
    applied = ws.apply()
    assert applied.exit_code == 1, applied.output
    destroyed = ws.run("destroy", str(ws.specs), "--auto-approve")
    assert destroyed.exit_code == 1, destroyed.output
    assert database_exists(ws, "ledger")

    # turning protection off first, then removing, drops it
    write_db(ws, "ledger", "{deletion_protection: false}")
    ws.must_apply()
    ws.remove("db-ledger.yaml")
    ws.must_apply()
    assert not database_exists(ws, "ledger")
    ws.assert_converged()


def test_unmanaged_databases_are_never_touched(ws: Workspace) -> None:
    ws.sql("CREATE DATABASE handmade CONNECTION LIMIT 7")
    ws.sql("ALTER DATABASE handmade SET work_mem = '2MB'")
    write_db(ws, "managed", "{}")
    plan = ws.plan()
    assert "handmade" not in plan.output
    ws.must_apply()
    ws.assert_converged()

    ws.remove("db-managed.yaml")
    ws.must_apply()
    destroyed = ws.run("destroy", str(ws.specs), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert "handmade" not in destroyed.output

    assert not database_exists(ws, "managed")
    assert database_row(ws, "handmade") == ("postgres", "UTF8", "C.UTF-8", "C.UTF-8", 7, True)
    assert db_settings(ws, "handmade") == {"work_mem": "2MB"}


def test_drift_is_detected_and_corrected(ws: Workspace) -> None:
    write_db(ws, "shop", "{connection_limit: 10, settings: {work_mem: 8MB}}")
    ws.must_apply()
    ws.assert_converged()

    ws.sql("ALTER DATABASE shop CONNECTION LIMIT 99")
    ws.sql("ALTER DATABASE shop SET work_mem = '1MB'")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "~ database.main.shop" in plan.stdout
    assert "connection_limit: 99 -> 10" in flat(plan)
    assert "settings.work_mem: 1MB -> 8MB" in flat(plan)
    ws.must_apply()
    assert database_row(ws, "shop")[4] == 10
    assert db_settings(ws, "shop") == {"work_mem": "8MB"}
    ws.assert_converged()

    # a declared setting removed by hand comes back too
    ws.sql("ALTER DATABASE shop RESET work_mem")
    assert ws.plan("--detailed-exitcode").exit_code == 2
    ws.must_apply()
    assert db_settings(ws, "shop") == {"work_mem": "8MB"}
    ws.assert_converged()


def test_a_hand_made_database_is_never_adopted_by_accident(ws: Workspace) -> None:
    ws.must_apply()  # the pair itself is adopted first
    ws.sql("CREATE DATABASE precious")
    ws.sql("CREATE TABLE keep (x int)", dbname="precious")
    write_db(ws, "precious")
    refused = ws.plan()
    assert refused.exit_code == 1, refused.output
    assert "database.main.precious already exists on the server, and pgaasctl did not create it" in flat(refused)
    assert ws.apply().exit_code == 1
    assert "database.main.precious" not in ws.run("state", "list").stdout.split()

    # the README's promise: nothing pgaasctl did not create (or was not told to adopt) is dropped
    ws.remove("db-precious.yaml")
    assert ws.plan("--detailed-exitcode").exit_code == 0
    ws.must_apply()
    destroyed = ws.run("destroy", str(ws.specs), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert database_exists(ws, "precious")
    assert ws.sql("SELECT count(*) FROM keep", dbname="precious") == [(0,)]

    # import is the explicit act: recorded as imported, and its destroy plan says so
    write_db(ws, "precious")
    imported = ws.run("import", "database.main.precious", str(ws.specs))
    assert imported.exit_code == 0, imported.output
    shown = json.loads(ws.run("state", "show", "database.main.precious").stdout)
    assert shown["origin"] == "imported"
    ws.remove("db-precious.yaml")
    plan = ws.plan()
    assert "- database.main.precious" in plan.stdout and "imported by" in flat(plan), plan.output


def test_adopting_an_existing_database(ws: Workspace) -> None:
    ws.must_apply()  # the pair itself is adopted first
    ws.sql("CREATE DATABASE legacy CONNECTION LIMIT 5")
    write_db(ws, "legacy", "{connection_limit: 5, adopt: true}")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2, plan.output
    assert "~ database.main.legacy" in plan.stdout
    assert "+ database.main.legacy" not in plan.stdout
    assert "starts managing" in flat(plan)
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.stdout
    ws.must_apply()

    state = ws.run("state", "list", str(ws.specs))
    assert state.exit_code == 0, state.output
    assert "database.main.legacy" in state.stdout.split()
    ws.assert_converged()

    # once managed, removing it from the specs drops it
    ws.remove("db-legacy.yaml")
    assert "- database.main.legacy" in ws.plan().stdout
    ws.must_apply()
    assert not database_exists(ws, "legacy")


def test_plan_as_sql_and_json(ws: Workspace) -> None:
    ws.must_apply()  # the pair itself is adopted first
    ws.write("roles.yaml", ROLES)
    write_db(ws, "shop", "{owner: app_owner, extensions: [pgcrypto], schemas: [sales]}")

    as_sql = ws.plan("--sql")
    assert as_sql.exit_code == 0, as_sql.output
    lines = as_sql.stdout.splitlines()
    create = next(i for i, line in enumerate(lines) if line.startswith('CREATE DATABASE "shop"'))
    assert 'OWNER "app_owner"' in lines[create]
    connect = lines.index("\\connect 'shop'")
    assert connect > create
    after = "\n".join(lines[connect:])
    assert 'CREATE EXTENSION IF NOT EXISTS "pgcrypto"' in after
    assert 'CREATE SCHEMA IF NOT EXISTS "sales" AUTHORIZATION "app_owner"' in after
    assert not database_exists(ws, "shop")  # a plan changes nothing

    as_json = ws.plan("--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["summary"] == {"add": 4, "change": 0, "destroy": 0}
    changes = {c["address"]: c for p in data["pairs"] for c in p["changes"]}
    assert changes["database.main.shop"]["action"] == "create"
    assert any(s["text"].startswith("CREATE DATABASE") for s in changes["database.main.shop"]["sql"])

    ws.must_apply()
    data = json.loads(ws.plan("--json").stdout)
    assert data["summary"] == {"add": 0, "change": 0, "destroy": 0}
