"""Pairs of provider `existing`: discovery of the primary, server settings, a real streaming standby."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pgserver import PgServer, make_base_dir
from tests.support.workspace import Workspace, pair_yaml

WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw9")[2:] or 9)


def _address(offset: int) -> str:
    return f"127.0.0.{60 + WORKER * 4 + offset}"


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[PgServer, PgServer]]:
    """A primary and a streaming standby made with pg_basebackup -R, on their own loopback addresses."""
    base = make_base_dir(prefix="pgaasctl-pair-")
    primary = PgServer(base / "a", host=_address(0))
    standby = PgServer(base / "b", host=_address(1))
    try:
        primary.start()
        primary.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
        standby.start_standby_of(primary)
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)


def two_node_pair(primary: PgServer, standby: PgServer, replication: str = "asynchronous") -> str:
    extra = (
        f"- {{name: main-b, host: {standby.host}, port: {standby.port}, admin_user: postgres,"
        f" admin_password: {{env: PGAASCTL_TEST_ADMIN_PASSWORD}}, connect_timeout: 2}}"
    )
    return pair_yaml(primary, extra_nodes=extra).replace("  nodes:", f"  replication: {replication}\n  nodes:")


@pytest.fixture
def pair_ws(replicated: tuple[PgServer, PgServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    primary, standby = replicated
    for role in [r[0] for r in primary.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'rep_%'")]:
        primary.execute(f'DROP ROLE "{role}"')
    workspace = Workspace(tmp_path, primary, monkeypatch)
    workspace.write("pair-main.yaml", two_node_pair(primary, standby))
    return workspace


def test_changes_reach_the_standby_before_apply_returns(pair_ws: Workspace, replicated: tuple[PgServer, PgServer]) -> None:
    primary, standby = replicated
    pair_ws.write("r.yaml", "kind: Role\nmetadata: {name: rep_app, pair: main}\nspec: {login: true}\n")
    plan = pair_ws.plan()
    assert f"primary main-a ({primary.host}:{primary.port})" in plan.stdout
    assert f"standby main-b ({standby.host}:{standby.port}, streaming, async)" in plan.stdout
    result = pair_ws.must_apply()
    assert "standby caught up" in result.stdout
    # no polling here: apply returned only after the standby replayed the change
    assert standby.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rep_app'") == [(True,)]
    pair_ws.assert_converged()


def test_primary_is_found_whatever_the_node_order(pair_ws: Workspace, replicated: tuple[PgServer, PgServer]) -> None:
    primary, standby = replicated
    pair_ws.write("pair-main.yaml", two_node_pair(primary, standby).replace("main-a", "main-x").replace("main-b", "main-a").replace("main-x", "main-b"))
    plan = pair_ws.plan()
    assert plan.exit_code == 0, plan.output
    assert f"primary main-b ({primary.host}:{primary.port})" in plan.stdout


def test_synchronous_pair_with_async_standby_is_reported_degraded(pair_ws: Workspace, replicated: tuple[PgServer, PgServer]) -> None:
    primary, standby = replicated
    pair_ws.write("pair-main.yaml", two_node_pair(primary, standby, replication="synchronous"))
    plan = pair_ws.plan()
    assert "degraded" in plan.stdout and "not synchronous" in plan.stdout


def test_unreachable_standby_is_a_warning_not_an_error(pair_ws: Workspace, replicated: tuple[PgServer, PgServer]) -> None:
    primary, _ = replicated
    extra = "- {name: main-b, host: 127.0.0.250, port: 1, admin_user: postgres, connect_timeout: 1}"
    pair_ws.write("pair-main.yaml", pair_yaml(primary, extra_nodes=extra))
    plan = pair_ws.plan()
    assert plan.exit_code == 0, plan.output
    assert "degraded" in plan.flat and "main-b" in plan.flat and "127.0.0.250:1" in plan.flat


def test_split_brain_is_refused(pg: PgServer, replicated: tuple[PgServer, PgServer], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    primary, _ = replicated
    ws = Workspace(tmp_path, pg, monkeypatch)  # two independent primaries declared as one pair
    extra = (f"- {{name: main-b, host: {primary.host}, port: {primary.port}, admin_user: postgres,"
             f" admin_password: {{env: PGAASCTL_TEST_ADMIN_PASSWORD}}}}")
    ws.write("pair.yaml", pair_yaml(pg, extra_nodes=extra))
    ws.write("r.yaml", "kind: Role\nmetadata: {name: split_role, pair: main}\n")
    for command in (ws.plan(), ws.apply()):
        assert command.exit_code == 1
        assert "split brain" in command.flat
        assert f"main-a ({pg.host}:{pg.port}) claims primary" in command.flat
        assert f"main-b ({primary.host}:{primary.port}) claims primary" in command.flat
    assert pg.execute("SELECT 1 FROM pg_roles WHERE rolname = 'split_role'") == []
    assert primary.execute("SELECT 1 FROM pg_roles WHERE rolname = 'split_role'") == []


def test_no_primary_is_refused(pair_ws: Workspace, replicated: tuple[PgServer, PgServer]) -> None:
    _, standby = replicated
    pair_ws.write("pair-main.yaml", pair_yaml(standby))
    result = pair_ws.plan()
    assert result.exit_code == 1
    assert "no node is primary" in result.flat and "is a standby" in result.flat
