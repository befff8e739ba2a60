"""provider gcp: Compute Engine instances made with google-cloud-compute.

For a pair:   a firewall rule (22 and 5432 from the subnet and the spec's ranges, to instances tagged with the
              pair's name; the load balancer's health checkers on 8008 when the pair has a virtual IP);
for a node:   an instance in its zone (the nodes in different zones) booting Debian with a startup script;
the VIP:      Google's network does not carry VRRP, and moving an alias IP range takes an API call from the node
              at the worst moment (the cloud's API must be up, the node needs compute rights). An internal
              passthrough load balancer needs neither: its health check (HTTP on 8008, served on each node by
              pgaasctl-primary-check) passes only on the primary that is not fenced (the guard's track file, the
              same one keepalived reads elsewhere), so the address follows the primary with no call at failover.
              Made of a reserved internal address, a regional health check, one unmanaged instance group per zone,
              a regional backend service and a forwarding rule on 5432.

Every call goes through `_call` (retries on throttling and operations in progress, with backoff; clear errors)
and every operation is waited on with `_wait`, which reports the operation's own error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from pgaasctl.spec.models import CloudNode, CloudPairSpec, GcpOptions
from pgaasctl.store import Store
from providers.cloud import CloudError, NamedResources, ResourceBook, ServerFacts, pair_prefix

T = TypeVar("T")
CHECK_PORT = 8008  # pgaasctl-primary-check on each node
CHECK_PATH = "/primary"
HEALTH_CHECKER_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]  # Google's health checkers (documented ranges)
POLL_FIRST, POLL_MAX = 0.2, 5.0


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) else getattr(code, "value", None) if code is not None else None


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _reasons(exc: BaseException) -> set[str]:
    """The `reason`s of a Google API error (quotaExceeded, rateLimitExceeded, resourceNotReady...)."""
    found = set()
    for item in getattr(exc, "errors", None) or []:
        reason = item.get("reason") if isinstance(item, dict) else getattr(item, "reason", None)
        if reason:
            found.add(str(reason))
    details = getattr(exc, "details", None) or []
    for item in details:
        reason = getattr(item, "reason", None) or (item.get("reason") if isinstance(item, dict) else None)
        if reason:
            found.add(str(reason))
    return found


def _over_quota(exc: BaseException) -> bool:
    return "quotaExceeded" in _reasons(exc) or "QUOTA_EXCEEDED" in _message(exc) or "Quota" in _message(exc)


def _retryable(exc: BaseException, creating: bool) -> bool:
    """As for openstack: throttling and "not ready" (another operation on the resource) are tried again; a server
    error only for calls that are harmless to repeat."""
    status = _status(exc)
    if _over_quota(exc):
        return False
    if status == 429 or "rateLimitExceeded" in _reasons(exc) or "resourceNotReady" in _reasons(exc):
        return True
    if creating:
        return False
    return status in (500, 502, 503, 504)


def _retry_wait(state: Any) -> float:
    return float(wait_exponential(multiplier=0.5, max=8)(state))


class GcpDriver(NamedResources):
    cloud = "gcp"

    def __init__(self, options: GcpOptions, store: Store, spec_dir: Path) -> None:
        super().__init__(store)
        self.options = options
        self.spec_dir = spec_dir
        self._clients: dict[str, Any] = {}

    # -- clients and calls
    def _credentials(self) -> Any:
        import google.auth
        from google.auth import exceptions as auth_errors
        from google.oauth2 import service_account

        scopes = ["https://www.googleapis.com/auth/compute"]
        try:
            if self.options.credentials_file:
                path = Path(self.options.credentials_file)
                path = path if path.is_absolute() else self.spec_dir / path
                return service_account.Credentials.from_service_account_file(str(path), scopes=scopes)
            credentials, _ = google.auth.default(scopes=scopes)
            return credentials
        except (auth_errors.DefaultCredentialsError, OSError, ValueError) as exc:
            where = f"the service account file {self.options.credentials_file}" if self.options.credentials_file \
                else "Application Default Credentials"
            raise CloudError(f"gcp: cannot load {where}: {_message(exc)}",
                             "Give credentials_file (a service account key, JSON) or run `gcloud auth "
                             "application-default login`; GOOGLE_APPLICATION_CREDENTIALS may name the file.") from None

    def client(self, kind: str) -> Any:
        if kind not in self._clients:
            from google.cloud import compute_v1

            options = {"api_endpoint": self.options.endpoint} if self.options.endpoint else None
            if "credentials" not in self._clients:
                self._clients["credentials"] = self._credentials()
            self._clients[kind] = getattr(compute_v1, kind)(credentials=self._clients["credentials"],
                                                            client_options=options)
        return self._clients[kind]

    def _call(self, what: str, call: Callable[[], T], creating: bool = False) -> T:
        from google.api_core import exceptions as api_errors
        from google.auth import exceptions as auth_errors

        @retry(retry=retry_if_exception(lambda exc: _retryable(exc, creating)), wait=_retry_wait,
               stop=stop_after_attempt(6), reraise=True)
        def attempt() -> T:
            return call()

        try:
            return attempt()
        except auth_errors.GoogleAuthError as exc:
            return self._raise(what, exc, 401)
        except api_errors.GoogleAPIError as exc:
            return self._raise(what, exc, _status(exc))

    def _raise(self, what: str, exc: BaseException, status: int | None) -> Any:
        if status in (401,) or "invalid_grant" in _message(exc):
            raise CloudError(f"gcp: {what}: authentication failed ({_message(exc)})",
                             "Check the service account key (credentials_file) or the Application Default "
                             "Credentials.") from None
        if _over_quota(exc):
            raise CloudError(f"gcp: {what}: quota exceeded: {_message(exc)}",
                             "Ask for a higher quota in the project (IAM & Admin, Quotas) or free resources, then "
                             "apply again.") from None
        if status == 403:
            raise CloudError(f"gcp: {what}: not allowed: {_message(exc)}",
                             "Give the service account the Compute Instance Admin and Compute Network Admin roles "
                             "(or their permissions) on the project.") from None
        if status == 404:
            raise CloudError(f"gcp: {what}: not found: {_message(exc)}",
                             "Check project, region, zones, network, subnet and image in the pair's gcp "
                             "options.") from None
        if status in (409, 429):
            raise CloudError(f"gcp: {what}: the cloud kept refusing ({status}: {_message(exc)})",
                             "The project is busy or throttled; apply again later.") from None
        raise CloudError(f"gcp: {what} failed ({status or type(exc).__name__}): {_message(exc)}",
                         "apply again: what was made is found by its name, never made twice.") from None

    def _wait(self, what: str, operation: Any) -> None:
        """Until the operation is DONE; its error becomes a CloudError naming the resource."""
        from google.cloud import compute_v1

        deadline = time.monotonic() + self.options.timeout
        pause = POLL_FIRST
        while operation.status != compute_v1.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise CloudError(f"gcp: {what}: operation {operation.name} not done after {self.options.timeout}s",
                                 "Raise `timeout` in the pair's gcp options, or check the operation in the console; "
                                 "`pgaasctl apply` again waits for what it started.")
            time.sleep(pause)  # polling the operation
            pause = min(POLL_MAX, pause * 2)
            operation = self._operation(what, operation)
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            text = f"{first.code}: {first.message}"
            if "QUOTA" in first.code:
                raise CloudError(f"gcp: {what}: quota exceeded: {text}", "Ask for a higher quota or free resources.")
            raise CloudError(f"gcp: {what} failed: {text}",
                             "Check the pair's gcp options (zone capacity, image, machine type); `pgaasctl apply` "
                             "again starts over from what exists.")

    def _operation(self, what: str, operation: Any) -> Any:
        project = self.options.project
        if operation.zone:
            zone = operation.zone.rsplit("/", 1)[-1]
            return self._call(f"{what} (its operation)", lambda: self.client("ZoneOperationsClient").get(
                project=project, zone=zone, operation=operation.name))
        if operation.region:
            region = operation.region.rsplit("/", 1)[-1]
            return self._call(f"{what} (its operation)", lambda: self.client("RegionOperationsClient").get(
                project=project, region=region, operation=operation.name))
        return self._call(f"{what} (its operation)", lambda: self.client("GlobalOperationsClient").get(
            project=project, operation=operation.name))

    def _get(self, what: str, getter: Callable[[], T]) -> T | None:
        """A resource, or None when it does not exist."""
        from google.api_core import exceptions as api_errors

        try:
            return getter()
        except api_errors.NotFound:
            return None

    def _make(self, book: ResourceBook, kind: str, name: str, node: str, exists: Callable[[], Any],
              insert: Callable[[], Any], what: str, **data: object) -> Any:
        """The resource of that name: found (an interrupted apply made it) or made now, recorded either way."""
        intended = book.intend(kind, name, node, data)
        found = self._call(f"reading {what}", lambda: self._get(what, exists))
        if found is None:
            self._wait(f"creating {what}", self._call(f"creating {what}", insert, creating=True))
            found = self._call(f"reading {what}", exists)
        book.made(intended, str(found.id), **(intended.data or {}))
        return found

    # -- network facts
    def _subnet(self) -> Any:
        if not hasattr(self, "_subnet_found"):
            name = self.options.subnet or self.options.network
            found = self._call(f"reading subnet {name}", lambda: self._get("subnet", lambda: self.client(
                "SubnetworksClient").get(project=self.options.project, region=self.options.region, subnetwork=name)))
            if found is None:
                raise CloudError(f"gcp: subnet {name!r} not found in region {self.options.region}",
                                 "Check `network` and `subnet` in the pair's gcp options (gcloud compute networks "
                                 "subnets list).")
            self._subnet_found = found
        return self._subnet_found

    def network_cidr(self) -> str:
        return str(self._subnet().ip_cidr_range)

    def _network_url(self) -> str:
        return f"projects/{self.options.project}/global/networks/{self.options.network}"

    # -- the pair's resources
    def prepare(self, pair: str, spec: CloudPairSpec) -> None:
        from google.cloud import compute_v1

        book = ResourceBook(self.store, self.cloud, pair)
        subnet = self._subnet()
        name = self._name(pair, suffix="fw")
        ranges = list(dict.fromkeys([subnet.ip_cidr_range, *self.options.source_ranges]))
        firewall = compute_v1.Firewall(
            name=name, network=self._network_url(), direction="INGRESS", source_ranges=ranges,
            target_tags=[pair_prefix(pair, self.owner)], description=f"pgaasctl: pair {pair}",
            allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22", "5432"])])
        self._make(book, "firewall", name, "", lambda: self.client("FirewallsClient").get(
            project=self.options.project, firewall=name), lambda: self.client("FirewallsClient").insert(
            project=self.options.project, firewall_resource=firewall), f"firewall rule {name}")
        if spec.virtual_ip is not None:
            check_name = self._name(pair, suffix="hc-fw")
            checkers = compute_v1.Firewall(
                name=check_name, network=self._network_url(), direction="INGRESS", source_ranges=HEALTH_CHECKER_RANGES,
                target_tags=[pair_prefix(pair, self.owner)], description=f"pgaasctl: health checks of pair {pair}",
                allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(CHECK_PORT)])])
            self._make(book, "firewall", check_name, "", lambda: self.client("FirewallsClient").get(
                project=self.options.project, firewall=check_name), lambda: self.client("FirewallsClient").insert(
                project=self.options.project, firewall_resource=checkers), f"firewall rule {check_name}")

    # -- instances
    def _zone(self, spec: CloudPairSpec, node: CloudNode, index: int) -> str:
        return node.zone or self.options.zones[index % len(self.options.zones)]

    def create_server(self, pair: str, spec: CloudPairSpec, node: CloudNode, index: int, user_data: str) -> ServerFacts:
        from google.cloud import compute_v1

        book = ResourceBook(self.store, self.cloud, pair)
        name = self._name(pair, node.name)
        zone = self._zone(spec, node, index)
        recorded = book.get("server", name)
        if recorded is not None and recorded.data.get("zone"):
            zone = str(recorded.data["zone"])  # where it was made, whatever the spec says now
        record = book.intend("server", name, node.name, {"zone": zone})
        instances = self.client("InstancesClient")
        subnet = self._subnet()
        current = self._call(f"reading instance {name}", lambda: self._get("instance", lambda: instances.get(
            project=self.options.project, zone=zone, instance=name)))
        if current is not None and current.status in ("TERMINATED", "SUSPENDED") and not record.cloud_id:
            current = None  # never ours to start
        if current is None:
            image = self.options.image if "/" in self.options.image else \
                f"projects/{self.options.project}/global/images/{self.options.image}"
            instance = compute_v1.Instance(
                name=name, machine_type=f"zones/{zone}/machineTypes/{self.options.machine_type}",
                description=f"pgaasctl: node {node.name} of pair {pair}",
                tags=compute_v1.Tags(items=[pair_prefix(pair, self.owner)]),
                labels={"pgaasctl-pair": pair_prefix(pair, self.owner)},
                disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=image, disk_size_gb=20))],
                network_interfaces=[compute_v1.NetworkInterface(network=self._network_url(), subnetwork=subnet.self_link)],
                metadata=compute_v1.Metadata(items=[compute_v1.Items(key="startup-script", value=user_data)]),
            )
            operation = self._call(f"creating instance {name}", lambda: instances.insert(
                project=self.options.project, zone=zone, instance_resource=instance), creating=True)
            self._wait(f"creating instance {name} in {zone}", operation)
            current = self._call(f"reading instance {name}", lambda: instances.get(
                project=self.options.project, zone=zone, instance=name))
        current = self._wait_running(name, zone, current)
        address = current.network_interfaces[0].network_i_p
        if not record.data.get("size"):  # what it was made with, for the plan's warnings
            record = book.made(record, record.cloud_id, size=self.options.machine_type, image=self.options.image)
        book.made(record, str(current.id), zone=zone, address=address, network=subnet.ip_cidr_range,
                  self_link=current.self_link)
        return ServerFacts(cloud_id=str(current.id), status="active", address=address, zone=zone,
                           network=subnet.ip_cidr_range)

    def _wait_running(self, name: str, zone: str, instance: Any) -> Any:
        deadline = time.monotonic() + self.options.timeout
        pause = POLL_FIRST
        while instance.status != "RUNNING":
            if instance.status in ("TERMINATED", "SUSPENDED", "STOPPING"):
                raise CloudError(f"gcp: instance {name} is {instance.status}",
                                 "Start it in the console, or let `pgaasctl apply` start it.")
            if time.monotonic() > deadline:
                raise CloudError(f"gcp: instance {name} is still {instance.status} after {self.options.timeout}s",
                                 "Raise `timeout` in the pair's gcp options, or check the zone; `pgaasctl apply` "
                                 "again waits for it (nothing is made twice).")
            time.sleep(pause)  # polling the instance's status
            pause = min(POLL_MAX, pause * 2)
            instance = self._call(f"reading instance {name}", lambda: self.client("InstancesClient").get(
                project=self.options.project, zone=zone, instance=name))
        return instance

    def servers(self, pair: str) -> dict[str, ServerFacts]:
        from google.cloud import compute_v1

        book = ResourceBook(self.store, self.cloud, pair)
        records = book.of_kind("server")
        if not records:
            return {}
        prefix = pair_prefix(pair, self.owner)
        listed: dict[str, Any] = {}
        for zone in sorted({str(r.data.get("zone", "")) for r in records if r.data.get("zone")}):
            request = compute_v1.ListInstancesRequest(project=self.options.project, zone=zone,
                                                      filter=f'name = "{prefix}-*"')
            for instance in self._call(f"listing instances in {zone}", lambda: list(
                    self.client("InstancesClient").list(request=request))):
                listed[str(instance.id)] = instance
        out: dict[str, ServerFacts] = {}
        for record in records:
            instance = listed.get(record.cloud_id)
            if instance is None:
                out[record.node] = ServerFacts(cloud_id=record.cloud_id, status="missing")
                continue
            status = {"RUNNING": "active", "TERMINATED": "stopped", "SUSPENDED": "stopped",
                      "STOPPING": "stopped"}.get(instance.status, "building")
            out[record.node] = ServerFacts(cloud_id=record.cloud_id, status=status,  # type: ignore[arg-type]
                                           address=str(record.data.get("address", "")),
                                           zone=str(record.data.get("zone", "")),
                                           network=str(record.data.get("network", "")))
        return out

    def start_server(self, pair: str, node: str) -> None:
        record = next(r for r in ResourceBook(self.store, self.cloud, pair).of_kind("server") if r.node == node)
        zone = str(record.data["zone"])
        instances = self.client("InstancesClient")
        operation = self._call(f"starting instance {record.name}", lambda: instances.start(
            project=self.options.project, zone=zone, instance=record.name))
        self._wait(f"starting instance {record.name}", operation)
        self._wait_running(record.name, zone, self._call(f"reading instance {record.name}", lambda: instances.get(
            project=self.options.project, zone=zone, instance=record.name)))

    def delete_server(self, pair: str, node: str) -> None:
        book = ResourceBook(self.store, self.cloud, pair)
        for record in [r for r in book.all() if r.node == node]:
            if record.kind == "server":
                zone = str(record.data.get("zone", ""))
                self._remove_from_group(book, pair, record)
                instances = self.client("InstancesClient")
                found = self._call(f"reading instance {record.name}", lambda: self._get("instance", lambda: instances.get(
                    project=self.options.project, zone=zone, instance=record.name))) if zone else None
                if found is not None and (not record.cloud_id or str(found.id) == record.cloud_id):
                    operation = self._call(f"deleting instance {record.name}", lambda: instances.delete(
                        project=self.options.project, zone=zone, instance=record.name))
                    self._wait(f"deleting instance {record.name}", operation)
            book.forget(record)

    def _remove_from_group(self, book: ResourceBook, pair: str, record: Any) -> None:
        """An instance leaves its zone's instance group before it goes (a group keeps no deleted member anyway)."""
        from google.cloud import compute_v1

        zone = str(record.data.get("zone", ""))
        group = book.get("instance_group", self._name(pair, suffix=f"ig-{zone}")[:63])
        link = record.data.get("self_link")
        if group is None or not link:
            return
        groups = self.client("InstanceGroupsClient")
        request = compute_v1.InstanceGroupsRemoveInstancesRequest(instances=[compute_v1.InstanceReference(instance=link)])
        operation = self._call(f"removing {record.name} from its instance group", lambda: self._get("group", lambda: groups.remove_instances(
            project=self.options.project, zone=zone, instance_group=group.name,
            instance_groups_remove_instances_request_resource=request)))
        if operation is not None:
            self._wait(f"removing {record.name} from its instance group", operation)

    def release(self, pair: str) -> None:
        """The load balancer (front to back), then the firewall rules."""
        book = ResourceBook(self.store, self.cloud, pair)
        project, region = self.options.project, self.options.region
        deleters: list[tuple[str, Callable[[Any], Any]]] = [
            ("forwarding_rule", lambda r: self.client("ForwardingRulesClient").delete(
                project=project, region=region, forwarding_rule=r.name)),
            ("backend_service", lambda r: self.client("RegionBackendServicesClient").delete(
                project=project, region=region, backend_service=r.name)),
            ("instance_group", lambda r: self.client("InstanceGroupsClient").delete(
                project=project, zone=str(r.data["zone"]), instance_group=r.name)),
            ("health_check", lambda r: self.client("RegionHealthChecksClient").delete(
                project=project, region=region, health_check=r.name)),
            ("address", lambda r: self.client("AddressesClient").delete(project=project, region=region, address=r.name)),
            ("firewall", lambda r: self.client("FirewallsClient").delete(project=project, firewall=r.name)),
        ]
        for kind, delete in deleters:
            for record in book.of_kind(kind):
                operation = self._call(f"deleting {kind.replace('_', ' ')} {record.name}",
                                       lambda: self._get(kind, lambda: delete(record)))
                if operation is not None:
                    self._wait(f"deleting {kind.replace('_', ' ')} {record.name}", operation)
                book.forget(record)

    # -- the virtual IP: an internal passthrough load balancer
    def ensure_virtual_ip(self, pair: str, spec: CloudPairSpec) -> None:
        from google.cloud import compute_v1

        assert spec.virtual_ip is not None
        book = ResourceBook(self.store, self.cloud, pair)
        project, region = self.options.project, self.options.region
        subnet = self._subnet()
        vip = str(spec.virtual_ip)
        address_name = self._name(pair, suffix="vip")
        self._make(book, "address", address_name, "", lambda: self.client("AddressesClient").get(
            project=project, region=region, address=address_name), lambda: self.client("AddressesClient").insert(
            project=project, region=region, address_resource=compute_v1.Address(
                name=address_name, address=vip, address_type="INTERNAL", subnetwork=subnet.self_link,
                description=f"pgaasctl: the virtual IP of pair {pair}")), f"address {vip}")
        check_name = self._name(pair, suffix="hc")
        check = self._make(book, "health_check", check_name, "", lambda: self.client("RegionHealthChecksClient").get(
            project=project, region=region, health_check=check_name), lambda: self.client("RegionHealthChecksClient").insert(
            project=project, region=region, health_check_resource=compute_v1.HealthCheck(
                name=check_name, type_="HTTP", check_interval_sec=1, timeout_sec=1, healthy_threshold=1,
                unhealthy_threshold=2, http_health_check=compute_v1.HTTPHealthCheck(port=CHECK_PORT,
                                                                                     request_path=CHECK_PATH))),
            f"health check {check_name}")
        groups = []
        data_nodes = {n.name for n in spec.nodes}  # the witness is never a backend
        for record in [r for r in book.of_kind("server") if r.node in data_nodes]:
            zone = str(record.data["zone"])
            group_name = self._name(pair, suffix=f"ig-{zone}")[:63]
            group = self._make(book, "instance_group", group_name, "", lambda: self.client("InstanceGroupsClient").get(
                project=project, zone=zone, instance_group=group_name), lambda: self.client("InstanceGroupsClient").insert(
                project=project, zone=zone, instance_group_resource=compute_v1.InstanceGroup(
                    name=group_name, network=self._network_url(), description=f"pgaasctl: pair {pair} in {zone}")),
                f"instance group {group_name}", zone=zone)
            members = self._call(f"listing instance group {group_name}", lambda: list(self.client(
                "InstanceGroupsClient").list_instances(
                project=project, zone=zone, instance_group=group_name,
                instance_groups_list_instances_request_resource=compute_v1.InstanceGroupsListInstancesRequest(
                    instance_state="ALL"))))
            if not any(m.instance == record.data.get("self_link") for m in members):
                request = compute_v1.InstanceGroupsAddInstancesRequest(
                    instances=[compute_v1.InstanceReference(instance=str(record.data["self_link"]))])
                self._wait(f"adding {record.name} to {group_name}", self._call(
                    f"adding {record.name} to {group_name}", lambda: self.client("InstanceGroupsClient").add_instances(
                        project=project, zone=zone, instance_group=group_name,
                        instance_groups_add_instances_request_resource=request)))
            groups.append(group.self_link)
        service_name = self._name(pair, suffix="bs")
        service = self._make(book, "backend_service", service_name, "", lambda: self.client(
            "RegionBackendServicesClient").get(project=project, region=region, backend_service=service_name),
            lambda: self.client("RegionBackendServicesClient").insert(
                project=project, region=region, backend_service_resource=compute_v1.BackendService(
                    name=service_name, load_balancing_scheme="INTERNAL", protocol="TCP", health_checks=[check.self_link],
                    backends=[compute_v1.Backend(group=g, balancing_mode="CONNECTION") for g in groups])),
            f"backend service {service_name}")
        if sorted(b.group for b in service.backends) != sorted(groups):
            self._wait(f"updating backend service {service_name}", self._call(
                f"updating backend service {service_name}", lambda: self.client("RegionBackendServicesClient").patch(
                    project=project, region=region, backend_service=service_name,
                    backend_service_resource=compute_v1.BackendService(
                        backends=[compute_v1.Backend(group=g, balancing_mode="CONNECTION") for g in groups]))))
        rule_name = self._name(pair, suffix="fr")
        self._make(book, "forwarding_rule", rule_name, "", lambda: self.client("ForwardingRulesClient").get(
            project=project, region=region, forwarding_rule=rule_name), lambda: self.client("ForwardingRulesClient").insert(
            project=project, region=region, forwarding_rule_resource=compute_v1.ForwardingRule(
                name=rule_name, I_p_address=vip, I_p_protocol="TCP", ports=["5432"], load_balancing_scheme="INTERNAL",
                backend_service=service.self_link, network=self._network_url(), subnetwork=subnet.self_link)),
            f"forwarding rule {rule_name}")

    def virtual_ip_holder(self, pair: str, spec: CloudPairSpec) -> str | None:
        """The node whose instance the load balancer finds healthy (its health check passes only on the primary)."""
        from google.cloud import compute_v1

        book = ResourceBook(self.store, self.cloud, pair)
        service = book.get("backend_service", self._name(pair, suffix="bs"))
        if service is None:
            return None
        by_link = {str(r.data.get("self_link")): r.node for r in book.of_kind("server")}
        for group in book.of_kind("instance_group"):
            link = f"projects/{self.options.project}/zones/{group.data['zone']}/instanceGroups/{group.name}"
            health = self._call("reading the load balancer's health", lambda: self.client(
                "RegionBackendServicesClient").get_health(
                project=self.options.project, region=self.options.region, backend_service=service.name,
                resource_group_reference_resource=compute_v1.ResourceGroupReference(group=link)))
            for status in health.health_status:
                if status.health_state == "HEALTHY" and status.instance in by_link:
                    return by_link[status.instance]
        return None
