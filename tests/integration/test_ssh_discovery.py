"""Discovery over SSH (fabric + repmgr): a node whose sshd is down, provider existing with ssh settings, and bad
input — unreachable SSH host, wrong key, changed host key, repmgr missing, a node outside the repmgr cluster.

The provider-existing cases point a Pair at the nodes of the module's local pair. Their repmgr needs the
repmgr password the way an operator's node has it (~/.pgpass); a second sshd on the node's address
(`HelperSshd`, port 2223) gives the session PGPASSFILE, as the node's own sshd cannot. Port 2224 is one whose
PATH has no repmgr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_pair import (
    Lab,
    LocalPair,
    SpecDir,
    alive,
    no_traceback,
    run_checked,
    wait_until,
)

HELPER_PORT = 2223  # a second sshd on a node's address, with PGPASSFILE set
NO_REPMGR_PORT = 2224  # one whose PATH has no repmgr
CLOSED_PORT = 2299  # nothing listens there


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("ssh", slot=2) as lab:
        lab.add_pair("sd", replication="synchronous")
        yield lab


@pytest.fixture
def sd(lab: Lab) -> Iterator[LocalPair]:
    pair = lab.pairs["sd"]
    pair.ensure_healthy()
    yield pair
    for helper in lab.helpers:
        helper.stop()
    lab.helpers.clear()


def _probe_role(ws: SpecDir, pair: str) -> None:
    ws.write("role.yaml", f"kind: Role\nmetadata: {{name: probe_role, pair: {pair}}}\nspec: {{login: true}}\n")


def _assert_refused(ws: SpecDir, *expected: str) -> str:
    """plan and apply both exit 1 with a message holding every `expected` text, and no traceback."""
    text = ""
    for result in (ws.plan(), ws.apply()):
        assert result.exit_code == 1, result.output
        no_traceback(result)
        assert "Error:" in result.stderr, result.output
        for piece in expected:
            assert piece in result.flat, (piece, result.output)
        text = result.flat
    return text


def _assert_nothing_written(pair: LocalPair, ws: SpecDir) -> None:
    for node in pair.nodes:
        if pair.role_of(node) is not None:
            assert pair.query(node, "SELECT 1 FROM pg_roles WHERE rolname = 'probe_role'") == []
    assert ws.state_list() == []


# ---------------------------------------------------------------- provider local: a node's sshd is down

def test_standby_sshd_down_is_reported_and_apply_starts_it(sd: LocalPair) -> None:
    primary = sd.primary()
    standby = sd.other(primary)
    sd.stop_sshd(standby)

    [status] = sd.ws.status_json()
    assert status["error"] is None and status["degraded"] is True, status
    roles = {n["name"]: n["role"] for n in status["nodes"]}
    assert roles == {primary: "primary", standby: "standby"}, status  # its PostgreSQL still streams
    assert f"node {standby}: start the host (sshd)" in status["needs"], status
    text = sd.ws.status()
    assert f"{standby} {sd.address(standby)}:5432 standby" in text.flat, text.output
    assert "sd (local, synchronous): degraded" in text.flat

    plan = sd.ws.plan()
    assert plan.exit_code == 0, plan.output
    assert f'Pair "sd": primary {primary} ({sd.address(primary)}:5432)' in plan.stdout
    assert f"pair 'sd' is degraded: node {standby} ({sd.address(standby)}): sshd is not running" in plan.flat, plan.output
    assert f"node {standby}: start the host" in plan.flat, plan.output

    sd.ws.must_apply()
    pid = sd.sshd_pid(standby)
    assert pid is not None and alive(pid)
    sd.assert_whole(primary)
    sd.ws.assert_converged()
    assert sd.ws.status_json()[0]["degraded"] is False


def test_primary_sshd_down_is_reported_and_apply_starts_it(sd: LocalPair) -> None:
    """PostgreSQL still runs on the primary; only its sshd is gone. The pair has a primary: pgaasctl must not
    say otherwise (and must not advise promoting the standby), and apply can start the host again."""
    primary = sd.primary()
    standby = sd.other(primary)
    sd.stop_sshd(primary)
    try:
        plan = sd.ws.plan()
        assert plan.exit_code == 0, plan.output
        assert f'Pair "sd": primary {primary}' in plan.stdout, plan.output
        assert f"node {primary}: start the host" in plan.flat, plan.output
        sd.ws.must_apply()
        assert sd.sshd_pid(primary) is not None
        sd.assert_whole(primary)
        assert sd.role_of(standby) == "standby"
        sd.ws.assert_converged()
    finally:
        if sd.sshd_pid(primary) is None:
            sd.start_sshd(primary)


# ---------------------------------------------------------------- provider local: changed host key, unregistered node

def test_changed_host_key_is_refused_until_forgotten(sd: LocalPair) -> None:
    primary = sd.primary()
    standby = sd.other(primary)
    endpoint = f"{sd.address(standby)}:2222"
    sd.ws.assert_converged()  # the current key is pinned
    key = sd.node_dir(standby) / "ssh" / "ssh_host_ed25519_key"
    old_key = Path(f"{key}.pub").read_text()
    sd.stop_sshd(standby)
    key.unlink()
    Path(f"{key}.pub").unlink()
    run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    assert Path(f"{key}.pub").read_text() != old_key
    sd.start_sshd(standby)

    # a healthy pair's plan and apply read its nodes over SQL alone: nothing connects over SSH with that key
    sd.ws.assert_converged()
    [status] = sd.ws.status_json()  # status asks every node over SSH: refused
    assert status["error"] and endpoint in status["error"] and "forget-host-key" in status["error"]

    # a node that needs SSH (its guard stopped) is refused: plan and apply stop before writing anything
    guard_pid = int((sd.node_dir(standby) / "run" / "guard.pid").read_text().split()[0])
    os.kill(guard_pid, signal.SIGTERM)
    wait_until(lambda: not alive(guard_pid), 10, f"the guard on {standby} to stop")
    _probe_role(sd.ws, "sd")
    state_before = sd.ws.state_list()
    message = _assert_refused(sd.ws, f"node {standby}", endpoint, "host key", "changed",
                              f"pgaasctl state forget-host-key {endpoint}")
    assert "refuses" in message
    for node in sd.nodes:
        assert sd.query(node, "SELECT 1 FROM pg_roles WHERE rolname = 'probe_role'") == []
    assert sd.ws.state_list() == state_before

    # the host was rebuilt on purpose: forget the key, and the next contact pins the new one
    forgot = sd.ws.run("state", "forget-host-key", endpoint, str(sd.ws.specs))
    assert forgot.exit_code == 0, forgot.output
    sd.ws.remove("role.yaml")
    applied = sd.ws.apply()  # starts the guard again, over SSH with the new key pinned
    assert applied.exit_code == 0, applied.output
    sd.ws.assert_converged()
    again = sd.ws.run("state", "forget-host-key", "127.0.2.1:1", str(sd.ws.specs))
    assert again.exit_code == 1 and "no SSH host key is pinned for 127.0.2.1:1" in again.flat
    no_traceback(again)


def test_node_outside_the_repmgr_cluster_is_refused(sd: LocalPair, lab: Lab) -> None:
    primary = sd.primary()
    standby = sd.other(primary)
    node_id = str(sd.nodes.index(standby) + 1)
    sd.repmgr(standby, "standby", "unregister", f"--node-id={node_id}")
    try:
        _probe_role(sd.ws, "sd")
        state_before = sd.ws.state_list()
        _assert_refused(sd.ws, f"node {standby} ({sd.address(standby)}) is not part of the repmgr cluster",
                        f"registered: {primary}")
        for node in sd.nodes:
            assert sd.query(node, "SELECT 1 FROM pg_roles WHERE rolname = 'probe_role'") == []
        assert sd.ws.state_list() == state_before

        # the same servers as provider existing, repmgr reached over SSH
        _start_helpers(lab, sd)
        ws = lab.spec_dir("ext-unregistered")
        ws.write("pair.yaml", _existing_pair(sd, port={n: HELPER_PORT for n in sd.nodes}))
        _probe_role(ws, "ext")
        _assert_refused(ws, f"node {standby} ({sd.address(standby)}) is not part of the repmgr cluster")
        _assert_nothing_written(sd, ws)
    finally:
        sd.ws.remove("role.yaml")
        sd.repmgr(standby, "standby", "register", "-F")


# ---------------------------------------------------------------- provider existing with ssh settings

def _existing_pair(sd: LocalPair, port: dict[str, int], key: dict[str, Path] | None = None,
                   bin_dir: dict[str, str] | None = None) -> str:
    nodes = []
    for node in sd.nodes:
        ssh = {"user": "postgres", "port": port[node], "key_file": str((key or {}).get(node, sd.key_file)),
               "repmgr_config": str(sd.etc(node) / "repmgr.conf")}
        if bin_dir and node in bin_dir:
            ssh["bin_dir"] = bin_dir[node]
        nodes.append({
            "name": node, "host": sd.address(node), "admin_password": {"file": str(sd.dir / "admin-password")},
            "connect_timeout": 2, "ssh": ssh,
        })
    spec = {"provider": "existing", "replication": "synchronous", "deletion_protection": False, "nodes": nodes}
    return "kind: Pair\nmetadata: {name: ext}\nspec: " + json.dumps(spec) + "\n"


def _start_helpers(lab: Lab, sd: LocalPair, no_repmgr: str | None = None) -> None:
    for node in sd.nodes:
        lab.helper_sshd(node, sd.address(node), HELPER_PORT, {"PGPASSFILE": str(sd.etc(node) / ".pgpass")})
    if no_repmgr is not None:
        lab.helper_sshd(f"{no_repmgr}-no-repmgr", sd.address(no_repmgr), NO_REPMGR_PORT,
                        {"PGPASSFILE": str(sd.etc(no_repmgr) / ".pgpass"), "PATH": "/nonexistent"})


def test_existing_pair_is_discovered_over_ssh(sd: LocalPair, lab: Lab) -> None:
    primary = sd.primary()
    standby = sd.other(primary)
    _start_helpers(lab, sd)
    ws = lab.spec_dir("ext-good")
    ws.write("pair.yaml", _existing_pair(sd, port={n: HELPER_PORT for n in sd.nodes}))
    plan = ws.plan()
    assert plan.exit_code == 0, plan.output
    assert (f'Pair "ext": primary {primary} ({sd.address(primary)}:5432), '
            f"standby {standby} ({sd.address(standby)}:5432, streaming, sync)") in plan.stdout, plan.output
    assert "warning" not in plan.output
    [status] = ws.status_json()
    assert status["provider"] == "existing" and status["degraded"] is False and status["error"] is None, status
    assert {n["name"]: (n["role"], n["repmgrd"]) for n in status["nodes"]} == {
        primary: ("primary", True), standby: ("standby", True)}
    assert status["needs"] == []  # pgaasctl never plans host operations on servers it does not own


def test_unreachable_ssh_on_the_standby_is_refused(sd: LocalPair, lab: Lab) -> None:
    primary = sd.primary()
    standby = sd.other(primary)
    _start_helpers(lab, sd)
    ws = lab.spec_dir("ext-unreachable-standby")
    ws.write("pair.yaml", _existing_pair(sd, port={primary: HELPER_PORT, standby: CLOSED_PORT}))
    _probe_role(ws, "ext")
    _assert_refused(ws, f"node {standby} of pair ext ({sd.address(standby)})", f"{sd.address(standby)}:{CLOSED_PORT}", "SSH")
    _assert_nothing_written(sd, ws)


def test_unreachable_ssh_on_the_primary_is_refused(sd: LocalPair, lab: Lab) -> None:
    """The primary's PostgreSQL answers; only SSH to it fails. The message must say so, not that no node
    is primary (whose advice, promoting the standby, would make a split brain)."""
    primary = sd.primary()
    standby = sd.other(primary)
    _start_helpers(lab, sd)
    ws = lab.spec_dir("ext-unreachable-primary")
    ws.write("pair.yaml", _existing_pair(sd, port={primary: CLOSED_PORT, standby: HELPER_PORT}))
    _probe_role(ws, "ext")
    message = _assert_refused(ws, f"node {primary} of pair ext ({sd.address(primary)})", f"{sd.address(primary)}:{CLOSED_PORT}", "SSH")
    assert "no node is primary" not in message
    _assert_nothing_written(sd, ws)


def test_wrong_ssh_key_is_refused(sd: LocalPair, lab: Lab) -> None:
    primary = sd.primary()
    standby = sd.other(primary)
    stranger = lab.base / "stranger_ed25519"
    if not stranger.exists():
        run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    ws = lab.spec_dir("ext-wrong-key")
    ws.write("pair.yaml", _existing_pair(sd, port={n: 2222 for n in sd.nodes}, key={standby: stranger}))
    _probe_role(ws, "ext")
    _assert_refused(ws, f"node {standby}", f"postgres@{sd.address(standby)}:2222", f"refused the key {stranger}")
    _assert_nothing_written(sd, ws)


def test_repmgr_missing_on_a_host_is_refused(sd: LocalPair, lab: Lab, tmp_path: Path) -> None:
    """The node's bin_dir holds PostgreSQL's binaries but no repmgr (as on a server without postgresql-15-repmgr)."""
    primary = sd.primary()
    standby = sd.other(primary)
    _start_helpers(lab, sd)
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "psql").symlink_to("/usr/lib/postgresql/15/bin/psql")
    tmp_path.chmod(0o755)
    ws = lab.spec_dir("ext-no-repmgr")
    ws.write("pair.yaml", _existing_pair(sd, port={primary: HELPER_PORT, standby: HELPER_PORT},
                                         bin_dir={standby: str(bare)}))
    _probe_role(ws, "ext")
    _assert_refused(ws, f"node {standby} of pair ext ({sd.address(standby)}): repmgr is not installed there",
                    "postgresql-15-repmgr")
    _assert_nothing_written(sd, ws)


def test_repmgr_that_cannot_log_in_is_not_ignored(sd: LocalPair, lab: Lab) -> None:
    """Through the nodes' own sshd the session has no PGPASSFILE, so `repmgr cluster show` and `service status`
    fail to log in (exit 6). Discovery then knows nothing of repmgr's view — whether the nodes are even in
    the cluster — and must say so rather than report a healthy pair."""
    primary = sd.primary()
    standby = sd.other(primary)
    denied = subprocess.run(
        ["ssh", "-i", str(sd.key_file), "-p", "2222", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", f"postgres@{sd.address(primary)}",
         f"repmgr -f {sd.etc(primary) / 'repmgr.conf'} service status --csv"],
        capture_output=True, text=True, timeout=30, check=False)
    assert denied.returncode != 0 and "no password supplied" in denied.stderr, denied  # the premise
    ws = lab.spec_dir("ext-repmgr-denied")
    ws.write("pair.yaml", _existing_pair(sd, port={n: 2222 for n in sd.nodes}))
    plan = ws.plan()
    no_traceback(plan)
    repmgr_lines = [line for line in plan.output.splitlines() if "repmgr" in line]
    assert any(primary in line or standby in line for line in repmgr_lines), plan.output
