"""Pairs on the namespace network: a namespace per node on the workspace's bridge, a keepalived virtual IP that
follows the primary, the guard fencing a stale primary, and real faults (kill -9, a primary started by hand, a
partition) with clients writing through the URI and through the virtual IP.

Root only (namespaces and keepalived need it); CI runs as root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from providers.netns import NamespaceNetwork, namespace_of
from tests.support.local_pair import (
    Lab,
    LocalPair,
    Writer,
    namespace_leftovers,
    no_traceback,
    processes_mentioning,
    signal_all,
    wait_until,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)")

TABLE = "ledger"
VIP_TABLE = "ledger_vip"  # written through the virtual IP
# seconds after a cut: longer than the default failover settings take to promote (about 3 s), and than the guard's
# watchdog takes to stand in for a stuck repmgrd (5 s of silence, then up to 4 s of checks)
NO_FAILOVER_WINDOW = 15.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("netns", slot=0, network="namespaces") as lab:
        net = IPv4Network(lab.subnet)
        lab.add_pair("vp", replication="synchronous", virtual_ip=str(net.network_address + 200),
                     witness={"name": "vp-w"})
        yield lab


@pytest.fixture
def vp(lab: Lab) -> LocalPair:
    pair = lab.pairs["vp"]
    pair.ensure_healthy()
    wait_until(lambda: _holder(pair) == pair.primary(), 10, "the virtual IP on the primary")
    primary = pair.primary()
    for table in (TABLE, VIP_TABLE):
        pair.execute(primary, f"CREATE TABLE IF NOT EXISTS {table} (n int PRIMARY KEY)")
        pair.execute(primary, f"TRUNCATE {table}")
    return pair


def _vip(pair: LocalPair) -> str:
    return str(pair.spec["virtual_ip"])


def _holders(pair: LocalPair) -> list[str]:
    """The nodes whose namespace has the virtual IP (two only while one of them is cut off from the other)."""
    found = []
    for node in pair.nodes:
        shown = subprocess.run(["ip", "-n", f"pgaas-{pair.address(node)}", "-4", "-o", "addr", "show"],
                               capture_output=True, text=True, check=False).stdout
        if f" {_vip(pair)}/" in shown:
            found.append(node)
    return found


def _holder(pair: LocalPair) -> str | None:
    holders = _holders(pair)
    return holders[0] if len(holders) == 1 else None


def _uri(pair: LocalPair, *args: str) -> str:
    result = pair.ws.connection(pair.name, "--role", "postgres", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _lost(pair: LocalPair, node: str, writer: Writer) -> list[int]:
    present = {row[0] for row in pair.query(node, f"SELECT n FROM {TABLE}")}
    return sorted(set(writer.acked) - present)


def test_each_node_runs_in_its_own_namespace_and_the_primary_holds_the_virtual_ip(vp: LocalPair) -> None:
    net = NamespaceNetwork(IPv4Network(vp.lab.subnet))
    for node in vp.nodes:
        address = vp.address(node)
        assert IPv4Network(f"{address}/32").subnet_of(net.subnet)
        namespace = f"pgaas-{address}"
        assert namespace_of(vp.postmaster_pid(node)) == namespace
        assert namespace_of(vp.sshd_pid(node) or 0) == namespace
    primary = vp.primary()
    status = vp.ws.status()
    assert status.exit_code == 0, status.output
    assert "virtual IP" in status.stdout and "holds it" in status.stdout
    [data] = vp.ws.status_json()
    assert {n["name"]: n["virtual_ip"] for n in data["nodes"]} == {primary: True, vp.other(primary): False, "vp-w": None}
    assert {n["name"]: n["guard"] for n in data["nodes"]} == {primary: True, vp.other(primary): True, "vp-w": None}

    uri = _uri(vp, "--virtual-ip")
    assert uri.startswith(f"postgresql://postgres@{_vip(vp)}:5432/postgres?")
    with Writer(uri, vp.admin_password, TABLE) as writer:
        writer.wait_for_more(5, timeout=20)
    assert set(writer.servers) == {_vip(vp)}


def test_kill_9_of_the_primary_moves_the_virtual_ip_and_loses_no_commit(vp: LocalPair) -> None:
    old = vp.primary()
    new = vp.other(old)
    with Writer(_uri(vp), vp.admin_password, TABLE) as by_uri, Writer(_uri(vp, "--virtual-ip"), vp.admin_password,
                                                                     VIP_TABLE) as by_vip:
        by_uri.wait_for_more(10, timeout=20)
        by_vip.wait_for_more(10, timeout=20)
        vp.kill_postmaster(old)
        vp.wait_primary(new)
        promoted = time.monotonic()
        wait_until(lambda: _holder(vp) == new, 5, "the virtual IP on the new primary", interval=0.02)
        moved = time.monotonic() - promoted
        by_uri.wait_for_more(10, timeout=30)
        by_vip.wait_for_more(10, timeout=30)
    assert moved < 1.5, f"the virtual IP reached the new primary {moved:.2f}s after its promotion"
    assert _lost(vp, new, by_uri) == []
    present = {row[0] for row in vp.query(new, f"SELECT n FROM {VIP_TABLE}")}
    assert sorted(set(by_vip.acked) - present) == []

    applied = vp.ws.apply()
    assert applied.exit_code == 0, applied.output
    vp.assert_whole(new)
    assert _holder(vp) == new


def test_a_returning_old_primary_is_fenced_and_never_gets_the_virtual_ip(vp: LocalPair) -> None:
    old = vp.primary()
    new = vp.other(old)
    vp.stop_immediate(old)
    vp.wait_promoted(new)
    wait_until(lambda: _holder(vp) == new, 5, "the virtual IP on the new primary", interval=0.02)
    vp.start_postgres(old)  # by hand, as a primary: stale
    started = time.monotonic()
    wait_until(lambda: vp.role_of(old) is None, 10, f"the guard to fence {old}", interval=0.02)
    assert time.monotonic() - started < 3
    assert _holder(vp) == new
    status = vp.ws.status()
    assert status.exit_code == 2 and f"{old} was fenced" in status.flat, status.output
    applied = vp.ws.apply()
    assert applied.exit_code == 0, applied.output
    vp.assert_whole(new)
    assert vp.ws.status().exit_code == 0


def test_a_partition_of_the_primary_never_leaves_two_primaries_accepting_writes(vp: LocalPair) -> None:
    """The primary's link to the bridge is cut: the standby promotes. The cut-off primary cannot acknowledge a
    commit (synchronous replication); when the link comes back its guard fences it, and the virtual IP stays."""
    old = vp.primary()
    new = vp.other(old)
    veth = NamespaceNetwork.veth(vp.address(old))
    bridge = NamespaceNetwork(IPv4Network(vp.lab.subnet)).bridge
    with Writer(_uri(vp), vp.admin_password, TABLE) as writer:
        writer.wait_for_more(10, timeout=20)
        subprocess.run(["ip", "link", "set", veth, "nomaster"], check=True)
        try:
            vp.wait_primary(new, timeout=30)
            writer.wait_for_more(10, timeout=30)
            # the cut-off node still has it, unseen: the new primary's gratuitous ARP steers the bridge to itself
            wait_until(lambda: new in _holders(vp), 5, "the virtual IP on the new primary", interval=0.02)
            with Writer(_uri(vp, "--virtual-ip"), vp.admin_password, VIP_TABLE) as by_vip:
                by_vip.wait_for_more(5, timeout=20)
            assert set(by_vip.servers) == {_vip(vp)}
        finally:
            subprocess.run(["ip", "link", "set", veth, "master", bridge], check=True)
        healed = time.monotonic()
        wait_until(lambda: vp.role_of(old) != "primary", 10, f"the guard to fence {old}", interval=0.02)
        fenced = time.monotonic() - healed
        writer.wait_for_more(10, timeout=30)
    assert fenced < 3, f"fenced {fenced:.2f}s after the partition healed"
    assert _lost(vp, new, writer) == []
    wait_until(lambda: _holder(vp) == new, 5, "the fenced node to give up the virtual IP", interval=0.02)

    applied = vp.ws.apply()
    assert applied.exit_code == 0, applied.output
    vp.assert_whole(new)


def _cut(pair: LocalPair, node: str) -> str:
    """Cut the node's link to the bridge; returns its veth (for _heal)."""
    veth = NamespaceNetwork.veth(pair.address(node))
    subprocess.run(["ip", "link", "set", veth, "nomaster"], check=True)
    return veth


def _heal(pair: LocalPair, veth: str) -> None:
    subprocess.run(["ip", "link", "set", veth, "master", NamespaceNetwork(IPv4Network(pair.lab.subnet)).bridge],
                   check=True)


def _role_inside(pair: LocalPair, node: str) -> str:
    """The node's role asked through its own socket, from inside its namespace (it may be cut off)."""
    result = subprocess.run(pair.in_node(node, ["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql",
                                                "-X", "-A", "-t", "-h", str(pair.node_dir(node) / "run"), "-d",
                                                "postgres", "-c", "SELECT pg_is_in_recovery()"]),
                            capture_output=True, text=True, check=True)
    return {"t": "standby", "f": "primary"}[result.stdout.strip()]


def _stays_standby(pair: LocalPair, node: str) -> None:
    """For longer than a failover takes (repmgrd's, or the guard's watchdog's when repmgrd is stuck on a query to
    the lost primary), `node` is still a standby: no majority, no promotion."""
    deadline = time.monotonic() + NO_FAILOVER_WINDOW
    while time.monotonic() < deadline:  # an absence is checked over a window, polled
        assert _role_inside(pair, node) == "standby", (
            f"{node} promoted itself without a majority; its logs end with:\n"
            + "\n".join(_tail(pair.node_dir(node) / "log" / name, 15) for name in ("repmgr.log", "guard.log")))
        time.sleep(0.2)


def _tail(path: Path, lines: int) -> str:
    return f"{path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def test_status_shows_the_witness(vp: LocalPair) -> None:
    [data] = vp.ws.status_json()
    witness = next(n for n in data["nodes"] if n["name"] == "vp-w")
    assert witness["role"] == "witness" and witness["repmgrd"] is True
    registered = vp.query(vp.primary(), "SELECT node_name FROM repmgr.nodes WHERE type = 'witness'", dbname="repmgr")
    assert registered == [("vp-w",)]


def test_a_cut_off_standby_sees_no_majority_and_does_not_promote(vp: LocalPair) -> None:
    primary = vp.primary()
    standby = vp.other(primary)
    veth = _cut(vp, standby)
    try:
        _stays_standby(vp, standby)
    finally:
        _heal(vp, veth)
    assert vp.role_of(primary) == "primary"
    wait_until(lambda: vp.ws.status().exit_code == 0, 30, "the pair to be healthy again after the partition")


def test_a_cut_off_witness_degrades_the_pair_and_changes_nothing(vp: LocalPair) -> None:
    primary = vp.primary()
    veth = _cut(vp, "vp-w")
    try:
        status = vp.ws.status()
        assert status.exit_code == 2, status.output
        assert "its witness vp-w" in status.flat, status.output
        assert vp.role_of(primary) == "primary"
    finally:
        _heal(vp, veth)
    wait_until(lambda: vp.ws.status().exit_code == 0, 30, "the pair to be healthy again")
    assert vp.primary() == primary


def test_a_witness_removed_from_the_spec_is_unregistered_and_its_host_removed(vp: LocalPair) -> None:
    witness_namespace = f"pgaas-{vp.address('vp-w')}"
    spec = {k: v for k, v in vp.spec.items() if k != "witness"}
    vp.ws.write(vp.spec_file, f"kind: Pair\nmetadata: {{name: vp}}\nspec: {json.dumps(spec)}\n")
    plan = vp.ws.plan()
    assert plan.exit_code == 0 and "node vp-w" in plan.flat, plan.output
    vp.ws.must_apply()
    assert vp.query(vp.primary(), "SELECT node_name FROM repmgr.nodes WHERE type = 'witness'", dbname="repmgr") == []
    assert not Path("/run/netns", witness_namespace).exists()
    vp.ws.assert_converged()
    [data] = vp.ws.status_json()
    assert data["degraded"] is False and "vp-w" not in {n["name"] for n in data["nodes"]}


def test_a_hung_primary_node_is_failed_over_and_fenced_when_it_resumes(vp: LocalPair) -> None:
    """SIGSTOP of every process of the primary's node (PostgreSQL, repmgrd, the guard, keepalived, sshd)."""
    old = vp.primary()
    new = vp.other(old)
    frozen = [int(p) for p in subprocess.run(["ip", "netns", "pids", f"pgaas-{vp.address(old)}"], capture_output=True,
                                             text=True, check=True).stdout.split()]
    with Writer(_uri(vp, "--virtual-ip"), vp.admin_password, VIP_TABLE) as by_vip:
        by_vip.wait_for_more(10, timeout=20)
        signal_all(frozen, signal.SIGSTOP)
        try:
            started = time.monotonic()
            vp.wait_primary(new, timeout=30)
            promoted = time.monotonic() - started
            by_vip.wait_for_more(10, timeout=30)  # through the virtual IP, on the new primary
        finally:
            signal_all(frozen, signal.SIGCONT)
        resumed = time.monotonic()
        wait_until(lambda: vp.role_of(old) != "primary", 10, f"the guard to fence {old}", interval=0.02)
        fenced = time.monotonic() - resumed
    assert promoted < 15, f"a hung primary was failed over after {promoted:.1f}s"
    assert fenced < 3, f"the resumed primary was fenced {fenced:.2f}s after SIGCONT"
    present = {row[0] for row in vp.query(new, f"SELECT n FROM {VIP_TABLE}")}
    assert sorted(set(by_vip.acked) - present) == []
    wait_until(lambda: _holder(vp) == new, 5, "the virtual IP on the new primary alone", interval=0.02)
    applied = vp.ws.apply()
    assert applied.exit_code == 0, applied.output
    vp.assert_whole(new)


def test_a_repmgrd_stuck_on_a_hung_primary_is_replaced_by_the_guards_watchdog(vp: LocalPair) -> None:
    """repmgrd waits forever on a query to a primary that hung in the middle of it (its kernel still acknowledges
    every packet). Stood in for deterministically: the standby's repmgrd is stopped with SIGSTOP as the primary
    hangs. The guard's watchdog promotes the standby in its place and starts a fresh repmgrd."""
    old = vp.primary()
    new = vp.other(old)
    pid_file = vp.node_dir(new) / "run" / "repmgrd.pid"
    stuck = int(pid_file.read_text().split()[0])
    frozen = [int(p) for p in subprocess.run(["ip", "netns", "pids", f"pgaas-{vp.address(old)}"], capture_output=True,
                                             text=True, check=True).stdout.split()]
    with Writer(_uri(vp, "--virtual-ip"), vp.admin_password, VIP_TABLE) as by_vip:
        by_vip.wait_for_more(10, timeout=20)
        os.kill(stuck, signal.SIGSTOP)
        signal_all(frozen, signal.SIGSTOP)
        try:
            started = time.monotonic()
            vp.wait_primary(new, timeout=30)
            promoted = time.monotonic() - started
            by_vip.wait_for_more(10, timeout=30)
        finally:
            signal_all(frozen, signal.SIGCONT)
            signal_all([stuck], signal.SIGCONT)
        wait_until(lambda: vp.role_of(old) != "primary", 10, f"the guard to fence {old}", interval=0.02)
    guard_log = (vp.node_dir(new) / "log" / "guard.log").read_text()
    assert "repmgrd is stuck; promoting this node in its place" in guard_log and "watchdog: promoted" in guard_log
    assert promoted < 15, f"the watchdog promoted after {promoted:.1f}s"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().split()[0] != str(stuck), 10, "a fresh repmgrd")
    assert not Path(f"/proc/{stuck}").exists()  # the stuck one was killed, not left to wake up later
    present = {row[0] for row in vp.query(new, f"SELECT n FROM {VIP_TABLE}")}
    assert sorted(set(by_vip.acked) - present) == []
    [record] = vp.query(new, f"SELECT type, upstream_node_id FROM repmgr.nodes WHERE node_name = '{new}'", dbname="repmgr")
    assert record == ("primary", None)
    # the witness now counts for the new primary in the next election, as after repmgrd's own failover
    assert vp.query(new, "SELECT w.upstream_node_id = p.node_id FROM repmgr.nodes w, repmgr.nodes p WHERE "
                         f"w.type = 'witness' AND p.node_name = '{new}'", dbname="repmgr") == [(True,)]
    applied = vp.ws.apply()
    assert applied.exit_code == 0, applied.output
    vp.assert_whole(new)


def test_a_primary_cut_off_with_the_witness_is_not_failed_over(vp: LocalPair) -> None:
    """The standby sees neither the primary nor the witness: no majority, no promotion; when the network heals
    the pair is as it was, and nothing acknowledged is lost."""
    primary = vp.primary()
    standby = vp.other(primary)
    cut = [_cut(vp, primary), _cut(vp, "vp-w")]
    try:
        _stays_standby(vp, standby)
    finally:
        for veth in cut:
            _heal(vp, veth)
    wait_until(lambda: vp.ws.status().exit_code == 0, 30, "the pair to be healthy again")
    assert vp.primary() == primary


def test_a_virtual_ip_outside_the_subnet_is_refused_with_its_line(vp: LocalPair) -> None:
    vp.rewrite_spec(virtual_ip="10.99.0.7")
    result = vp.ws.plan()
    assert result.exit_code == 1, result.output
    no_traceback(result)
    assert "virtual_ip 10.99.0.7 is outside the workspace subnet" in result.flat and "pair-vp.yaml" in result.flat


def test_destroy_leaves_no_namespace_bridge_or_process(lab: Lab) -> None:
    lab.pairs["vp"].ensure_healthy()
    assert len(namespace_leftovers(lab.subnet)) == 4  # two nodes' and the witness's namespaces, and the bridge
    result = lab.ws.destroy()
    assert result.exit_code == 0, result.output
    assert namespace_leftovers(lab.subnet) == []
    assert processes_mentioning(str(lab.local_dir) + "/") == {}
