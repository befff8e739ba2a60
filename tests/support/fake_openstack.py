"""A local HTTP fake of the OpenStack APIs pgaasctl's openstack provider calls, for openstacksdk to talk to.

Keystone v3 (password tokens, the service catalog), Nova v2.1 (servers, server groups, flavors, start/stop),
Neutron v2.0 (networks, subnets, ports, security groups and rules, floating IPs) and Glance v2 (images), on one
ThreadingHTTPServer, answering in the shapes the API references document. Every request is validated as the real
services do: the body's top-level key, the required fields and no unknown ones (Nova's JSON schemas and Neutron's
attribute checks answer 400 otherwise), the token on every call (401).

Scenarios: ``fail(method, path_pattern, status, times)`` answers a call with an error (429 with Retry-After, 409,
403 quota, 503...) for its next `times` matches; ``statuses[name]`` scripts the statuses a server shows on its
next reads (BUILD, BUILD, ERROR...); ``delete_behind_back(name)`` removes a server as someone in the cloud's
console would. A server that reaches ACTIVE is backed by an EmulatedVm (tests/support/cloud_vm.py) at its port's
address, so everything after the cloud calls runs for real.
"""

from __future__ import annotations

import base64
import subprocess
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from providers.netns import NamespaceNetwork
from tests.support.cloud_vm import EmulatedVm, cloud_config_script
from tests.support.fake_http import ApiError, FakeHttpApi, check_fields

USER, PASSWORD, PROJECT = "pgaas-test", "fake-cloud-password", "pgaas-project"
TOKEN_PREFIX = "fake-os-token-"


def nova_error(status: int, message: str) -> ApiError:
    kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
            413: "overLimit", 429: "overLimit"}.get(status, "computeFault")
    return ApiError(status, {kind: {"code": status, "message": message}})


def neutron_error(status: int, kind: str, message: str) -> ApiError:
    return ApiError(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def _check_fields(body: Any, top: str, required: set[str], allowed: set[str], error: Callable[[str], ApiError]) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) != {top} or not isinstance(body[top], dict):
        raise error(f"the body must be an object with the single key {top!r}")
    return check_fields(body[top], required, allowed, error)


@dataclass
class FakeOpenStack(FakeHttpApi):
    subnet: IPv4Network  # the tenant network's subnet: VMs get addresses from it, on a bridge of this machine
    root: Path  # the VMs' files
    first_address: int = 10  # addresses handed out start at this offset in the subnet
    reported_cidr: str = ""  # the subnet's cidr as Neutron says it ("" = `subnet`)
    external_subnet: IPv4Network = IPv4Network("203.0.113.0/24")  # floating IPs (documentation range; never routed)
    statuses: dict[str, list[str]] = field(default_factory=dict)  # server name -> statuses shown on its next reads
    vms: dict[str, EmulatedVm] = field(default_factory=dict)  # server id -> its VM

    def __post_init__(self) -> None:
        FakeHttpApi.__init__(self)
        self.servers: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.security_groups: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.floating_ips: dict[str, dict[str, Any]] = {}
        self.network = {"id": str(uuid.uuid4()), "name": "pgaas-net", "subnets": [], "status": "ACTIVE",
                        "admin_state_up": True, "router:external": False, "shared": False, "mtu": 1500}
        self.external = {"id": str(uuid.uuid4()), "name": "public", "subnets": [], "status": "ACTIVE",
                         "admin_state_up": True, "router:external": True, "shared": True, "mtu": 1500}
        self.subnet_doc = {"id": str(uuid.uuid4()), "name": "pgaas-subnet", "network_id": self.network["id"],
                           "ip_version": 4, "cidr": self.reported_cidr or str(self.subnet), "gateway_ip": None, "enable_dhcp": True}
        self.network["subnets"] = [self.subnet_doc["id"]]
        self.images = {"debian-12": {"id": str(uuid.uuid4()), "name": "debian-12", "status": "active",
                                     "visibility": "public", "disk_format": "qcow2", "container_format": "bare"}}
        self.flavors = {"m1.medium": {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40}}
        self.tokens: set[str] = set()
        self.keypairs = {"ops"}  # Nova key pairs of the project
        self.zones = {"nova", "az1", "az2"}

    # -- life
    def start(self) -> FakeOpenStack:
        self.start_http()
        return self

    def close(self) -> None:
        self.stop_http()
        for fip in list(self.floating_ips.values()):
            self._unroute(fip["floating_ip_address"])
        for vm in list(self.vms.values()):
            vm.delete()
        self.vms.clear()
        NamespaceNetwork(self.subnet).remove_bridge_if_unused()

    def environment(self) -> dict[str, str]:
        """The OS_* variables a user would set for this cloud."""
        return {"OS_AUTH_URL": f"{self.url}/identity/v3", "OS_USERNAME": USER, "OS_PASSWORD": PASSWORD,
                "OS_PROJECT_NAME": PROJECT, "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
                "OS_REGION_NAME": "RegionOne", "OS_IDENTITY_API_VERSION": "3", "OS_INTERFACE": "public"}

    # -- scenarios
    def fail(self, method: str, pattern: str, status: int, times: int = 1, message: str = "",
             kind: str = "nova", retry_after: str | None = None, after: bool = False) -> None:
        text = message or {429: "Rate limit exceeded", 409: "Conflict: an operation is in progress",
                           403: "Policy does not allow this", 503: "Service Unavailable"}.get(status, "error")
        body = neutron_error(status, "Conflict" if status == 409 else "Error", text).body if kind == "neutron" \
            else nova_error(status, text).body
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.add_fault(method, pattern, status, body, times, headers, after)

    def delete_behind_back(self, name: str) -> None:
        """Someone deletes the server in the cloud's console (its port stays, as Nova leaves a port it did not make)."""
        with self.lock:
            for server_id, server in list(self.servers.items()):
                if server["name"] == name:
                    self._remove_server(server_id)

    def power_off(self, name: str) -> None:
        """The server's hypervisor loses it: Nova shows SHUTOFF, and everything on the VM is gone at once."""
        with self.lock:
            server = self.server_named(name)
            assert server is not None, name
            server["status"] = "SHUTOFF"
            self.vms[server["id"]].stop()

    def server_named(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.servers.values() if s["name"] == name), None)

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any,
              headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        token = headers.get("x-auth-token")
        if path.rstrip("/") in ("/identity", "/identity/v3"):
            return 200, self._identity_version(), {}
        if path == "/identity/v3/auth/tokens" and method == "POST":
            return self._token(body)
        if token is None or token not in self.tokens:
            raise ApiError(401, {"error": {"code": 401, "title": "Unauthorized",
                                           "message": "The request you have made requires authentication."}})
        for prefix, handler in (("/compute", self._compute), ("/network", self._network_api), ("/image", self._image)):
            if path == prefix or path.startswith(prefix + "/"):
                with self.lock:
                    return handler(method, path[len(prefix):] or "/", query, body)
        raise ApiError(404, {"error": {"code": 404, "message": f"no service at {path}"}})

    # -- keystone
    def _identity_version(self) -> dict[str, Any]:
        return {"version": {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                            "links": [{"rel": "self", "href": f"{self.url}/identity/v3/"}],
                            "media-types": [{"base": "application/json",
                                             "type": "application/vnd.openstack.identity-v3+json"}]}}

    def _token(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        try:
            identity = body["auth"]["identity"]
            user = identity["password"]["user"]
            assert identity["methods"] == ["password"]
            project = body["auth"]["scope"]["project"]
        except (KeyError, TypeError, AssertionError):
            raise ApiError(400, {"error": {"code": 400, "title": "Bad Request",
                                           "message": "Expecting to find auth.identity.password and auth.scope"}}) from None
        if user.get("name") != USER or user.get("password") != PASSWORD or project.get("name") != PROJECT:
            raise ApiError(401, {"error": {"code": 401, "title": "Unauthorized",
                                           "message": "The request you have made requires authentication."}})
        token = TOKEN_PREFIX + uuid.uuid4().hex
        self.tokens.add(token)

        def service(kind: str, name: str, path: str) -> dict[str, Any]:
            return {"type": kind, "name": name, "id": uuid.uuid4().hex, "endpoints": [
                {"id": uuid.uuid4().hex, "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                 "url": f"{self.url}{path}"}]}

        domain = {"id": "default", "name": "Default"}
        return 201, {"token": {
            "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
            "issued_at": "2026-01-01T00:00:00.000000Z", "audit_ids": [uuid.uuid4().hex[:22]],
            "user": {"id": "u-" + USER, "name": USER, "domain": domain, "password_expires_at": None},
            "project": {"id": "p-" + PROJECT, "name": PROJECT, "domain": domain},
            "roles": [{"id": "r-member", "name": "member"}],
            "catalog": [service("identity", "keystone", "/identity/v3"), service("compute", "nova", "/compute/v2.1"),
                        service("network", "neutron", "/network"), service("image", "glance", "/image")],
        }}, {"X-Subject-Token": token}

    # -- nova
    def _compute(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, dict[str, str]]:
        path = path.removeprefix("/v2.1")
        if path in ("", "/"):
            return 200, {"version": {"id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
                                     "updated": "2013-07-23T11:33:21Z",
                                     "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/"}]}}, {}
        if path.startswith("/flavors"):
            return self._flavors(path, query)
        if path.startswith("/os-server-groups"):
            return self._server_groups(method, path, body)
        if path.startswith("/servers"):
            return self._servers(method, path, query, body)
        raise nova_error(404, f"no route {method} {path}")

    def _flavors(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        rest = path.removeprefix("/flavors").strip("/")
        if rest in ("", "detail"):
            return 200, {"flavors": list(self.flavors.values())}, {}
        found = next((f for f in self.flavors.values() if f["id"] == rest), None)
        if found is None:
            raise nova_error(404, f"Flavor {rest} could not be found.")
        return 200, {"flavor": found}, {}

    def _server_groups(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        rest = path.removeprefix("/os-server-groups").strip("/")
        if method == "GET" and not rest:
            return 200, {"server_groups": list(self.groups.values())}, {}
        if method == "POST" and not rest:
            item = _check_fields(body, "server_group", {"name", "policy"}, {"name", "policy", "rules"},
                                 lambda m: nova_error(400, m))
            if item["policy"] not in ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"):
                raise nova_error(400, f"Invalid input: policy {item['policy']!r}")
            group = {"id": str(uuid.uuid4()), "name": item["name"], "policy": item["policy"], "rules": {},
                     "members": [], "project_id": "p-" + PROJECT, "user_id": "u-" + USER}
            self.groups[group["id"]] = group
            return 200, {"server_group": group}, {}
        if method == "GET":
            return 200, {"server_group": self._get(self.groups, rest, "Server group")}, {}
        if method == "DELETE":
            group = self._get(self.groups, rest, "Server group")
            if group["members"]:
                raise nova_error(409, "Server group has members")
            del self.groups[rest]
            return 204, None, {}
        raise nova_error(405, "method not allowed")

    @staticmethod
    def _get(table: dict[str, dict[str, Any]], key: str, what: str) -> dict[str, Any]:
        if key not in table:
            raise nova_error(404, f"{what} {key} could not be found.")
        return table[key]

    def _server_view(self, server: dict[str, Any]) -> dict[str, Any]:
        scripted = self.statuses.get(server["name"])
        if server["status"] == "BUILD":
            if scripted:
                server["status"] = scripted.pop(0)
                if server["status"] == "ERROR":
                    server["fault"] = {"code": 500, "message": "No valid host was found. There are not enough hosts "
                                       "available.", "created": "2026-01-01T00:00:00Z"}
            if server["status"] == "BUILD" and scripted is None:
                server["status"] = "ACTIVE"
            if server["status"] == "ACTIVE":
                self._power_on(server)
        addresses: dict[str, list[dict[str, Any]]] = {}
        for port in self.ports.values():
            if port["device_id"] == server["id"]:
                for ip in port["fixed_ips"]:
                    addresses.setdefault(self.network["name"], []).append(
                        {"addr": ip["ip_address"], "version": 4, "OS-EXT-IPS:type": "fixed",
                         "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
                for fip in self.floating_ips.values():
                    if fip["port_id"] == port["id"]:
                        addresses[self.network["name"]].append(
                            {"addr": fip["floating_ip_address"], "version": 4, "OS-EXT-IPS:type": "floating",
                             "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
        view = {k: v for k, v in server.items() if not k.startswith("_")}
        view["addresses"] = addresses
        return view

    def _power_on(self, server: dict[str, Any]) -> None:
        port = next(p for p in self.ports.values() if p["device_id"] == server["id"])
        vm = self.vms.get(server["id"])
        if vm is None:
            vm = EmulatedVm(name=server["name"], address=port["fixed_ips"][0]["ip_address"], subnet=self.subnet,
                            root=self.root / server["id"], first_boot=cloud_config_script(server["_user_data"]))
            self.vms[server["id"]] = vm
        vm.boot()
        for fip in self.floating_ips.values():
            if fip["port_id"] == port["id"]:
                vm.add_address(fip["floating_ip_address"])

    def _servers(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, dict[str, str]]:
        rest = path.removeprefix("/servers").strip("/")
        if method == "GET" and rest in ("", "detail"):
            servers = list(self.servers.values())
            if "name" in query:
                servers = [s for s in servers if re.search(query["name"][0], s["name"])]
            views = [self._server_view(s) for s in servers]
            return 200, {"servers": views if rest == "detail" else [
                {"id": v["id"], "name": v["name"], "links": []} for v in views]}, {}
        if method == "POST" and not rest:
            return self._create_server(body)
        server_id, _, action = rest.partition("/")
        server = self._get(self.servers, server_id, "Instance")
        if method == "GET" and not action:
            return 200, {"server": self._server_view(server)}, {}
        if method == "DELETE" and not action:
            self._remove_server(server_id)
            return 204, None, {}
        if method == "POST" and action == "action":
            if not isinstance(body, dict) or len(body) != 1:
                raise nova_error(400, "an action body has exactly one key")
            verb = next(iter(body))
            if verb == "os-start":
                if server["status"] != "SHUTOFF":
                    raise nova_error(409, f"Cannot 'start' instance {server_id} while it is in vm_state active")
                server["status"] = "ACTIVE"
                self.vms[server_id].boot()
            elif verb == "os-stop":
                server["status"] = "SHUTOFF"
                self.vms[server_id].stop()
            else:
                raise nova_error(400, f"action {verb} is not supported here")
            return 202, None, {}
        raise nova_error(404, f"no route {method} {path}")

    def _remove_server(self, server_id: str) -> None:
        """The server goes, its VM with it; its port stays, unbound (Nova leaves a port it did not make)."""
        del self.servers[server_id]
        for group in self.groups.values():
            if server_id in group["members"]:
                group["members"].remove(server_id)
        for port in self.ports.values():
            if port["device_id"] == server_id:
                port["device_id"], port["device_owner"], port["status"] = "", "", "DOWN"
        vm = self.vms.pop(server_id, None)
        if vm is not None:
            vm.delete()

    def _create_server(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict) or "server" not in body:
            raise nova_error(400, "the body must carry 'server'")
        item = _check_fields({"server": body["server"]}, "server", {"name", "imageRef", "flavorRef", "networks"},
                             {"name", "imageRef", "flavorRef", "networks", "user_data", "metadata", "key_name",
                              "availability_zone", "security_groups"}, lambda m: nova_error(400, m))
        # Nova documents the hints under os:scheduler_hints, and accepts OS-SCH-HNT:scheduler_hints as its alias
        extra = {k for k in body if k not in ("server", "os:scheduler_hints", "OS-SCH-HNT:scheduler_hints")}
        if extra:
            raise nova_error(400, f"Additional properties are not allowed ({sorted(extra)})")
        hints = body.get("os:scheduler_hints", body.get("OS-SCH-HNT:scheduler_hints"))
        if hints is not None:
            if not isinstance(hints, dict) or set(hints) != {"group"} or hints["group"] not in self.groups:
                raise nova_error(400, f"Invalid scheduler hints {hints!r}")
        if not any(i["id"] == item["imageRef"] for i in self.images.values()):
            raise nova_error(400, f"Image {item['imageRef']} could not be found.")
        if "key_name" in item and item["key_name"] not in self.keypairs:
            raise nova_error(400, "Invalid key_name provided.")
        if item.get("availability_zone", "nova") not in self.zones:
            raise nova_error(400, "The requested availability zone is not available")
        if item["flavorRef"] not in {f["id"] for f in self.flavors.values()}:
            raise nova_error(400, f"Flavor {item['flavorRef']} could not be found.")
        if not isinstance(item["networks"], list) or len(item["networks"]) != 1 or set(item["networks"][0]) != {"port"}:
            raise nova_error(400, "networks must list the port to boot on")
        port = self.ports.get(item["networks"][0]["port"])
        if port is None:
            raise nova_error(400, f"Port {item['networks'][0]['port']} could not be found.")
        if port["device_id"]:
            raise nova_error(409, f"Port {port['id']} is still in use.")
        user_data = base64.b64decode(item.get("user_data", ""), validate=True).decode()
        if len(item.get("user_data", "")) > 65535:
            raise nova_error(400, "user_data is longer than 65535 bytes")
        metadata = item.get("metadata", {})
        if any(len(k) > 255 or len(str(v)) > 255 for k, v in metadata.items()):
            raise nova_error(400, "metadata keys and values are at most 255 characters")
        server = {"id": str(uuid.uuid4()), "name": item["name"], "status": "BUILD", "metadata": metadata,
                  "image": {"id": item["imageRef"]}, "flavor": {"original_name": item["flavorRef"]},
                  "key_name": item.get("key_name"), "OS-EXT-AZ:availability_zone": item.get("availability_zone", "nova"),
                  "tenant_id": "p-" + PROJECT, "user_id": "u-" + USER, "created": "2026-01-01T00:00:00Z",
                  "_user_data": user_data, "_hints": hints}
        port["device_id"], port["device_owner"], port["status"] = server["id"], "compute:nova", "ACTIVE"
        if hints is not None:
            group = self.groups[hints["group"]]
            if group["policy"] == "anti-affinity" and len(group["members"]) >= 3:  # this fake cloud has 3 hypervisors
                raise nova_error(400, "No valid host was found: the anti-affinity group is full")
            group["members"].append(server["id"])
        self.servers[server["id"]] = server
        return 202, {"server": {"id": server["id"], "links": [], "adminPass": "not-used",
                                "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]}}, {}

    # -- neutron
    def _network_api(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, dict[str, str]]:
        if path in ("", "/"):
            return 200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"{self.url}/network/v2.0/"}]}]}, {}
        path = path.removeprefix("/v2.0")
        collection, _, rest = path.strip("/").partition("/")
        tables = {"networks": ("network", {n["id"]: n for n in (self.network, self.external)}),
                  "subnets": ("subnet", {self.subnet_doc["id"]: self.subnet_doc}),
                  "ports": ("port", self.ports), "security-groups": ("security_group", self.security_groups),
                  "security-group-rules": ("security_group_rule", self.rules),
                  "floatingips": ("floatingip", self.floating_ips)}
        if collection not in tables:
            raise neutron_error(404, "HTTPNotFound", f"The resource could not be found: {path}")
        single, table = tables[collection]
        if method == "GET" and not rest:
            items = [i for i in table.values() if all(str(i.get(k)) in v or (isinstance(i.get(k), bool) and
                                                                                 str(i.get(k)).lower() in v)
                                                     for k, v in query.items() if k not in ("fields", "limit", "marker"))]
            return 200, {collection.replace("-", "_"): items}, {}
        if method == "GET":
            if rest not in table:
                raise neutron_error(404, f"{single.title().replace('_', '')}NotFound",
                                    f"{single.replace('_', ' ').title()} {rest} could not be found.")
            return 200, {single: table[rest]}, {}
        if method == "POST" and not rest:
            creator = {"ports": self._create_port, "security-groups": self._create_security_group,
                       "security-group-rules": self._create_rule, "floatingips": self._create_floating_ip}.get(collection)
            if creator is None:
                raise neutron_error(405, "HTTPMethodNotAllowed", "not allowed")
            return 201, {single: creator(body)}, {}
        if method == "PUT" and rest:
            if collection != "ports" or rest not in table:
                raise neutron_error(404, "PortNotFound", f"Port {rest} could not be found.")
            item = _check_fields(body, "port", set(), {"allowed_address_pairs", "name", "description",
                                                        "security_groups"},
                                 lambda m: neutron_error(400, "HTTPBadRequest", m))
            for pair in item.get("allowed_address_pairs", []):
                IPv4Address(pair["ip_address"])
            table[rest].update(item)
            return 200, {"port": table[rest]}, {}
        if method == "DELETE" and rest:
            if rest not in table:
                raise neutron_error(404, f"{single.title().replace('_', '')}NotFound", f"{rest} could not be found.")
            if collection == "ports" and table[rest]["device_owner"] == "compute:nova":
                raise neutron_error(409, "PortInUse", f"Port {rest} is in use by a server.")
            if collection == "security-groups" and any(rest in p["security_groups"] for p in self.ports.values()):
                raise neutron_error(409, "SecurityGroupInUse", f"Security Group {rest} in use.")
            if collection == "floatingips":
                self._unroute(table[rest]["floating_ip_address"])
            del table[rest]
            if collection == "security-groups":
                for rule_id in [r for r, v in self.rules.items() if v["security_group_id"] == rest]:
                    del self.rules[rule_id]
            return 204, None, {}
        raise neutron_error(405, "HTTPMethodNotAllowed", f"{method} {path}")

    def _neutron_check(self, body: Any, top: str, required: set[str], allowed: set[str]) -> dict[str, Any]:
        return _check_fields(body, top, required, allowed, lambda m: neutron_error(400, "HTTPBadRequest", m))

    def _free_address(self, wanted: str | None) -> str:
        used = {ip["ip_address"] for p in self.ports.values() for ip in p["fixed_ips"]}
        if wanted is not None:
            if IPv4Address(wanted) not in self.subnet:
                raise neutron_error(400, "InvalidIpForSubnet", f"IP address {wanted} is not a valid IP for the subnet")
            if wanted in used:
                raise neutron_error(409, "IpAddressAlreadyAllocated", f"IP address {wanted} already allocated")
            return wanted
        for offset in range(self.first_address, self.subnet.num_addresses - 1):
            candidate = str(self.subnet.network_address + offset)
            if candidate not in used:
                return candidate
        raise neutron_error(409, "IpAddressGenerationFailure", "No more IP addresses available on network")

    def _create_port(self, body: Any) -> dict[str, Any]:
        item = self._neutron_check(body, "port", {"network_id"}, {"network_id", "name", "description",
                                   "security_groups", "fixed_ips", "allowed_address_pairs", "admin_state_up"})
        if item["network_id"] != self.network["id"]:
            raise neutron_error(404, "NetworkNotFound", f"Network {item['network_id']} could not be found.")
        fixed = item.get("fixed_ips") or [{}]
        if len(fixed) != 1 or not set(fixed[0]) <= {"subnet_id", "ip_address"}:
            raise neutron_error(400, "HTTPBadRequest", "fixed_ips: one entry of subnet_id and ip_address")
        if fixed[0].get("subnet_id", self.subnet_doc["id"]) != self.subnet_doc["id"]:
            raise neutron_error(400, "HTTPBadRequest", "Invalid input for fixed_ips: subnet not on the network")
        for group in item.get("security_groups", []):
            if group not in self.security_groups:
                raise neutron_error(404, "SecurityGroupNotFound", f"Security group {group} does not exist")
        port = {"id": str(uuid.uuid4()), "name": item.get("name", ""), "network_id": item["network_id"],
                "description": item.get("description", ""), "admin_state_up": True, "status": "DOWN",
                "mac_address": "fa:16:3e:%02x:%02x:%02x" % tuple(uuid.uuid4().bytes[:3]), "device_id": "",
                "device_owner": "", "security_groups": item.get("security_groups", []),
                "allowed_address_pairs": item.get("allowed_address_pairs", []), "project_id": "p-" + PROJECT,
                "fixed_ips": [{"subnet_id": self.subnet_doc["id"],
                               "ip_address": self._free_address(fixed[0].get("ip_address"))}]}
        self.ports[port["id"]] = port
        return port

    def _create_security_group(self, body: Any) -> dict[str, Any]:
        item = self._neutron_check(body, "security_group", {"name"}, {"name", "description", "stateful"})
        group = {"id": str(uuid.uuid4()), "name": item["name"], "description": item.get("description", ""),
                 "project_id": "p-" + PROJECT, "stateful": True, "security_group_rules": []}
        self.security_groups[group["id"]] = group
        for ethertype in ("IPv4", "IPv6"):  # Neutron adds the default egress rules
            self._store_rule({"security_group_id": group["id"], "direction": "egress", "ethertype": ethertype})
        return group

    def _store_rule(self, item: dict[str, Any]) -> dict[str, Any]:
        rule = {"id": str(uuid.uuid4()), "protocol": None, "port_range_min": None, "port_range_max": None,
                "remote_ip_prefix": None, "remote_group_id": None, "description": "", **item}
        self.rules[rule["id"]] = rule
        self.security_groups[item["security_group_id"]]["security_group_rules"].append(rule)
        return rule

    def _create_rule(self, body: Any) -> dict[str, Any]:
        item = self._neutron_check(body, "security_group_rule", {"security_group_id", "direction"},
                                   {"security_group_id", "direction", "ethertype", "protocol", "port_range_min",
                                    "port_range_max", "remote_ip_prefix", "remote_group_id", "description"})
        if item["security_group_id"] not in self.security_groups:
            raise neutron_error(404, "SecurityGroupNotFound", f"Security group {item['security_group_id']} does not exist")
        if item["direction"] not in ("ingress", "egress"):
            raise neutron_error(400, "HTTPBadRequest", "direction must be ingress or egress")
        if item.get("remote_ip_prefix") and item.get("remote_group_id"):
            raise neutron_error(400, "SecurityGroupRemoteGroupAndRemoteIpPrefix",
                                "Only remote_ip_prefix or remote_group_id may be provided.")
        if item.get("remote_ip_prefix"):
            IPv4Network(item["remote_ip_prefix"])
        if item.get("protocol") not in (None, "tcp", "udp", "icmp", "vrrp", "112"):
            raise neutron_error(400, "SecurityGroupRuleInvalidProtocol", f"protocol {item.get('protocol')!r}")
        duplicate = next((r for r in self.rules.values() if all(r.get(k) == item.get(k) for k in (
            "security_group_id", "direction", "protocol", "port_range_min", "remote_ip_prefix", "remote_group_id"))), None)
        if duplicate is not None:
            raise neutron_error(409, "SecurityGroupRuleExists", f"Security group rule already exists. Rule id is {duplicate['id']}.")
        return self._store_rule({"ethertype": "IPv4", **item})

    def _create_floating_ip(self, body: Any) -> dict[str, Any]:
        item = self._neutron_check(body, "floatingip", {"floating_network_id"},
                                   {"floating_network_id", "port_id", "description", "fixed_ip_address"})
        if item["floating_network_id"] != self.external["id"]:
            raise neutron_error(400, "BadRequest", "the network is not external")
        if item.get("port_id") and item["port_id"] not in self.ports:
            raise neutron_error(404, "PortNotFound", f"Port {item['port_id']} could not be found.")
        used = {f["floating_ip_address"] for f in self.floating_ips.values()}
        address = next(str(a) for a in self.external_subnet.hosts() if str(a) not in used)
        fip = {"id": str(uuid.uuid4()), "floating_ip_address": address, "floating_network_id": self.external["id"],
               "port_id": item.get("port_id"), "description": item.get("description", ""), "status": "ACTIVE",
               "fixed_ip_address": self.ports[item["port_id"]]["fixed_ips"][0]["ip_address"] if item.get("port_id") else None}
        self.floating_ips[fip["id"]] = fip
        vm = self.vms.get(self.ports[fip["port_id"]]["device_id"]) if fip["port_id"] else None
        if vm is not None:  # 1:1 NAT, emulated: the address reaches the VM through this machine's bridge
            vm.add_address(address)
        return fip

    def _unroute(self, address: str) -> None:
        for vm in self.vms.values():
            vm.remove_address(address)
        subprocess.run(["ip", "route", "del", f"{address}/32"], capture_output=True, check=False)

    # -- glance
    def _image(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any, dict[str, str]]:
        if path in ("", "/"):
            return 300, {"versions": [{"id": "v2.16", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"{self.url}/image/v2/"}]}]}, {}
        rest = path.removeprefix("/v2").strip("/")
        if method == "GET" and rest == "images":
            images = list(self.images.values())
            if "name" in query:
                images = [i for i in images if i["name"] == query["name"][0]]
            return 200, {"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}, {}
        if method == "GET" and rest.startswith("images/"):
            image_id = rest.removeprefix("images/")
            found = next((i for i in self.images.values() if i["id"] == image_id), None)
            if found is None:
                raise ApiError(404, {"message": f"No image found with ID {image_id}", "code": "404 Not Found"})
            return 200, found, {}
        raise ApiError(404, {"message": f"no route {method} {path}"})
