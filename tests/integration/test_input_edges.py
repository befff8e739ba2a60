"""Inputs at the edges, on a real server: values that never converged or converged only after a second apply,
and `plan --sql` scripts fed to the real psql."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pgaasctl.plan.model import Change, HostOperation, PairPlan, Plan, ShownStatement
from pgaasctl.plan.render import render_sql
from tests.support.pgserver import PgServer
from tests.support.workspace import Workspace

PSQL = Path("/usr/lib/postgresql/15/bin/psql")


def run_psql(server: PgServer, script: str, dbname: str = "postgres") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PGHOST=server.host, PGPORT=str(server.port), PGUSER=server.admin_user,
               PGPASSWORD=server.admin_password, PGDATABASE=dbname, PGCONNECT_TIMEOUT="5")
    return subprocess.run([str(PSQL), "-X", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=script, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


# ---------------------------------------------------------------- never converged

@pytest.mark.parametrize("valid_until", ["0001-01-01T00:00:00Z", "0999-06-30T12:00:00Z", "0500-01-01T00:30:00-01:00"])
def test_valid_until_before_year_1000_is_stored_as_written_and_converges(ws: Workspace, valid_until: str) -> None:
    ws.write("r.yaml", f"kind: Role\nmetadata: {{name: app, pair: main}}\nspec: {{valid_until: '{valid_until}'}}\n")
    ws.must_apply()
    year = ws.sql("SELECT extract(year FROM rolvaliduntil AT TIME ZONE 'UTC')::int FROM pg_roles WHERE rolname = 'app'")
    assert year == [(int(valid_until[:4]),)]
    ws.assert_converged()


def test_public_declared_with_an_owner_in_a_new_database_is_owned_as_declared_after_one_apply(ws: Workspace) -> None:
    ws.write("db.yaml", """
        kind: Role
        metadata: {name: app, pair: main}
        ---
        kind: Role
        metadata: {name: keeper, pair: main}
        ---
        kind: Database
        metadata: {name: fresh, pair: main}
        spec:
          owner: app
          schemas: [{name: public, owner: keeper}, {name: extra, owner: keeper}]
        ---
        kind: Database
        metadata: {name: plain, pair: main}
        spec: {owner: app, schemas: [public]}
    """)
    ws.must_apply()
    owners = ws.sql("SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname IN ('public', 'extra')"
                    " ORDER BY 1", dbname="fresh")
    assert owners == [("extra", "keeper"), ("public", "keeper")]
    assert ws.sql("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'", dbname="plain") == [("app",)]
    ws.assert_converged()


# ---------------------------------------------------------------- plan --sql through the real psql

@pytest.mark.skipif(not PSQL.exists(), reason="needs PostgreSQL 15's psql")
def test_the_script_of_a_real_plan_runs_in_psql_and_does_what_the_plan_says(ws: Workspace, tmp_path: Path) -> None:
    ws.must_apply()  # the pair itself: the script then holds only object changes
    ws.write("objects.yaml", """
        kind: Role
        metadata: {name: audit-owner, pair: main}
        spec: {login: true, connection_limit: 3, settings: {search_path: '"$user", public'}}
        ---
        kind: Role
        metadata: {name: Reader$1, pair: main}
        spec: {member_of: [audit-owner]}
        ---
        kind: Database
        metadata: {name: Shop-DB, pair: main}
        spec: {owner: audit-owner, schemas: [{name: Sales, owner: Reader$1}], extensions: [pgcrypto],
               settings: {statement_timeout: 30s}}
        ---
        kind: Grant
        metadata: {pair: main}
        spec: {role: Reader$1, database: Shop-DB, privileges: [CONNECT], schemas: {Sales: {privileges: [USAGE]}}}
    """)
    script = ws.plan("--sql")
    assert script.exit_code == 0, script.output
    connects = [line for line in script.stdout.splitlines() if line.startswith("\\")]
    assert connects and all(line.startswith("\\connect '") and line.endswith("'") for line in connects), connects
    assert "\\connect 'Shop-DB'" in connects
    done = run_psql(ws.server, script.stdout)
    assert done.returncode == 0, done.stderr
    assert ws.sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'audit-owner'") == [(3,)]
    assert ws.sql("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'Sales'", dbname="Shop-DB") == [("Reader$1",)]
    assert ws.sql("SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'", dbname="Shop-DB") == [("pgcrypto",)]
    assert ws.sql("SELECT has_database_privilege('Reader$1', 'Shop-DB', 'CONNECT')") == [(True,)]


@pytest.mark.skipif(not PSQL.exists(), reason="needs PostgreSQL 15's psql")
def test_hostile_names_in_a_script_run_nothing_but_its_statements(pg: PgServer, tmp_path: Path) -> None:
    """Names that validation refuses, made by hand on the server, as if they had reached a plan anyway:
    the script connects to exactly them and psql runs no shell command."""
    marker = tmp_path / "pwned"
    inject = f"\n\\! touch {marker}\n\\connect postgres\n"
    admin_db, other_db = f"adm'in{inject}\\", f"x{inject}\t\r\x01"
    for name in (admin_db, other_db):
        pg.execute(f'CREATE DATABASE "{name}"')
    made_here = "CREATE TABLE made_here (x int)"
    change = Change(address=f"role.p.r{inject}", kind="role", name="r", action="create",
                    sql=[ShownStatement(text=made_here), ShownStatement(database=other_db, text=made_here)])
    pair = PairPlan(pair=f"p{inject}", primary=f"a{inject}", admin_database=admin_db, header="h", changes=[change],
                    operations=[HostOperation(kind="start_host", node=f"n{inject}", detail=f"start{inject}")])
    script = render_sql(Plan(spec_path="specs", spec_fingerprint="f", pairs=[pair]))
    done = run_psql(pg, script)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    for name in (admin_db, other_db):
        assert pg.execute("SELECT count(*) FROM pg_class WHERE relname = 'made_here'", dbname=name) == [(1,)]
    assert pg.execute("SELECT count(*) FROM pg_class WHERE relname = 'made_here'") == [(0,)]
