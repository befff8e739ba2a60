from tests.support.workspace import Workspace


def test_create_role_then_converged(ws: Workspace) -> None:
    ws.write("roles.yaml", """
        kind: Role
        metadata: {name: app, pair: main}
        spec: {login: true, connection_limit: 5}
    """)
    plan = ws.plan()
    assert plan.exit_code == 0, plan.output
    assert "+ role.main.app" in plan.stdout
    ws.must_apply()
    assert ws.sql("SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = 'app'") == [(True, 5)]
    ws.assert_converged()
