"""Pairs of provider `local` for integration tests: real sshd, real PostgreSQL 15, real repmgr and repmgrd.

A ``Lab`` is one directory under /dev/shm (tmpfs: PostgreSQL's many small files are slow on this machine's
disk) holding a pgaasctl spec directory, its SQLite store and the Workspace ``local_dir`` the nodes live in.
Each lab takes its node addresses from a slice of the xdist worker's loopback range, so that two workers
(or a worker and another user of this machine) never claim the same address:

    gw0 -> 127.0.2.10-127.0.2.49, gw1 -> 127.0.2.50-127.0.2.89, ..., no xdist -> 127.0.2.100-127.0.2.139

and each lab of a worker has its own slice of ten addresses in that range (``slot``).

``Lab.close()`` runs ``pgaasctl destroy --auto-approve`` for every local pair the lab declares, then, as a
fallback, kills by pid every process whose command line names the lab directory (sshd, postgres, repmgrd
all do) and removes the directory.

The CLI runs in-process (typer's CliRunner) with PGAASCTL_STORE pointing at the lab's store. Nothing here
sleeps to synchronise: conditions are polled with deadlines.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest
from typer.testing import CliRunner

from pgaasctl.cli import app
from pgaasctl.store import open_store
from tests.support.workspace import Result

PG_BIN = "/usr/lib/postgresql/15/bin"
SSHD = "/usr/sbin/sshd"
REPMGR = "/usr/bin/repmgr"
SSH_PORT = 2222
PG_PORT = 5432
SLOT_SIZE = 10  # addresses per lab; a worker's range holds four slots
PROMOTION_TIMEOUT = 30.0  # repmgrd promotes in ~3 s with the default failover settings


# ---------------------------------------------------------------- addresses, processes, polling

def worker_range() -> tuple[int, int]:
    """Last octets (first, last) of this xdist worker's 40 addresses in 127.0.2.0/24."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        index = int(worker[2:])
        first = 10 + 40 * index
        if first + 39 > 254:
            raise pytest.UsageError(f"too many xdist workers for a 40-address slice of 127.0.2.0/24 each: {worker}")
        return first, first + 39
    return 100, 139


def slot_range(slot: int) -> str:
    """The Workspace local_addresses of one lab: ten addresses of this worker's range."""
    first, last = worker_range()
    start = first + slot * SLOT_SIZE
    assert 0 <= slot and start + SLOT_SIZE - 1 <= last, f"slot {slot} is outside the worker's range"
    return f"127.0.2.{start}-127.0.2.{start + SLOT_SIZE - 1}"


def slot_subnet(slot: int) -> str:
    """The Workspace subnet of one namespace-network lab: a /24 of 10.214.0.0/16 per worker and slot (never the
    default 10.213.0.0/24, which `make demo` uses)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") else 9
    return f"10.214.{index * 4 + slot}.0/24"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)  # polling interval, not synchronisation


def listening(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.3)
        return probe.connect_ex((address, port)) == 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every live process whose command line contains `text`."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found


def signal_all(pids: list[int], sig: int) -> None:
    """`sig` to each process still there: a short-lived one (a session of the guard's or the agent's) may end
    between listing it and the signal, and there is nothing to freeze or wake in it then."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_processes_mentioning(text: str, timeout: float = 10.0) -> None:
    """SIGKILL, by pid, every process whose command line contains `text` (a lab directory), and wait."""
    for pid in processes_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    wait_until(lambda: not processes_mentioning(text), timeout, f"processes under {text} to exit", interval=0.05)


def server_os_user() -> str:
    """The OS user provider local runs PostgreSQL as: postgres under root, else the invoking user."""
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


def as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def run_checked(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output, result.output


# ---------------------------------------------------------------- spec directories

class SpecDir:
    """A pgaasctl workspace: spec files under root/specs, the store at root/store.db; the CLI in-process."""

    def __init__(self, root: Path, workspace: dict[str, Any] | None = None) -> None:
        self.root = root
        self.specs = root / "specs"
        self.specs.mkdir(parents=True, exist_ok=True)
        self.store_url = "sqlite:///" + str(root / "store.db")  # absolute path: sqlite:////dev/shm/...
        self.runner = CliRunner()
        self.baseline: dict[str, str] = {}  # file name -> text: what reset() goes back to
        spec = {"store": self.store_url, **(workspace or {})}
        self.write("00-workspace.yaml", "kind: Workspace\nspec: " + json.dumps(spec) + "\n", baseline=True)
        open_store(self.store_url).close()  # `pgaasctl init`: reading commands (plan first) need a store

    def write(self, name: str, text: str, baseline: bool = False) -> Path:
        path = self.specs / name
        text = textwrap.dedent(text).lstrip("\n")
        path.write_text(text, encoding="utf-8")
        if baseline:
            self.baseline[name] = text
        return path

    def remove(self, name: str) -> None:
        (self.specs / name).unlink(missing_ok=True)

    def reset(self) -> None:
        """Back to the baseline spec files (those written with baseline=True), as they were written."""
        for path in self.specs.iterdir():
            if path.name not in self.baseline:
                if path.is_dir():  # what the API wrote (api/, state/secrets/)
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for name, text in self.baseline.items():
            path = self.specs / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")

    def run(self, *args: str) -> Result:
        result = self.runner.invoke(app, list(args), catch_exceptions=False, env={"PGAASCTL_STORE": self.store_url})
        return Result(result.exit_code, result.stdout, result.stderr)

    def plan(self, *args: str) -> Result:
        return self.run("plan", str(self.specs), *args)

    def apply(self, *args: str) -> Result:
        return self.run("apply", str(self.specs), "--auto-approve", *args)

    def must_apply(self) -> Result:
        result = self.apply()
        assert result.exit_code == 0, result.output
        no_traceback(result)
        return result

    def destroy(self) -> Result:
        return self.run("destroy", str(self.specs), "--auto-approve")

    def status(self) -> Result:
        return self.run("status", str(self.specs))

    def status_json(self) -> list[dict[str, Any]]:
        result = self.run("status", str(self.specs), "--json")
        data = json.loads(result.stdout)
        expected = 1 if any(p["error"] for p in data) else 2 if any(p["degraded"] for p in data) else 0
        assert result.exit_code == expected, result.output  # 0 healthy, 2 degraded, 1 error
        return data

    def connection(self, pair: str, *args: str) -> Result:
        return self.run("connection", pair, *args, str(self.specs))

    def state_list(self) -> list[str]:
        result = self.run("state", "list", str(self.specs))
        assert result.exit_code == 0, result.output
        return result.stdout.split()

    def assert_converged(self) -> None:
        result = self.plan("--detailed-exitcode")
        assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- a pair and its nodes

@dataclass
class LocalPair:
    """A declared Pair of provider local, and direct access to its nodes (for checks and for breaking them)."""

    lab: Lab
    name: str
    nodes: list[str]
    replication: str
    spec: dict[str, Any]

    @property
    def ws(self) -> SpecDir:
        return self.lab.ws

    @property
    def spec_file(self) -> str:
        return f"pair-{self.name}.yaml"

    def spec_text(self, **changes: Any) -> str:
        """The Pair document, with `changes` to its spec (e.g. settings={...}, failover={...})."""
        spec = json.dumps({**self.spec, **changes})
        return f"kind: Pair\nmetadata: {{name: {self.name}}}\nspec: {spec}\n"

    def rewrite_spec(self, **changes: Any) -> None:
        """Change the Pair document for one test; ensure_healthy() puts the original back."""
        self.ws.write(self.spec_file, self.spec_text(**changes))

    @property
    def dir(self) -> Path:
        return self.lab.local_dir / self.name

    def node_dir(self, node: str) -> Path:
        return self.dir / node

    def etc(self, node: str) -> Path:
        return self.node_dir(node) / "etc"

    @property
    def ssh_port(self) -> int:
        return 22 if self.lab.network == "namespaces" else SSH_PORT

    def in_node(self, node: str, command: list[str]) -> list[str]:
        """`command` run where the node's processes run: inside its network namespace, if it has one."""
        if self.lab.network != "namespaces":
            return command
        return ["ip", "netns", "exec", f"pgaas-{self.address(node)}", *command]

    def address(self, node: str) -> str:
        """The node's address, from the sshd_config the provider wrote."""
        for line in (self.node_dir(node) / "ssh" / "sshd_config").read_text().splitlines():
            if line.startswith("ListenAddress "):
                return line.split()[1].rsplit(":", 1)[0]
        raise AssertionError(f"no ListenAddress in {node}'s sshd_config")

    @property
    def admin_password(self) -> str:
        return (self.dir / "admin-password").read_text().strip()

    @property
    def key_file(self) -> Path:
        return self.lab.local_dir / "id_ed25519"

    # -- SQL
    def connect(self, node: str, dbname: str = "postgres", timeout: int = 3) -> psycopg.Connection:
        return psycopg.connect(host=self.address(node), port=PG_PORT, user="postgres", password=self.admin_password,
                               dbname=dbname, connect_timeout=timeout, autocommit=True)

    def query(self, node: str, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(node, dbname) as conn:
            return conn.execute(sql, params or None).fetchall()  # type: ignore[arg-type]

    def execute(self, node: str, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> None:
        with self.connect(node, dbname) as conn:
            conn.execute(sql, params or None)  # type: ignore[arg-type]

    def value(self, node: str, sql: str, params: tuple[Any, ...] = (), dbname: str = "postgres") -> Any:
        rows = self.query(node, sql, params, dbname)
        assert len(rows) == 1, rows
        return rows[0][0]

    def role_of(self, node: str) -> str | None:
        """primary | standby | None (PostgreSQL does not answer)."""
        try:
            in_recovery = self.value(node, "SELECT pg_is_in_recovery()")
        except psycopg.OperationalError:
            return None
        return "standby" if in_recovery else "primary"

    def primary(self) -> str:
        roles = {node: self.role_of(node) for node in self.nodes}
        primaries = [n for n, r in roles.items() if r == "primary"]
        assert len(primaries) == 1, f"expected one primary, found {roles}"
        return primaries[0]

    def other(self, node: str) -> str:
        return next(n for n in self.nodes if n != node)

    def wait_primary(self, node: str, timeout: float = PROMOTION_TIMEOUT) -> None:
        wait_until(lambda: self.role_of(node) == "primary", timeout, f"{node} to be promoted", interval=0.1)

    def wait_promoted(self, node: str, timeout: float = PROMOTION_TIMEOUT) -> None:
        """repmgrd promoted `node` and its promote hook ran: synchronous_standby_names is cleared."""
        self.wait_primary(node, timeout)
        wait_until(lambda: self.value(node, "SHOW synchronous_standby_names") == "", 10,
                   f"the promote hook of {node} to clear synchronous_standby_names", interval=0.1)

    def replication_rows(self, primary: str) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.query(primary, "SELECT application_name, state, sync_state FROM pg_stat_replication")]  # type: ignore[misc]

    def assert_whole(self, primary: str | None = None) -> None:
        """Both nodes up, the standby streaming from the primary, synchronous when the spec says so."""
        primary = primary or self.primary()
        standby = self.other(primary)
        assert self.role_of(standby) == "standby"
        rows = self.replication_rows(primary)
        expected_sync = "sync" if self.replication == "synchronous" else "async"
        assert rows == [(standby, "streaming", expected_sync)], rows
        names = self.value(primary, "SHOW synchronous_standby_names")
        assert names == ("*" if self.replication == "synchronous" else ""), names

    # -- the server processes
    def postmaster_pid(self, node: str) -> int:
        return int((self.node_dir(node) / "data" / "postmaster.pid").read_text().split()[0])

    def stop_immediate(self, node: str) -> None:
        """What a power cut does to PostgreSQL: pg_ctl -m immediate."""
        run_checked(as_server_user([f"{PG_BIN}/pg_ctl", "-D", str(self.etc(node)), "-m", "immediate", "-w", "stop"]))

    def kill_postmaster(self, node: str) -> None:
        """kill -9 of the postmaster; its backends notice and exit on their own."""
        pid = self.postmaster_pid(node)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 10, f"postmaster {pid} of {node} to die", interval=0.02)
        wait_until(lambda: not listening(self.address(node), PG_PORT), 10, f"{node} to stop listening", interval=0.05)

    def start_postgres(self, node: str) -> None:
        log = self.node_dir(node) / "log" / "postgresql.log"
        run_checked(self.in_node(node, as_server_user([f"{PG_BIN}/pg_ctl", "-D", str(self.etc(node)), "-l", str(log),
                                                       "-w", "-t", "60", "start"])))

    def stop_postgres(self, node: str) -> None:
        run_checked(as_server_user([f"{PG_BIN}/pg_ctl", "-D", str(self.etc(node)), "-m", "fast", "-w", "stop"]))

    def repmgr(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        etc = self.etc(node)
        return run_checked(self.in_node(node, as_server_user(["env", f"PGPASSFILE={etc}/.pgpass", REPMGR, "-f",
                                                              str(etc / "repmgr.conf"), *args])))

    # -- sshd
    def sshd_pid(self, node: str) -> int | None:
        try:
            pid = int((self.node_dir(node) / "ssh" / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def stop_sshd(self, node: str) -> None:
        pid = self.sshd_pid(node)
        assert pid is not None, f"sshd of {node} is not running"
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), 10, f"sshd of {node} to exit", interval=0.02)
        wait_until(lambda: not listening(self.address(node), self.ssh_port), 10, f"{node}:{self.ssh_port} to close",
                   interval=0.02)

    def start_sshd(self, node: str) -> None:
        """Start the node's sshd the way provider local does."""
        ssh = self.node_dir(node) / "ssh"
        run_checked(self.in_node(node, [SSHD, "-f", str(ssh / "sshd_config"), "-E", str(ssh / "sshd.log")]))
        wait_until(lambda: listening(self.address(node), self.ssh_port), 10, f"sshd of {node} to listen", interval=0.02)
        wait_until(lambda: self.sshd_pid(node), 10, f"sshd of {node} to write its pid file", interval=0.02)

    def logs(self, node: str, lines: int = 30) -> str:
        out = []
        for name in ("postgresql.log", "repmgr.log", "repmgrd.out"):
            path = self.node_dir(node) / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {node}/log/{name}\n" + "\n".join(tail))
        return "\n".join(out)

    # -- whole-pair helpers
    def ensure_healthy(self) -> None:
        """Back to the baseline specs, created and whole, with a plan that has no changes; recreate if need be."""
        self.ws.reset()
        problems = []
        for _ in range(2):
            plan = self.ws.plan("--detailed-exitcode")
            if plan.exit_code == 2:
                applied = self.ws.apply()
                if applied.exit_code != 0:
                    problems.append(applied.output)
                plan = self.ws.plan("--detailed-exitcode")
            if plan.exit_code == 0:
                try:
                    self.assert_whole()
                    return
                except (AssertionError, psycopg.Error) as exc:
                    problems.append(str(exc))
            else:
                problems.append(plan.output)
            self.lab.destroy_pair(self)  # something a test left behind: start afresh
        raise AssertionError(f"pair {self.name} could not be made healthy:\n" + "\n".join(problems))


# ---------------------------------------------------------------- helper sshd for provider existing

@dataclass
class HelperSshd:
    """A second sshd on a node's address (another port), letting in the workspace key, with an environment
    set by the server (SetEnv): PGPASSFILE, as an operator's ~/.pgpass would be, or a PATH without repmgr."""

    root: Path
    address: str
    port: int
    authorized_keys: Path
    env: dict[str, str]
    pid: int | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / "ssh_host_ed25519_key"
        if not key.exists():
            run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        setenv = " ".join(f"{k}={v}" for k, v in self.env.items())
        (self.root / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {server_os_user()}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "LogLevel ERROR",
            *( [f"SetEnv {setenv}"] if setenv else [] ),
        ]) + "\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run_checked([SSHD, "-f", str(self.root / "sshd_config"), "-E", str(self.root / "sshd.log")])
        wait_until(lambda: listening(self.address, self.port), 10, f"helper sshd on {self.address}:{self.port}", 0.02)
        # sshd listens before it writes its pid file (it daemonizes in between)
        pid_file = self.root / "sshd.pid"
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "helper sshd's pid file", 0.02)
        self.pid = int(pid_file.read_text().strip())

    def stop(self) -> None:
        if self.pid is not None and alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            wait_until(lambda: not alive(self.pid or 0), 10, "helper sshd to exit", 0.02)
        self.pid = None


# ---------------------------------------------------------------- namespaces

def remove_namespace_network(subnet: str) -> None:
    """Whatever a lab's destroy left of its namespace network: each namespace's processes, the namespace, the
    bridge. Only names derived from the lab's own subnet are touched."""
    from ipaddress import IPv4Network

    from providers.netns import NamespaceNetwork, namespace_exists, namespace_pids, kill_all

    net = NamespaceNetwork(IPv4Network(subnet))
    for address in net.node_addresses():
        if namespace_exists(net.namespace(address)):
            kill_all(namespace_pids(net.namespace(address)))
            net.remove_node(address)
    subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)


def namespace_leftovers(subnet: str) -> list[str]:
    """The lab's namespaces and bridge that still exist."""
    from ipaddress import IPv4Network

    from providers.netns import NamespaceNetwork, namespace_exists

    net = NamespaceNetwork(IPv4Network(subnet))
    found = [net.namespace(a) for a in net.node_addresses() if namespace_exists(net.namespace(a))]
    if subprocess.run(["ip", "link", "show", "dev", net.bridge], capture_output=True, check=False).returncode == 0:
        found.append(net.bridge)
    return found


# ---------------------------------------------------------------- the lab

@dataclass
class Lab:
    """One test module's (or test's) pgaasctl workspace with provider local, under /dev/shm."""

    base: Path
    local_addresses: str
    network: str = "loopback"  # or "namespaces": a namespace per node on a bridge of `subnet`
    subnet: str = ""
    ws: SpecDir = field(init=False)
    pairs: dict[str, LocalPair] = field(default_factory=dict)
    helpers: list[HelperSshd] = field(default_factory=list)

    def __post_init__(self) -> None:
        workspace = {"local_dir": str(self.local_dir), "local_addresses": self.local_addresses, "network": self.network,
                     "tls": {"ca_dir": str(self.base / "tls")}}  # outside the specs, which reset() empties
        if self.subnet:
            workspace["subnet"] = self.subnet
        self.ws = SpecDir(self.base / "ws", workspace)

    @property
    def local_dir(self) -> Path:
        return self.base / "local"

    @classmethod
    @contextmanager
    def open(cls, tag: str, slot: int, network: str = "loopback") -> Iterator[Lab]:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        base = Path(tempfile.mkdtemp(prefix=f"pgaasctl-it-{tag}-{worker}-", dir="/dev/shm"))
        base.chmod(0o755)  # the postgres OS user must reach local_dir
        lab = cls(base=base, local_addresses=slot_range(slot), network=network,
                  subnet=slot_subnet(slot) if network == "namespaces" else "")
        try:
            yield lab
        finally:
            lab.close()

    def add_pair(self, name: str, replication: str = "synchronous", nodes: tuple[str, ...] = ("a", "b"),
                 failover: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                 **extra: Any) -> LocalPair:
        node_names = [f"{name}-{n}" for n in nodes]
        spec: dict[str, Any] = {
            "provider": "local", "replication": replication, "nodes": [{"name": n} for n in node_names],
            "deletion_protection": False,
        }
        if failover:
            spec["failover"] = failover
        if settings:
            spec["settings"] = settings
        spec.update(extra)
        pair = LocalPair(lab=self, name=name, nodes=node_names, replication=replication, spec=spec)
        self.ws.write(pair.spec_file, pair.spec_text(), baseline=True)
        self.pairs[name] = pair
        return pair

    def spec_dir(self, name: str, workspace: dict[str, Any] | None = None) -> SpecDir:
        """Another workspace (its own specs and store) in the lab, e.g. provider existing pointed at the nodes."""
        root = self.base / name
        if root.exists():
            shutil.rmtree(root)
        return SpecDir(root, workspace)

    def helper_sshd(self, name: str, address: str, port: int, env: dict[str, str]) -> HelperSshd:
        helper = HelperSshd(root=self.base / "helpers" / name, address=address, port=port,
                            authorized_keys=Path(f"{self.local_dir / 'id_ed25519'}.pub"), env=env)
        self.helpers.append(helper)
        helper.start()
        return helper

    def destroy_pair(self, pair: LocalPair) -> None:
        """pgaasctl destroy; then anything left of the pair's processes and files goes by force."""
        result = self.ws.destroy()
        leftovers = processes_mentioning(str(pair.dir) + "/")
        if leftovers:
            kill_processes_mentioning(str(pair.dir) + "/")
        shutil.rmtree(pair.dir, ignore_errors=True)
        assert result.exit_code == 0, result.output

    def close(self) -> None:
        errors = []
        for helper in self.helpers:
            helper.stop()
        if self.pairs:
            self.ws.reset()
            result = self.ws.destroy()
            if result.exit_code != 0:
                errors.append(result.output)
        kill_processes_mentioning(str(self.base))
        if self.subnet:
            remove_namespace_network(self.subnet)
        shutil.rmtree(self.base, ignore_errors=True)
        if errors:
            raise AssertionError("pgaasctl destroy failed at the end of the module:\n" + "\n".join(errors))


# ---------------------------------------------------------------- a client writing through the connection URI

class Writer:
    """Commits a numbered row every few ms through a connection string, recording a row only after COMMIT
    returned; reconnects after errors (a failover), so the rows acknowledged can be checked afterwards."""

    def __init__(self, conninfo: str, password: str, table: str) -> None:
        self.conninfo, self.password, self.table = conninfo, password, table
        self.acked: list[int] = []
        self.servers: list[str] = []  # inet_server_addr() of each connection made
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the writer is stuck in a commit"

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        number = 0
        while not self._stop.is_set():
            number += 1
            try:
                if conn is None:
                    conn = psycopg.connect(self.conninfo, password=self.password, autocommit=True)
                    self.servers.append(str(conn.execute("SELECT inet_server_addr()").fetchone()[0]))  # type: ignore[index]
                conn.execute(f"INSERT INTO {self.table} (n) VALUES (%s)", (number,))
                self.acked.append(number)
                time.sleep(0.01)  # pacing the writer, not synchronisation
            except psycopg.Error as exc:
                self.errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)  # pacing reconnects
        if conn is not None:
            conn.close()

    def wait_for_more(self, count: int, timeout: float) -> None:
        """Wait until `count` more rows than now are acknowledged."""
        target = len(self.acked) + count
        wait_until(lambda: len(self.acked) >= target, timeout,
                   f"{count} more commits from the writer (errors: {self.errors[-3:]})", interval=0.05)
