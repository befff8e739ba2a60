"""The shell scripts pgaasctl writes on a node (the promote hook, the fencing guard and its watchdog): they must
parse (under /bin/sh; the guard under bash) whatever the paths, and say what the failover settings ask for."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pgaasctl.hosts.bootstrap import alive_from_pid_file, promote_hook, repmgr_conf, repmgrd_command, watchdog_after
from pgaasctl.hosts.guard import guard_script
from pgaasctl.spec.models import FailoverSettings
from providers.base import Host, HostLayout

ROOT = "/srv/pg aas/it's here"  # a space and a quote: every path must be quoted


def _host() -> Host:
    layout = HostLayout(bin_dir="/usr/lib/postgresql/15/bin", data_dir=f"{ROOT}/data", config_dir=f"{ROOT}/etc",
                        socket_dir=f"{ROOT}/run", log_dir=f"{ROOT}/log")
    return Host(pair="orders", node="orders-a", address="10.213.0.2", layout=layout, repmgr_conf=layout.repmgr_conf)


def _parses(script: str) -> None:
    shell = "bash" if script.startswith("#!/bin/bash") else "sh"
    checked = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def _guard(failover: FailoverSettings) -> str:
    host = _host()
    assert host.layout is not None
    return guard_script(host, host.layout, 7, watchdog_after(failover), repmgrd_command(host))


def test_the_promote_hook_parses_and_promotes_fast_only_for_repmgrd() -> None:
    host = _host()
    assert host.layout is not None
    hook = promote_hook(host, host.layout, 7)
    _parses(hook)
    failover_branch, person_branch = hook.split('if [ "$1" = failover ]; then', 1)[1].split("\nelse\n", 1)
    assert "SELECT pg_promote(true, 60)" in failover_branch
    records = next(line for line in failover_branch.splitlines() if "upstream_node_id = NULL" in line)
    assert "-d repmgr " in records and "active = true WHERE node_id = 7" in records  # repmgr's records, in its database
    assert "standby promote" in person_branch.split("\nfi\n", 1)[0]  # a person's promotion keeps repmgr's checks


def test_repmgrd_calls_the_hook_for_a_failover() -> None:
    host = _host()
    assert host.layout is not None
    conf = repmgr_conf(host, host.layout, 7, FailoverSettings())
    assert f"promote_command='{ROOT.replace(chr(39), chr(39) * 2)}/etc/promote.sh failover'" in conf


def test_the_guard_parses_with_and_without_its_watchdog() -> None:
    automatic, manual = _guard(FailoverSettings()), _guard(FailoverSettings(mode="manual"))
    _parses(automatic)
    _parses(manual)
    assert "repmgrd is stuck; promoting this node in its place" in automatic
    assert "stuck" not in manual and "watch() { :; }" in manual  # manual failover: nothing promotes by itself


@pytest.mark.parametrize(("settings", "after"), [
    ({}, 5),  # the defaults: repmgrd detects a hung primary in about 3 s
    ({"reconnect_attempts": 1}, 8),
    ({"reconnect_attempts": 3, "reconnect_interval": 2, "connect_timeout": 3}, 21),
])
def test_the_watchdog_waits_longer_than_repmgrd_takes_to_detect(settings: dict[str, int], after: int) -> None:
    assert watchdog_after(FailoverSettings(**settings)) == after


def test_a_zombie_is_not_a_running_process(tmp_path: Path) -> None:
    """A killed postmaster that init has not reaped yet passes `kill -0` (and `pg_ctl status`): the liveness
    probe pgaasctl runs on nodes must say no. Its pid file may hold more lines (postmaster.pid does)."""
    child = subprocess.Popen(["true"])  # exits at once; not waited for, it stays a zombie
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.01)  # polling its state
        pid_file = tmp_path / "postmaster.pid"
        pid_file.write_text(f"{child.pid}\n/data\n1700000000\n5432\n")
        assert subprocess.run(["sh", "-c", alive_from_pid_file(str(pid_file))], check=False).returncode != 0
        pid_file.write_text(f"{os.getpid()}\n/data\n")
        assert subprocess.run(["sh", "-c", alive_from_pid_file(str(pid_file))], check=False).returncode == 0
    finally:
        child.wait()


def test_the_wait_for_a_zombie_postmaster_ends_once_it_is_reaped(tmp_path: Path) -> None:
    from pgaasctl.hosts.bootstrap import reaped_from_pid_file

    child = subprocess.Popen(["true"])
    pid_file = tmp_path / "postmaster.pid"
    pid_file.write_text(f"{child.pid}\n/data\n")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)  # polling the child's state
    waiting = subprocess.Popen(["sh", "-c", reaped_from_pid_file(str(pid_file), seconds=20)])
    time.sleep(0.5)  # while the zombie lasts, the script waits
    assert waiting.poll() is None
    started = time.monotonic()
    child.wait()  # reaped
    assert waiting.wait(timeout=5) == 0 and time.monotonic() - started < 2
    gone = subprocess.run(["sh", "-c", reaped_from_pid_file(str(tmp_path / "none.pid"))], timeout=5, check=False)
    assert gone.returncode == 0  # no pid file: nothing to wait for
