"""Providers openstack and gcp: servers made in a cloud, then bootstrapped over SSH exactly as local hosts are.

One CloudProvider serves a pair whose nodes may live in either cloud (a node's `provider` wins over the pair's);
each cloud is a driver (providers/openstack.py, providers/gcp.py) behind the CloudDriver protocol. A server's
first boot runs the preparation script (providers/templates/prepare.sh.j2: Debian's cluster out of the way, the
postgres user let in with pgaasctl's key, the keepalived helper); then pgaasctl logs in as postgres and the
shared bootstrap (pgaasctl/hosts/bootstrap.py) does the rest, under DIRECTORY/PAIR/NODE on the server.

Everything a driver makes is recorded in the store (cloud_resources) under a name derived from the pair and node,
before the call that makes it: an interrupted create is found again by that name and finished, and destroy removes
what the records name, and nothing else.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import socket
import time
from pathlib import Path
from typing import Literal, Protocol

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel

from pgaasctl.errors import ConnectionFailed, PgaasError
from pgaasctl.hosts.guard import vip_timeline_file, vip_track_file
from pgaasctl.hosts.keepalived import keepalived_conf
from pgaasctl.hosts.ssh import SshSessions, SshTarget
from pgaasctl.spec.models import CloudName, CloudNode, CloudPairSpec, PairDoc, WorkspaceSpec
from pgaasctl.store import Store
from pgaasctl.store.store import CloudResource
from providers.base import Host, HostLayout
from providers.secrets_files import generated_secret, private_key

PG_BIN = "/usr/lib/postgresql/15/bin"
SSH_USER = "postgres"  # the server's OS user: pgaasctl logs in as it, as on local hosts
SSH_PORT = 22
PACKAGES = ["postgresql-15", "postgresql-15-repmgr", "keepalived", "sudo", "rsync"]
KEEPALIVED_HELPER = "/usr/local/sbin/pgaasctl-keepalived"
TEMPLATES = Path(__file__).parent / "templates"
SSH_POLL = 1.0  # seconds between SSH attempts while a server's first boot finishes

ServerStatus = Literal["building", "active", "stopped", "error", "missing"]


class CloudError(PgaasError):
    """A cloud refused or failed a call; the message names the resource and what to check."""


class ServerFacts(BaseModel):
    """A server as its cloud reports it."""

    cloud_id: str
    status: ServerStatus
    address: str = ""  # on the pair's network: replication, repmgr, the certificates
    public_address: str = ""  # a floating IP, when the spec asks for one: pgaasctl connects through it
    zone: str = ""
    network: str = ""  # the CIDR of the node's subnet: pg_hba always lets it in
    fault: str = ""


class CloudDriver(Protocol):
    """One cloud's calls, for the servers of one workspace."""

    cloud: CloudName

    def prepare(self, pair: str, spec: CloudPairSpec) -> None:
        """The pair's own resources (security group and server group, or firewall rules); idempotent."""
        ...

    def create_server(self, pair: str, spec: CloudPairSpec, node: CloudNode, index: int, user_data: str) -> ServerFacts:
        """Make the node's server (or find the one an interrupted apply made) and wait until it is active."""
        ...

    def servers(self, pair: str) -> dict[str, ServerFacts]:
        """The pair's recorded servers as the cloud sees them now, by node (status `missing`: deleted behind
        pgaasctl's back)."""
        ...

    def start_server(self, pair: str, node: str) -> None:
        ...

    def delete_server(self, pair: str, node: str) -> None:
        """The node's server and what was made for it alone (port, floating IP, instance group membership)."""
        ...

    def release(self, pair: str) -> None:
        """Whatever is left of the pair's resources once its servers are gone."""
        ...

    def ensure_virtual_ip(self, pair: str, spec: CloudPairSpec) -> None:
        """What the cloud needs for the pair's virtual IP (a reserved port and allowed address pairs, or a load
        balancer); idempotent."""
        ...

    def virtual_ip_holder(self, pair: str, spec: CloudPairSpec) -> str | None:
        """The node the cloud sends the virtual IP's traffic to, when the cloud knows (None: ask the nodes)."""
        ...

    def network_cidr(self) -> str:
        """The subnet the nodes get their addresses from."""
        ...


def slug(text: str, limit: int) -> str:
    """Lowercase letters, digits and dashes (what every cloud accepts in a name), at most `limit` characters."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def pair_prefix(pair: str, owner: str) -> str:
    """`pgaas-SLUG-HASH`: every resource of the pair starts with it. The hash is of the store's mark (`owner`) and
    the pair's name: two pairs whose names slug alike (Orders and orders) stay apart, and so do two workspaces
    with a pair of the same name in one project (neither ever finds, adopts or deletes the other's)."""
    return f"pgaas-{slug(pair, 24)}-{_short_hash(owner + '/' + pair)}"


def resource_name(pair: str, node: str = "", suffix: str = "", *, owner: str) -> str:
    """A resource's name: a letter first, then at most 62 of [a-z0-9-] (Compute Engine's rule, the strictest)."""
    name = pair_prefix(pair, owner)
    if node:
        name += f"-{slug(node, 16)}-{_short_hash(node)[:4]}"
    if suffix:
        name += f"-{suffix}"
    assert len(name) <= 63, name
    return name


class NamedResources:
    """What both drivers share: the store, and the names they give what they make."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def owner(self) -> str:
        """The store's mark in resource names: asked when a name is first needed (a plan of a new pair on a
        read-only store needs none)."""
        if not hasattr(self, "_owner"):
            self._owner = self.store.cloud_owner()
        return self._owner

    def _name(self, pair: str, node: str = "", suffix: str = "") -> str:
        return resource_name(pair, node, suffix, owner=self.owner)


class ResourceBook:
    """The store's records of what one cloud made for one pair."""

    def __init__(self, store: Store, cloud: str, pair: str) -> None:
        self.store, self.cloud, self.pair = store, cloud, pair

    def all(self) -> list[CloudResource]:
        return [r for r in self.store.cloud_resources(self.pair) if r.cloud == self.cloud]

    def get(self, kind: str, name: str) -> CloudResource | None:
        return next((r for r in self.all() if r.kind == kind and r.name == name), None)

    def of_kind(self, kind: str) -> list[CloudResource]:
        return [r for r in self.all() if r.kind == kind]

    def intend(self, kind: str, name: str, node: str = "", data: dict[str, object] | None = None) -> CloudResource:
        """Recorded before the call that makes it: an interrupt between the two leaves a name to look for."""
        found = self.get(kind, name)
        if found is not None:
            return found
        resource = CloudResource(pair=self.pair, cloud=self.cloud, kind=kind, name=name, node=node, data=data or {})
        self.store.record_cloud_resource(resource)
        return resource

    def made(self, resource: CloudResource, cloud_id: str, **data: object) -> CloudResource:
        updated = resource.model_copy(update={"cloud_id": cloud_id, "data": {**resource.data, **data}})
        self.store.record_cloud_resource(updated)
        return updated

    def forget(self, resource: CloudResource) -> None:
        self.store.forget_cloud_resource(resource)


def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                       autoescape=False)


def keepalived_helper(directory: str) -> str:
    return (TEMPLATES / "pgaasctl-keepalived").read_text().replace("@BASE@", directory)


def prepare_script(cloud: str, pair: str, node: str, directory: str, public_key: str) -> str:
    return _templates().get_template("prepare.sh.j2").render(
        cloud=cloud, pair=pair, node=node, directory=directory, public_key=public_key.strip(),
        keepalived_helper=keepalived_helper(directory).rstrip("\n"))


def first_boot(cloud: CloudName, pair: str, node: str, directory: str, public_key: str) -> str:
    """The server's first-boot data: cloud-init user data (openstack) or a startup script (gcp)."""
    template = "openstack-user-data.yaml.j2" if cloud == "openstack" else "gcp-startup.sh.j2"
    return _templates().get_template(template).render(
        pair=pair, node=node, directory=directory, packages=PACKAGES,
        prepare=prepare_script(cloud, pair, node, directory, public_key).rstrip("\n"))


class CloudProvider:
    """The hosts of one workspace's cloud pairs (the Provider and CreatingProvider protocols)."""

    name = "cloud"
    destroy_detail = "delete the server and what was made for it"

    def __init__(self, workspace: WorkspaceSpec, store: Store, spec_dir: Path) -> None:
        self.workspace = workspace
        self.store = store
        self.spec_dir = spec_dir
        self.root = Path(workspace.cloud_dir)
        self._drivers: dict[str, CloudDriver] = {}
        self._seen: dict[str, dict[str, ServerFacts]] = {}  # pair -> node -> facts: one listing per provider's life

    # -- drivers
    def driver(self, cloud: CloudName, spec: CloudPairSpec) -> CloudDriver:
        if cloud not in self._drivers:
            if cloud == "openstack":
                from providers.openstack import OpenStackDriver

                assert spec.openstack is not None
                self._drivers[cloud] = OpenStackDriver(spec.openstack, self.store)
            else:
                from providers.gcp import GcpDriver

                assert spec.gcp is not None
                self._drivers[cloud] = GcpDriver(spec.gcp, self.store, self.spec_dir)
        return self._drivers[cloud]

    @staticmethod
    def _spec(pair: PairDoc) -> CloudPairSpec:
        assert isinstance(pair.spec, CloudPairSpec)
        return pair.spec

    # -- files on this machine: the pair's SSH key and superuser password
    def pair_dir(self, pair: str) -> Path:
        return self.root / pair

    def key_file(self, pair: PairDoc, create: bool = False) -> Path:
        spec = self._spec(pair)
        given = next((o.ssh_key_file for o in (spec.openstack, spec.gcp) if o is not None and o.ssh_key_file), None)
        if given:
            path = Path(given)
            return path if path.is_absolute() else self.spec_dir / path
        return private_key(self.pair_dir(pair.metadata.name) / "id_ed25519", self.root, create)

    def admin_password(self, pair: str, create: bool = False) -> str | None:
        return generated_secret(self.pair_dir(pair) / "admin-password", self.root, create, f"pair {pair!r}")

    def layout(self, spec: CloudPairSpec, pair: str, node: str) -> HostLayout:
        base = f"{spec.directory}/{pair}/{node}"
        return HostLayout(bin_dir=PG_BIN, data_dir=f"{base}/data", config_dir=f"{base}/etc",
                          socket_dir=f"{base}/run", log_dir=f"{base}/log")

    # -- what exists
    def _servers(self, pair: PairDoc) -> dict[str, ServerFacts]:
        name = pair.metadata.name
        if name not in self._seen:
            recorded = {r.cloud for r in self.store.cloud_resources(name) if r.kind == "server"}
            seen: dict[str, ServerFacts] = {}
            for cloud in sorted(recorded):
                seen.update(self.driver(cloud, self._spec(pair)).servers(name))  # type: ignore[arg-type]
            self._seen[name] = seen
        return self._seen[name]

    def _host(self, pair: PairDoc, node: CloudNode | str, witness: bool = False) -> Host:
        spec = self._spec(pair)
        name = pair.metadata.name
        node_name = node if isinstance(node, str) else node.name
        facts = self._servers(pair).get(node_name)
        exists = facts is not None and facts.status in ("active", "stopped") and bool(facts.address)
        recorded_cloud = next((r.cloud for r in self.store.cloud_resources(name)
                               if r.kind == "server" and r.node == node_name), None)
        cloud = recorded_cloud or (spec.node_provider(node) if isinstance(node, CloudNode) else None)
        layout = self.layout(spec, name, node_name)
        return Host(
            pair=name, node=node_name, address=facts.address if facts and exists else "", pg_port=5432,
            ssh_port=SSH_PORT, ssh_user=SSH_USER, key_file=str(self.key_file(pair)), repmgr_conf=layout.repmgr_conf,
            bin_dir=PG_BIN, layout=layout, exists=exists, running=exists and facts is not None and facts.status == "active",
            own_network=(facts.network or None) if facts and facts.network else self._network_of(spec, cloud),
            cloud=cloud,
            reach=(facts.public_address or None) if facts else None, zone=(facts.zone or None) if facts else None,
            witness=witness,
        )

    def _network_of(self, spec: CloudPairSpec, cloud: str | None) -> str | None:
        """The network a node not made yet will be on (its cloud's subnet): pg_hba of its peers lets it in ahead."""
        if cloud is None:
            return None
        return self.driver(cloud, spec).network_cidr()  # type: ignore[arg-type]

    def hosts(self, pair: PairDoc) -> list[Host]:
        return [self._host(pair, node) for node in self._spec(pair).nodes]

    def witness_host(self, pair: PairDoc) -> Host | None:
        witness = self._spec(pair).witness
        return self._host(pair, witness, witness=True) if witness is not None else None

    def undeclared_hosts(self, pair: PairDoc) -> list[Host]:
        declared = {n.name for n in self._spec(pair).hosts_spec()}
        made = sorted({r.node for r in self.store.cloud_resources(pair.metadata.name) if r.kind == "server"} - declared)
        return [self._host(pair, node) for node in made]

    def describe_host(self, pair: PairDoc, node: str) -> str:
        """What the plan shows of a server: `openstack m1.medium, debian-12`."""
        spec = self._spec(pair)
        spec_node = next((n for n in spec.hosts_spec() if n.name == node), None)
        recorded = next((r for r in self.store.cloud_resources(pair.metadata.name)
                         if r.kind == "server" and r.node == node), None)
        cloud = recorded.cloud if recorded else spec.node_provider(spec_node) if spec_node else "cloud"
        options = spec.openstack if cloud == "openstack" else spec.gcp
        if options is None:
            return str(cloud)
        size = options.flavor if cloud == "openstack" else options.machine_type  # type: ignore[union-attr]
        image = options.image.rsplit("/", 1)[-1]
        zone = (recorded.data.get("zone") if recorded else None) or (spec_node.zone if spec_node else None)
        return f"{cloud} {size}, {image}" + (f", {zone}" if zone else "")

    def plan_warnings(self, pair: PairDoc) -> list[str]:
        """A server whose spec changed in what pgaasctl does not change on a live server (no resize, no move)."""
        spec = self._spec(pair)
        by_name = {n.name: n for n in spec.hosts_spec()}
        out = []
        for record in self.store.cloud_resources(pair.metadata.name):
            node = by_name.get(record.node)
            if record.kind != "server" or node is None:
                continue
            cloud = spec.node_provider(node)
            options = spec.openstack if record.cloud == "openstack" else spec.gcp
            wanted = {"cloud": cloud}
            if options is not None:
                wanted["size"] = options.flavor if record.cloud == "openstack" else options.machine_type  # type: ignore[union-attr]
                wanted["image"] = options.image
            made = {"cloud": record.cloud, "size": record.data.get("size"), "image": record.data.get("image")}
            changed = [f"{key} {made[key]} -> {value}" for key, value in wanted.items()
                       if made.get(key) and made[key] != value]
            if changed:
                out.append(f"node {record.node}: its server keeps what it was made with ({', '.join(changed)}): "
                           "pgaasctl does not resize or move servers. To replace it, rename the node (a new server "
                           "is made and cloned, the old one removed), or put the spec back")
        return out

    def leftovers(self, pair: PairDoc) -> list[tuple[str, str]]:
        """(node, what) of everything recorded for the pair: an apply that did not finish may have made a port or
        a security group and no server yet."""
        by_node: dict[str, list[str]] = {}
        for resource in self.store.cloud_resources(pair.metadata.name):
            by_node.setdefault(resource.node, []).append(f"{resource.cloud} {resource.kind.replace('_', ' ')} "
                                                         f"{resource.name}")
        return [(node, ", ".join(what)) for node, what in sorted(by_node.items())]

    # -- making and starting
    def create_hosts(self, pair: PairDoc, nodes: list[str]) -> list[Host]:
        spec = self._spec(pair)
        name = pair.metadata.name
        key = self.key_file(pair, create=True)
        try:
            public_key = Path(f"{key}.pub").read_text()
        except OSError as exc:
            raise PgaasError(f"pair {name!r}: cannot read the public key {key}.pub: {exc.strerror}",
                             "The public key goes beside the private key (ssh-keygen -y -f KEY > KEY.pub).") from None
        self.admin_password(name, create=True)
        by_name = {n.name: n for n in spec.hosts_spec()}
        order = [n.name for n in spec.hosts_spec()]
        for node_name in nodes:
            node = by_name[node_name]
            cloud = spec.node_provider(node)
            driver = self.driver(cloud, spec)
            driver.prepare(name, spec)
            user_data = first_boot(cloud, name, node.name, spec.directory, public_key)
            facts = driver.create_server(name, spec, node, order.index(node.name), user_data)
            self._seen.pop(name, None)
            target = facts.public_address or facts.address
            self.store.forget_host_key(f"{target}:{SSH_PORT}")  # a new server: a new host key at that address
            self._wait_for_login(pair, node.name, target, self._timeout(spec, cloud))
            self._make_layout(pair, node.name, target)
        self._seen.pop(name, None)
        return [h for h in [*self.hosts(pair), *filter(None, [self.witness_host(pair)])] if h.node in nodes]

    @staticmethod
    def _timeout(spec: CloudPairSpec, cloud: CloudName) -> int:
        options = spec.openstack if cloud == "openstack" else spec.gcp
        assert options is not None
        return options.timeout

    def _wait_for_login(self, pair: PairDoc, node: str, address: str, timeout: float) -> None:
        """Until the first boot is done: pgaasctl's key lets it in as postgres and the helper is installed."""
        spec = self._spec(pair)
        target = SshTarget(host=address, port=SSH_PORT, user=SSH_USER, key_file=str(self.key_file(pair)),
                           label=f"node {node} of pair {pair.metadata.name} ({address})")
        ready = f"test -x {KEEPALIVED_HELPER} && test -d {shlex.quote(spec.directory)}"
        deadline = time.monotonic() + timeout
        last = "it does not answer on port 22"
        while True:
            if _port_open(address, SSH_PORT):
                sessions = SshSessions(self.store, connect_timeout=5)
                try:
                    if sessions.run(target, ready, timeout=30).exited == 0:
                        return
                    last = "its first-boot preparation has not finished"
                except (ConnectionFailed, PgaasError) as exc:
                    last = exc.message
                finally:
                    sessions.close()
            if time.monotonic() > deadline:
                raise CloudError(
                    f"node {node} of pair {pair.metadata.name}: the server at {address} is up, but pgaasctl could not "
                    f"log in within {timeout:g}s: {last}",
                    "Check the server's console log (cloud-init), that the security group or firewall lets this "
                    "machine reach port 22, and the image (Debian 12). apply again goes on from here.")
            time.sleep(SSH_POLL)  # polling a booting server

    def _make_layout(self, pair: PairDoc, node: str, address: str) -> None:
        """The node's directories under DIRECTORY/PAIR/NODE, the server's OS user's alone (as on local hosts)."""
        layout = self.layout(self._spec(pair), pair.metadata.name, node)
        target = SshTarget(host=address, port=SSH_PORT, user=SSH_USER, key_file=str(self.key_file(pair)),
                           label=f"node {node} of pair {pair.metadata.name} ({address})")
        directories = " ".join(shlex.quote(d) for d in (layout.data_dir, layout.config_dir, layout.socket_dir,
                                                         layout.log_dir))
        sessions = SshSessions(self.store)
        try:
            sessions.check(target, f"mkdir -p -m 700 {directories} && chmod 700 {directories}", "making the node's directories")
        finally:
            sessions.close()

    def start_hosts(self, pair: PairDoc, nodes: list[str]) -> None:
        spec = self._spec(pair)
        for node_name in nodes:
            host = next(h for h in [*self.hosts(pair), *filter(None, [self.witness_host(pair)])] if h.node == node_name)
            assert host.cloud is not None
            self.driver(host.cloud, spec).start_server(pair.metadata.name, node_name)  # type: ignore[arg-type]
            self._seen.pop(pair.metadata.name, None)
            self._wait_for_login(pair, node_name, host.connect_address, self._timeout(spec, host.cloud))  # type: ignore[arg-type]

    # -- removing
    def remove_host(self, pair: PairDoc, node: str) -> None:
        name = pair.metadata.name
        for resource in self.store.cloud_resources(name):
            if resource.kind == "server" and resource.node == node:
                host = self._host(pair, node)
                self.driver(resource.cloud, self._spec(pair)).delete_server(name, node)  # type: ignore[arg-type]
                if host.address:
                    self.store.forget_host_key(f"{host.connect_address}:{SSH_PORT}")
        self._seen.pop(name, None)

    def destroy_hosts(self, pair: PairDoc) -> None:
        name = pair.metadata.name
        spec = self._spec(pair)
        for resource in self.store.cloud_resources(name):
            if resource.kind == "server":
                self.remove_host(pair, resource.node)
        for cloud in sorted({r.cloud for r in self.store.cloud_resources(name)}):
            self.driver(cloud, spec).release(name)  # type: ignore[arg-type]
        left = self.store.cloud_resources(name)
        if left:
            raise CloudError(f"pair {name!r}: {len(left)} cloud resource(s) could not be removed: "
                             + ", ".join(f"{r.cloud} {r.kind} {r.name}" for r in left),
                             "Run destroy again; if the cloud keeps refusing, remove them in the cloud's console.")
        for path in (self.pair_dir(name) / "admin-password", self.pair_dir(name) / "id_ed25519",
                     self.pair_dir(name) / "id_ed25519.pub"):
            path.unlink(missing_ok=True)
        if self.pair_dir(name).exists() and not any(self.pair_dir(name).iterdir()):
            self.pair_dir(name).rmdir()
        self._seen.pop(name, None)

    # -- the virtual IP: keepalived on the nodes, started through the helper the first boot installed
    def _keepalived_dir(self, host: Host) -> str:
        assert host.layout is not None
        return f"{host.layout.config_dir}/keepalived"

    def keepalived_conf(self, pair: PairDoc, host: Host, interface: str) -> str | None:
        spec = self._spec(pair)
        if spec.virtual_ip is None or not host.exists or host.layout is None or not host.own_network:
            return None
        from ipaddress import IPv4Network

        # every data node with an address, made or being made again: its port keeps the address, so keepalived's
        # peers (and the holder's configuration) do not change while a lost server is replaced
        data_nodes = {n.name for n in spec.nodes} - {host.node}
        peers = sorted({str(r.data["address"]) for r in self.store.cloud_resources(pair.metadata.name)
                        if r.kind == "server" and r.node in data_nodes and r.data.get("address")})
        return keepalived_conf(pair.metadata.name, host.node, host.address, peers, spec.virtual_ip,
                               IPv4Network(host.own_network), vip_track_file(host.layout),
                               vip_timeline_file(host.layout), interface=interface)

    def look_at_virtual_ip(self, pair: PairDoc, hosts: list[Host], ssh: SshSessions) -> None:
        """Fills each data node's virtual_ip_state from what its keepalived runs (the helper's status)."""
        spec = self._spec(pair)
        for host in hosts:
            if host.witness or not host.exists or not host.running:
                continue
            if spec.virtual_ip is None:
                host.virtual_ip_state = None
                continue
            try:
                state = self._helper(ssh, host, "status").split()
            except PgaasError:
                continue  # unreachable: discovery reports it
            if host.cloud == "gcp":  # the load balancer asks each node's health check, which must run
                host.virtual_ip_state = "current" if state and state[0] == "running" else "stopped"
                continue
            record = self._keepalived_record(pair, host.node)
            wanted = self.keepalived_conf(pair, host, str(record.data.get("interface", ""))) if record else None
            if not state or state[0] != "running":
                host.virtual_ip_state = "stopped"
            elif wanted is not None and state[1:] == [hashlib.sha256(wanted.encode()).hexdigest()]:
                host.virtual_ip_state = "current"
            else:
                host.virtual_ip_state = "stale"

    def _keepalived_record(self, pair: PairDoc, node: str) -> CloudResource | None:
        return next((r for r in self.store.cloud_resources(pair.metadata.name)
                     if r.kind == "keepalived" and r.node == node), None)

    def _helper(self, ssh: SshSessions, host: Host, action: str) -> str:
        """keepalived's helper (openstack), or the health check's process (gcp): start, stop or status."""
        from pgaasctl.hosts.bootstrap import target_of

        if host.cloud == "gcp":
            return self._health_check(ssh, host, action)
        command = f"sudo -n {KEEPALIVED_HELPER} {action} {shlex.quote(self._keepalived_dir(host))}"
        if action == "status":
            result = ssh.run(target_of(host), command)
            return result.stdout if result.exited == 0 else ""
        return ssh.check(target_of(host), command, f"keepalived {action} (the virtual IP)")

    def _health_check(self, ssh: SshSessions, host: Host, action: str) -> str:
        """pgaasctl-primary-check on the node (as postgres, port 8008): what the load balancer of a gcp pair asks."""
        from pgaasctl.hosts.bootstrap import alive_from_pid_file, target_of
        from providers.gcp import CHECK_PORT

        assert host.layout is not None
        target = target_of(host)
        script = f"{host.layout.config_dir}/pgaasctl-primary-check"
        pid_file = f"{host.layout.socket_dir}/primary-check.pid"
        running = f"{alive_from_pid_file(pid_file)} && grep -q primary-check /proc/$pid/cmdline"
        if action == "status":
            return "running" if ssh.run(target, running).exited == 0 else "stopped"
        if action == "stop":
            ssh.run(target, f"{running} && kill $pid; rm -f {shlex.quote(pid_file)}")
            return "stopped"
        ssh.put_text(target, (TEMPLATES / "pgaasctl-primary-check").read_text(), script, 0o755)
        track = vip_track_file(host.layout)
        log = f"{host.layout.log_dir}/primary-check.log"
        ssh.check(target, f"test -f {shlex.quote(track)} || echo 1 > {shlex.quote(track)}", "the track file")
        ssh.check(target, f"{running} || setsid -f sh -c 'echo $$ > {shlex.quote(pid_file)}; exec python3 "
                          f"{shlex.quote(script)} {shlex.quote(track)} {CHECK_PORT}' >>{shlex.quote(log)} 2>&1 </dev/null",
                  "starting the load balancer's health check")
        deadline = time.monotonic() + 10
        answers = f"{running} && timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{CHECK_PORT}'"  # asked on the node:
        while ssh.run(target, answers).exited != 0:  # the firewall opens 8008 to Google's health checkers alone
            if time.monotonic() > deadline:
                raise PgaasError(f"node {host.node} of pair {host.pair}: the health check did not start on port "
                                 f"{CHECK_PORT}", f"See {log} on the node (python3 must be installed).")
            time.sleep(0.1)  # polling the check's port
        return "running"

    def start_virtual_ip(self, pair: PairDoc, node: str) -> None:
        from pgaasctl.hosts.bootstrap import target_of

        spec = self._spec(pair)
        host = next(h for h in self.hosts(pair) if h.node == node)
        if spec.virtual_ip is None:
            self.stop_virtual_ip(pair, node)
            return
        assert host.cloud is not None and host.layout is not None
        self.driver(host.cloud, spec).ensure_virtual_ip(pair.metadata.name, spec)  # type: ignore[arg-type]
        ssh = SshSessions(self.store)
        if host.cloud == "gcp":
            try:
                self._health_check(ssh, host, "start")
            finally:
                ssh.close()
            return
        try:
            target = target_of(host)
            interface = _interface_of(ssh.check(target, "ip -4 -o addr show", "listing the interfaces"), host.address)
            wanted = self.keepalived_conf(pair, host, interface)
            assert wanted is not None
            directory = self._keepalived_dir(host)
            ssh.check(target, f"mkdir -p -m 700 {shlex.quote(directory)}", "making the keepalived directory")
            ssh.put_text(target, wanted, f"{directory}/keepalived.conf", 0o644)
            for path, value in ((vip_track_file(host.layout), "1"), (vip_timeline_file(host.layout), "0")):
                # ineligible until the guard says otherwise
                ssh.check(target, f"test -f {shlex.quote(path)} || echo {value} > {shlex.quote(path)}", "the track files")
            self._helper(ssh, host, "start")
        finally:
            ssh.close()
        self.store.record_cloud_resource(CloudResource(
            pair=pair.metadata.name, cloud=host.cloud, kind="keepalived",
            name=resource_name(pair.metadata.name, node, owner=self.store.cloud_owner()),
            node=node, cloud_id="", data={"interface": interface}))

    def stop_virtual_ip(self, pair: PairDoc, node: str) -> None:
        host = next((h for h in self.hosts(pair) if h.node == node), None)
        if host is None or not host.exists:
            return
        ssh = SshSessions(self.store)
        try:
            self._helper(ssh, host, "stop")
        finally:
            ssh.close()
        record = self._keepalived_record(pair, node)
        if record is not None:
            self.store.forget_cloud_resource(record)

    def virtual_ip_holder(self, pair: PairDoc) -> str | None:
        from pgaasctl.hosts.bootstrap import target_of

        spec = self._spec(pair)
        if spec.virtual_ip is None:
            return None
        clouds = {h.cloud for h in self.hosts(pair) if h.cloud}
        if len(clouds) == 1:
            said = self.driver(clouds.pop(), spec).virtual_ip_holder(pair.metadata.name, spec)  # type: ignore[arg-type]
            if said is not None:
                return said
        ssh = SshSessions(self.store, connect_timeout=3)
        try:
            for host in self.hosts(pair):
                if not host.exists:
                    continue
                try:
                    shown = ssh.run(target_of(host), "ip -4 -o addr show", timeout=10).stdout
                except PgaasError:
                    continue
                if f" {spec.virtual_ip}/" in shown:
                    return host.node
        finally:
            ssh.close()
        return None


def _interface_of(listing: str, address: str) -> str:
    """The interface that holds `address`, from `ip -4 -o addr show` (ens3 on OpenStack, ens4 on Google Cloud)."""
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet" and fields[3].split("/")[0] == address:
            return fields[1].split("@")[0]
    raise PgaasError(f"no interface holds {address} on that server", "Check the server's network configuration.")


def _port_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((address, port)) == 0

