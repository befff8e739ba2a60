"""The namespace network of provider `local`: a bridge per workspace subnet, a network namespace per node.

    root namespace:   bridge pgbrXXXXXXXX  (the subnet's first address; pgaasctl reaches the nodes through it)
                        |- veth pgvYYYYYYYY  <->  eth0 in namespace pgaas-ADDRESS (the node's address)
                        |- ...

Names derive from addresses (interface names have at most 15 characters), so two workspaces on this machine
never share one as long as their subnets differ, which the route check enforces. Nothing here has a default
route: traffic flows between the namespaces and the bridge, nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pgaasctl.errors import PgaasError

IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "ip"
NAMESPACE_PREFIX = "pgaas-"
PROBE_TIMEOUT = 2.0


class NetworkError(PgaasError):
    """The namespace network cannot be made or used."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _link_exists(name: str, namespace: str | None = None) -> bool:
    args = ("-n", namespace) if namespace else ()
    return _ip(*args, "link", "show", "dev", name, check=False).returncode == 0


def namespace_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


class NamespaceNetwork:
    """The bridge of one subnet and the namespaces of the nodes on it."""

    def __init__(self, subnet: IPv4Network) -> None:
        self.subnet = subnet
        self.bridge = f"pgbr{int(subnet.network_address):08x}"
        self.bridge_address = subnet.network_address + 1

    # -- names
    @staticmethod
    def namespace(address: str) -> str:
        return f"{NAMESPACE_PREFIX}{address}"

    @staticmethod
    def veth(address: str) -> str:
        return f"pgv{int(IPv4Address(address)):08x}"

    def node_addresses(self) -> list[str]:
        """Addresses nodes may take, in order: after the bridge's."""
        return [str(a) for a in self.subnet.hosts() if a != self.bridge_address]

    def exec_prefix(self, address: str) -> list[str]:
        """Runs a command inside the node's namespace."""
        return [IP, "netns", "exec", self.namespace(address)]

    # -- the bridge
    def ensure_bridge(self) -> None:
        if os.geteuid() != 0:
            raise NetworkError("the namespace network needs root",
                               "Run pgaasctl as root, or set Workspace spec.network: loopback (no virtual IP).")
        if not _link_exists(self.bridge):
            self.refuse_routed_subnet()
            _ip("link", "add", self.bridge, "type", "bridge")
        addresses = json.loads(_ip("-j", "-4", "addr", "show", "dev", self.bridge).stdout or "[]")
        have = {a["local"] for link in addresses for a in link.get("addr_info", [])}
        if str(self.bridge_address) not in have:
            _ip("addr", "add", f"{self.bridge_address}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.refuse_forward_drop()

    def refuse_routed_subnet(self) -> None:
        """The subnet must be ours alone: any route (but the default) that overlaps it names a network the machine
        already reaches there, and the bridge would hijack or shadow it."""
        routes = json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
        for route in routes:
            destination = route.get("dst", "")
            if destination in ("", "default") or route.get("dev") == self.bridge:
                continue
            try:
                network = IPv4Network(destination if "/" in destination else f"{destination}/32", strict=False)
            except ValueError:
                continue
            if network.prefixlen and network.overlaps(self.subnet):
                raise NetworkError(
                    f"Workspace subnet {self.subnet} overlaps {network}, which this machine routes through "
                    f"{route.get('dev', '?')}",
                    "Set Workspace spec.subnet to a private network this machine does not use "
                    "(`ip -4 route show table all` lists those it does).",
                )

    def refuse_forward_drop(self) -> None:
        """With br_netfilter on, bridged traffic crosses iptables' FORWARD chain: a DROP policy there (as Docker
        sets) silently drops every packet between two nodes."""
        try:
            calls_iptables = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1"
        except OSError:
            return
        if not calls_iptables:
            return
        iptables = shutil.which("iptables")
        if iptables is None:
            return
        rules = subprocess.run([iptables, "-S", "FORWARD"], capture_output=True, text=True, check=False).stdout
        if "-P FORWARD DROP" not in rules:
            return
        allowed = f"-A FORWARD -i {self.bridge} -o {self.bridge} -j ACCEPT"
        if allowed in rules:
            return
        raise NetworkError(
            f"this machine's firewall drops traffic between the nodes on bridge {self.bridge}: iptables' FORWARD "
            "policy is DROP (as Docker sets) and bridged packets pass through it (net.bridge.bridge-nf-call-iptables=1)",
            f"Allow the bridge: iptables -I FORWARD -i {self.bridge} -o {self.bridge} -j ACCEPT",
        )

    def remove_bridge_if_unused(self) -> None:
        if not _link_exists(self.bridge):
            return
        ports = json.loads(_ip("-j", "link", "show", "master", self.bridge).stdout or "[]")
        if not ports:
            _ip("link", "del", self.bridge, check=False)

    # -- nodes
    def ensure_node(self, address: str) -> None:
        """The node's namespace, its veth on the bridge and its address, each made only if missing."""
        self.ensure_bridge()
        namespace, veth = self.namespace(address), self.veth(address)
        if not namespace_exists(namespace):
            _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        if not _link_exists("eth0", namespace):
            if _link_exists(veth):  # a half-made node: its host end without the other
                _ip("link", "del", veth, check=False)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", veth, "master", self.bridge, "up")
        addresses = json.loads(_ip("-n", namespace, "-j", "-4", "addr", "show", "dev", "eth0").stdout or "[]")
        have = {a["local"] for link in addresses for a in link.get("addr_info", [])}
        if address not in have:
            _ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")

    def remove_node(self, address: str) -> None:
        """Kill every process inside the namespace, then delete it: a namespace deleted with processes inside
        lives on, unnamed, with its veth."""
        namespace = self.namespace(address)
        if namespace_exists(namespace):
            kill_all(namespace_pids(namespace))
            _ip("netns", "del", namespace, check=False)
        if _link_exists(self.veth(address)):
            _ip("link", "del", self.veth(address), check=False)

    def reachable(self, source: str, destination: str, port: int) -> bool:
        """Whether a TCP connection from the node at `source` to destination:port is answered."""
        command = [*self.exec_prefix(source), "timeout", str(PROBE_TIMEOUT), "bash", "-c",
                   f"exec 3<>/dev/tcp/{destination}/{port}"]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0


def namespace_pids(namespace: str) -> list[int]:
    result = _ip("netns", "pids", namespace, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def namespace_of(pid: int) -> str | None:
    """The name of the namespace process `pid` runs in, or None (the root namespace or an unnamed one)."""
    result = _ip("netns", "identify", str(pid), check=False)
    return result.stdout.strip() or None


def kill_all(pids: list[int], timeout: float = 5.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.01)  # polling for the processes to be gone


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its parent (or init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
