"""A workspace has one root: every command gives the same answer from any directory, reading commands create
and change nothing, a file names part of its workspace, and saved plans apply from anywhere.

Run against the real test server; the CLI in-process, and as a real process where signals or argv matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgaasctl.store import open_store
from tests.support.local_pair import wait_until
from tests.support.workspace import ADMIN_PASSWORD_ENV, Workspace

ROLE = "kind: Role\nmetadata: {{name: {name}, pair: main}}\nspec: {{login: true{extra}}}\n"
WORKSPACE_DOC = "kind: Workspace\nspec: {store: 'sqlite:///../state/ws.db'}\n"
PGAASCTL = str(Path(sys.executable).parent / "pgaasctl")


@pytest.fixture
def rooted(ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Workspace:
    """A workspace whose store is named by its Workspace document, relative to the root; no $PGAASCTL_STORE."""
    monkeypatch.delenv("PGAASCTL_STORE")
    ws.write("00-workspace.yaml", WORKSPACE_DOC)
    ws.write("roles.yaml", ROLE.format(name="app", extra=""))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return ws


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def cli(ws: Workspace, *args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """pgaasctl as a real process (argv preprocessing, signals)."""
    full_env = {**os.environ, ADMIN_PASSWORD_ENV: ws.server.admin_password, **(env or {})}
    full_env.pop("PGAASCTL_STORE", None)
    return subprocess.run([PGAASCTL, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_reading_commands_create_nothing_and_need_an_existing_store(rooted: Workspace, tmp_path: Path) -> None:
    here = Path.cwd()
    store = rooted.root / "state" / "ws.db"
    for args in (["plan", str(rooted.specs)], ["status", str(rooted.specs)], ["state", "list", str(rooted.specs)],
                 ["history", str(rooted.specs)], ["connection", "main", str(rooted.specs)],
                 ["state", "show", "role.main.app", str(rooted.specs)]):
        result = rooted.run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"there is no state store at {store}" in result.flat, (args, result.output)
        assert "Traceback" not in result.output
    assert rooted.run("validate", str(rooted.specs)).exit_code == 0
    assert files_under(here) == [] and not store.exists()

    init = rooted.run("init", str(rooted.specs))
    assert init.exit_code == 0 and str(store) in init.stdout, init.output
    before = store.read_bytes()
    assert rooted.run("plan", str(rooted.specs)).exit_code == 0
    assert rooted.run("status", str(rooted.specs)).exit_code == 0
    assert store.read_bytes() == before, "a plan or status changed the store"
    assert files_under(here) == []


def test_every_command_gives_the_same_answer_from_any_directory(rooted: Workspace, tmp_path: Path) -> None:
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    assert (rooted.root / "state" / "ws.db").is_file()
    for cwd in (rooted.root, rooted.specs, Path.cwd(), Path("/")):
        os.chdir(cwd)
        plan = rooted.run("plan", str(rooted.specs), "--detailed-exitcode")
        assert plan.exit_code == 0, (cwd, plan.output)
        assert "role.main.app" in rooted.run("state", "list", str(rooted.specs)).stdout.split()
        assert "apply" in rooted.run("history", str(rooted.specs)).stdout
    assert files_under(tmp_path / "elsewhere") == []


def test_a_saved_plan_applies_from_another_directory(rooted: Workspace, tmp_path: Path) -> None:
    assert rooted.run("init", str(rooted.specs)).exit_code == 0
    planfile = tmp_path / "plans" / "tfplan"
    planfile.parent.mkdir()
    assert rooted.run("plan", str(rooted.specs), "--out", str(planfile)).exit_code == 0
    assert json.loads(planfile.read_text())["spec_path"] == "../specs"
    os.chdir("/")
    applied = rooted.run("apply", str(planfile))
    assert applied.exit_code == 0, applied.output
    assert rooted.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == [(1,)]

    shown = rooted.run("show", str(planfile), "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["summary"]["add"] == 1, shown.output
    assert "+ role.main.app" in rooted.run("show", str(planfile)).stdout


def test_one_file_names_part_of_its_workspace(rooted: Workspace) -> None:
    rooted.write("dbs.yaml", "kind: Database\nmetadata: {name: keep, pair: main}\n")
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    rooted.write("roles.yaml", ROLE.format(name="app", extra=", connection_limit: 3"))

    part = rooted.run("plan", str(rooted.specs / "roles.yaml"))
    assert part.exit_code == 0, part.output
    assert "Targeted plan" in part.stdout and "~ role.main.app" in part.stdout
    assert "database.main.keep" not in part.stdout and "to destroy" in part.stdout and "0 to destroy" in part.stdout
    # status of one file reads the whole workspace (its Workspace document, its store)
    status = rooted.run("status", str(rooted.specs / "dbs.yaml"), "--json")
    assert status.exit_code == 0, status.output
    assert [p["pair"] for p in json.loads(status.stdout)] == ["main"]

    applied = rooted.run("apply", str(rooted.specs / "roles.yaml"), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert rooted.sql("SELECT datname FROM pg_database WHERE datname = 'keep'") == [("keep",)]
    assert rooted.sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'") == [(3,)]

    lone = rooted.root / "lone" / "role.yaml"
    lone.parent.mkdir()
    lone.write_text(ROLE.format(name="x", extra=""))
    refused = rooted.run("plan", str(lone))
    assert refused.exit_code == 1 and "belongs to no workspace" in refused.flat, refused.output


def test_target_that_matches_nothing_names_the_closest(rooted: Workspace) -> None:
    rooted.run("init", str(rooted.specs))
    result = rooted.run("plan", str(rooted.specs), "--target", "role.main.apq")
    assert result.exit_code == 1, result.output
    assert "--target role.main.apq matches nothing" in result.flat and "Did you mean role.main.app" in result.flat
    assert rooted.run("plan", str(rooted.specs), "--target", "role.main").exit_code == 0  # a prefix is fine


def test_json_and_sql_together_are_refused(rooted: Workspace) -> None:
    result = rooted.run("plan", str(rooted.specs), "--json", "--sql")
    assert result.exit_code == 1 and "choose one" in result.output


def test_terraform_spellings_version_and_piped_output(rooted: Workspace, tmp_path: Path) -> None:
    cwd = tmp_path / "elsewhere"
    version = cli(rooted, "version", cwd=cwd)
    assert version.returncode == 0 and version.stdout.startswith("pgaasctl "), version.stderr
    assert cli(rooted, "init", str(rooted.specs), cwd=cwd).returncode == 0
    plan = cli(rooted, "plan", str(rooted.specs), "-target=role.main.app", "-detailed-exitcode", "-no-color", cwd=cwd)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "\x1b[" not in plan.stdout and "+ role.main.app" in plan.stdout
    applied = cli(rooted, "apply", str(rooted.specs), "-auto-approve", "-lock-timeout=3", cwd=cwd)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    # one line per change with its duration, and the summary counts what the plan showed
    assert any(line.startswith("role.main.app: created (") and line.endswith("s)") for line in applied.stdout.splitlines())
    assert "Plan: 1 to add, 1 to change, 0 to destroy." in applied.stdout  # the role; the pair is adopted
    assert "Apply complete! 1 added, 1 changed, 0 destroyed." in applied.stdout
    history = cli(rooted, "history", str(rooted.specs), cwd=cwd)
    row = next(line for line in history.stdout.splitlines() if " apply " in line)
    assert len(row) > 80 and "…" not in history.stdout, history.stdout  # piped: never cut at 80 columns


def test_json_everywhere(rooted: Workspace) -> None:
    applied = rooted.run("apply", str(rooted.specs), "--auto-approve", "--json")
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.stdout)
    assert report["summary"] == {"add": 1, "change": 1, "destroy": 0}
    assert {c["address"] for p in report["pairs"] for c in p["changes"]} == {"pair.main", "role.main.app"}
    history = json.loads(rooted.run("history", str(rooted.specs), "--json").stdout)
    assert history[0]["operation"] == "apply" and history[0]["status"] == "applied"
    objects = json.loads(rooted.run("state", "list", str(rooted.specs), "--json").stdout)
    assert {o["address"]: o["origin"] for o in objects} == {"pair.main": "adopted", "role.main.app": "created"}
    assert json.loads(rooted.run("status", str(rooted.specs), "--json").stdout)[0]["pair"] == "main"
    assert rooted.run("apply", str(rooted.specs), "--json").exit_code == 1  # no prompt in JSON


def test_status_and_connection_need_no_role_secrets(rooted: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    rooted.write("roles.yaml", ROLE.format(name="app", extra=", password: {env: APP_SECRET}"))
    monkeypatch.setenv("APP_SECRET", "s3cret-value-1")
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    monkeypatch.delenv("APP_SECRET")
    assert rooted.run("status", str(rooted.specs)).exit_code == 0  # answered: no role secret needed
    connection = rooted.run("connection", "main", str(rooted.specs), "--role", "app")
    assert connection.exit_code == 0 and connection.stdout.startswith("postgresql://app@"), connection.output
    plan = rooted.run("plan", str(rooted.specs))
    assert plan.exit_code == 1 and "APP_SECRET is not set" in plan.flat
    no_vip = rooted.run("connection", "main", str(rooted.specs), "--virtual-ip")
    assert no_vip.exit_code == 1 and "pair 'main' has no virtual IP" in no_vip.flat, no_vip.output
    assert "Traceback" not in no_vip.output


def test_a_saved_plan_is_bound_to_its_secrets_and_to_its_own_text(rooted: Workspace, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rooted.write("roles.yaml", ROLE.format(name="app", extra=", password: {env: APP_SECRET}"))
    monkeypatch.setenv("APP_SECRET", "first-secret-1")
    rooted.run("init", str(rooted.specs))
    planfile = tmp_path / "tfplan"
    assert rooted.run("plan", str(rooted.specs), "--out", str(planfile)).exit_code == 0
    assert "first-secret-1" not in planfile.read_text()

    monkeypatch.setenv("APP_SECRET", "second-secret-2")
    refused = rooted.run("apply", str(planfile))
    assert refused.exit_code == 1 and "the password of role.main.app changed" in refused.flat, refused.output

    monkeypatch.setenv("APP_SECRET", "first-secret-1")
    planfile.write_text(planfile.read_text().replace('"login": true', '"login": false'))
    edited = rooted.run("apply", str(planfile))
    assert edited.exit_code == 1 and "was changed after it was made" in edited.flat, edited.output
    assert rooted.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []


def test_sigterm_releases_the_lock_and_history_records_it(rooted: Workspace, tmp_path: Path) -> None:
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    rooted.write("roles.yaml", ROLE.format(name="app", extra=", connection_limit: 9"))
    # another session holds the role's catalog row: the apply blocks on it
    blocker = psycopg.connect(host=rooted.server.host, port=rooted.server.port, user=rooted.server.admin_user,
                              password=rooted.server.admin_password, dbname="postgres")
    blocker.execute("ALTER ROLE app CONNECTION LIMIT 7")
    env = {**os.environ, ADMIN_PASSWORD_ENV: rooted.server.admin_password}
    env.pop("PGAASCTL_STORE", None)
    process = subprocess.Popen([PGAASCTL, "apply", str(rooted.specs), "--auto-approve"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: rooted.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgaasctl' "
                                      "AND wait_event_type = 'Lock'")[0][0] > 0, 30, "the apply to block")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143 and "Interrupted" in stderr, stderr
    history = json.loads(rooted.run("history", str(rooted.specs), "--json").stdout)
    assert history[0]["status"] == "interrupted"
    again = rooted.run("apply", str(rooted.specs), "--auto-approve", "--lock-timeout", "0")
    assert again.exit_code == 0, again.output  # the lock was released
    assert rooted.sql("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'") == [(9,)]


def test_a_lock_left_by_a_dead_process_is_taken_over(rooted: Workspace) -> None:
    rooted.run("init", str(rooted.specs))
    dead = subprocess.Popen(["true"])
    dead.wait()
    store = open_store("sqlite:///" + str(rooted.root / "state" / "ws.db"))
    from pgaasctl.store.store import actor

    holder = actor().rsplit(" pid ", 1)[0] + f" pid {dead.pid}"
    assert store.try_lock("main", "apply", holder)
    entry = store.begin("main", "apply")
    store._exec("UPDATE history SET actor = ? WHERE id = ?", (holder, entry))  # as the dead process wrote it
    store.close()

    history = json.loads(rooted.run("history", "main", str(rooted.specs), "--json").stdout)
    assert history[0]["status"] == "interrupted"  # a killed apply does not stay `running`
    applied = rooted.run("apply", str(rooted.specs), "--auto-approve", "--lock-timeout", "0")
    assert applied.exit_code == 0, applied.output
    assert f"took over the lock of {holder}" in " ".join(applied.stderr.split())


def test_history_names_failures_and_takes_a_path(rooted: Workspace, tmp_path: Path) -> None:
    rooted.write("dbs.yaml", "kind: Database\nmetadata: {name: shop, pair: main}\nspec: {extensions: [no_such_ext]}\n")
    failed = rooted.run("apply", str(rooted.specs), "--auto-approve")
    assert failed.exit_code == 1
    entries = json.loads(rooted.run("history", str(rooted.specs), "--json").stdout)
    assert entries[0]["status"] == "failed" and "no_such_ext" in entries[0]["summary"]["error"]
    assert "pair.main" in entries[0]["summary"]["changes"]  # what ran before the failure is recorded
    text = rooted.run("history", str(rooted.specs))
    assert "failed" in text.stdout and "no_such_ext" in text.flat
    os.chdir(rooted.root)
    assert rooted.run("history", "specs", "--json").exit_code == 0  # a path, not a pair named "specs"

    # the database CREATE DATABASE made before its extension failed is known to the store: never "adopted"
    objects = {o["address"]: o for o in json.loads(rooted.run("state", "list", str(rooted.specs), "--json").stdout)}
    assert objects["database.main.shop"]["pending"] is True
    rooted.write("dbs.yaml", "kind: Database\nmetadata: {name: shop, pair: main}\n")
    plan = rooted.run("plan", str(rooted.specs), "--detailed-exitcode")
    assert "already exists" not in plan.flat and plan.exit_code in (0, 2), plan.output
    rooted.remove("dbs.yaml")
    drop = rooted.run("plan", str(rooted.specs))
    assert "- database.main.shop" in drop.stdout and "an apply that did not finish" in drop.flat, drop.output
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    assert rooted.sql("SELECT 1 FROM pg_database WHERE datname = 'shop'") == []


def test_targeted_destroy_is_judged_on_its_targets_only(ws: Workspace) -> None:
    ws.write("r.yaml", ROLE.format(name="r", extra=""))
    ws.write("d.yaml", "kind: Database\nmetadata: {name: vault, pair: main}\nspec: {deletion_protection: true}\n")
    ws.must_apply()
    targeted = ws.plan("--destroy", "--target", "role.main.r")
    assert targeted.exit_code == 0, targeted.output
    assert "- role.main.r" in targeted.stdout and "vault" not in targeted.stdout
    whole = ws.plan("--destroy")
    assert whole.exit_code == 1 and "database.main.vault: deletion_protection is on" in whole.flat
    assert ws.run("destroy", str(ws.specs), "--auto-approve").exit_code == 1
    assert ws.sql("SELECT 1 FROM pg_database WHERE datname = 'vault'") == [(1,)]
    assert ws.sql("SELECT 1 FROM pg_roles WHERE rolname = 'r'") == [(1,)]


def test_saved_plans_are_not_narrowed_or_turned_into_destroys(rooted: Workspace, tmp_path: Path) -> None:
    rooted.run("init", str(rooted.specs))
    planfile = tmp_path / "tfplan"
    assert rooted.run("plan", str(rooted.specs), "--out", str(planfile)).exit_code == 0
    destroyed = rooted.run("destroy", str(planfile), "--auto-approve")
    assert destroyed.exit_code == 1 and "not a destroy plan" in destroyed.flat, destroyed.output
    narrowed = rooted.run("apply", str(planfile), "--target", "role.main.app")
    assert narrowed.exit_code == 1 and "--target cannot narrow it" in narrowed.flat, narrowed.output
    assert rooted.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []


def test_terraform_flags_that_mean_nothing_here_are_said_plainly(rooted: Workspace, tmp_path: Path) -> None:
    cwd = tmp_path / "elsewhere"
    for flag, words in (("-refresh=false", "always reads the servers"), ("-var=x=1", "no variables"),
                        ("-lock-timeout=nan", "between 0 and 3600")):
        result = cli(rooted, "plan", str(rooted.specs), flag, cwd=cwd)
        assert result.returncode in (1, 2) and words in result.stderr, (flag, result.stderr)
    assert cli(rooted, "--version", cwd=cwd).stdout.startswith("pgaasctl ")
    assert json.loads(cli(rooted, "version", "-json", cwd=cwd).stdout)["pgaasctl_version"]
    cli(rooted, "init", str(rooted.specs), cwd=cwd)
    no_input = cli(rooted, "apply", str(rooted.specs), "-input=false", cwd=cwd)
    assert no_input.returncode == 1 and "-input=false" in no_input.stderr, no_input.stderr
    plain = cli(rooted, "plan", str(rooted.specs), "-no-color", cwd=cwd, env={"TERM": "xterm", "FORCE_COLOR": "1"})
    assert "\x1b[" not in plain.stdout + plain.stderr
    assert cli(rooted, "plan", str(rooted.specs), "-target=role.main.", cwd=cwd).stdout.count("+ role.main.app") == 1


def test_destroy_needs_no_role_secret_and_apply_destroy_is_destroy(rooted: Workspace,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rooted.write("roles.yaml", ROLE.format(name="app", extra=", password: {env: APP_SECRET}"))
    monkeypatch.setenv("APP_SECRET", "s3cret-value-1")
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    monkeypatch.delenv("APP_SECRET")
    plan = rooted.run("plan", str(rooted.specs), "--destroy")
    assert plan.exit_code == 0 and "- role.main.app" in plan.stdout, plan.output
    gone = rooted.run("apply", str(rooted.specs), "--destroy", "--auto-approve")
    assert gone.exit_code == 0 and "Destroy complete!" in gone.stdout, gone.output
    assert rooted.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app'") == []
    unknown = rooted.run("history", "nosuchpair", str(rooted.specs))
    assert unknown.exit_code == 1 and "pair 'nosuchpair' is not declared" in unknown.flat


def test_reading_commands_leave_the_store_directory_as_it_was(rooted: Workspace) -> None:
    assert rooted.run("apply", str(rooted.specs), "--auto-approve").exit_code == 0
    state = rooted.root / "state"
    before = sorted(p.name for p in state.iterdir())
    for args in (["plan", str(rooted.specs)], ["status", str(rooted.specs)], ["state", "list", str(rooted.specs)],
                 ["history", str(rooted.specs)]):
        rooted.run(*args)
        assert sorted(p.name for p in state.iterdir()) == before, args


def test_plan_files_and_targets_that_cannot_work_are_refused_plainly(rooted: Workspace, tmp_path: Path) -> None:
    rooted.run("init", str(rooted.specs))
    spec_like = rooted.run("plan", str(rooted.specs), "--out", str(rooted.specs / "x.yaml"))
    assert spec_like.exit_code == 1 and "a plan file is not a spec" in spec_like.flat
    assert not (rooted.specs / "x.yaml").exists()
    empty = rooted.run("plan", str(rooted.specs), "--target", "")
    assert empty.exit_code == 1 and "--target needs an address" in empty.flat
    planfile = tmp_path / "tfplan"
    assert rooted.run("plan", str(rooted.specs), "--out", str(planfile)).exit_code == 0
    moved = tmp_path / "far" / "away" / "tfplan"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(planfile.read_bytes())
    result = rooted.run("apply", str(moved))
    assert result.exit_code == 1 and "saved relative to the plan file) are not there" in result.flat, result.output


def test_an_unfinished_apply_is_confirmed_by_the_next_one(ws: Workspace) -> None:
    """A role an apply was making when it died exists and needs nothing: the next apply confirms its record."""
    ws.write("r.yaml", ROLE.format(name="halfway", extra=""))
    ws.must_apply()
    store = open_store(ws.store_url, mode="write")
    attributes = store.managed("main")["role.main.halfway"].attributes
    store.forget("role.main.halfway")
    store.record_intent("role.main.halfway", "main", "role", "halfway", attributes)  # as a killed apply left it
    store.close()
    plan = ws.plan("--detailed-exitcode")
    assert plan.exit_code == 2 and "record: pending (an apply did not finish) -> confirmed (state only)" in plan.flat
    ws.must_apply()
    objects = {o["address"]: o for o in json.loads(ws.run("state", "list", "--json").stdout)}
    assert objects["role.main.halfway"]["pending"] is False and objects["role.main.halfway"]["origin"] == "created"
    ws.assert_converged()


def test_a_killed_apply_leaves_a_record_of_what_it_did(rooted: Workspace) -> None:
    rooted.write("many.yaml", "---\n".join(ROLE.format(name=f"bulk{i}", extra="") for i in range(1000)))
    rooted.run("init", str(rooted.specs))
    env = {**os.environ, ADMIN_PASSWORD_ENV: rooted.server.admin_password}
    env.pop("PGAASCTL_STORE", None)
    process = subprocess.Popen([PGAASCTL, "apply", str(rooted.specs), "--auto-approve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: rooted.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'bulk%'")[0][0] >= 50
                   or process.poll() is not None, 60, "the apply to create roles")
    finally:
        process.kill()
        process.wait()
    [entry] = [e for e in json.loads(rooted.run("history", str(rooted.specs), "--json").stdout) if e["operation"] == "apply"]
    made = rooted.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'bulk%'")[0][0]
    if made < 1000:  # killed midway (a fast machine may finish first)
        assert entry["status"] == "interrupted", entry
        assert 0 < len(entry["summary"].get("changes", [])) <= made, (entry["summary"], made)
