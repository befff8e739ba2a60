"""kind: Grant against a real PostgreSQL 15: privileges granted and revoked, drift, default privileges, ordering."""

from __future__ import annotations

import json

from tests.support.workspace import Result, Workspace

# Names that need quoting prove that every identifier goes through psycopg.sql.Identifier.
READER = "app-reader"
DB = "app-db"

BASE = """
    kind: Role
    metadata: {name: app_owner, pair: main}
    spec: {login: true}
    ---
    kind: Role
    metadata: {name: app-reader, pair: main}
    spec: {login: true}
    ---
    kind: Role
    metadata: {name: writer, pair: main}
"""


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def write_db(ws: Workspace, spec: str = "{owner: app_owner}", name: str = DB) -> None:
    ws.write(f"db-{name}.yaml", f"kind: Database\nmetadata: {{name: {name}, pair: main}}\nspec: {spec}\n")


def write_grant(ws: Workspace, spec: str, role: str = READER, database: str = DB) -> None:
    ws.write(
        f"grant-{database}-{role}.yaml",
        f"kind: Grant\nmetadata: {{pair: main}}\nspec:\n  role: {role}\n  database: {database}\n{spec}",
    )


def _privs(rows: list[tuple]) -> list[str]:
    return sorted(r[0] for r in rows)


def db_acl(ws: Workspace, role: str = READER, database: str = DB) -> list[str]:
    return _privs(ws.sql(
        "SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a"
        f" WHERE d.datname = '{database}' AND a.grantee <> 0 AND pg_get_userbyid(a.grantee) = '{role}'"
    ))


def schema_acl(ws: Workspace, schema: str, role: str = READER, database: str = DB) -> list[str]:
    return _privs(ws.sql(
        "SELECT a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a"
        f" WHERE n.nspname = '{schema}' AND a.grantee <> 0 AND pg_get_userbyid(a.grantee) = '{role}'",
        dbname=database,
    ))


def rel_acl(ws: Workspace, relation: str, role: str = READER, database: str = DB) -> list[str]:
    return _privs(ws.sql(
        "SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
        f" WHERE c.oid = '{relation}'::regclass AND a.grantee <> 0 AND pg_get_userbyid(a.grantee) = '{role}'",
        dbname=database,
    ))


def func_acl(ws: Workspace, function: str, role: str = READER, database: str = DB) -> list[str]:
    return _privs(ws.sql(
        "SELECT a.privilege_type FROM pg_proc p, aclexplode(p.proacl) a"
        f" WHERE p.oid = '{function}'::regprocedure AND a.grantee <> 0 AND pg_get_userbyid(a.grantee) = '{role}'",
        dbname=database,
    ))


def default_acl(ws: Workspace, schema: str, for_role: str, database: str = DB) -> dict[str, dict[str, list[str]]]:
    """object type (r, S, f) -> grantee -> privileges, from pg_default_acl."""
    rows = ws.sql(
        "SELECT d.defaclobjtype::text, pg_get_userbyid(a.grantee), array_agg(a.privilege_type ORDER BY a.privilege_type)"
        " FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a"
        f" WHERE n.nspname = '{schema}' AND pg_get_userbyid(d.defaclrole) = '{for_role}'"
        " GROUP BY 1, 2",
        dbname=database,
    )
    out: dict[str, dict[str, list[str]]] = {}
    for objtype, grantee, privs in rows:
        out.setdefault(objtype, {})[grantee] = list(privs)
    return out


def detailed(ws: Workspace) -> Result:
    return ws.plan("--detailed-exitcode")


# ---------------------------------------------------------------- database privileges


def test_database_privileges_grant_revoke_and_removal(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws)
    write_grant(ws, "  privileges: [CONNECT, TEMPORARY]\n")
    ws.must_apply()
    assert db_acl(ws) == ["CONNECT", "TEMPORARY"]
    ws.assert_converged()
    # a privilege of a role pgaasctl does not manage grants for, made by hand: left alone
    ws.sql(f'GRANT CREATE ON DATABASE "{DB}" TO writer')

    write_grant(ws, "  privileges: [ALL]\n")
    ws.must_apply()
    assert db_acl(ws) == ["CONNECT", "CREATE", "TEMPORARY"]
    ws.assert_converged()

    write_grant(ws, "  privileges: [CONNECT, CREATE]\n")
    plan = ws.plan()
    assert "~ grant.main.app-db.app-reader" in plan.stdout, plan.output
    ws.must_apply()
    assert db_acl(ws) == ["CONNECT", "CREATE"]
    ws.assert_converged()

    # drift: granted by hand on top, revoked
    ws.sql(f'GRANT TEMPORARY ON DATABASE "{DB}" TO "{READER}"')
    assert detailed(ws).exit_code == 2
    ws.must_apply()
    assert db_acl(ws) == ["CONNECT", "CREATE"]

    ws.remove(f"grant-{DB}-{READER}.yaml")
    plan = ws.plan()
    assert "- grant.main.app-db.app-reader" in plan.stdout, plan.output
    ws.must_apply()
    assert db_acl(ws) == []
    assert db_acl(ws, role="writer") == ["CREATE"]
    assert "grant.main.app-db.app-reader" not in ws.run("state", "list", str(ws.specs)).stdout
    ws.assert_converged()


# ---------------------------------------------------------------- schema privileges


def test_schema_privileges_on_public_and_a_declared_schema(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{owner: app_owner, schemas: [sales]}")
    write_grant(ws, """\
  privileges: [CONNECT]
  schemas:
    public: {privileges: [USAGE]}
    sales: {privileges: [USAGE, CREATE]}
""")
    ws.must_apply()
    assert schema_acl(ws, "public") == ["USAGE"]
    assert schema_acl(ws, "sales") == ["CREATE", "USAGE"]
    ws.assert_converged()

    write_grant(ws, """\
  privileges: [CONNECT]
  schemas:
    public: {privileges: [USAGE, CREATE]}
    sales: {privileges: [USAGE]}
""")
    ws.must_apply()
    assert schema_acl(ws, "public") == ["CREATE", "USAGE"]
    assert schema_acl(ws, "sales") == ["USAGE"]
    ws.assert_converged()

    # the reader can really use what was granted
    ws.sql('CREATE TABLE sales.t (x int); GRANT SELECT ON sales.t TO "app-reader"', dbname=DB)
    ws.sql(f'SET ROLE "{READER}"; CREATE TABLE public.mine (x int); SELECT * FROM sales.t', dbname=DB)

    # a schema dropped out of the Grant: what was managed there is revoked
    write_grant(ws, "  privileges: [CONNECT]\n  schemas:\n    public: {privileges: [USAGE, CREATE]}\n")
    ws.must_apply()
    assert schema_acl(ws, "sales") == []
    assert rel_acl(ws, "sales.t") == ["SELECT"]  # tables were never managed by this Grant
    ws.assert_converged()


# ---------------------------------------------------------------- object privileges


def test_object_privileges_drift_and_types_left_alone(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{owner: app_owner, schemas: [sales]}")
    ws.must_apply()
    ws.sql(
        "CREATE TABLE public.a (id serial); CREATE TABLE public.b (x int); CREATE VIEW public.v AS SELECT 1 AS one;"
        " CREATE SEQUENCE sales.s1; CREATE SEQUENCE sales.s2;"
        " CREATE FUNCTION sales.f(int) RETURNS int LANGUAGE sql AS 'SELECT $1';"
        " CREATE PROCEDURE sales.p() LANGUAGE sql AS 'SELECT 1'",
        dbname=DB,
    )
    write_grant(ws, """\
  privileges: [CONNECT]
  schemas:
    public: {privileges: [USAGE], tables: [SELECT]}
    sales: {privileges: [USAGE], sequences: [USAGE, SELECT], functions: [EXECUTE]}
""")
    ws.must_apply()
    for rel in ("public.a", "public.b", "public.v"):
        assert rel_acl(ws, rel) == ["SELECT"], rel
    assert rel_acl(ws, "sales.s1") == rel_acl(ws, "sales.s2") == ["SELECT", "USAGE"]
    assert func_acl(ws, "sales.f(int)") == func_acl(ws, "sales.p()") == ["EXECUTE"]
    assert rel_acl(ws, "public.a_id_seq") == []  # sequences of public are not managed by this Grant
    ws.assert_converged()
    # the reader can read
    ws.sql(f'SET ROLE "{READER}"; SELECT * FROM public.a, public.b, public.v', dbname=DB)

    # a table created later by hand is drift
    ws.sql("CREATE TABLE public.later (x int)", dbname=DB)
    plan = detailed(ws)
    assert plan.exit_code == 2, plan.output
    assert "schemas.public.tables" in plan.stdout
    ws.must_apply()
    assert rel_acl(ws, "public.later") == ["SELECT"]
    ws.assert_converged()

    # an extra privilege on a managed object type, made by hand, is revoked; SELECT stays
    ws.sql(f'GRANT DELETE ON public.b TO "{READER}"; GRANT UPDATE ON SEQUENCE sales.s1 TO "{READER}"', dbname=DB)
    assert detailed(ws).exit_code == 2
    ws.must_apply()
    assert rel_acl(ws, "public.b") == ["SELECT"]
    assert rel_acl(ws, "sales.s1") == ["SELECT", "USAGE"]
    ws.assert_converged()

    # privileges on object types the Grant does not list are left alone
    ws.sql(
        f'GRANT USAGE ON SEQUENCE public.a_id_seq TO "{READER}";'
        f' GRANT SELECT ON ALL TABLES IN SCHEMA sales TO "{READER}";'
        " CREATE TABLE sales.t (x int);"
        f' GRANT INSERT ON sales.t TO "{READER}"',
        dbname=DB,
    )
    ws.assert_converged()
    ws.must_apply()
    assert rel_acl(ws, "public.a_id_seq") == ["USAGE"]
    assert rel_acl(ws, "sales.t") == ["INSERT"]

    # removing the Grant revokes what it managed and nothing else
    ws.remove(f"grant-{DB}-{READER}.yaml")
    ws.must_apply()
    assert db_acl(ws) == []
    assert schema_acl(ws, "public") == schema_acl(ws, "sales") == []
    for rel in ("public.a", "public.b", "public.v", "public.later", "sales.s1", "sales.s2"):
        assert rel_acl(ws, rel) == [], rel
    assert func_acl(ws, "sales.f(int)") == []
    assert rel_acl(ws, "public.a_id_seq") == ["USAGE"]
    assert rel_acl(ws, "sales.t") == ["INSERT"]
    ws.assert_converged()


# ---------------------------------------------------------------- default privileges


def test_default_privileges_for_a_role(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws)
    write_grant(ws, """\
  privileges: [CONNECT]
  schemas:
    public:
      privileges: [USAGE]
      tables: [SELECT]
      sequences: [USAGE]
      default_privileges: {for_role: app_owner, tables: [SELECT], sequences: [USAGE]}
""")
    ws.must_apply()
    assert default_acl(ws, "public", "app_owner") == {"r": {READER: ["SELECT"]}, "S": {READER: ["USAGE"]}}
    ws.assert_converged()

    # objects the for_role creates afterwards get the privileges with no apply, and the plan stays converged
    ws.sql("SET ROLE app_owner; CREATE TABLE public.orders (id serial PRIMARY KEY)", dbname=DB)
    assert rel_acl(ws, "public.orders") == ["SELECT"]
    assert rel_acl(ws, "public.orders_id_seq") == ["USAGE"]
    ws.assert_converged()

    # default_privileges removed: revoked from pg_default_acl; existing grants stay as the lists say
    write_grant(ws, """\
  privileges: [CONNECT]
  schemas:
    public: {privileges: [USAGE], tables: [SELECT], sequences: [USAGE]}
""")
    plan = ws.plan()
    assert "default_privileges" in plan.stdout, plan.output
    ws.must_apply()
    assert default_acl(ws, "public", "app_owner") == {}
    assert rel_acl(ws, "public.orders") == ["SELECT"]
    ws.assert_converged()
    ws.sql("SET ROLE app_owner; CREATE TABLE public.after_removal (x int)", dbname=DB)
    assert rel_acl(ws, "public.after_removal") == []
    assert detailed(ws).exit_code == 2  # a table without the managed SELECT: drift again


def test_default_privileges_default_to_the_database_owner(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{owner: app_owner, schemas: [sales]}")
    write_grant(ws, """\
  schemas:
    sales: {privileges: [USAGE], default_privileges: {functions: [EXECUTE], tables: [SELECT, INSERT]}}
""")
    ws.must_apply()
    assert default_acl(ws, "sales", "app_owner") == {
        "f": {READER: ["EXECUTE"]}, "r": {READER: ["INSERT", "SELECT"]},
    }
    ws.sql("SET ROLE app_owner; CREATE FUNCTION sales.g() RETURNS int LANGUAGE sql AS 'SELECT 1'", dbname=DB)
    assert func_acl(ws, "sales.g()") == ["EXECUTE"]
    ws.assert_converged()

    # removing the whole Grant also clears the default privileges it set
    ws.remove(f"grant-{DB}-{READER}.yaml")
    ws.must_apply()
    assert default_acl(ws, "sales", "app_owner") == {}
    assert schema_acl(ws, "sales") == []
    ws.assert_converged()


def test_default_privileges_follow_a_new_database_owner(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws)
    write_grant(ws, "  schemas:\n    public: {default_privileges: {tables: [SELECT]}}\n")
    ws.must_apply()
    assert default_acl(ws, "public", "app_owner") == {"r": {READER: ["SELECT"]}}

    write_db(ws, "{owner: writer}")
    ws.must_apply()
    assert default_acl(ws, "public", "writer") == {"r": {READER: ["SELECT"]}}
    assert default_acl(ws, "public", "app_owner") == {}
    ws.assert_converged()


def test_default_privileges_drift_made_by_hand(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws)
    write_grant(ws, "  schemas:\n    public: {default_privileges: {for_role: app_owner, tables: [SELECT]}}\n")
    ws.must_apply()
    ws.sql(f'ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT DELETE ON TABLES TO "{READER}"', dbname=DB)
    assert detailed(ws).exit_code == 2
    ws.must_apply()
    assert default_acl(ws, "public", "app_owner") == {"r": {READER: ["SELECT"]}}
    ws.assert_converged()


# ---------------------------------------------------------------- empty schemas, ordering, targets


def test_grant_on_an_empty_schema_converges(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{owner: app_owner, schemas: [empty]}")
    write_grant(ws, """\
  schemas:
    empty: {privileges: [USAGE], tables: [SELECT], sequences: [USAGE], functions: [EXECUTE]}
""")
    ws.must_apply()
    assert schema_acl(ws, "empty") == ["USAGE"]
    ws.assert_converged()
    ws.assert_converged()  # and again: no flip-flop
    ws.sql("CREATE TABLE empty.t (x int)", dbname=DB)
    assert detailed(ws).exit_code == 2
    ws.must_apply()
    assert rel_acl(ws, "empty.t") == ["SELECT"]
    ws.assert_converged()


def test_role_database_and_grant_created_in_one_apply(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{owner: app_owner, schemas: [sales]}")
    write_grant(ws, """\
  privileges: [CONNECT, TEMPORARY]
  schemas:
    public: {privileges: [USAGE], tables: [SELECT]}
    sales:
      privileges: [USAGE, CREATE]
      tables: [SELECT, UPDATE]
      default_privileges: {tables: [SELECT, UPDATE], sequences: [SELECT]}
""")
    write_grant(ws, "  privileges: [CONNECT]\n  schemas:\n    sales: {privileges: [USAGE]}\n", role="writer")
    plan = ws.plan()
    assert plan.exit_code == 0, plan.output
    text = plan.stdout
    order = [text.index(a) for a in (
        "+ role.main.app-reader", "+ database.main.app-db", "+ grant.main.app-db.app-reader",
    )]
    assert order == sorted(order), text
    ws.must_apply()

    assert db_acl(ws) == ["CONNECT", "TEMPORARY"]
    assert db_acl(ws, role="writer") == ["CONNECT"]
    assert schema_acl(ws, "public") == ["USAGE"]
    assert schema_acl(ws, "sales") == ["CREATE", "USAGE"]
    assert schema_acl(ws, "sales", role="writer") == ["USAGE"]
    assert default_acl(ws, "sales", "app_owner") == {"r": {READER: ["SELECT", "UPDATE"]}, "S": {READER: ["SELECT"]}}
    ws.assert_converged()


def test_target_plans_only_the_grant_and_the_creates_it_needs(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{}")  # owned by the admin user
    write_db(ws, "{}", name="other-db")
    write_grant(ws, "  privileges: [CONNECT]\n")
    write_grant(ws, "  privileges: [CONNECT]\n", role="writer", database="other-db")

    plan = ws.plan("--target", "grant.main.app-db.app-reader")
    assert plan.exit_code == 0, plan.output
    for wanted in ("+ role.main.app-reader", "+ database.main.app-db", "+ grant.main.app-db.app-reader"):
        assert wanted in plan.stdout, (wanted, plan.output)
    for unwanted in ("role.main.writer", "role.main.app_owner", "other-db", "pair.main"):
        assert unwanted not in plan.stdout, (unwanted, plan.output)
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in plan.stdout

    applied = ws.apply("--target", "grant.main.app-db.app-reader")
    assert applied.exit_code == 0, applied.output
    assert db_acl(ws) == ["CONNECT"]
    assert ws.sql("SELECT count(*) FROM pg_roles WHERE rolname IN ('writer', 'app_owner')") == [(0,)]
    assert ws.sql("SELECT count(*) FROM pg_database WHERE datname = 'other-db'") == [(0,)]

    data = json.loads(ws.plan("--json").stdout)
    rest = sorted(c["address"] for p in data["pairs"] for c in p["changes"])
    assert rest == [
        "database.main.other-db", "grant.main.other-db.writer", "pair.main", "role.main.app_owner", "role.main.writer",
    ]
    ws.must_apply()
    ws.assert_converged()


def test_target_includes_the_owner_of_a_database_it_creates(ws: Workspace) -> None:
    """The creates a grant needs are transitive: the database it needs needs its owner role."""
    ws.write("base.yaml", BASE)
    write_db(ws)  # owner: app_owner, not created yet
    write_grant(ws, "  privileges: [CONNECT]\n")
    plan = ws.plan("--target", "grant.main.app-db.app-reader")
    assert plan.exit_code == 0, plan.output
    assert "+ role.main.app_owner" in plan.stdout, plan.output
    applied = ws.apply("--target", "grant.main.app-db.app-reader")
    assert applied.exit_code == 0, applied.output
    assert db_acl(ws) == ["CONNECT"]


def test_target_includes_the_for_role_of_default_privileges(ws: Workspace) -> None:
    ws.write("base.yaml", BASE)
    write_db(ws, "{}")
    write_grant(ws, "  schemas:\n    public: {default_privileges: {for_role: writer, tables: [SELECT]}}\n")
    applied = ws.apply("--target", "grant.main.app-db.app-reader")
    assert applied.exit_code == 0, applied.output
    assert default_acl(ws, "public", "writer") == {"r": {READER: ["SELECT"]}}


def test_target_includes_a_schema_the_grant_needs(ws: Workspace) -> None:
    """The database exists; the schema the grant is on is new in the spec: a targeted apply must create it."""
    ws.write("base.yaml", BASE)
    write_db(ws)
    ws.must_apply()
    write_db(ws, "{owner: app_owner, schemas: [sales]}")
    write_grant(ws, "  schemas:\n    sales: {privileges: [USAGE]}\n")
    applied = ws.apply("--target", "grant.main.app-db.app-reader")
    assert applied.exit_code == 0, applied.output
    assert schema_acl(ws, "sales") == ["USAGE"]
