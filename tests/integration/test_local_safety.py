"""Safety of local pairs: deletion protection on the pair destroy path, no host created over a living node,
and status saying where each pair's nodes live. Real sshd, PostgreSQL 15, repmgr (tests/support/local_pair.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_pair import Lab, LocalPair, no_traceback, wait_until

PROTECTED = "kind: Database\nmetadata: {{name: vault, pair: sp}}\nspec: {{deletion_protection: {flag}}}\n"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("safety", slot=2) as lab:
        lab.add_pair("sp", replication="asynchronous")
        yield lab


@pytest.fixture
def sp(lab: Lab) -> LocalPair:
    pair = lab.pairs["sp"]
    pair.ensure_healthy()
    return pair


def test_destroying_a_pair_never_drops_a_protected_database(sp: LocalPair) -> None:
    sp.ws.write("vault.yaml", PROTECTED.format(flag="true"))
    sp.ws.must_apply()
    primary = sp.primary()
    sp.execute(primary, "CREATE TABLE ledger (x int)", dbname="vault")

    plan = sp.ws.plan("--destroy")
    assert plan.exit_code == 1, plan.output
    assert "database.sp.vault: deletion_protection is on" in plan.flat
    destroyed = sp.ws.destroy()
    assert destroyed.exit_code == 1 and "database.sp.vault: deletion_protection is on" in destroyed.flat
    no_traceback(destroyed)
    sp.assert_whole(primary)  # the hosts are untouched
    assert sp.value(primary, "SELECT count(*) FROM ledger", dbname="vault") == 0

    # the way out the message names
    sp.ws.write("vault.yaml", PROTECTED.format(flag="false"))
    sp.ws.must_apply()
    sp.ws.remove("vault.yaml")
    sp.ws.must_apply()
    assert sp.query(primary, "SELECT 1 FROM pg_database WHERE datname = 'vault'") == []


def test_another_store_never_creates_hosts_over_living_nodes(lab: Lab, sp: LocalPair) -> None:
    """The same specs with a new, empty store (another directory, a lost store): the nodes are not its own."""
    configs = {node: (sp.node_dir(node) / "ssh" / "sshd_config").read_text() for node in sp.nodes}
    other = lab.spec_dir("other", {"local_dir": str(lab.local_dir), "local_addresses": lab.local_addresses})
    other.write(sp.spec_file, sp.spec_text())
    plan = other.plan()
    assert plan.exit_code == 0 and "to be created" in plan.stdout, plan.output  # what this store believes
    applied = other.apply()
    assert applied.exit_code == 1, applied.output
    assert "is in use by pid" in applied.flat and "will not create a host over it" in applied.flat
    no_traceback(applied)
    for node in sp.nodes:
        assert (sp.node_dir(node) / "ssh" / "sshd_config").read_text() == configs[node]
    sp.assert_whole()
    sp.ws.assert_converged()


def test_status_says_where_the_nodes_live(sp: LocalPair, lab: Lab) -> None:
    data = sp.ws.status_json()
    assert data[0]["nodes_dir"] == str(lab.local_dir / "sp")
    assert "Workspace document" in data[0]["nodes_dir_source"]
    text = sp.ws.status()
    assert f"nodes live in {lab.local_dir / 'sp'}" in text.stdout


def test_a_pair_destroy_names_the_databases_it_does_not_manage(sp: LocalPair) -> None:
    primary = sp.primary()
    sp.execute(primary, "CREATE DATABASE handmade")
    try:
        plan = sp.ws.plan("--destroy")
        assert plan.exit_code == 0, plan.output
        assert "databases pgaasctl does not manage go with it, and their data is lost: handmade" in plan.flat
    finally:
        sp.execute(primary, "DROP DATABASE handmade")


def test_no_targeted_or_partial_destroy_of_the_hosts_drops_a_protected_database(sp: LocalPair) -> None:
    sp.ws.write("vault.yaml", PROTECTED.format(flag="true"))
    sp.ws.must_apply()
    primary = sp.primary()
    for args in (["--target", "pair.sp"], []):
        plan = sp.ws.run("plan", str(sp.ws.specs / sp.spec_file) if not args else str(sp.ws.specs), "--destroy", *args)
        assert plan.exit_code == 1 and "database.sp.vault: deletion_protection is on" in plan.flat, (args, plan.output)
        destroyed = sp.ws.run("destroy", str(sp.ws.specs), "--auto-approve", *args)
        assert destroyed.exit_code == 1, destroyed.output
    # forgotten by the store, still protected by the spec
    assert sp.ws.run("state", "rm", "database.sp.vault", str(sp.ws.specs)).exit_code == 0
    assert sp.ws.run("destroy", str(sp.ws.specs), "--auto-approve", "--target", "pair.sp").exit_code == 1
    sp.assert_whole(primary)
    assert sp.query(primary, "SELECT 1 FROM pg_database WHERE datname = 'vault'") == [(1,)]
    sp.ws.write("vault.yaml", "kind: Database\nmetadata: {name: vault, pair: sp}\n"
                              "spec: {deletion_protection: false, adopt: true}\n")
    sp.ws.must_apply()
    sp.ws.remove("vault.yaml")
    sp.ws.must_apply()


def test_nodes_stay_where_they_were_made_whatever_local_dir_says_later(sp: LocalPair, lab: Lab, tmp_path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGAASCTL_LOCAL_DIR", str(tmp_path / "elsewhere"))
    sp.ws.assert_converged()  # not "to be created" under the new local_dir
    data = sp.ws.status_json()
    assert data[0]["nodes_dir"] == str(lab.local_dir / "sp")
    assert "recorded when its nodes were made" in data[0]["nodes_dir_source"]
    assert all(node["role"] in ("primary", "standby") for node in data[0]["nodes"])
    assert not (tmp_path / "elsewhere").exists()


def test_a_pair_whose_creation_was_killed_names_the_way_out(lab: Lab, sp: LocalPair) -> None:
    spec = "kind: Pair\nmetadata: {name: kq}\nspec: {provider: local, deletion_protection: false, nodes: [{name: kq-a}, {name: kq-b}]}\n"
    sp.ws.write("pair-kq.yaml", spec)
    env = {**os.environ, "PGAASCTL_STORE": sp.ws.store_url}
    process = subprocess.Popen([str(Path(sys.executable).parent / "pgaasctl"), "apply", str(sp.ws.specs), "--auto-approve"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: (lab.local_dir / "kq" / "kq-a" / "data" / "PG_VERSION").exists() or process.poll() is not None,
                   60, "the first node's initdb")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole apply, mid-bootstrap
        process.wait()
    state = json.loads(sp.ws.run("state", "list", str(sp.ws.specs), "--json").stdout)
    assert {o["address"]: o["pending"] for o in state}.get("pair.kq") is True
    plan = sp.ws.plan()
    if plan.exit_code == 1:  # what is left may or may not be discoverable: either way the way out is named
        assert "was being created by an apply that did not finish" in plan.flat, plan.output
        assert "pgaasctl destroy" in plan.flat and "pair-kq.yaml" in plan.flat
    destroyed = sp.ws.run("destroy", str(sp.ws.specs / "pair-kq.yaml"), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert not (lab.local_dir / "kq").exists(), sorted(str(p) for p in (lab.local_dir / "kq").rglob("*"))[:10]
    left = [pid for pid in _pids() if f"{lab.local_dir}/kq/" in _command_line(pid)]
    assert not left, [_command_line(pid) for pid in left]  # an initdb under way over SSH included
    sp.ws.remove("pair-kq.yaml")
    sp.ws.assert_converged()


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
