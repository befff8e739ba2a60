"""provider openstack: servers made with openstacksdk (Nova, Neutron, Glance, Keystone).

For a pair:   a security group (22 and 5432 from the nodes' subnet and the spec's networks, VRRP between members)
              and a server group with the anti-affinity policy (its nodes land on different hypervisors);
for a node:   a Neutron port on the spec's network (allowed address pair: the virtual IP), the server booting
              from the image with cloud-init user data, and a floating IP when the spec asks;
the VIP:      a port that reserves the address, so Neutron never gives it to another server; keepalived moves it.

Every call goes through `_call`: throttling and "in progress" conflicts are retried with backoff (tenacity), and
every failure becomes a CloudError that names the resource and what to check.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from pgaasctl.spec.models import CloudNode, CloudPairSpec, OpenStackOptions
from pgaasctl.store import Store
from providers.cloud import CloudError, NamedResources, ResourceBook, ServerFacts, pair_prefix

T = TypeVar("T")
POLL_FIRST, POLL_MAX = 0.2, 5.0  # seconds between status polls: fast at first, then gentler on the API


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(exc, "http_status", None)


def _message(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = str(details or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _over_quota(exc: BaseException) -> bool:
    text = _message(exc).lower()
    return "quota" in text  # Nova: "Quota exceeded for instances", Neutron: OverQuota "Quota exceeded for resources"


def _retryable(exc: BaseException, creating: bool) -> bool:
    """Throttling (429) and an operation in progress (409) mean the call was not done: always tried again. A
    server error or a lost connection may hide a call that was done: tried again only when repeating it is
    harmless (reads, deletes, updates), never for a create, which the next apply finds by name instead."""
    from keystoneauth1 import exceptions as ks

    status = _status(exc)
    if _over_quota(exc) or _already_exists(exc):
        return False
    if status in (409, 429):
        return True
    if creating:
        return False
    return status in (502, 503, 504) or isinstance(exc, ks.ConnectFailure | ks.ConnectTimeout)


def _already_exists(exc: BaseException) -> bool:
    return _status(exc) == 409 and "already exists" in _message(exc).lower()


def _retry_wait(state: Any) -> float:
    """Retry-After when the API says (capped), else exponential: 1, 2, 4, 8 s."""
    exc = state.outcome.exception() if state.outcome else None
    response = getattr(exc, "response", None)
    after = response.headers.get("Retry-After") if response is not None else None
    if after is not None:
        try:
            return min(30.0, max(0.0, float(after)))
        except ValueError:
            pass
    return float(wait_exponential(multiplier=1, max=8)(state))


class OpenStackDriver(NamedResources):
    cloud = "openstack"

    def __init__(self, options: OpenStackOptions, store: Store) -> None:
        super().__init__(store)
        self.options = options
        self._conn: Any = None

    # -- the connection and every call
    @property
    def conn(self) -> Any:
        if self._conn is None:
            import warnings

            import openstack
            from openstack import exceptions

            # the SDK's notes to its own developers (deprecations inside it), not to pgaasctl's users
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"openstack\.")
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=r"openstack\.")

            try:
                conn = openstack.connect(cloud=self.options.cloud, region_name=self.options.region,
                                         load_yaml_config=self.options.cloud is not None)
            except exceptions.ConfigException as exc:
                where = f"cloud {self.options.cloud!r} in clouds.yaml" if self.options.cloud else "the OS_* variables"
                raise CloudError(f"openstack: cannot read the connection settings from {where}: {_message(exc)}",
                                 "Check clouds.yaml (./, ~/.config/openstack/, /etc/openstack/) or set OS_AUTH_URL, "
                                 "OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME and the domains.") from None
            self._call("signing in", conn.authorize)  # here, not at the first proxy's lazy sign-in
            self._conn = conn
        return self._conn

    def _call(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API call, retried when throttled or in conflict with an operation in progress."""
        from keystoneauth1 import exceptions as ks
        from openstack import exceptions

        creating = getattr(call, "__name__", "").startswith("create_")

        @retry(retry=retry_if_exception(lambda exc: _retryable(exc, creating)), wait=_retry_wait,
               stop=stop_after_attempt(6), reraise=True)
        def attempt() -> T:
            return call(*args, **kwargs)

        try:
            return attempt()
        except (exceptions.SDKException, ks.ClientException) as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: BaseException) -> CloudError:
        from keystoneauth1 import exceptions as ks

        status = _status(exc) or _status(exc.__cause__ or exc.__context__ or exc)
        if isinstance(exc, ks.Unauthorized) or status == 401 or "(HTTP 401)" in str(exc):
            return CloudError(f"openstack: {what}: authentication failed ({_message(exc)})",
                              "Check the credentials of the cloud entry or the OS_* variables, and that the project "
                              "exists.")
        if isinstance(exc, ks.ConnectFailure | ks.ConnectTimeout):
            return CloudError(f"openstack: {what}: cannot reach the cloud ({_message(exc)})",
                              "Check auth_url and that this machine reaches the cloud's endpoints.")
        if _over_quota(exc):
            return CloudError(f"openstack: {what}: quota exceeded: {_message(exc)}",
                              "Free resources in the project or ask for a higher quota, then apply again.")
        if status == 403:
            return CloudError(f"openstack: {what}: not allowed: {_message(exc)}",
                              "Check the role of the user in the project (it must create servers, ports and groups).")
        if status in (409, 429):
            return CloudError(f"openstack: {what}: the cloud kept refusing ({status}: {_message(exc)})",
                              "The cloud is busy or throttling; apply again later.")
        if status in (500, 502, 503, 504):
            return CloudError(f"openstack: {what}: the cloud failed ({status}: {_message(exc)})",
                              "apply again: what was made is found by its name, never made twice.")
        return CloudError(f"openstack: {what} failed ({status or type(exc).__name__}): {_message(exc)}")

    def _find(self, kind: str, finder: Callable[..., Any], name: str, hint: str) -> Any:
        found = self._call(f"looking up {kind} {name!r}", finder, name, ignore_missing=True)
        if found is None:
            raise CloudError(f"openstack: {kind} {name!r} not found", hint)
        return found

    # -- lookups, once per driver
    def _network(self) -> Any:
        if not hasattr(self, "_network_found"):
            self._network_found = self._find("network", self.conn.network.find_network, self.options.network,
                                             "Check `network` in the pair's openstack options (openstack network list).")
        return self._network_found

    def _subnet(self) -> Any:
        if not hasattr(self, "_subnet_found"):
            network = self._network()
            subnets = [self._call(f"reading subnet {s}", self.conn.network.get_subnet, s) for s in network.subnet_ids]
            ipv4 = [s for s in subnets if s.ip_version == 4]
            if not ipv4:
                raise CloudError(f"openstack: network {self.options.network!r} has no IPv4 subnet",
                                 "Give the pair a network with an IPv4 subnet.")
            self._subnet_found = ipv4[0]
        return self._subnet_found

    def _image_and_flavor(self) -> tuple[Any, Any]:
        if not hasattr(self, "_image_flavor"):
            image = self._find("image", self.conn.image.find_image, self.options.image,
                               "Check `image` in the pair's openstack options (openstack image list).")
            flavor = self._find("flavor", self.conn.compute.find_flavor, self.options.flavor,
                                "Check `flavor` in the pair's openstack options (openstack flavor list).")
            self._image_flavor = (image, flavor)
        return self._image_flavor

    def network_cidr(self) -> str:
        return str(self._subnet().cidr)

    # -- the pair's resources
    def prepare(self, pair: str, spec: CloudPairSpec) -> None:
        book = ResourceBook(self.store, self.cloud, pair)
        subnet = self._subnet()
        self._image_and_flavor()  # before anything is made: a wrong name makes nothing
        self._security_group(book, pair, subnet.cidr)
        if not book.of_kind("server_group"):
            name = self._name(pair, suffix="group")
            intended = book.intend("server_group", name)
            found = [g for g in self._call("listing server groups", lambda: list(self.conn.compute.server_groups()))
                     if g.name == name]
            group = found[0] if found else self._call(
                f"creating server group {name}", self.conn.compute.create_server_group, name=name,
                policy="anti-affinity")
            book.made(intended, group.id)

    def _security_group(self, book: ResourceBook, pair: str, cidr: str) -> Any:
        name = self._name(pair, suffix="sg")
        recorded = book.get("security_group", name)
        if recorded is not None and recorded.cloud_id:
            return recorded.cloud_id
        intended = book.intend("security_group", name)
        found = list(self._call("listing security groups", lambda: list(self.conn.network.security_groups(name=name))))
        group = found[0] if found else self._call(
            f"creating security group {name}", self.conn.network.create_security_group, name=name,
            description=f"pgaasctl: pair {pair}")
        existing = self._rule_keys(group.id)
        wanted: list[dict[str, Any]] = []
        for port, extra in ((22, self.options.allowed_ssh), (5432, self.options.allowed_postgres)):
            for network in dict.fromkeys([cidr, *extra]):
                wanted.append({"protocol": "tcp", "port_range_min": port, "port_range_max": port,
                               "remote_ip_prefix": network})
        wanted.append({"protocol": "vrrp", "remote_group_id": group.id})  # keepalived between the pair's nodes
        for rule in wanted:
            key = (rule["protocol"], rule.get("port_range_min"), rule.get("remote_ip_prefix"), rule.get("remote_group_id"))
            if key in existing:
                continue
            try:
                self._call(f"adding a rule to security group {name}", self.conn.network.create_security_group_rule,
                           security_group_id=group.id, direction="ingress", ethertype="IPv4", **rule)
            except CloudError:
                if key not in self._rule_keys(group.id):  # made by a call whose answer was lost: fine
                    raise
        book.made(intended, group.id)
        return group.id

    def _rule_keys(self, group_id: str) -> set[tuple[Any, ...]]:
        return {(r.protocol, r.port_range_min, r.remote_ip_prefix, r.remote_group_id) for r in self._call(
            "reading the rules of the security group",
            lambda: list(self.conn.network.security_group_rules(security_group_id=group_id, direction="ingress")))}

    # -- servers
    def create_server(self, pair: str, spec: CloudPairSpec, node: CloudNode, index: int, user_data: str) -> ServerFacts:
        book = ResourceBook(self.store, self.cloud, pair)
        name = self._name(pair, node.name)
        subnet = self._subnet()
        port = self._port(book, pair, node.name, name, spec)
        server_record = book.intend("server", name, node.name)
        server = self._existing_server(server_record)
        if server is not None and server.status == "ERROR":  # a failed boot is not repaired: made anew
            self._call(f"deleting server {name} (in ERROR)", self.conn.compute.delete_server, server.id,
                       ignore_missing=True)
            self._wait_gone(name, server.id)
            server = None
        if server is None:
            image, flavor = self._image_and_flavor()
            group = book.of_kind("server_group")
            zone = node.zone or (self.options.availability_zones[index % len(self.options.availability_zones)]
                                 if self.options.availability_zones else None)
            attrs: dict[str, Any] = {
                "name": name, "image_id": image.id, "flavor_id": flavor.id, "networks": [{"port": port.cloud_id}],
                "user_data": base64.b64encode(user_data.encode()).decode(),
                "metadata": {"pgaasctl-pair": pair[:255], "pgaasctl-node": node.name[:255]},
            }
            if self.options.key_pair:
                attrs["key_name"] = self.options.key_pair
            if zone:
                attrs["availability_zone"] = zone
            if group and group[0].cloud_id:
                attrs["scheduler_hints"] = {"group": group[0].cloud_id}
            server = self._call(f"creating server {name}", self.conn.compute.create_server, **attrs)
            server_record = book.made(server_record, server.id, zone=zone or "", size=self.options.flavor,
                                      image=self.options.image)
        server = self._wait_active(name, server.id, spec)
        floating = self._floating_ip(book, pair, node.name, port.cloud_id) if self.options.floating_ip else ""
        address = port.data.get("address", "")
        book.made(server_record, server.id, address=address, public_address=floating, network=subnet.cidr,
                  zone=getattr(server, "availability_zone", None) or server_record.data.get("zone", ""))
        return ServerFacts(cloud_id=server.id, status="active", address=str(address), public_address=floating,
                           zone=getattr(server, "availability_zone", None) or "", network=subnet.cidr)

    def _existing_server(self, record: Any) -> Any:
        """The server a record names (or, after an interrupt before its id was kept, the one of that name)."""
        if record.cloud_id:
            server = self._call(f"reading server {record.name}", self.conn.compute.find_server, record.cloud_id,
                                ignore_missing=True)
            if server is not None and server.status != "DELETED":
                return server
            return None
        found = self._call(f"looking for server {record.name}",
                           lambda: list(self.conn.compute.servers(name=f"^{record.name}$")))
        return found[0] if found else None

    def _port(self, book: ResourceBook, pair: str, node: str, name: str, spec: CloudPairSpec) -> Any:
        record = book.get("port", name)
        if record is not None and record.cloud_id:
            port = self._call(f"reading port {name}", self.conn.network.find_port, record.cloud_id, ignore_missing=True)
            if port is not None:
                return record
            book.forget(record)  # deleted behind pgaasctl's back: made anew
        intended = book.intend("port", name, node)
        found = self._call(f"looking for port {name}", lambda: list(self.conn.network.ports(name=name)))
        group_id = self._security_group(book, pair, self._subnet().cidr)
        if found:
            port = found[0]
        else:
            attrs: dict[str, Any] = {"network_id": self._network().id, "name": name, "security_group_ids": [group_id],
                                     "fixed_ips": [{"subnet_id": self._subnet().id}]}
            if spec.virtual_ip is not None and node in {n.name for n in spec.nodes}:
                attrs["allowed_address_pairs"] = [{"ip_address": str(spec.virtual_ip)}]
            port = self._call(f"creating port {name}", self.conn.network.create_port, **attrs)
        address = next((ip["ip_address"] for ip in port.fixed_ips or [] if ":" not in ip["ip_address"]), "")
        return book.made(intended, port.id, address=address)

    def _floating_ip(self, book: ResourceBook, pair: str, node: str, port_id: str) -> str:
        name = self._name(pair, node, "fip")
        record = book.get("floating_ip", name)
        if record is not None and record.cloud_id:
            return str(record.data.get("address", ""))
        intended = book.intend("floating_ip", name, node)
        found = self._call("looking for the node's floating IP", lambda: list(self.conn.network.ips(port_id=port_id)))
        if found:
            ip = found[0]
        else:
            external = self._find("network", self.conn.network.find_network, self.options.floating_network or "",
                                  "Check `floating_network` (openstack network list --external).")
            ip = self._call(f"creating floating IP {name}", self.conn.network.create_ip,
                            floating_network_id=external.id, port_id=port_id, description=name)
        book.made(intended, ip.id, address=ip.floating_ip_address)
        return str(ip.floating_ip_address)

    def _wait_active(self, name: str, server_id: str, spec: CloudPairSpec) -> Any:
        deadline = time.monotonic() + self.options.timeout
        pause = POLL_FIRST
        while True:
            server = self._call(f"reading server {name}", self.conn.compute.get_server, server_id)
            if server.status == "ACTIVE":
                return server
            if server.status == "ERROR":
                fault = (server.fault or {}).get("message", "no fault message")
                raise CloudError(f"openstack: server {name} went to ERROR: {fault}",
                                 "Check the flavor, image and quota; `pgaasctl apply` again deletes it and makes "
                                 "a new one.")
            if time.monotonic() > deadline:
                raise CloudError(f"openstack: server {name} is still {server.status} after {self.options.timeout}s",
                                 "Raise `timeout` in the pair's openstack options, or check the cloud; `pgaasctl "
                                 "apply` again waits for it (nothing is made twice).")
            time.sleep(pause)  # polling the server's status
            pause = min(POLL_MAX, pause * 2)

    def servers(self, pair: str) -> dict[str, ServerFacts]:
        book = ResourceBook(self.store, self.cloud, pair)
        records = [r for r in book.of_kind("server")]
        if not records:
            return {}
        listed = {s.id: s for s in self._call(
            "listing servers", lambda: list(self.conn.compute.servers(name=f"^{pair_prefix(pair, self.owner)}-")))}
        out: dict[str, ServerFacts] = {}
        for record in records:
            server = listed.get(record.cloud_id)
            if server is None:
                out[record.node] = ServerFacts(cloud_id=record.cloud_id, status="missing")
                continue
            status = {"ACTIVE": "active", "SHUTOFF": "stopped", "ERROR": "error"}.get(server.status, "building")
            out[record.node] = ServerFacts(
                cloud_id=server.id, status=status, address=str(record.data.get("address", "")),  # type: ignore[arg-type]
                public_address=str(record.data.get("public_address", "")), zone=str(record.data.get("zone", "")),
                network=str(record.data.get("network", "")), fault=str((server.fault or {}).get("message", "")))
        return out

    def start_server(self, pair: str, node: str) -> None:
        record = next(r for r in ResourceBook(self.store, self.cloud, pair).of_kind("server") if r.node == node)
        self._call(f"starting server {record.name}", self.conn.compute.start_server, record.cloud_id)
        deadline = time.monotonic() + self.options.timeout
        pause = POLL_FIRST
        while self._call(f"reading server {record.name}", self.conn.compute.get_server, record.cloud_id).status != "ACTIVE":
            if time.monotonic() > deadline:
                raise CloudError(f"openstack: server {record.name} did not start within {self.options.timeout}s")
            time.sleep(pause)  # polling the server's status
            pause = min(POLL_MAX, pause * 2)

    def delete_server(self, pair: str, node: str) -> None:
        book = ResourceBook(self.store, self.cloud, pair)
        mine = [r for r in book.all() if r.node == node]
        for record in [r for r in mine if r.kind == "floating_ip"]:
            if record.cloud_id:
                self._call(f"deleting floating IP {record.name}", self.conn.network.delete_ip, record.cloud_id,
                           ignore_missing=True)
            book.forget(record)
        for record in [r for r in mine if r.kind == "server"]:
            server = self._existing_server(record)
            if server is not None:
                self._call(f"deleting server {record.name}", self.conn.compute.delete_server, server.id,
                           ignore_missing=True)
                self._wait_gone(record.name, server.id)
            book.forget(record)
        for record in [r for r in mine if r.kind == "port"]:
            ids = [record.cloud_id] if record.cloud_id else [p.id for p in self._call(
                f"looking for port {record.name}", lambda: list(self.conn.network.ports(name=record.name)))]
            for port_id in ids:
                self._call(f"deleting port {record.name}", self.conn.network.delete_port, port_id, ignore_missing=True)
            book.forget(record)
        for record in [r for r in mine if r.kind == "keepalived"]:
            book.forget(record)

    def _wait_gone(self, name: str, server_id: str) -> None:
        deadline = time.monotonic() + self.options.timeout
        pause = POLL_FIRST
        while self._call(f"reading server {name}", self.conn.compute.find_server, server_id, ignore_missing=True) is not None:
            if time.monotonic() > deadline:
                raise CloudError(f"openstack: server {name} is still there {self.options.timeout}s after its delete",
                                 "Check the server in the cloud; destroy again goes on from here.")
            time.sleep(pause)  # polling the delete
            pause = min(POLL_MAX, pause * 2)

    def release(self, pair: str) -> None:
        book = ResourceBook(self.store, self.cloud, pair)
        for kind, deleter in (("vip_port", self.conn.network.delete_port),
                              ("server_group", self.conn.compute.delete_server_group),
                              ("security_group", self.conn.network.delete_security_group)):
            for record in book.of_kind(kind):
                if record.cloud_id:
                    self._call(f"deleting {kind.replace('_', ' ')} {record.name}", deleter, record.cloud_id,
                               ignore_missing=True)
                book.forget(record)

    # -- the virtual IP
    def ensure_virtual_ip(self, pair: str, spec: CloudPairSpec) -> None:
        """A port holding the address (Neutron gives it to nobody else) and the address allowed on every node's
        port (without it Neutron's port security drops the traffic keepalived moves)."""
        assert spec.virtual_ip is not None
        book = ResourceBook(self.store, self.cloud, pair)
        vip = str(spec.virtual_ip)
        name = self._name(pair, suffix="vip")
        record = book.get("vip_port", name)
        if record is None or not record.cloud_id or record.data.get("address") != vip:
            if record is not None and record.cloud_id:
                self._call(f"deleting port {name}", self.conn.network.delete_port, record.cloud_id, ignore_missing=True)
            intended = book.intend("vip_port", name)
            found = [p for p in self._call(f"looking for port {name}", lambda: list(self.conn.network.ports(name=name)))
                     if any(ip["ip_address"] == vip for ip in p.fixed_ips or [])]
            port = found[0] if found else self._call(
                f"reserving the virtual IP {vip}", self.conn.network.create_port, network_id=self._network().id,
                name=name, fixed_ips=[{"subnet_id": self._subnet().id, "ip_address": vip}],
                description=f"pgaasctl: the virtual IP of pair {pair}")
            book.made(intended, port.id, address=vip)
        data_nodes = {n.name for n in spec.nodes}  # the witness never holds the address
        for record in [r for r in book.of_kind("port") if r.node in data_nodes]:
            port = self._call(f"reading port {record.name}", self.conn.network.get_port, record.cloud_id)
            pairs = port.allowed_address_pairs or []
            if not any(p.get("ip_address") == vip for p in pairs):
                self._call(f"allowing the virtual IP on port {record.name}", self.conn.network.update_port,
                           record.cloud_id, allowed_address_pairs=[{"ip_address": vip}])

    def virtual_ip_holder(self, pair: str, spec: CloudPairSpec) -> str | None:
        return None  # Neutron does not know which port answers for the address: the nodes do
