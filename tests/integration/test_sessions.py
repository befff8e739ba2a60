"""Issue 13: the sessions pgaasctl holds on a primary are bounded (Workspace `sessions`), whatever the number of
databases, and a server with no slot left is reported as such, not as unreachable."""

from __future__ import annotations


import psycopg
import pytest

from tests.support.pgserver import PgServer
from tests.support.sessions import SessionCounter
from tests.support.workspace import Workspace

pytestmark = pytest.mark.integration

DATABASES = 40


def _many_databases(ws: Workspace, sessions: int) -> None:
    ws.write("workspace.yaml", f"kind: Workspace\nspec: {{sessions: {sessions}}}\n")
    ws.pair()
    docs = ["kind: Role\nmetadata: {name: reader, pair: main}\nspec: {login: false}\n"]
    for i in range(DATABASES):
        docs.append(f"kind: Database\nmetadata: {{name: many_{i:02d}, pair: main}}\nspec: {{schemas: [{{name: app}}]}}\n")
        docs.append(f"kind: Grant\nmetadata: {{pair: main}}\nspec: {{role: reader, database: many_{i:02d}, "
                    "privileges: [CONNECT], schemas: {app: {privileges: [USAGE]}}}\n")
    ws.write("many.yaml", "---\n".join(docs))


def test_apply_holds_at_most_the_sessions_the_workspace_allows(ws: Workspace, pg: PgServer) -> None:
    _many_databases(ws, sessions=4)
    with SessionCounter(pg) as counter:
        ws.must_apply()
    # the session holding the pair's advisory lock, at most `sessions` doing the work, and one the executor just
    # closed whose backend is still on its way out (the server lists it for a moment); unbounded, it was 45
    assert 2 <= counter.peak <= 4 + 2, counter.peak
    ws.assert_converged()


def test_a_server_with_no_slot_left_is_reported_as_full_not_unreachable(ws: Workspace, pg: PgServer) -> None:
    ws.pair()
    slots = pg.execute("SELECT current_setting('max_connections')::int")[0][0]
    hogs: list[psycopg.Connection] = []
    try:
        for _ in range(slots):  # every slot, the superusers' reserved ones too (pgaasctl's admin is a superuser)
            try:
                hogs.append(pg.connect())
            except psycopg.OperationalError:
                break
        result = ws.plan()
    finally:
        for hog in hogs:
            hog.close()
    assert result.exit_code == 1
    assert "no connection slot left" in result.output and "unreachable" not in result.output, result.output
