"""Server parameters of a Pair: ALTER SYSTEM, reload versus restart, reset when no longer declared."""

from __future__ import annotations

from tests.support.workspace import Workspace


def show(ws: Workspace, name: str) -> str:
    return ws.sql(f"SHOW {name}")[0][0]


def test_reloadable_setting_takes_effect(ws: Workspace) -> None:
    ws.pair(settings={"work_mem": "8MB", "log_min_duration_statement": "250ms", "jit": "false"})
    plan = ws.plan()
    assert "work_mem: 4MB -> 8MB (reload)" in plan.flat
    ws.must_apply()
    assert show(ws, "work_mem") == "8MB"
    assert show(ws, "log_min_duration_statement") == "250ms"
    assert show(ws, "jit") == "off"
    ws.assert_converged()


def test_equivalent_units_change_only_the_state(ws: Workspace) -> None:
    ws.pair(settings={"work_mem": "8MB"})
    ws.must_apply()
    ws.pair(settings={"work_mem": "8192kB"})
    plan = ws.plan("--sql")
    assert "ALTER SYSTEM" not in plan.stdout
    assert "settings.work_mem: 8MB -> 8192kB (state only)" in ws.plan().flat
    ws.must_apply()
    ws.assert_converged()


def test_restart_required_is_said_and_not_repeated(ws: Workspace) -> None:
    ws.pair(settings={"shared_buffers": "256MB"})
    plan = ws.plan()
    assert "shared_buffers: 128MB -> 256MB (restart required)" in plan.flat
    ws.must_apply()
    assert show(ws, "shared_buffers") == "128MB"  # not until a restart
    again = ws.plan("--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "takes effect only after a restart" in again.flat


def test_removed_setting_is_reset(ws: Workspace) -> None:
    ws.pair(settings={"work_mem": "8MB", "maintenance_work_mem": "128MB"})
    ws.must_apply()
    ws.pair(settings={"work_mem": "8MB"})
    plan = ws.plan()
    assert "maintenance_work_mem: 128MB -> (default)" in plan.flat
    ws.must_apply()
    assert show(ws, "maintenance_work_mem") == "64MB"
    auto_conf = ws.sql("SELECT name FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf'")
    assert ("maintenance_work_mem",) not in auto_conf
    ws.assert_converged()


def test_settings_set_by_hand_and_never_declared_are_left_alone(ws: Workspace) -> None:
    ws.sql("ALTER SYSTEM SET temp_buffers = '16MB'")
    ws.pair(settings={"work_mem": "8MB"})
    ws.must_apply()
    assert ws.sql("SELECT setting FROM pg_file_settings WHERE name = 'temp_buffers'") == [("16MB",)]


def test_drift_by_hand_is_detected_and_corrected(ws: Workspace) -> None:
    ws.pair(settings={"work_mem": "8MB"})
    ws.must_apply()
    ws.sql("ALTER SYSTEM SET work_mem = '32MB'")
    ws.sql("SELECT pg_reload_conf()")
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2
    assert "work_mem: 32MB -> 8MB" in plan.flat
    ws.must_apply()
    ws.assert_converged()


def test_unknown_parameter_and_bad_values_are_plan_errors(ws: Workspace) -> None:
    ws.pair(settings={"work_mme": "8MB", "work_mem": "8 parsecs", "jit": "perhaps", "wal_level": "loud"})
    result = ws.plan()
    assert result.exit_code == 1
    assert "unknown parameter 'work_mme'" in result.flat
    assert "parameter work_mem: unit 'parsecs' is not valid here" in result.flat
    assert "parameter jit: expects on or off" in result.flat
    assert "parameter wal_level: expects one of minimal, replica, logical" in result.flat
    assert "Traceback" not in result.output
    assert ws.sql("SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf'") == [(0,)]


def test_custom_dotted_parameter_is_refused_for_alter_system(ws: Workspace) -> None:
    ws.pair(settings={"myapp.region": "eu-west"})
    result = ws.plan()
    assert result.exit_code == 1
    assert "custom parameter myapp.region cannot be set with ALTER SYSTEM; set it on a Database or Role" in result.flat


def test_mixed_case_parameter_names(ws: Workspace) -> None:
    ws.pair(settings={"TimeZone": "UTC"})
    ws.must_apply()
    assert show(ws, "timezone") == "UTC"
    ws.assert_converged()


def test_search_path_with_user_converges(ws: Workspace) -> None:
    ws.write("db.yaml", """
        kind: Database
        metadata: {name: app, pair: main}
        spec: {settings: {search_path: "$user, public"}}
    """)
    ws.must_apply()
    assert ws.sql("SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'app'") == [(['search_path="$user", public'],)]
    ws.assert_converged()


def test_a_preload_library_that_is_not_installed_is_refused(ws: Workspace) -> None:
    """session_preload_libraries naming a missing library would lock every new connection out, pgaasctl's too."""
    ws.pair(settings={"session_preload_libraries": "nonexistent_lib"})
    plan = ws.plan()
    assert plan.exit_code == 1, plan.output
    assert "session_preload_libraries: nonexistent_lib is not installed on the server" in plan.flat
    assert ws.apply().exit_code == 1
    assert show(ws, "session_preload_libraries") == ""
    ws.pair(settings={"session_preload_libraries": "auto_explain"})
    ws.must_apply()
    assert show(ws, "session_preload_libraries") == "auto_explain"
    ws.pair(settings={})
    ws.must_apply()
