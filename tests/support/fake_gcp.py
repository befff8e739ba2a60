"""A local HTTP fake of the Google APIs pgaasctl's gcp provider calls, for google-cloud-compute to talk to.

OAuth 2.0 (the JWT-bearer grant of a service account: the assertion's signature is checked with the account's
public key), and Compute Engine v1: instances, zone/region/global operations, firewalls, subnetworks, addresses,
regional health checks, unmanaged instance groups, regional backend services (with getHealth) and forwarding
rules, in the REST shapes of the API reference (camelCase JSON, operations that finish as DONE, with `error`).
Every insert is validated as the API does: required fields, no unknown field, references that exist.

An instance that reaches RUNNING is an EmulatedVm (tests/support/cloud_vm.py) running its startup script, so the
rest of apply runs for real. The load balancer's health is what its health check finds: the fake asks each
member's /primary on port 8008, as Google's checkers would. (The load balancer's data path, the virtual IP itself,
is not emulated: nothing on this machine carries it.)

Scenarios: ``fail`` (an HTTP error for the next calls matching), ``operation_errors[name]`` (the insert's operation
ends with this error), ``statuses[name]`` (the statuses an instance shows on its next reads), and
``delete_behind_back``.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.netns import NamespaceNetwork
from tests.support.cloud_vm import EmulatedVm
from tests.support.fake_http import ApiError, FakeHttpApi, check_fields

PROJECT, REGION, ZONES = "pgaas-project", "europe-west1", ("europe-west1-b", "europe-west1-c", "europe-west1-d")
NETWORK, SUBNET = "pgaas-net", "pgaas-subnet"
ACCOUNT = "pgaasctl@pgaas-project.iam.gserviceaccount.com"
BASE = "https://www.googleapis.com/compute/v1"
_ids = itertools.count(1_000_000_000_000)


def google_error(status: int, message: str, reason: str = "invalid") -> ApiError:
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    return ApiError(status, {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN"),
                                       "errors": [{"message": message, "domain": "global", "reason": reason}]}})


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


@dataclass
class FakeGcp(FakeHttpApi):
    subnet: IPv4Network  # the VPC subnet: VMs get addresses from it, on a bridge of this machine
    root: Path
    first_address: int = 100  # past the openstack fake's, so that both may share a bridge
    reported_cidr: str = ""  # the subnet's ipCidrRange as the API says it ("" = `subnet`)
    statuses: dict[str, list[str]] = field(default_factory=dict)
    operation_errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # instance -> (code, message)
    vms: dict[str, EmulatedVm] = field(default_factory=dict)  # instance name -> its VM

    def __post_init__(self) -> None:
        FakeHttpApi.__init__(self)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens: set[str] = set()
        self.instances: dict[str, dict[str, Any]] = {}  # name -> instance (names are unique per project here)
        self.operations: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            kind: {} for kind in ("firewalls", "addresses", "healthChecks", "backendServices", "forwardingRules",
                                  "instanceGroups")}
        self.members: dict[str, list[str]] = {}  # instance group name -> instance URLs

    # -- life
    def start(self) -> FakeGcp:
        self.start_http()
        return self

    def close(self) -> None:
        self.stop_http()
        for vm in list(self.vms.values()):
            vm.delete()
        self.vms.clear()
        NamespaceNetwork(self.subnet).remove_bridge_if_unused()

    def service_account_file(self, path: Path) -> Path:
        """A service account key whose token_uri is this fake (as a downloaded key file looks)."""
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        path.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "private_key_id": "fake-key-1", "private_key": pem,
            "client_email": ACCOUNT, "client_id": "1234567890", "token_uri": f"{self.url}/token",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        }))
        path.chmod(0o600)
        return path

    # -- scenarios
    def fail(self, method: str, pattern: str, status: int, times: int = 1, message: str = "",
             reason: str = "", after: bool = False) -> None:
        text = message or {429: "Rate Limit Exceeded", 403: "Required 'compute.instances.create' permission",
                           503: "Backend Error", 409: "The resource is not ready"}.get(status, "error")
        why = reason or {429: "rateLimitExceeded", 403: "forbidden", 409: "resourceNotReady"}.get(status, "backendError")
        self.add_fault(method, pattern, status, google_error(status, text, why).body, times, after=after)

    def delete_behind_back(self, name: str) -> None:
        with self.lock:
            instance = self.instances.pop(name)
            for members in self.members.values():
                if instance["selfLink"] in members:
                    members.remove(instance["selfLink"])
            vm = self.vms.pop(name, None)
            if vm is not None:
                vm.delete()

    def power_off(self, name: str) -> None:
        with self.lock:
            self.instances[name]["status"] = "TERMINATED"
            self.vms[name].stop()

    # -- HTTP
    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any,
              headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if path == "/token" and method == "POST":
            return self._token(body)
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or not self._valid_bearer(authorization[7:]):
            raise google_error(401, "Request had invalid authentication credentials.", "authError")
        match = re.fullmatch(r"/compute/v1/projects/([^/]+)/(.*)", path)
        if match is None:
            raise google_error(404, f"no route {path}", "notFound")
        if match.group(1) != PROJECT:
            raise google_error(403, f"Permission denied on project {match.group(1)}", "forbidden")
        with self.lock:
            return 200, self._compute(method, match.group(2), query, body), {}

    def _valid_bearer(self, token: str) -> bool:
        """An access token this fake issued, or a self-signed JWT of the service account (google-auth sends one
        straight to the API when it can, as Google accepts)."""
        if token in self.tokens:
            return True
        try:
            self._verified_claims(token)
            return True
        except Exception:
            return False

    def _verified_claims(self, jwt: str) -> dict[str, Any]:
        header, payload, signature = jwt.encode().split(b".")
        self.key.public_key().verify(_b64(signature), header + b"." + payload, padding.PKCS1v15(), hashes.SHA256())
        claims = json.loads(_b64(payload))
        assert claims["iss"] == ACCOUNT and claims["exp"] > time.time()
        return dict(claims)

    def _token(self, form: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(form, dict) or form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise ApiError(400, {"error": "unsupported_grant_type"})
        try:
            claims = self._verified_claims(form["assertion"])
            assert claims["aud"] == f"{self.url}/token"
            assert "https://www.googleapis.com/auth/compute" in claims["scope"].split()
        except Exception:
            raise ApiError(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}) from None
        token = "ya29.fake-" + uuid.uuid4().hex
        self.tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}, {}

    # -- compute
    def _compute(self, method: str, rest: str, query: dict[str, list[str]], body: Any) -> Any:
        parts = rest.split("/")
        scope, where = parts[0], (parts[1] if parts[0] in ("zones", "regions") else "")
        tail = parts[2:] if where else parts[1:]
        if scope == "zones" and where not in ZONES:
            raise google_error(400, f"Invalid value for field 'zone': '{where}'. Unknown zone.")
        if scope == "regions" and where != REGION:
            raise google_error(400, f"Invalid value for field 'region': '{where}'. Unknown region.")
        collection = tail[0] if tail else ""
        name = tail[1] if len(tail) > 1 else ""
        verb = tail[2] if len(tail) > 2 else ""
        if collection == "operations":
            operation = self.operations.get(name)
            if operation is None:
                raise google_error(404, f"The resource 'operations/{name}' was not found", "notFound")
            self._advance(operation)
            return operation
        if collection == "subnetworks" and method == "GET":
            if name != SUBNET:
                raise google_error(404, f"The resource 'projects/{PROJECT}/regions/{REGION}/subnetworks/{name}' "
                                        "was not found", "notFound")
            return {"kind": "compute#subnetwork", "id": "77", "name": SUBNET, "region": f"{BASE}/projects/{PROJECT}/regions/{REGION}",
                    "network": self._network(), "ipCidrRange": self.reported_cidr or str(self.subnet),
                    "selfLink": f"{BASE}/projects/{PROJECT}/regions/{REGION}/subnetworks/{SUBNET}"}
        if collection == "instances":
            return self._instances(method, where, name, verb, query, body)
        if collection in self.tables:
            return self._generic(method, scope, where, collection, name, verb, body)
        raise google_error(404, f"no route {method} {rest}", "notFound")

    def _network(self) -> str:
        return f"{BASE}/projects/{PROJECT}/global/networks/{NETWORK}"

    def _link(self, scope: str, where: str, collection: str, name: str) -> str:
        middle = f"{scope}/{where}" if where else scope
        return f"{BASE}/projects/{PROJECT}/{middle}/{collection}/{name}"

    def _operation(self, scope: str, where: str, kind: str, target: str, error: tuple[str, str] | None = None) -> dict[str, Any]:
        name = f"operation-{uuid.uuid4().hex[:20]}"
        operation: dict[str, Any] = {
            "kind": "compute#operation", "id": str(next(_ids)), "name": name, "operationType": kind,
            "targetLink": target, "status": "RUNNING", "progress": 0, "insertTime": "2026-01-01T00:00:00.000-00:00",
            "selfLink": self._link(scope, where, "operations", name), "user": ACCOUNT}
        if scope == "zones":
            operation["zone"] = f"{BASE}/projects/{PROJECT}/zones/{where}"
        elif scope == "regions":
            operation["region"] = f"{BASE}/projects/{PROJECT}/regions/{where}"
        if error is not None:
            operation["_error"] = error
        self.operations[name] = operation
        return dict(operation)

    @staticmethod
    def _advance(operation: dict[str, Any]) -> None:
        """An operation is DONE at its first read after it started (with its error, if it has one)."""
        if operation["status"] == "RUNNING":
            operation["status"], operation["progress"] = "DONE", 100
            operation["endTime"] = "2026-01-01T00:00:01.000-00:00"
            error = operation.pop("_error", None)
            if error is not None:
                operation["error"] = {"errors": [{"code": error[0], "message": error[1]}]}
                operation["httpErrorStatusCode"], operation["httpErrorMessage"] = 503, "SERVICE UNAVAILABLE"

    # instances
    def _instances(self, method: str, zone: str, name: str, verb: str, query: dict[str, list[str]], body: Any) -> Any:
        if method == "GET" and not name:
            items = [self._instance_view(i) for i in self.instances.values() if i["zone"].endswith("/" + zone)]
            if "filter" in query:
                pattern = re.fullmatch(r'name = "([^"]*)"', query["filter"][0])
                if pattern is None:
                    raise google_error(400, f"Invalid list filter expression {query['filter'][0]!r}")
                wanted = re.compile(re.escape(pattern.group(1)).replace(r"\*", ".*") + "$")
                items = [i for i in items if wanted.match(i["name"])]
            return {"kind": "compute#instanceList", "items": items, "id": f"projects/{PROJECT}/zones/{zone}/instances"}
        if method == "POST" and not name:
            return self._insert_instance(zone, body)
        instance = self.instances.get(name)
        if instance is None or not instance["zone"].endswith("/" + zone):
            raise google_error(404, f"The resource 'projects/{PROJECT}/zones/{zone}/instances/{name}' was not found",
                               "notFound")
        if method == "GET" and not verb:
            return self._instance_view(instance)
        if method == "DELETE" and not verb:
            del self.instances[name]
            vm = self.vms.pop(name, None)
            if vm is not None:
                vm.delete()
            return self._operation("zones", zone, "delete", instance["selfLink"])
        if method == "POST" and verb == "start":
            if instance["status"] == "TERMINATED":
                instance["status"] = "RUNNING"
                self.vms[name].boot()
            return self._operation("zones", zone, "start", instance["selfLink"])
        if method == "POST" and verb == "stop":
            instance["status"] = "TERMINATED"
            self.vms[name].stop()
            return self._operation("zones", zone, "stop", instance["selfLink"])
        raise google_error(404, f"no route {method} instances/{name}/{verb}", "notFound")

    def _insert_instance(self, zone: str, body: Any) -> Any:
        error = lambda message: google_error(400, message)  # noqa: E731
        item = check_fields(body, {"name", "machineType", "disks", "networkInterfaces"},
                            {"name", "machineType", "disks", "networkInterfaces", "metadata", "tags", "labels",
                             "description", "serviceAccounts", "scheduling"}, error)
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", item["name"]):
            raise error(f"Invalid value for field 'resource.name': '{item['name']}'. Must be a match of regex "
                        "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        if item["name"] in self.instances:
            raise google_error(409, f"The resource 'projects/{PROJECT}/zones/{zone}/instances/{item['name']}' "
                                    "already exists", "alreadyExists")
        if not re.fullmatch(rf"zones/{re.escape(zone)}/machineTypes/[a-z0-9-]+", item["machineType"]):
            raise error(f"Invalid value for field 'resource.machineType': '{item['machineType']}'.")
        disk = item["disks"][0]
        check_fields(disk, {"boot", "initializeParams"}, {"boot", "autoDelete", "initializeParams"}, error)
        image = disk["initializeParams"].get("sourceImage", "")
        if not re.fullmatch(r"projects/[a-z0-9-]+/global/images/(family/)?[a-z0-9-]+", image):
            raise error(f"Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '{image}'.")
        nic = item["networkInterfaces"][0]
        check_fields(nic, {"network"}, {"network", "subnetwork", "accessConfigs", "networkIP"}, error)
        if not nic["network"].endswith(f"/global/networks/{NETWORK}"):
            raise error(f"Invalid value for field 'resource.networkInterfaces[0].network': '{nic['network']}'.")
        script = next((i["value"] for i in item.get("metadata", {}).get("items", []) if i["key"] == "startup-script"), "")
        if len(script) > 256 * 1024:
            raise error("metadata value of startup-script is longer than 256 KB")
        target = self._link("zones", zone, "instances", item["name"])
        failure = self.operation_errors.pop(item["name"], None)
        if "debian-13" in image:
            failure = ("RESOURCE_NOT_FOUND", f"The resource '{image}' was not found")
        operation = self._operation("zones", zone, "insert", target, failure)
        if failure is None:
            self.instances[item["name"]] = {
                "kind": "compute#instance", "id": str(next(_ids)), "name": item["name"], "status": "PROVISIONING",
                "zone": f"{BASE}/projects/{PROJECT}/zones/{zone}", "machineType": f"{BASE}/projects/{PROJECT}/{item['machineType']}",
                "selfLink": target, "tags": item.get("tags", {}), "labels": item.get("labels", {}),
                "networkInterfaces": [{"network": self._network(), "subnetwork": nic.get("subnetwork", ""),
                                       "networkIP": self._free_address(), "name": "nic0"}],
                "metadata": item.get("metadata", {}), "_script": script}
        return operation

    def _free_address(self) -> str:
        used = {i["networkInterfaces"][0]["networkIP"] for i in self.instances.values()}
        used |= {a.get("address") for a in self.tables["addresses"].values()}
        for offset in range(self.first_address, self.subnet.num_addresses - 1):
            candidate = str(self.subnet.network_address + offset)
            if candidate not in used:
                return candidate
        raise google_error(503, "IP_SPACE_EXHAUSTED")

    def _instance_view(self, instance: dict[str, Any]) -> dict[str, Any]:
        scripted = self.statuses.get(instance["name"])
        if instance["status"] in ("PROVISIONING", "STAGING"):
            if scripted:
                instance["status"] = scripted.pop(0)
            elif scripted is None:
                instance["status"] = "RUNNING"
            if instance["status"] == "RUNNING":
                vm = self.vms.get(instance["name"])
                if vm is None:
                    vm = EmulatedVm(name=instance["name"], address=instance["networkInterfaces"][0]["networkIP"],
                                    subnet=self.subnet, root=self.root / instance["name"],
                                    first_boot=instance["_script"])
                    self.vms[instance["name"]] = vm
                vm.boot()
        return {k: v for k, v in instance.items() if not k.startswith("_")}

    # the load balancer's parts and the firewall rules: insert, get, list, delete, and their verbs
    REQUIRED = {"firewalls": ({"name", "network"}, {"name", "network", "direction", "sourceRanges", "targetTags",
                                                    "description", "allowed", "priority"}),
                "addresses": ({"name"}, {"name", "address", "addressType", "subnetwork", "description", "purpose"}),
                "healthChecks": ({"name", "type"}, {"name", "type", "checkIntervalSec", "timeoutSec",
                                                    "healthyThreshold", "unhealthyThreshold", "httpHealthCheck",
                                                    "description"}),
                "backendServices": ({"name", "loadBalancingScheme"}, {"name", "loadBalancingScheme", "protocol",
                                                                      "healthChecks", "backends", "description"}),
                "forwardingRules": ({"name", "IPAddress", "loadBalancingScheme", "backendService"},
                                    {"name", "IPAddress", "IPProtocol", "ports", "loadBalancingScheme",
                                     "backendService", "network", "subnetwork", "description"}),
                "instanceGroups": ({"name"}, {"name", "network", "description", "zone"})}

    def _generic(self, method: str, scope: str, where: str, collection: str, name: str, verb: str, body: Any) -> Any:
        table = self.tables[collection]
        error = lambda message: google_error(400, message)  # noqa: E731
        if method == "GET" and not name:
            return {"items": list(table.values())}
        if method == "POST" and not name:
            required, allowed = self.REQUIRED[collection]
            item = check_fields(body, required, allowed, error)
            if item["name"] in table:
                raise google_error(409, f"The resource '{collection}/{item['name']}' already exists", "alreadyExists")
            self._check_references(collection, item)
            link = self._link(scope, where, collection, item["name"])
            table[item["name"]] = {**item, "id": str(next(_ids)), "kind": f"compute#{collection[:-1]}",
                                   "selfLink": link, "_where": where}
            if collection == "instanceGroups":
                self.members[item["name"]] = []
            return self._operation(scope, where, "insert", link)
        found = table.get(name)
        if found is None:
            raise google_error(404, f"The resource '{collection}/{name}' was not found", "notFound")
        if method == "GET" and not verb:
            return {k: v for k, v in found.items() if not k.startswith("_")}
        if method == "DELETE" and not verb:
            self._refuse_in_use(collection, found)
            del table[name]
            return self._operation(scope, where, "delete", found["selfLink"])
        if method == "PATCH" and collection == "backendServices":
            check_fields(body, set(), self.REQUIRED[collection][1], error)
            self._check_references(collection, {**found, **body})
            found.update(body)
            return self._operation(scope, where, "patch", found["selfLink"])
        if collection == "instanceGroups" and method == "POST" and verb in ("addInstances", "removeInstances"):
            wanted = [i["instance"] for i in check_fields(body, {"instances"}, {"instances"}, error)["instances"]]
            for url in wanted:
                instance = self.instances.get(url.rsplit("/", 1)[-1])
                if verb == "addInstances":
                    if instance is None or not instance["zone"].endswith("/" + where):
                        raise error(f"instance {url} is not in zone {where}")
                    if url in self.members[name]:
                        raise google_error(400, f"The resource '{url}' is already a member of '{name}'", "memberAlreadyExists")
                    self.members[name].append(url)
                elif url in self.members[name]:
                    self.members[name].remove(url)
            return self._operation(scope, where, verb, found["selfLink"])
        if collection == "instanceGroups" and method == "POST" and verb == "listInstances":
            return {"items": [{"instance": url, "status": self.instances[url.rsplit("/", 1)[-1]]["status"]}
                              for url in self.members[name] if url.rsplit("/", 1)[-1] in self.instances]}
        if collection == "backendServices" and method == "POST" and verb == "getHealth":
            group = check_fields(body, {"group"}, {"group"}, error)["group"]
            group_name = group.rsplit("/", 1)[-1]
            if group_name not in self.members:
                raise error(f"{group} is not a backend of {name}")
            return {"kind": "compute#backendServiceGroupHealth", "healthStatus": [
                {"instance": url, "ipAddress": self.instances[url.rsplit("/", 1)[-1]]["networkInterfaces"][0]["networkIP"],
                 "port": 5432, "healthState": self._health(url)} for url in self.members[group_name]
                if url.rsplit("/", 1)[-1] in self.instances]}
        raise google_error(404, f"no route {method} {collection}/{name}/{verb}", "notFound")

    def _check_references(self, collection: str, item: dict[str, Any]) -> None:
        def exists(kind: str, url: str) -> bool:
            return url.rsplit("/", 1)[-1] in self.tables[kind]

        if collection == "backendServices":
            for check in item.get("healthChecks", []):
                if not exists("healthChecks", check):
                    raise google_error(400, f"The resource '{check}' was not found", "notFound")
            for backend in item.get("backends", []):
                if not exists("instanceGroups", backend["group"]):
                    raise google_error(400, f"The resource '{backend['group']}' was not found", "notFound")
        if collection == "forwardingRules":
            if not exists("backendServices", item["backendService"]):
                raise google_error(400, f"The resource '{item['backendService']}' was not found", "notFound")
            if not any(a.get("address") == item["IPAddress"] for a in self.tables["addresses"].values()):
                raise google_error(400, f"The address {item['IPAddress']} is not reserved", "invalid")
        if collection == "addresses" and item.get("address"):
            if IPv4Address(item["address"]) not in self.subnet:
                raise google_error(400, f"Requested internal IP address '{item['address']}' is outside the subnet")

    def _refuse_in_use(self, collection: str, found: dict[str, Any]) -> None:
        users = {"healthChecks": [b for b in self.tables["backendServices"].values()
                                  if found["selfLink"] in b.get("healthChecks", [])],
                 "backendServices": [r for r in self.tables["forwardingRules"].values()
                                     if r["backendService"] == found["selfLink"]],
                 "instanceGroups": [b for b in self.tables["backendServices"].values()
                                    if any(x["group"] == found["selfLink"] for x in b.get("backends", []))],
                 "addresses": [r for r in self.tables["forwardingRules"].values()
                               if r["IPAddress"] == found.get("address")]}.get(collection, [])
        if users:
            raise google_error(400, f"The {collection[:-1]} resource '{found['selfLink']}' is already being used by "
                                    f"'{users[0]['selfLink']}'", "resourceInUseByAnotherResource")

    def _health(self, url: str) -> str:
        """What Google's checkers would find: GET /primary on port 8008 of the instance."""
        instance = self.instances[url.rsplit("/", 1)[-1]]
        if instance["status"] != "RUNNING":
            return "UNHEALTHY"
        try:
            connection = http.client.HTTPConnection(instance["networkInterfaces"][0]["networkIP"], 8008, timeout=1)
            connection.request("GET", "/primary")
            healthy = connection.getresponse().status == 200
            connection.close()
        except OSError:
            healthy = False
        return "HEALTHY" if healthy else "UNHEALTHY"
