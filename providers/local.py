"""provider: local — each node is a host on this machine with its own sshd and PostgreSQL.

Two networks (Workspace spec.network):
  namespaces  (root; the default then) each node in its own network namespace on a bridge of the workspace
              subnet (providers/netns.py); sshd on port 22 of the node's address. A virtual IP works here.
  loopback    (anyone) each node a loopback address (local_addresses) with sshd on port 2222. No virtual IP.
A node keeps the network it was made on: its recorded address says which.

Layout of a node, under Workspace.local_dir/PAIR/NODE:
  ssh/      sshd_config, the host key, authorized_keys, sshd.pid (owned by the invoking user)
  data/     the PostgreSQL data directory  \\
  etc/      postgresql.conf, pg_hba.conf,    > owned by the server's OS user
            repmgr.conf, promote hook       |
  run/      unix sockets, repmgrd.pid       |
  log/      postgresql.log, repmgr.log     /
Beside the pairs, local_dir/.initdb-cache keeps one initdb per PostgreSQL build, copied into each new primary
with an identity of its own (pgaasctl/hosts/initdb_cache.py); it goes with the last pair destroyed there.
The server's OS user is `postgres` when pgaasctl runs as root (PostgreSQL refuses root), else the
invoking user; sshd lets only that user in, with the workspace key (local_dir/id_ed25519).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pgaasctl.errors import PgaasError
from pgaasctl.spec.models import LocalPairSpec, PairDoc, WorkspaceSpec
from pgaasctl.store import Store
from providers.base import Host, HostLayout
from providers.secrets_files import generated_secret
from pgaasctl.hosts.guard import vip_timeline_file, vip_track_file
from pgaasctl.hosts.initdb_cache import LOCK_FILE
from pgaasctl.hosts.keepalived import keepalived_conf
from providers.netns import NamespaceNetwork, alive, kill_all, namespace_exists, namespace_pids

PG_BIN = "/usr/lib/postgresql/15/bin"
SSHD = "/usr/sbin/sshd"
KEEPALIVED = "/usr/sbin/keepalived"
PG_PORT = 5432
SSH_PORT = 2222  # loopback nodes; namespace nodes use 22
NAMESPACE_SSH_PORT = 22
START_TIMEOUT = 15.0
INITDB_CACHE = ".initdb-cache"


_MAKING_HOSTS = threading.Lock()


def server_os_user() -> str:
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


class LocalProvider:
    name = "local"

    def __init__(self, workspace: WorkspaceSpec, store: Store) -> None:
        # resolved against the workspace root, or from $PGAASCTL_LOCAL_DIR, by pgaasctl.locate
        self.root = Path(workspace.local_dir).absolute()
        self.store = store
        self.local_addresses = workspace.local_addresses
        self._recorded_roots: dict[str, str] = {}
        self.os_user = server_os_user()
        self.network = workspace.network if workspace.network != "auto" else (
            "namespaces" if os.geteuid() == 0 else "loopback")
        self.net = NamespaceNetwork(workspace.subnet_network)

    @property
    def candidates(self) -> Iterator[str]:
        """The loopback addresses of local_addresses, in order (made on demand: a plan never needs them)."""
        first, last = (int(ipaddress.IPv4Address(p.strip())) for p in self.local_addresses.split("-"))
        return (str(ipaddress.IPv4Address(i)) for i in range(first, last + 1))

    @staticmethod
    def in_namespace(address: str) -> bool:
        """A node made on the namespace network (its address is not a loopback one)."""
        return bool(address) and not ipaddress.IPv4Address(address).is_loopback

    def namespace_of(self, address: str) -> str | None:
        return self.net.namespace(address) if self.in_namespace(address) else None

    # -- paths: a pair's nodes stay under the local_dir they were made in, whatever local_dir says later
    def pair_root(self, pair: str) -> Path:
        recorded = self._recorded_roots.get(pair) or self.store.local_root(pair)
        if recorded:  # a pair's recorded root never changes while it exists: asked of the store once
            self._recorded_roots[pair] = recorded
        return Path(recorded) if recorded else self.root

    def pair_dir_source(self, pair: str, current: str) -> str:
        """Which setting says where the pair's nodes live, for `status`."""
        if self.store.local_root(pair) and self.pair_root(pair) != self.root:
            return f"recorded when its nodes were made; local_dir now says {self.root}"
        return current

    def node_dir(self, pair: str, node: str) -> Path:
        return self.pair_root(pair) / pair / node

    def key_file(self, pair: str) -> Path:
        return self.pair_root(pair) / "id_ed25519"

    def admin_password_file(self, pair: str) -> Path:
        """The superuser password pgaasctl generated for the pair (0600, beside the nodes; never in the store)."""
        return self.pair_root(pair) / pair / "admin-password"

    def admin_password(self, pair: str, create: bool = False) -> str | None:
        return generated_secret(self.admin_password_file(pair), self.pair_root(pair), create, f"pair {pair!r}")

    def initdb_cache(self, pair: str) -> Path:
        """Where this machine keeps one initdb per PostgreSQL build for its nodes to copy (about 25 MB each; a
        new build makes a new one; safe to delete while no apply runs)."""
        return self.pair_root(pair) / INITDB_CACHE

    def layout(self, pair: str, node: str) -> HostLayout:
        base = self.node_dir(pair, node)
        return HostLayout(
            bin_dir=PG_BIN, data_dir=str(base / "data"), config_dir=str(base / "etc"), socket_dir=str(base / "run"),
            log_dir=str(base / "log"),
        )

    # -- the protocol
    def hosts(self, pair: PairDoc) -> list[Host]:
        assert isinstance(pair.spec, LocalPairSpec)
        hosts = [self._host(pair.metadata.name, node.name) for node in pair.spec.nodes]
        for host in hosts:
            if host.exists and host.namespace:
                host.virtual_ip_state = self._virtual_ip_state(pair, host.node)
            elif pair.spec.virtual_ip is not None:  # not created yet, or on the loopback network (refused)
                host.virtual_ip_state = "loopback" if host.exists else "stopped"
        return hosts

    # -- the virtual IP: keepalived in each node's namespace, run as root (it adds and removes addresses)
    def _keepalived_dir(self, pair: str, node: str) -> Path:
        return self.node_dir(pair, node) / "keepalived"

    def keepalived_conf(self, pair: PairDoc, node: str) -> str | None:
        """The configuration the spec asks for on `node`, or None when the pair has no virtual IP."""
        assert isinstance(pair.spec, LocalPairSpec)
        vip = pair.spec.virtual_ip
        if vip is None:
            return None
        name = pair.metadata.name
        addresses = {n: a for a, (_, n, _) in self.store.local_addresses(name).items()}
        if node not in addresses:
            return None
        peers = [a for n, a in sorted(addresses.items()) if n != node and n in {x.name for x in pair.spec.nodes}]
        layout = self.layout(name, node)
        return keepalived_conf(name, node, addresses[node], peers, vip, self.net.subnet, vip_track_file(layout),
                               vip_timeline_file(layout))

    def _keepalived_pid(self, pair: str, node: str) -> int | None:
        try:
            pid = int((self._keepalived_dir(pair, node) / "keepalived.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        conf = str(self._keepalived_dir(pair, node) / "keepalived.conf")
        return pid if alive(pid) and f" {conf} " in _command_line(pid) else None

    def _virtual_ip_state(self, pair: PairDoc, node: str) -> str | None:
        wanted = self.keepalived_conf(pair, node)
        running = self._keepalived_pid(pair.metadata.name, node) is not None
        if wanted is None and pair.spec.virtual_ip is not None:  # type: ignore[union-attr]
            return "stopped"  # a node without an address yet
        if wanted is None:
            return "unwanted" if running else None
        conf = self._keepalived_dir(pair.metadata.name, node) / "keepalived.conf"
        current = conf.exists() and conf.read_text() == wanted
        if not running:
            return "stopped"
        return "current" if current else "stale"

    def start_virtual_ip(self, pair: PairDoc, node: str) -> None:
        """keepalived on `node` with the configuration the spec asks for (restarted when it ran another one)."""
        name = pair.metadata.name
        wanted = self.keepalived_conf(pair, node)
        if wanted is None:
            self.stop_virtual_ip(pair, node)
            return
        address = next(a for a, (_, n, _) in self.store.local_addresses(name).items() if n == node)
        if not self.in_namespace(address):
            raise PgaasError(f"pair {name}: node {node} is on the loopback network, where a virtual IP steers nothing",
                             "Recreate the pair on the namespace network (pgaasctl run as root), or remove virtual_ip.")
        if self._virtual_ip_state(pair, node) == "current":
            return
        self.stop_virtual_ip(pair, node)
        directory = self._keepalived_dir(name, node)
        directory.mkdir(exist_ok=True)
        (directory / "keepalived.conf").write_text(wanted)
        layout = self.layout(name, node)
        for path, value in ((Path(vip_track_file(layout)), "1"), (Path(vip_timeline_file(layout)), "0")):
            if not path.exists():  # ineligible until the guard says otherwise; the guard (the server's user) owns it
                path.write_text(f"{value}\n")
                self._give_to_server_user([path])
        with open(directory / "keepalived.log", "ab") as log:
            # in the foreground (-n) to keep its log on stdout, detached by setsid -f: not pgaasctl's child
            subprocess.run(
                ["setsid", "-f", *self.net.exec_prefix(address), KEEPALIVED, "-n", "-l", "-G", "-D", "-P",
                 "-f", str(directory / "keepalived.conf"), "-p", str(directory / "keepalived.pid"),
                 "-r", str(directory / "vrrp.pid"), "-c", str(directory / "checkers.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self._keepalived_pid(name, node) is None:
            if time.monotonic() > deadline:
                tail = (directory / "keepalived.log").read_text(errors="replace")[-500:]
                raise PgaasError(f"node {node} of pair {name}: keepalived did not start. {tail}")
            time.sleep(0.02)  # polling for its pid file

    def stop_virtual_ip(self, pair: PairDoc, node: str) -> None:
        pid = self._keepalived_pid(pair.metadata.name, node)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # it removes the address it holds on the way out
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for it to exit
        if alive(pid):
            kill_all([pid])

    def virtual_ip_holder(self, pair: PairDoc) -> str | None:
        """The node whose namespace holds the pair's virtual IP now, or None."""
        assert isinstance(pair.spec, LocalPairSpec)
        if pair.spec.virtual_ip is None:
            return None
        wanted = str(pair.spec.virtual_ip)
        for address, (_, node, _) in self.store.local_addresses(pair.metadata.name).items():
            if not self.in_namespace(address) or not namespace_exists(self.net.namespace(address)):
                continue
            shown = subprocess.run(["ip", "-n", self.net.namespace(address), "-4", "-o", "addr", "show"],
                                   capture_output=True, text=True, check=False).stdout
            if f" {wanted}/" in shown:
                return node
        return None

    def witness_host(self, pair: PairDoc) -> Host | None:
        assert isinstance(pair.spec, LocalPairSpec)
        if pair.spec.witness is None:
            return None
        host = self._host(pair.metadata.name, pair.spec.witness.name)
        host.witness = True
        return host

    def undeclared_hosts(self, pair: PairDoc) -> list[Host]:
        assert isinstance(pair.spec, LocalPairSpec)
        declared = {node.name for node in pair.spec.nodes} | ({pair.spec.witness.name} if pair.spec.witness else set())
        claimed = sorted(n for _, n, _ in self.store.local_addresses(pair.metadata.name).values())
        return [self._host(pair.metadata.name, node) for node in claimed if node not in declared]

    def _host(self, pair: str, node: str) -> Host:
        claimed = {n: (address, port) for address, (_, n, port) in self.store.local_addresses(pair).items()}
        address, ssh_port = claimed.get(node, ("", SSH_PORT))
        exists = bool(address) and (self.node_dir(pair, node) / "ssh" / "sshd_config").exists()
        layout = self.layout(pair, node)
        cache = self.initdb_cache(pair)  # deleted by hand: initdb runs on the node; the next host made makes it again
        return Host(
            pair=pair, node=node, address=address, pg_port=PG_PORT, ssh_port=ssh_port,
            ssh_user=self.os_user, key_file=str(self.key_file(pair)), repmgr_conf=layout.repmgr_conf, bin_dir=PG_BIN,
            layout=layout, exists=exists, running=exists and self._sshd_running(pair, node),
            namespace=self.namespace_of(address),
            own_network=str(self.net.subnet) if self.in_namespace(address) else "127.0.0.0/8",
            initdb_cache=str(cache) if cache.is_dir() else None,
        )

    def create_hosts(self, pair: PairDoc, nodes: list[str]) -> list[Host]:
        # pairs are applied in parallel: the machine's shared parts (the workspace key, the bridge, the addresses)
        # are made by one pair at a time; each host's making is quick, its bootstrap (after this) runs in parallel
        with _MAKING_HOSTS:
            return self._create_hosts(pair, nodes)

    def _create_hosts(self, pair: PairDoc, nodes: list[str]) -> list[Host]:
        name = pair.metadata.name
        root = self.pair_root(name)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PgaasError(f"cannot create local_dir {root}: {exc.strerror}",
                             "Set Workspace spec.local_dir to a directory pgaasctl can write.") from None
        self._check_prerequisites(root)
        self._ensure_client_key(name)
        self._make_initdb_cache(name)
        self.store.record_local_root(name, str(root))
        assert isinstance(pair.spec, LocalPairSpec)
        vip = str(pair.spec.virtual_ip) if pair.spec.virtual_ip else None
        if vip and self.network != "namespaces":
            raise PgaasError(f"pair {name}: a virtual IP needs the namespace network, and this workspace uses loopback "
                             "addresses", "Run pgaasctl as root (Workspace spec.network: namespaces), or remove virtual_ip.")
        for node in nodes:
            self._refuse_node_in_use(name, node)
            address = self._claim_address(name, node, avoid={vip} if vip else set())
            self._make_node(name, node, address)
            self._start_sshd(name, node, address)
        self._refuse_blocked_bridge(name)
        return [h for h in self.hosts(pair) if h.node in nodes]

    def _refuse_blocked_bridge(self, pair: str) -> None:
        """Two namespace nodes that cannot reach each other's sshd: the bridge drops their traffic."""
        addresses = sorted(a for a in self.store.local_addresses(pair) if self.in_namespace(a))
        if len(addresses) < 2:
            return
        if not self.net.reachable(addresses[0], addresses[1], NAMESPACE_SSH_PORT):
            raise PgaasError(
                f"pair {pair}: node {addresses[0]} cannot reach node {addresses[1]} across bridge {self.net.bridge}: "
                "something on this machine drops bridged traffic (a FORWARD DROP firewall policy, as Docker sets, "
                "with net.bridge.bridge-nf-call-iptables=1)",
                f"Allow it: iptables -I FORWARD -i {self.net.bridge} -o {self.net.bridge} -j ACCEPT "
                "(or sysctl -w net.bridge.bridge-nf-call-iptables=0), then run apply again.",
            )

    def start_hosts(self, pair: PairDoc, nodes: list[str]) -> None:
        claimed = {n: a for a, (_, n, _) in self.store.local_addresses(pair.metadata.name).items()}
        for node in nodes:
            self._start_sshd(pair.metadata.name, node, claimed[node])

    def destroy_hosts(self, pair: PairDoc) -> None:
        name = pair.metadata.name
        nodes = [node for _, node, _ in self.store.local_addresses(name).values()]
        # failover off everywhere first: a standby must not start promoting itself while its primary is stopped
        for node in nodes:
            kill_all([pid for pid in _node_processes(self.node_dir(name, node))
                      if _program(pid) in ("repmgrd", "sh", "bash", "repmgr")])
        for node in nodes:
            self.remove_host(pair, node)
        self.admin_password_file(name).unlink(missing_ok=True)
        pair_dir = self.pair_root(name) / name
        if pair_dir.exists() and not any(pair_dir.iterdir()):
            pair_dir.rmdir()
        self._remove_unused_initdb_cache(self.pair_root(name))
        self.store.forget_local_root(name)
        self._recorded_roots.pop(name, None)

    def remove_host(self, pair: PairDoc, node: str) -> None:
        name = pair.metadata.name
        self._stop_node(name, node)
        shutil.rmtree(self.node_dir(name, node), ignore_errors=True)
        if self.node_dir(name, node).exists():  # something still wrote into it: stop it again, then remove
            self._stop_node(name, node)
            shutil.rmtree(self.node_dir(name, node), ignore_errors=True)
        for address, (_, claimed_node, ssh_port) in self.store.local_addresses(name).items():
            if claimed_node == node:
                if self.in_namespace(address):
                    self.net.remove_node(address)
                self.store.forget_host_key(f"{address}:{ssh_port}")
                self.store.release_local_address(address)
        if self.network == "namespaces" or any(self.in_namespace(a) for a in self.store.local_addresses()):
            if not any(self.in_namespace(a) and ipaddress.IPv4Address(a) in self.net.subnet
                       for a in self.store.local_addresses()):
                self.net.remove_bridge_if_unused()

    # -- creation
    def _check_prerequisites(self, root: Path) -> None:
        missing = [p for p in (SSHD, f"{PG_BIN}/postgres", "/usr/bin/repmgr", "/usr/bin/ssh-keygen") if not Path(p).exists()]
        if missing:
            raise PgaasError(
                f"provider local needs {', '.join(missing)}",
                "Install them with: apt-get install -y postgresql-15 postgresql-15-repmgr openssh-server (make setup does it)",
            )
        if os.geteuid() == 0:
            self._unlock_account()
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
            if not self._reachable_by_server_user(root):
                raise PgaasError(
                    f"the postgres OS user cannot reach {root}",
                    "Set Workspace spec.local_dir to a directory it can traverse (e.g. /var/lib/pgaasctl).",
                )

    def _unlock_account(self) -> None:
        # sshd refuses a locked account ('!' in /etc/shadow); '*' means no password, key login only
        status = subprocess.run(["passwd", "-S", self.os_user], capture_output=True, text=True, check=False).stdout.split()
        if len(status) > 1 and status[1] == "L":
            subprocess.run(["usermod", "-p", "*", self.os_user], check=True, capture_output=True)

    def _reachable_by_server_user(self, path: Path) -> bool:
        path.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(["runuser", "-u", self.os_user, "--", "test", "-x", str(path)], check=False)
        return probe.returncode == 0

    def _ensure_client_key(self, pair: str) -> None:
        key = self.key_file(pair)
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgaasctl", "-f", str(key)], check=True)

    def _refuse_node_in_use(self, pair: str, node: str) -> None:
        """Never make a host over a node directory that lives: a running process, or a data directory, means
        it belongs to a pair this store does not know (another store, a lost one, another local_dir setting)."""
        base = self.node_dir(pair, node)
        busy = _node_processes(base)
        if busy:
            raise PgaasError(
                f"node {node} of pair {pair}: {base} is in use by {_describe_process(busy[0])}; "
                "pgaasctl will not create a host over it",
                "This node belongs to a pair this state store does not record. Use the workspace (and state store) "
                "that created it, or stop that pair first (`pgaasctl status` shows where each pair's nodes live).",
            )
        if (base / "data" / "PG_VERSION").exists():
            raise PgaasError(
                f"node {node} of pair {pair}: {base / 'data'} already holds a PostgreSQL data directory; "
                "pgaasctl will not create a host over it",
                "Use the workspace (and state store) that created it, or move the directory away if it is not needed.",
            )

    def _claim_address(self, pair: str, node: str, avoid: set[str]) -> str:
        for address, (p, n, port) in self.store.local_addresses(pair).items():
            if (p, n) == (pair, node):
                if self.in_namespace(address):
                    self._refuse_busy_namespace(pair, node, address)
                    return address
                for port in (SSH_PORT, PG_PORT):
                    holder = _listener(address, port)
                    if holder is not None:
                        raise PgaasError(
                            f"node {node} of pair {pair}: its address {address}:{port} is in use by "
                            f"{_describe_process(holder)}; pgaasctl will not create a host there",
                            "Stop that process, or release the address with `pgaasctl destroy` of the pair that holds it.",
                        )
                return address
        taken = set(self.store.local_addresses()) | avoid
        if self.network == "namespaces":
            self.net.ensure_bridge()  # refuses a subnet the machine routes elsewhere, before any address is taken
            for address in self.net.node_addresses():
                if address in taken or namespace_exists(self.net.namespace(address)) or not _free(address, SSH_PORT):
                    continue
                if self.store.claim_local_address(address, pair, node, NAMESPACE_SSH_PORT):
                    return address
            raise PgaasError(f"no free address left in Workspace subnet {self.net.subnet} for node {node} of pair {pair}")
        for address in self.candidates:
            if address in taken or not _free(address, PG_PORT) or not _free(address, SSH_PORT):
                continue
            if self.store.claim_local_address(address, pair, node, SSH_PORT):
                return address
        raise PgaasError(f"no free loopback address left in Workspace local_addresses for node {node} of pair {pair}")

    def _refuse_busy_namespace(self, pair: str, node: str, address: str) -> None:
        namespace = self.net.namespace(address)
        busy = [pid for pid in namespace_pids(namespace) if pid != os.getpid()] if namespace_exists(namespace) else []
        if busy and not self._sshd_running(pair, node):
            raise PgaasError(
                f"node {node} of pair {pair}: its namespace {namespace} runs {_describe_process(busy[0])}; "
                "pgaasctl will not create a host there",
                f"Stop that process (ip netns pids {namespace} lists them), or destroy the pair that holds it.",
            )

    def _make_node(self, pair: str, node: str, address: str) -> None:
        base = self.node_dir(pair, node)
        ssh = base / "ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "etc", "run", "log"):
            (base / sub).mkdir(exist_ok=True)
            os.chmod(base / sub, 0o700)  # the socket (trusted locally), passwords and data: the server's user alone
        self._give_to_server_user([base / sub for sub in ("data", "etc", "run", "log")])
        host_key = ssh / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        (ssh / "authorized_keys").write_text(Path(f"{self.key_file(pair)}.pub").read_text())
        ssh_port = NAMESPACE_SSH_PORT if self.in_namespace(address) else SSH_PORT
        (ssh / "sshd_config").write_text("\n".join([
            f"ListenAddress {address}:{ssh_port}",
            f"HostKey {host_key}",
            f"PidFile {ssh / 'sshd.pid'}",
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
            f"AllowUsers {self.os_user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "StrictModes no",  # the key files belong to the invoking user, not the login user
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
        ]) + "\n")

    def _make_initdb_cache(self, pair: str) -> None:
        cache = self.initdb_cache(pair)
        if cache.is_dir():
            return
        cache.mkdir(mode=0o700, exist_ok=True)
        lock = cache / LOCK_FILE
        lock.touch(mode=0o600)
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.os_user)
            for path in (cache, lock):
                os.chown(path, user.pw_uid, user.pw_gid)

    @staticmethod
    def _remove_unused_initdb_cache(root: Path) -> None:
        """The initdb cache goes with the last pair of its local_dir, unless an apply copies from it right now."""
        cache = root / INITDB_CACHE
        if not cache.is_dir() or any(p.is_dir() and p != cache for p in root.iterdir()):
            return
        with open(cache / LOCK_FILE, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            shutil.rmtree(cache, ignore_errors=True)

    def _give_to_server_user(self, paths: list[Path]) -> None:
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(self.os_user)
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)
        for parent in {p.parent for p in paths}:
            os.chmod(parent, 0o755)

    def _sshd_pid(self, pair: str, node: str) -> int | None:
        """The node's sshd, if running: the pid file is checked against the process's command line."""
        ssh = self.node_dir(pair, node) / "ssh"
        try:
            pid = int((ssh / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) and f" {ssh / 'sshd_config'} " in _command_line(pid) else None

    def _sshd_running(self, pair: str, node: str) -> bool:
        return self._sshd_pid(pair, node) is not None

    def _start_sshd(self, pair: str, node: str, address: str) -> None:
        if self._sshd_running(pair, node):
            return
        ssh = self.node_dir(pair, node) / "ssh"
        prefix: list[str] = []
        port = SSH_PORT
        if self.in_namespace(address):
            self.net.ensure_node(address)  # again after a reboot, which takes namespaces and bridges away
            prefix, port = self.net.exec_prefix(address), NAMESPACE_SSH_PORT
        result = subprocess.run([*prefix, SSHD, "-f", str(ssh / "sshd_config"), "-E", str(ssh / "sshd.log")],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PgaasError(f"node {node} of pair {pair}: sshd did not start on {address}:{port}: {result.stderr.strip()}")
        deadline = time.monotonic() + START_TIMEOUT
        # listening, and its pid file written (sshd daemonizes between the two): then it counts as running
        while _free(address, port) or not self._sshd_running(pair, node):
            if time.monotonic() > deadline:
                log = (ssh / "sshd.log").read_text()[-500:] if (ssh / "sshd.log").exists() else ""
                raise PgaasError(f"node {node} of pair {pair}: sshd does not answer on {address}:{port}. {log}")
            time.sleep(0.02)  # polling the port sshd is about to bind

    # -- destruction
    def _stop_node(self, pair: str, node: str) -> None:
        """Stop this node's processes, found by their own command lines and nothing else. PostgreSQL gets an
        immediate shutdown first: a SIGKILLed postmaster leaves its shared memory segments in /dev/shm."""
        base = self.node_dir(pair, node)
        if (base / "data" / "postmaster.pid").exists():
            command = [f"{PG_BIN}/pg_ctl", "-D", str(base / "etc"), "-m", "immediate", "-w", "-t", "10", "stop"]
            if os.geteuid() == 0:
                command = ["runuser", "-u", self.os_user, "--", *command]
            subprocess.run(command, capture_output=True, check=False, timeout=30)
        # a command under way over SSH (an initdb, a base backup) outlives its sshd session's parent: kill until
        # nothing of the node runs, so nothing writes into the directory removed next
        for _ in range(5):
            pids = _node_processes(base)
            if not pids:
                break
            kill_all(pids)


NODE_PROGRAMS = ("sshd", "postgres", "repmgrd", "repmgr", "keepalived", "sh", "bash", "psql", "pg_ctl", "pg_rewind",
                 "pg_basebackup", "initdb")


def _node_processes(base: Path) -> list[int]:
    """Processes started for the node at `base`, one of pgaasctl's programs run on one of the node's files (its
    sshd, PostgreSQL, repmgrd, the guard, keepalived, and a promote hook or repmgr command under way)."""
    own = (f" {base}/", f"={base}/")
    mentioned = f"{base}/".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        if mentioned not in raw:  # most processes of the machine: no need to look closer
            continue
        command = _padded(raw)
        if _program(int(name), command) in NODE_PROGRAMS and any(mark in command for mark in own):
            found.append(int(name))
    return found


def _program(pid: int, command: str | None = None) -> str:
    command = _command_line(pid) if command is None else command
    return os.path.basename(command.split()[0]).rstrip(":") if command.strip() else ""


def _describe_process(pid: int) -> str:
    command = _command_line(pid).strip()
    return f"pid {pid} ({command[:120]})" if command else f"pid {pid}"


def _listener(address: str, port: int) -> int | None:
    """The pid of the process listening on address:port (IPv4), or None; found through /proc, as ss does."""
    wanted = f"{int(ipaddress.IPv4Address(address)).to_bytes(4, 'big')[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] in (wanted, f"00000000:{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    except OSError:
        return None
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _command_line(pid: int) -> str:
    """The process's command line as one padded string (sshd rewrites its own into a single title)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return _padded(raw)


def _padded(raw: bytes) -> str:
    """A /proc cmdline as one string padded with spaces, so that ' PATH/' matches its first word too."""
    return " " + raw.replace(b"\0", b" ").decode(errors="replace").strip() + " "


def _free(address: str, port: int) -> bool:
    """Nothing listens on address:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((address, port)) != 0
