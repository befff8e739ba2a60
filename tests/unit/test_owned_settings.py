"""Parameters replication depends on: which a Pair spec may not set, shared_preload_libraries merged with repmgr,
restarts pending, the start script's hot-standby floor, and which rejoin failures allow a re-clone. No server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pgaasctl.hosts.bootstrap import rewind_impossible, start_script
from pgaasctl.live.catalog import LiveSetting, empty_catalog
from pgaasctl.plan import diff
from pgaasctl.plan.settings import (
    PairTraits,
    lowered,
    owned_parameter_problems,
    restart_pending,
    with_repmgr,
)
from pgaasctl.spec.models import ExistingPairSpec, LocalPairSpec
from providers.base import Host, HostLayout

LOCAL = PairTraits(created=True, repmgr=True, nodes=2)
EXISTING_REPMGR = PairTraits(created=False, repmgr=True, nodes=2)
EXISTING_TWO = PairTraits(created=False, repmgr=False, nodes=2)
EXISTING_ONE = PairTraits(created=False, repmgr=False, nodes=1)


@pytest.mark.parametrize("name, value", [
    ("port", 5433), ("listen_addresses", "*"), ("data_directory", "/srv"), ("config_file", "/etc/x.conf"),
    ("hba_file", "/etc/hba"), ("ident_file", "/etc/ident"), ("primary_conninfo", "host=x"), ("primary_slot_name", "s"),
])
def test_what_pgaasctl_connects_through_is_refused_on_every_pair(name: str, value: object) -> None:
    for traits in (LOCAL, EXISTING_REPMGR, EXISTING_TWO, EXISTING_ONE):
        assert name in owned_parameter_problems({name: value}, traits)  # type: ignore[dict-item]


@pytest.mark.parametrize("name, value", [
    ("wal_level", "minimal"), ("hot_standby", "off"), ("max_wal_senders", 0), ("max_wal_senders", "3"),
    ("max_replication_slots", 1), ("unix_socket_directories", "/tmp"), ("wal_log_hints", False),
])
def test_replication_breakers_are_refused_on_pairs_pgaasctl_created(name: str, value: object) -> None:
    problems = owned_parameter_problems({name: value}, LOCAL)  # type: ignore[dict-item]
    assert name in problems and ("refused" in problems[name] or "owned" in problems[name])


def test_values_replication_can_live_with_are_accepted() -> None:
    fine = {"wal_level": "logical", "hot_standby": "on", "max_wal_senders": 10, "max_replication_slots": "4",
            "wal_log_hints": "on", "work_mem": "8MB", "max_connections": 150}
    assert owned_parameter_problems(fine, LOCAL) == {}  # type: ignore[arg-type]


def test_a_users_own_single_server_may_turn_replication_off() -> None:
    settings = {"wal_level": "minimal", "max_wal_senders": 0, "hot_standby": "off", "wal_log_hints": "off",
                "unix_socket_directories": "/tmp"}
    assert owned_parameter_problems(settings, EXISTING_ONE) == {}  # type: ignore[arg-type]


def test_a_users_own_two_servers_keep_a_stream_but_choose_the_rest() -> None:
    problems = owned_parameter_problems({"wal_level": "minimal", "max_wal_senders": 0, "max_replication_slots": 0,
                                         "wal_log_hints": "off", "unix_socket_directories": "/tmp"}, EXISTING_TWO)
    assert sorted(problems) == ["max_wal_senders", "wal_level"]
    assert owned_parameter_problems({"max_wal_senders": 2}, EXISTING_TWO) == {}
    assert "at least 4" in owned_parameter_problems({"max_wal_senders": 2}, EXISTING_REPMGR)["max_wal_senders"]


@pytest.mark.parametrize("given, merged", [
    ("pg_stat_statements", "pg_stat_statements, repmgr"),
    ("pg_stat_statements, auto_explain", "pg_stat_statements, auto_explain, repmgr"),
    ("repmgr, pg_stat_statements", "repmgr, pg_stat_statements"),
    ('"repmgr"', '"repmgr"'),
    ("", "repmgr"),
])
def test_shared_preload_libraries_always_keeps_repmgr(given: str, merged: str) -> None:
    assert with_repmgr(given) == merged


def setting(name: str, running: str, file_value: str | None, context: str = "postmaster",
            pending: bool = False) -> LiveSetting:
    return LiveSetting(name=name, setting=running, unit=None, vartype="integer", context=context, enumvals=None,
                       file_value=file_value, pending_restart=pending)


def test_a_restart_is_pending_when_the_configuration_differs_from_what_runs() -> None:
    assert restart_pending(setting("max_connections", "200", "150"))  # raised on the command line: no flag
    assert restart_pending(setting("max_connections", "200", "200", pending=True))  # PostgreSQL's own flag
    assert not restart_pending(setting("max_connections", "150", "150"))
    assert not restart_pending(setting("work_mem", "4096", "8192", context="user"))  # a reload applies it


def test_lowering_is_about_hot_standby_parameters_only() -> None:
    assert lowered("max_connections", "200", "150")
    assert not lowered("max_connections", "150", "200")
    assert not lowered("shared_buffers", "16384", "8192")


# ---------------------------------------------------------------- diff_pair

def _ctx(settings: dict[str, LiveSetting], sync: str | None = "*") -> diff.PairContext:
    catalog = empty_catalog()
    catalog.settings = settings
    return diff.PairContext(pair="p", catalog=catalog, managed={}, sync_standby_names=sync)


def _local(**settings: object) -> LocalPairSpec:
    return LocalPairSpec.model_validate({"provider": "local", "nodes": [{"name": "a"}, {"name": "b"}],
                                         "settings": settings})


def test_diff_pair_refuses_owned_parameters_with_the_address_and_plans_the_rest() -> None:
    names = setting("synchronous_standby_names", "", None, context="sighup").model_copy(update={"vartype": "string"})
    ctx = _ctx({"work_mem": setting("work_mem", "4096", None, context="user"), "synchronous_standby_names": names})
    change = diff.diff_pair(ctx, _local(port=5433, work_mem=8192), "pair.p")
    assert [e.split(":")[0] for e in ctx.errors] == ["pair.p"]
    assert "port is owned by pgaasctl" in ctx.errors[0] and ctx.errors[0].endswith("remove it from settings")
    assert change is not None and [a.name for a in change.attributes] == ["synchronous_standby_names", "work_mem"]


def test_diff_pair_shows_shared_preload_libraries_merged_with_repmgr() -> None:
    live = setting("shared_preload_libraries", "repmgr", None)
    live = live.model_copy(update={"vartype": "string"})
    change = diff.diff_pair(_ctx({"shared_preload_libraries": live}, sync=None),
                            _local(shared_preload_libraries="pg_stat_statements"), "pair.p")
    assert change is not None
    [attribute] = change.attributes
    assert (attribute.before, attribute.after, attribute.note) == ("repmgr", "pg_stat_statements, repmgr", "restart required")


def _libraries(running: str) -> LiveSetting:
    return setting("shared_preload_libraries", running, None).model_copy(update={"vartype": "string"})


def test_statements_adds_pg_stat_statements_to_the_libraries_the_server_has_and_creates_the_extension() -> None:
    spec = ExistingPairSpec.model_validate({"provider": "existing", "nodes": [{"name": "a", "host": "10.0.0.1"}],
                                            "statements": True})
    ctx = _ctx({"shared_preload_libraries": _libraries("pg_cron")}, sync=None)
    change = diff.diff_pair(ctx, spec, "pair.p")
    assert change is not None
    libraries, statements = change.attributes
    assert (libraries.before, libraries.after) == ("pg_cron", "pg_cron, pg_stat_statements")  # pg_cron stays
    assert (statements.name, statements.after) == ("statements", "pg_stat_statements")
    shown = [s.display() for s in change.statements]
    assert 'CREATE EXTENSION IF NOT EXISTS "pg_stat_statements"' in shown
    assert [s.database for s in change.statements if "EXTENSION" in s.display()] == [None]  # the admin database
    assert change.record is not None and change.record["statements"] is True


def test_statements_already_set_up_plans_nothing_and_a_repmgr_pair_keeps_repmgr() -> None:
    ctx = _ctx({"shared_preload_libraries": _libraries("pg_stat_statements, repmgr")}, sync=None)
    ctx.catalog.admin_extensions = ["pg_stat_statements", "plpgsql"]
    spec = LocalPairSpec.model_validate({"provider": "local", "nodes": [{"name": "a"}], "statements": True})
    change = diff.diff_pair(ctx, spec, "pair.p")
    assert change is not None and change.attributes == [] and change.statements == []
    fresh = _ctx({"shared_preload_libraries": _libraries("repmgr")}, sync=None)
    [libraries, _] = diff.diff_pair(fresh, spec, "pair.p").attributes  # type: ignore[union-attr]
    assert libraries.after == "repmgr, pg_stat_statements"


def test_a_pair_without_statements_keeps_the_record_it_had() -> None:
    record = diff.pair_record(_local())
    assert "statements" not in record


def test_diff_pair_says_how_to_restart_what_waits_for_it() -> None:
    ctx = _ctx({"max_connections": setting("max_connections", "200", "150")}, sync=None)
    assert diff.diff_pair(ctx, _local(max_connections=150), "pair.p") is not None  # adopting: no server change
    [warning] = ctx.warnings
    assert warning == ("pair.p: max_connections = 150 takes effect only after a restart (the primary runs 200); "
                       "run `pgaasctl restart p --pending`")


def test_diff_pair_on_servers_without_ssh_says_which_node_to_restart_first() -> None:
    spec = ExistingPairSpec.model_validate({"provider": "existing", "nodes": [
        {"name": "a", "host": "10.0.0.1"}, {"name": "b", "host": "10.0.0.2"}], "settings": {"max_connections": 150}})
    ctx = _ctx({"max_connections": setting("max_connections", "200", "150", pending=True)}, sync=None)
    diff.diff_pair(ctx, spec, "pair.p")
    assert "restart PostgreSQL on the primary first, then on the standby" in ctx.warnings[0]


# ---------------------------------------------------------------- the start script's hot-standby floor

FAKE_CONTROLDATA = """#!/bin/sh
cat <<'EOF'
Database cluster state:               shut down in recovery
max_connections setting:              200
max_worker_processes setting:         8
max_wal_senders setting:              10
max_prep_xacts setting:               0
max_locks_per_xact setting:           64
EOF
"""
FAKE_POSTGRES = """#!/bin/sh
# postgres -D conf -C name: the configured value
case "$4" in max_connections) echo 150;; max_wal_senders) echo 12;; max_worker_processes) echo 8;;
  max_prepared_transactions) echo 0;; max_locks_per_transaction) echo 64;; esac
"""
FAKE_PG_CTL = """#!/bin/sh
printf '%s\\n' "$@" >> "$(dirname "$0")/calls"
echo --- >> "$(dirname "$0")/calls"
"""


def _run_start_script(tmp_path: Path, standby: bool, *args: str) -> list[list[str]]:
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    for path in (bin_dir, data, tmp_path / "etc", tmp_path / "log"):
        path.mkdir(exist_ok=True)
    for name, text in (("pg_controldata", FAKE_CONTROLDATA), ("postgres", FAKE_POSTGRES), ("pg_ctl", FAKE_PG_CTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if standby:
        (data / "standby.signal").touch()
    layout = HostLayout(bin_dir=str(bin_dir), data_dir=str(data), config_dir=str(tmp_path / "etc"),
                        socket_dir=str(tmp_path), log_dir=str(tmp_path / "log"))
    script = tmp_path / "start.sh"
    script.write_text(start_script(Host(pair="p", node="a", address="127.0.0.1", bin_dir=str(bin_dir), layout=layout),
                                   layout))
    subprocess.run(["sh", str(script), *args], check=True, env={"PATH": os.environ["PATH"]})
    calls = (bin_dir / "calls").read_text().split("---\n")
    return [c.splitlines() for c in calls if c.strip()]


def test_a_standby_starts_with_at_least_its_primarys_values(tmp_path: Path) -> None:
    [call] = _run_start_script(tmp_path, standby=True)
    assert call[call.index("-o") + 1] == " -c max_connections=200"  # 150 configured; 12 > 10 stays
    assert call[-1] == "start"
    assert "its primary's value in pg_control" in (tmp_path / "log" / "postgresql.log").read_text()


def test_a_primary_starts_with_its_configuration(tmp_path: Path) -> None:
    [call] = _run_start_script(tmp_path, standby=False)
    assert "-o" not in call and call[-1] == "start"


def test_restart_stops_the_running_server_first(tmp_path: Path) -> None:
    calls = _run_start_script(tmp_path, False, "restart")
    assert [c[-1] for c in calls] == ["status", "stop", "start"]


# ---------------------------------------------------------------- rejoin: when a re-clone is the way out

REWIND_FAILED = """NOTICE: pg_rewind execution required for this node to attach to rejoin target node 2
DETAIL: rejoin target server's timeline 3 forked off current database system timeline 2 before current recovery point 0/5000028
NOTICE: executing pg_rewind
ERROR: pg_rewind execution failed
DETAIL: pg_rewind: error: could not find previous WAL record at 0/4000028"""
START_FAILED = """NOTICE: setting node 1's upstream to node 2
WARNING: unable to ping "host=127.0.2.240 port=5432 user=repmgr dbname=repmgr connect_timeout=2"
ERROR: NODE REJOIN failed
DETAIL: no record for local node "rs-a" found in node "rs-b"'s "pg_stat_replication" table
HINT: check the PostgreSQL log on the local node"""


def test_only_pg_rewinds_own_failures_allow_a_reclone() -> None:
    assert rewind_impossible(REWIND_FAILED)
    assert rewind_impossible('ERROR: --force-rewind specified but pg_rewind cannot be used\nDETAIL: pg_rewind requires "wal_log_hints" to be enabled')
    assert not rewind_impossible(START_FAILED)
    assert not rewind_impossible("ERROR: connection to database failed:\nconnection to server ... failed: Connection refused")


@pytest.mark.parametrize("name, value", [
    ("promote_trigger_file", "/tmp/x"), ("recovery_target", "immediate"), ("recovery_target_action", "promote"),
    ("recovery_target_timeline", "current"), ("restore_command", "cp /a %f"), ("recovery_end_command", "true"),
])
def test_recovery_belongs_to_failover_on_replicated_pairs(name: str, value: object) -> None:
    for traits in (LOCAL, EXISTING_REPMGR, EXISTING_TWO):
        assert "promote the node by itself" in owned_parameter_problems({name: value}, traits)[name]  # type: ignore[dict-item]
    assert owned_parameter_problems({name: value}, EXISTING_ONE) == {}  # type: ignore[dict-item]


def test_full_page_writes_off_is_refused_where_pg_rewind_rejoins() -> None:
    assert "pg_rewind" in owned_parameter_problems({"full_page_writes": "off"}, LOCAL)["full_page_writes"]
    assert owned_parameter_problems({"full_page_writes": "on"}, LOCAL) == {}


def test_missing_libraries() -> None:
    from pgaasctl.plan.settings import missing_libraries

    installed = ["auto_explain.so", "pg_stat_statements.so", "repmgr.so"]
    assert missing_libraries("auto_explain, pg_stat_statements", installed) == []
    assert missing_libraries("'$libdir/auto_explain', nonexistent_lib", installed) == ["nonexistent_lib"]
    assert missing_libraries("", installed) == []
