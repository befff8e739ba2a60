"""The spec kinds. Every field is documented; the docs become the reference page and the JSON Schema."""

from __future__ import annotations

import datetime as dt
import re
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from pgaasctl.spec.names import check_existing_name, check_identifier, check_schema, control_character_problem

Identifier = Annotated[str, AfterValidator(check_identifier)]
# Predefined roles (pg_read_all_data, pg_monitor...) may be referenced, never declared.
RoleReference = Annotated[str, AfterValidator(check_existing_name)]
ExistingName = Annotated[str, AfterValidator(check_existing_name)]
SchemaName = Annotated[str, AfterValidator(check_schema)]
SettingValue = str | int | float | bool
INT4_MAX = 2**31 - 1  # PostgreSQL's integer columns (rolconnlimit, datconnlimit)

_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")
# Parameters PostgreSQL reads as lists of (possibly double-quoted) items; pgaasctl.plan.settings has the same set.
LIST_PARAMETERS = frozenset({"search_path", "temp_tablespaces", "shared_preload_libraries",
                             "session_preload_libraries", "local_preload_libraries"})


def _list_item_problem(name: str, value: SettingValue) -> str | None:
    """Items are split on commas and may be wrapped in double quotes: an item holding either cannot round-trip."""
    if name not in LIST_PARAMETERS or not isinstance(value, str):
        return None
    for item in (part.strip() for part in value.split(",")):
        inner = item[1:-1] if len(item) >= 2 and item[0] == item[-1] == '"' else item
        if '"' in inner:
            return (f"setting {name}: item {item!r} cannot be kept as written (items are separated by commas and "
                    "may be wrapped in double quotes, but cannot contain a comma or a double quote)")
    return None


def _check_settings(settings: dict[str, SettingValue]) -> dict[str, SettingValue]:
    """Parameter names are case-insensitive (TimeZone is timezone): kept lower-case."""
    out: dict[str, SettingValue] = {}
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name.lower()):
            raise ValueError(f"setting name {name!r} is not a PostgreSQL parameter name")
        if name.lower() in out:
            raise ValueError(f"setting {name!r} is given twice")
        problem = _list_item_problem(name.lower(), value)
        if problem:
            raise ValueError(problem)
        out[name.lower()] = value
    return out


Settings = Annotated[dict[str, SettingValue], AfterValidator(_check_settings)]


def _control_problem(value: Any) -> str | None:
    """A control character in the strings a field holds itself: the value, list items, map keys and values.
    Nested models check their own fields."""
    if isinstance(value, str):
        return control_character_problem(value)
    if isinstance(value, list):
        return next(filter(None, (control_character_problem(v) for v in value if isinstance(v, str))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if problem := control_character_problem(str(key)):
                return problem
            if isinstance(item, str) and (problem := control_character_problem(item)):
                return f"{key}: {problem}"
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Every string of every kind: a newline or NUL must never reach SQL, psql or a shell. (An after-validator:
        discriminator fields allow no other; the normalisers below keep control characters so that it sees them.)"""
        problem = _control_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class SecretSource(Strict):
    """Where a secret comes from. Secrets never live in the spec text."""

    env: str | None = Field(None, description="Name of an environment variable holding the secret.")
    file: str | None = Field(None, description="Path of a regular UTF-8 file of at most 64 KiB holding the secret "
                             "(relative to the spec file); one trailing newline (LF or CRLF) is stripped.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self


# ---------------------------------------------------------------- Pair

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
_PATH = re.compile(r"[A-Za-z0-9._/+@-]+")


def _check_host(value: str) -> str:
    if not _HOST.fullmatch(value):
        raise ValueError(f"host {value!r} is not a host name or IP address")
    return value


def _check_path(value: str) -> str:
    # these reach shell command lines on the nodes: plain path characters only
    if not _PATH.fullmatch(value):
        raise ValueError(f"path {value!r} may use letters, digits and . _ / + @ - only")
    return value


HostName = Annotated[str, AfterValidator(_check_host)]
SafePath = Annotated[str, AfterValidator(_check_path)]


def _seconds(value: Any) -> Any:
    """Durations as repmgr takes them: whole seconds, written 3, "3s" or "1min"."""
    if isinstance(value, str):
        match = re.fullmatch(r" *(\d+) *(s|sec|min)? *", value)
        if not match:
            raise ValueError(f"expected whole seconds such as 3s or 1min, got {value!r}")
        return int(match.group(1)) * (60 if match.group(2) == "min" else 1)
    return value


Seconds = Annotated[StrictInt, BeforeValidator(_seconds), Field(ge=1, le=3600)]


def _duration(value: Any) -> Any:
    """Durations people write: 15s, 500ms, 2m, 48h, 90d (a bare number is seconds)."""
    if isinstance(value, str):
        from pgaasctl.durations import PATTERN, UNITS

        match = PATTERN.fullmatch(value)
        if not match:
            raise ValueError(f"expected a duration such as 15s, 2m, 48h or 90d, got {value!r}")
        return float(match.group(1)) * UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(_duration)]


class SshSettings(Strict):
    """How pgaasctl reaches a node over SSH (fabric) to run repmgr."""

    user: Identifier = Field("postgres", description="OS user that runs PostgreSQL and repmgr.")
    port: StrictInt = Field(22, ge=1, le=65535, description="SSH port.")
    key_file: SafePath = Field(description="Private key file (relative to the spec file).")
    repmgr_config: SafePath = Field("/etc/repmgr.conf", description="Path of repmgr.conf on the node.")
    bin_dir: SafePath = Field("/usr/lib/postgresql/15/bin", description="PostgreSQL (and repmgr) binaries on the node.")


class ExistingNode(Strict):
    """A server that already runs PostgreSQL."""

    name: Identifier = Field(description="Node name, unique in the pair (the repmgr node_name when ssh is given).")
    host: HostName = Field(description="Address or host name pgaasctl connects to.")
    port: StrictInt = Field(5432, ge=1, le=65535, description="PostgreSQL port.")
    admin_user: ExistingName = Field("postgres", description="Superuser (or role with CREATEROLE/CREATEDB) pgaasctl connects as.")
    admin_password: SecretSource | None = Field(None, description="Password of admin_user; omit for trust, peer or ~/.pgpass.")
    admin_database: ExistingName = Field("postgres", description="Database to connect to for cluster-wide reads and changes.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer", description="libpq sslmode."
    )
    connect_timeout: StrictInt = Field(5, ge=1, le=120, description="Seconds to wait for a connection.")
    ssh: SshSettings | None = Field(None, description="SSH access, for repmgr discovery and operations; omit for SQL only.")


LOCAL_ADMIN_USER = "postgres"  # the superuser pgaasctl creates, and connects as, on nodes it creates


class LocalNode(Strict):
    """A node pgaasctl creates on this machine: a loopback address with its own sshd and PostgreSQL."""

    name: Identifier = Field(description="Node name, unique in the pair.")


class LocalWitness(Strict):
    """A repmgr witness on a third host (provider local: a third namespace): a standby cut off from the primary
    while the witness still sees it does not promote."""

    name: Identifier = Field(description="The witness host's name, unique among the pair's nodes.")


def _client_network(value: object) -> str:
    """A network written as text (10.20.0.0/16, or an address for one host); a number or a boolean is refused
    (ipaddress would read `true` as 0.0.0.1)."""
    if not isinstance(value, str):
        raise ValueError(f"a network is written like 10.20.0.0/16, got {value!r}")
    try:
        return str(ip_network(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not a network like 10.20.0.0/16 (host bits must be zero)") from None


ClientNetwork = Annotated[str, BeforeValidator(_client_network)]


class PairTls(Strict):
    """TLS of a pair pgaasctl creates: certificates from the workspace CA on every node (its addresses and the virtual
    IP as subject alternative names); replication and repmgr connect with the same mode."""

    mode: Literal["disable", "require", "verify-full"] = Field(
        "disable", description="Every node serves TLS with its certificate; the mode says what is required. "
        "`disable`: not required (plain `host` lines in pg_hba too). `require`: TLS on every connection "
        "(`hostssl` lines only; a plaintext connection is refused). `verify-full`: as require, and replication, repmgr "
        "and pgaasctl's own connections verify the server's certificate against the workspace CA and its name.")
    client_certificates: Literal["optional", "required"] = Field(
        "optional", description="`required`: every login role but pgaasctl's own (the admin user, repmgr) logs in with "
        "a client certificate the workspace CA issued (`cert` in pg_hba; `pgaasctl cert issue`). `optional`: only the "
        "roles with `client_certificate: true` do.")

    @model_validator(mode="after")
    def _certificates_need_tls(self) -> PairTls:
        if self.mode == "disable" and self.client_certificates == "required":
            raise ValueError("client_certificates: required needs TLS: set mode to require or verify-full")
        return self


class WorkspaceTls(Strict):
    """The workspace's certificate authority, which signs every node's server certificate and the client
    certificates `pgaasctl cert issue` makes."""

    ca_cert: SafePath | None = Field(None, description="Bring your own CA: its certificate (PEM), relative to the "
                                     "workspace root. Omitted: pgaasctl makes one under state/tls at first need.")
    ca_key: SafePath | None = Field(None, description="The brought CA's private key (PEM); with ca_cert.")
    ca_dir: SafePath = Field("state/tls", description="Where pgaasctl keeps the CA it makes (relative to the "
                             "workspace root); not used with ca_cert and ca_key.")
    passphrase_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]{0,63}$", description="The environment "
                                       "variable that holds the CA key's passphrase (pgaasctl encrypts a key it makes "
                                       "with it).")
    server_days: StrictInt = Field(365, ge=1, le=3650, description="Lifetime of server certificates.")
    client_days: StrictInt = Field(365, ge=1, le=3650, description="Lifetime of client certificates.")
    warn_days: StrictInt = Field(30, ge=1, le=365, description="The plan and the health checks warn of certificates "
                                 "that expire within this many days.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> WorkspaceTls:
        if (self.ca_cert is None) != (self.ca_key is None):
            raise ValueError("ca_cert and ca_key come together: name both files of the CA you bring, or neither")
        return self


class FailoverSettings(Strict):
    """repmgrd's failure detection; they reach repmgr.conf."""

    mode: Literal["automatic", "manual"] = Field("automatic", description="Whether repmgrd promotes the standby by itself.")
    monitor_interval: Seconds = Field(1, description="Seconds between repmgrd's checks of the upstream (monitor_interval_secs).")
    reconnect_attempts: StrictInt = Field(
        0, ge=0, le=100, description="Attempts to reach a failed primary after the first failed check, before failing "
        "over. 0 fails a hung primary over in about 2 s (see README, Faults, measured) with no false failover under a "
        "saturating load; each attempt more adds reconnect_interval + connect_timeout (about 3 s).")
    reconnect_interval: Seconds = Field(1, description="Seconds between those attempts.")
    connect_timeout: Seconds = Field(2, description="libpq connect_timeout of repmgr's connections.")


def _one_or_two_nodes(nodes: list[Any]) -> list[Any]:
    if not nodes:
        raise ValueError("a pair needs at least one node")
    if len(nodes) > 2:
        raise ValueError(f"a pair has one or two nodes (a primary and a standby), got {len(nodes)}: "
                         "pgaasctl does not run more standbys yet; declare another pair instead")
    return nodes


class PairSpecBase(Strict):
    postgres: Literal[15] = Field(15, description="PostgreSQL major version.")
    replication: Literal["synchronous", "asynchronous"] = Field(
        "asynchronous", description="synchronous: a commit returns once it is on both nodes."
    )
    settings: Settings = Field(default_factory=dict, description="Server parameters, set with ALTER SYSTEM.")
    statements: bool = Field(
        False, description="Track statements with pg_stat_statements, for the agent's samples and `pgaasctl report`: "
        "adds it to shared_preload_libraries (it counts from the next restart: `pgaasctl restart PAIR --pending`) and "
        "creates the extension in the admin database. Turned off, the agent stops sampling; the library stays.")
    deletion_protection: bool = Field(True, description="Refuse to destroy the pair.")

    @model_validator(mode="after")
    def _unique_nodes(self) -> PairSpecBase:
        names = [n.name for n in self.nodes]  # type: ignore[attr-defined]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        return self


class ExistingPairSpec(PairSpecBase):
    """A pair (or single server) you already run; pgaasctl manages the objects on it."""

    provider: Literal["existing"] = Field(description="`existing`: servers you already run.")
    nodes: Annotated[list[ExistingNode], AfterValidator(_one_or_two_nodes)] = Field(
        description="The nodes: a primary and a standby; one is allowed but is not fault tolerant.")


class CreatedPairSpec(PairSpecBase):
    """What every pair pgaasctl creates shares, whatever makes its hosts: repmgr, failover, a witness, a virtual IP,
    TLS and the networks clients come from."""

    failover: FailoverSettings = Field(default_factory=FailoverSettings, description="repmgrd settings.")
    virtual_ip: IPv4Address | None = Field(
        None, description="An address that follows the primary. local: in the workspace subnet (keepalived; needs the "
        "namespace network, pgaasctl run as root). openstack: free in the network's subnet (a reserved Neutron port, "
        "keepalived). gcp: free in the subnet (an internal load balancer whose health check passes on the primary).")
    tls: PairTls = Field(default_factory=PairTls, description="TLS: server certificates from the workspace CA, "
                         "hostssl rules, verified replication; client certificates.")
    clients: list[ClientNetwork] = Field(
        default_factory=list, description="Networks clients may connect from (pg_hba), e.g. [10.20.0.0/16], besides "
        "the pair's own network, which is always let in (local: the workspace subnet on the namespace network, "
        "127.0.0.0/8 on loopback; clouds: the subnets of the nodes: the nodes, the witness and pgaasctl are there). "
        "Every address only if you write 0.0.0.0/0.")

    @model_validator(mode="after")
    def _witness_is_not_a_node(self) -> CreatedPairSpec:
        witness = getattr(self, "witness", None)
        if witness is not None and witness.name in {n.name for n in self.nodes}:  # type: ignore[attr-defined]
            raise ValueError(f"the witness {witness.name!r} has the name of a node; give it its own")
        return self

    @field_validator("virtual_ip", mode="before")
    @classmethod
    def _plain_address(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("virtual_ip must be an IPv4 address like 10.213.0.100")
        return value


class LocalPairSpec(CreatedPairSpec):
    """A pair pgaasctl creates on this machine, replicating with repmgr and failing over by itself."""

    provider: Literal["local"] = Field(description="`local`: loopback addresses on this machine, each with sshd and PostgreSQL.")
    nodes: Annotated[list[LocalNode], AfterValidator(_one_or_two_nodes)] = Field(
        description="The nodes: a primary and a standby; one is allowed but is not fault tolerant.")
    witness: LocalWitness | None = Field(None, description="A repmgr witness on a third host, the tie-breaker "
                                          "in a network partition.")


# ---------------------------------------------------------------- clouds

CloudName = Literal["openstack", "gcp"]
_CLOUD_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}")


def _check_cloud_word(value: str) -> str:
    """An image, flavor, network, zone or project name: it reaches cloud APIs and a cloud-init file, never a shell."""
    if not _CLOUD_WORD.fullmatch(value):
        raise ValueError(f"{value!r} may use letters, digits and . _ : / @ + - only (at most 255)")
    return value


CloudWord = Annotated[str, AfterValidator(_check_cloud_word)]


class OpenStackOptions(Strict):
    """Where and how provider `openstack` creates servers (openstacksdk; see README, OpenStack)."""

    cloud: CloudWord | None = Field(None, description="The cloud's name in clouds.yaml; omitted: the OS_* environment "
                                    "variables (OS_AUTH_URL, OS_USERNAME, ...) say where and who.")
    region: CloudWord | None = Field(None, description="Region name, when the cloud has several.")
    image: CloudWord = Field(description="Image name or id: Debian 12 (cloud-init installs PostgreSQL 15, repmgr and "
                             "keepalived from its packages).")
    flavor: CloudWord = Field(description="Flavor name or id, e.g. m1.medium.")
    network: CloudWord = Field(description="Network name or id the nodes' ports are on; the nodes reach each other "
                               "and pgaasctl reaches them on it (or through floating IPs).")
    key_pair: CloudWord | None = Field(None, description="A Nova key pair for the image's default user (your own "
                                       "break-glass access); pgaasctl logs in as postgres with its own key.")
    ssh_key_file: SafePath | None = Field(None, description="The private key pgaasctl logs in with (its .pub beside "
                                          "it goes to the postgres user through cloud-init); omitted: pgaasctl makes "
                                          "one per pair under Workspace cloud_dir.")
    allowed_ssh: list[ClientNetwork] = Field(default_factory=list, description="Networks the security group lets "
                                             "reach port 22, besides the nodes' own subnet (where pgaasctl runs).")
    allowed_postgres: list[ClientNetwork] = Field(default_factory=list, description="Networks the security group "
                                                  "lets reach port 5432, besides the nodes' own subnet.")
    floating_ip: bool = Field(False, description="Give each node a floating IP; pgaasctl then connects through it "
                              "(replication stays on the fixed addresses).")
    floating_network: CloudWord | None = Field(None, description="The external network floating IPs come from; "
                                               "needed with floating_ip.")
    availability_zones: list[CloudWord] = Field(default_factory=list, description="Zones the nodes go to, in order "
                                                "(a node's own `zone` wins); omitted: the cloud's default.")
    timeout: Seconds = Field(600, description="Seconds to wait for a server to become ACTIVE and answer SSH.")

    @model_validator(mode="after")
    def _floating_network(self) -> OpenStackOptions:
        if self.floating_ip and self.floating_network is None:
            raise ValueError("floating_ip needs floating_network: the external network the addresses come from")
        return self


class GcpOptions(Strict):
    """Where and how provider `gcp` creates instances (google-cloud-compute; see README, Google Cloud)."""

    project: CloudWord = Field(description="Project id.")
    region: CloudWord = Field(description="Region, e.g. europe-west1 (the subnet and the virtual IP are regional).")
    zones: Annotated[list[CloudWord], Field(min_length=1, max_length=3)] = Field(
        description="Zones of the region, in node order: the nodes go in different zones (give two).")
    machine_type: CloudWord = Field(description="Machine type, e.g. e2-standard-2.")
    image: CloudWord = Field("projects/debian-cloud/global/images/family/debian-12",
                             description="Image or image family URL (Debian 12).")
    network: CloudWord = Field("default", description="VPC network name.")
    subnet: CloudWord | None = Field(None, description="Subnetwork name in the region; omitted: the network's "
                                     "subnet there (auto mode).")
    source_ranges: list[ClientNetwork] = Field(default_factory=list, description="Networks the firewall rule lets "
                                               "reach 5432 and 22, besides the subnet itself (where pgaasctl runs).")
    credentials_file: SafePath | None = Field(None, description="A service account key file (JSON, relative to the "
                                              "spec file); omitted: Application Default Credentials.")
    ssh_key_file: SafePath | None = Field(None, description="The private key pgaasctl logs in with (see openstack).")
    endpoint: CloudWord | None = Field(None, description="The Compute Engine API's address, when not the public one "
                                       "(a Private Service Connect endpoint, e.g. https://compute-myendpoint.p.googleapis.com).")
    timeout: Seconds = Field(600, description="Seconds to wait for an operation, an instance and its SSH.")

    @model_validator(mode="after")
    def _zones_in_region(self) -> GcpOptions:
        for zone in self.zones:
            if not zone.startswith(self.region + "-"):
                raise ValueError(f"zone {zone!r} is not in region {self.region!r}")
        if len(set(self.zones)) != len(self.zones):
            raise ValueError("zones must differ: the nodes go in different zones")
        return self


class CloudNode(Strict):
    """A node pgaasctl creates in a cloud."""

    name: Identifier = Field(description="Node name, unique in the pair.")
    provider: CloudName | None = Field(None, description="The cloud this node is created in; omitted: the pair's "
                                       "provider (a pair may span both clouds).")
    zone: CloudWord | None = Field(None, description="Availability zone (openstack) or zone (gcp) of this node; "
                                   "omitted: the options' zones, in node order.")


class CloudWitness(CloudNode):
    """The pair's repmgr witness on a third cloud host (see LocalWitness)."""


class CloudPairSpec(CreatedPairSpec):
    """A pair pgaasctl creates on cloud servers it makes, bootstrapped over SSH as local hosts are."""

    nodes: Annotated[list[CloudNode], AfterValidator(_one_or_two_nodes)] = Field(
        description="The nodes: a primary and a standby; one is allowed but is not fault tolerant.")
    witness: CloudWitness | None = Field(None, description="A repmgr witness on a third cloud host.")
    openstack: OpenStackOptions | None = Field(None, description="OpenStack options, for the nodes created there.")
    gcp: GcpOptions | None = Field(None, description="Google Cloud options, for the nodes created there.")
    directory: SafePath = Field("/var/lib/pgaasctl", description="Where on each server pgaasctl keeps the node's "
                                "data, configuration, sockets and logs (DIRECTORY/PAIR/NODE), owned by postgres.")

    def node_provider(self, node: CloudNode) -> CloudName:
        return node.provider or self.provider  # type: ignore[attr-defined,no-any-return]

    def hosts_spec(self) -> list[CloudNode]:
        """The nodes and the witness: every server the pair has."""
        return [*self.nodes, *([self.witness] if self.witness else [])]

    @model_validator(mode="after")
    def _options_for_each_cloud(self) -> CloudPairSpec:
        used = {self.node_provider(n) for n in self.hosts_spec()}
        for cloud in sorted(used):
            if getattr(self, cloud) is None:
                who = ", ".join(n.name for n in self.hosts_spec() if self.node_provider(n) == cloud)
                raise ValueError(f"{who} {'is' if ',' not in who else 'are'} created on {cloud}: add the `{cloud}:` "
                                 "options (see docs/reference.md)")
        if self.virtual_ip is not None and len(used) > 1:
            raise ValueError("a virtual IP needs every node on one cloud network; a pair across clouds is reached "
                             "through its URI (both hosts, target_session_attrs=read-write): remove virtual_ip")
        if self.gcp is not None and "gcp" in used:
            gcp_nodes = [n for n in self.nodes if self.node_provider(n) == "gcp" and n.zone is None]
            if len(gcp_nodes) > len(self.gcp.zones) and len(gcp_nodes) > 1:
                raise ValueError("give gcp.zones a zone for each node: the nodes go in different zones")
        return self


class OpenStackPairSpec(CloudPairSpec):
    """A pair on servers pgaasctl creates in an OpenStack cloud."""

    provider: Literal["openstack"] = Field(description="`openstack`: servers created with openstacksdk.")


class GcpPairSpec(CloudPairSpec):
    """A pair on instances pgaasctl creates in Google Cloud."""

    provider: Literal["gcp"] = Field(description="`gcp`: Compute Engine instances created with google-cloud-compute.")


PairSpec = Annotated[ExistingPairSpec | LocalPairSpec | OpenStackPairSpec | GcpPairSpec, Field(discriminator="provider")]


# ---------------------------------------------------------------- Role

class RoleSpec(Strict):
    """A role. Attributes not given take PostgreSQL's defaults, and drift from them is corrected."""

    login: bool = Field(False, description="May log in.")
    superuser: bool = Field(False, description="Superuser.")
    createdb: bool = Field(False, description="May create databases.")
    createrole: bool = Field(False, description="May create roles.")
    replication: bool = Field(False, description="May start streaming replication.")
    bypassrls: bool = Field(False, description="Bypasses row-level security.")
    inherit: bool = Field(True, description="Inherits privileges of roles it is a member of.")
    connection_limit: StrictInt = Field(-1, ge=-1, le=INT4_MAX, description="Concurrent connections allowed; -1 for no limit.")
    valid_until: dt.datetime | Literal["infinity"] | None = Field(
        None, description="Password expiry time (ISO 8601, with time zone) or `infinity`."
    )
    member_of: list[RoleReference] = Field(default_factory=list, description="Roles this role is a member of.")
    settings: Settings = Field(default_factory=dict, description="Per-role parameters (ALTER ROLE ... SET).")
    password: SecretSource | None = Field(
        None, description="Password source ({env: NAME} or {file: PATH}); omitted: the password is not managed."
    )
    client_certificate: bool = Field(
        False, description="Log in with a client certificate the workspace CA issued (CN = the role; `pgaasctl cert "
        "issue`), not a password: `cert` in pg_hba. Needs the pair's tls.mode require or verify-full.")
    adopt: bool = Field(
        False, description="Take over a role of this name that already exists and that pgaasctl did not create "
        "(like `pgaasctl import`); without it, such a role is a plan error.",
    )

    @model_validator(mode="after")
    def _tz_aware(self) -> RoleSpec:
        if isinstance(self.valid_until, dt.datetime) and self.valid_until.tzinfo is None:
            raise ValueError("valid_until needs a time zone, e.g. 2027-01-01T00:00:00Z")
        if isinstance(self.valid_until, dt.datetime):
            try:
                self.valid_until.astimezone(dt.timezone.utc)
            except OverflowError:
                raise ValueError("valid_until is out of range: in UTC it must fall in the years 1 to 9999") from None
        return self


# ---------------------------------------------------------------- Database

def _name_or_mapping(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Extension(Strict):
    """An extension installed in the database."""

    name: ExistingName = Field(description="Extension name, e.g. pgcrypto or pg_trgm.")
    version: str | None = Field(None, description="Version; omitted: the default version when created, never updated.")
    schema_: SchemaName | None = Field(None, alias="schema", description="Schema to install into; create-only.")


class Schema(Strict):
    """A schema in the database."""

    name: SchemaName = Field(description="Schema name.")
    owner: Identifier | None = Field(None, description="Owner role; omitted: the database owner.")


class DatabaseSpec(Strict):
    """A database and what lives at its top level."""

    owner: Identifier | None = Field(None, description="Owner role; omitted: the admin user.")
    encoding: str | None = Field(None, description="Encoding, e.g. UTF8; create-only.")
    locale: str | None = Field(None, description="LC_COLLATE and LC_CTYPE, e.g. C.UTF-8; create-only.")
    template: Identifier | Literal["template0", "template1"] = Field("template1", description="Template to copy; create-only.")
    connection_limit: StrictInt = Field(-1, ge=-1, le=INT4_MAX, description="Concurrent connections allowed; -1 for no limit.")
    allow_connections: bool = Field(True, description="Whether anyone may connect.")
    settings: Settings = Field(default_factory=dict, description="Per-database parameters (ALTER DATABASE ... SET).")
    extensions: list[Annotated[Extension, BeforeValidator(_name_or_mapping)]] = Field(
        default_factory=list, description="Extensions: a name, or {name, version, schema}."
    )
    schemas: list[Annotated[Schema, BeforeValidator(_name_or_mapping)]] = Field(
        default_factory=list, description="Schemas: a name, or {name, owner}."
    )
    deletion_protection: bool = Field(False, description="Turn a destroy of this database into a plan error.")
    adopt: bool = Field(
        False, description="Take over a database of this name that already exists and that pgaasctl did not "
        "create (like `pgaasctl import`); without it, such a database is a plan error, so its data is never "
        "adopted by accident.",
    )

    @model_validator(mode="after")
    def _unique_children(self) -> DatabaseSpec:
        for what, names in (("extension", [e.name for e in self.extensions]), ("schema", [s.name for s in self.schemas])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} listed twice: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------------- Grant

DatabasePrivilege = Literal["CONNECT", "CREATE", "TEMPORARY"]
SchemaPrivilege = Literal["USAGE", "CREATE"]
TablePrivilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
SequencePrivilege = Literal["USAGE", "SELECT", "UPDATE"]
FunctionPrivilege = Literal["EXECUTE"]

ALL_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "database": ("CONNECT", "CREATE", "TEMPORARY"),
    "schema": ("USAGE", "CREATE"),
    "tables": ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"),
    "sequences": ("USAGE", "SELECT", "UPDATE"),
    "functions": ("EXECUTE",),
}


def _privileges(kind: str) -> Any:
    def normalise(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return value  # not a list of words: pydantic names what is wrong with it (never a TypeError here)
        out: list[Any] = []
        for item in value:
            word = item.upper().strip(" ")
            if word == "TEMP":
                word = "TEMPORARY"
            if word in ("ALL", "ALL PRIVILEGES"):
                out.extend(ALL_PRIVILEGES[kind])
            else:
                out.append(word)
        return sorted(set(out), key=str)

    return BeforeValidator(normalise)


class DefaultPrivileges(Strict):
    """Privileges on objects created in the future (ALTER DEFAULT PRIVILEGES)."""

    for_role: Identifier | None = Field(None, description="Role whose future objects get them; omitted: the database owner.")
    tables: Annotated[list[TablePrivilege], _privileges("tables")] = Field(
        default_factory=list, description="On future tables, views and materialized views."
    )
    sequences: Annotated[list[SequencePrivilege], _privileges("sequences")] = Field(
        default_factory=list, description="On future sequences."
    )
    functions: Annotated[list[FunctionPrivilege], _privileges("functions")] = Field(
        default_factory=list, description="On future functions and procedures."
    )


class SchemaGrant(Strict):
    """Privileges in one schema. A list given is authoritative; an omitted list is left alone."""

    privileges: Annotated[list[SchemaPrivilege] | None, _privileges("schema")] = Field(
        None, description="On the schema itself: USAGE, CREATE."
    )
    tables: Annotated[list[TablePrivilege] | None, _privileges("tables")] = Field(
        None, description="On all tables, views and materialized views now in the schema."
    )
    sequences: Annotated[list[SequencePrivilege] | None, _privileges("sequences")] = Field(
        None, description="On all sequences now in the schema."
    )
    functions: Annotated[list[FunctionPrivilege] | None, _privileges("functions")] = Field(
        None, description="On all functions and procedures now in the schema."
    )
    default_privileges: DefaultPrivileges | None = Field(None, description="On objects created later in the schema.")


class GrantSpec(Strict):
    """What one role may do in one database. One Grant per (role, database)."""

    role: Identifier = Field(description="The grantee.")
    database: Identifier = Field(description="The database.")
    privileges: Annotated[list[DatabasePrivilege] | None, _privileges("database")] = Field(
        None, description="On the database: CONNECT, CREATE, TEMPORARY (or ALL)."
    )
    schemas: dict[SchemaName, SchemaGrant] = Field(default_factory=dict, description="Privileges per schema.")


# ---------------------------------------------------------------- Workspace

class Threshold(Strict):
    """When a health check turns warn, then critical."""

    warn: StrictFloat | StrictInt = Field(description="The value from which the check warns.")
    critical: StrictFloat | StrictInt = Field(description="The value from which it is critical.")


def _threshold(warn: float, critical: float, description: str) -> Any:
    return Field(default_factory=lambda: Threshold(warn=warn, critical=critical), description=description)


GIB = 1024 ** 3


class HealthThresholds(Strict):
    """Warn and critical thresholds of the health checks (defaults in the spirit of pgwatch's health checks).
    Higher is worse for all of them but cache_hit, where lower is worse."""

    connections_used: Threshold = _threshold(0.75, 0.9, 'Sessions as a fraction of max_connections.')
    cache_hit: Threshold = _threshold(0.95, 0.9, 'Blocks found in shared buffers over blocks asked for, over the last hour (lower is worse).')
    rollback_ratio: Threshold = _threshold(0.05, 0.2, 'Rolled back over all transactions, over the last hour.')
    replication_lag_seconds: Threshold = _threshold(10, 60, "A standby's replay lag.")
    inactive_slot_bytes: Threshold = _threshold(1 * GIB, 10 * GIB, 'WAL held back by a replication slot no one consumes.')
    wraparound_age: Threshold = _threshold(500_000_000, 1_000_000_000, 'age(datfrozenxid) of a database: transactions towards wraparound (2^31).')
    long_transaction_seconds: Threshold = _threshold(300, 3600, 'Age of the oldest open transaction.')
    idle_in_transaction_sessions: Threshold = _threshold(1, 5, 'Sessions idle inside a transaction.')
    blocked_sessions: Threshold = _threshold(1, 5, 'Sessions waiting for a lock another session holds.')
    deadlocks_per_hour: Threshold = _threshold(1, 10, 'Deadlocks detected, over the last hour.')
    database_growth_bytes_per_hour: Threshold = _threshold(1 * GIB, 10 * GIB, "A database's growth, over the last hour.")
    wal_bytes_per_hour: Threshold = _threshold(5 * GIB, 20 * GIB, 'WAL the primary wrote, over the last hour.')

    @model_validator(mode="after")
    def _ordered(self) -> HealthThresholds:
        for name in type(self).model_fields:
            threshold: Threshold = getattr(self, name)
            lower_is_worse = name == "cache_hit"
            if (threshold.critical > threshold.warn) if lower_is_worse else (threshold.critical < threshold.warn):
                raise ValueError(f"{name}: critical ({threshold.critical:g}) must be "
                                 f"{'below' if lower_is_worse else 'above'} warn ({threshold.warn:g})")
        return self


class MonitoringSettings(Strict):
    """What `pgaasctl agent` samples and how long the store keeps it."""

    metrics_interval: Duration = Field(15.0, ge=1, le=3600, description="Time between two metric samples of a node "
                                       "(the lookup itself follows the agent's --interval).")
    raw_retention: Duration = Field(172800.0, ge=3600, le=90 * 86400, description="How long raw samples are kept; "
                                    "older ones are rolled up by the hour (min, max, average, last).")
    rollup_retention: Duration = Field(90 * 86400.0, ge=86400, le=3650 * 86400, description="How long hourly "
                                       "rollups are kept.")
    event_retention: Duration = Field(365 * 86400.0, ge=86400, le=3650 * 86400, description="How long events are kept.")
    checks: HealthThresholds = Field(default_factory=HealthThresholds, description="Health check thresholds.")
    agent_url: str | None = Field(None, description="The agent's --listen address as the nodes reach it "
                                  "(http://ADDRESS:PORT): repmgr on each node posts promotions, failovers and rejoins "
                                  "there, so the lookup follows within a second. Unset: the agent's rounds only.")

    @field_validator("agent_url")
    @classmethod
    def _agent_url(cls, value: str | None) -> str | None:
        from pgaasctl.monitor.push import check_agent_url

        return None if value is None else check_agent_url(value)


class WorkspaceSpec(Strict):
    """Settings of the workspace itself."""

    store: str = Field(
        "sqlite:///state/pgaasctl.db",
        description="State store URL: sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://...",
    )
    lock_timeout: StrictFloat = Field(5.0, ge=0, le=600, description="Seconds a second apply waits for the pair lock.")
    parallel_pairs: StrictInt = Field(
        4, ge=1, le=64, description="Pairs one apply works on at once (creating, healing, changing); each pair's own "
        "steps stay in order.")
    sessions: StrictInt = Field(
        8, ge=1, le=64, description="Sessions pgaasctl opens at once on a primary for its work (apply's parallel "
        "changes, plan's reads of each database), besides the one that holds the pair's lock; never more than half "
        "the connection slots the server has free (max_connections less superuser_reserved_connections and the "
        "sessions in use).")
    standby_timeout: StrictFloat = Field(30.0, ge=0, le=3600, description="Seconds apply waits for the standby to replay.")
    local_dir: SafePath = Field(
        "state/local", description="Where provider `local` keeps each node's sshd, PostgreSQL data and logs."
    )
    secrets_dir: SafePath = Field(
        "state/secrets", description="Where pgaasctl keeps secrets of its own on this machine (0600, .gitignore'd; "
        "relative to the workspace root): the key of the password checks' memory, the API's generated passwords, and the "
        "salts of the servers' verifiers for pgaasctl's own logins (no secret; a cache).")
    cloud_dir: SafePath = Field(
        "state/cloud", description="Where cloud providers keep each pair's SSH key and superuser password (0600), "
        "relative to the workspace root. Never in the store, never in git (it gets a .gitignore).")
    local_addresses: str = Field(
        "127.0.1.2-127.0.1.254", description="Loopback range provider `local` takes node addresses from (first-last), "
        "on the loopback network."
    )
    network: Literal["auto", "namespaces", "loopback"] = Field(
        "auto", description="How provider `local` connects its nodes: `namespaces` (a network namespace per node on a "
        "bridge, needs root), `loopback` (addresses of 127.0.0.0/8, no virtual IP), `auto` (namespaces when run as root).")
    subnet: str = Field(
        "10.213.0.0/24", description="The namespace network's IPv4 subnet; the machine must not route it already. "
        "The bridge takes the first address, nodes the next ones.")
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings,
                                           description="What the agent samples and how long it is kept.")
    tls: WorkspaceTls = Field(default_factory=WorkspaceTls, description="The certificate authority of the "
                              "workspace's pairs and clients.")
    api_directory: SafePath = Field(
        "api", description="Where `pgaasctl serve` writes the documents of what is made through the API (one file per "
        "object, under the spec directory): a directory like any other, read by plan and apply, and committed when "
        "the spec directory is a git repository.")

    @field_validator("subnet")
    @classmethod
    def _private_subnet(cls, value: str) -> str:
        try:
            network = IPv4Network(value.strip())
        except ValueError:
            raise ValueError(f"subnet must be an IPv4 network like 10.213.0.0/24, got {value!r}") from None
        if not network.is_private or network.is_loopback or network.is_link_local:
            raise ValueError(f"subnet must be a private IPv4 network (10/8, 172.16/12, 192.168/16), got {value!r}")
        if not 16 <= network.prefixlen <= 28:
            raise ValueError(f"subnet must be a /16 to /28 network, got /{network.prefixlen}")
        return str(network)

    @property
    def subnet_network(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    @model_validator(mode="after")
    def _loopback_range(self) -> WorkspaceSpec:
        import ipaddress

        try:
            first, last = (ipaddress.IPv4Address(part.strip()) for part in self.local_addresses.split("-"))
        except ValueError:
            raise ValueError(f"local_addresses must look like 127.0.1.2-127.0.1.254, got {self.local_addresses!r}") from None
        if not (first.is_loopback and last.is_loopback and first <= last):
            raise ValueError(f"local_addresses must be a loopback range (127.x.y.z), got {self.local_addresses!r}")
        return self


# ---------------------------------------------------------------- documents

LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(f"label {key!r}: a key is 1 to 63 lowercase letters, digits, '.', '_', '/' or '-'")
        if len(value) > 253:
            raise ValueError(f"label {key!r}: a value is at most 253 characters")
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
OWNER_LABEL = "pgaas.owner"  # the API user who owns the object (members change only what they own)
MEMBERS_LABEL = "pgaas.members"  # on a Pair: `*`, or the API users (comma-separated) who may create databases there


class PairMetadata(Strict):
    """Names the pair."""

    name: Identifier = Field(description="Pair name, unique in the workspace.")
    labels: Labels = Field(default_factory=dict, description=f"Free labels; `{MEMBERS_LABEL}` (`*` or user names, "
                           "comma-separated) opens the pair to members of the API.")


class ObjectMetadata(Strict):
    """Names the object and the pair it lives on."""

    name: Identifier = Field(description="Object name in PostgreSQL.")
    pair: Identifier = Field(description="The pair the object lives on.")
    labels: Labels = Field(default_factory=dict, description=f"Free labels; `{OWNER_LABEL}` names the API user who "
                           "owns the object.")


class GrantMetadata(Strict):
    """Names the pair; a grant's address comes from its role and database."""

    pair: Identifier = Field(description="The pair the grant lives on.")
    name: str | None = Field(None, description="Optional label; the address is grant.PAIR.DATABASE.ROLE.")
    labels: Labels = Field(default_factory=dict, description=f"Free labels; `{OWNER_LABEL}` names the API user who "
                           "owns the grant.")


class WorkspaceMetadata(Strict):
    """Optional label of the workspace."""

    name: str = Field("default", description="Label.")


class PairDoc(Strict):
    kind: Literal["Pair"]
    metadata: PairMetadata
    spec: PairSpec


class RoleDoc(Strict):
    kind: Literal["Role"]
    metadata: ObjectMetadata
    spec: RoleSpec = Field(default_factory=RoleSpec)


class DatabaseDoc(Strict):
    kind: Literal["Database"]
    metadata: ObjectMetadata
    spec: DatabaseSpec = Field(default_factory=DatabaseSpec)


class GrantDoc(Strict):
    kind: Literal["Grant"]
    metadata: GrantMetadata
    spec: GrantSpec


class WorkspaceDoc(Strict):
    kind: Literal["Workspace"]
    metadata: WorkspaceMetadata = Field(default_factory=WorkspaceMetadata)
    spec: WorkspaceSpec = Field(default_factory=WorkspaceSpec)


Document = Annotated[PairDoc | RoleDoc | DatabaseDoc | GrantDoc | WorkspaceDoc, Field(discriminator="kind")]
DOCUMENT_MODELS: dict[str, type[BaseModel]] = {
    "Pair": PairDoc,
    "Role": RoleDoc,
    "Database": DatabaseDoc,
    "Grant": GrantDoc,
    "Workspace": WorkspaceDoc,
}


def address_of(doc: BaseModel) -> str:
    """The stable address of a document's object, e.g. role.orders.orders_app."""
    if isinstance(doc, PairDoc):
        return f"pair.{doc.metadata.name}"
    if isinstance(doc, RoleDoc):
        return f"role.{doc.metadata.pair}.{doc.metadata.name}"
    if isinstance(doc, DatabaseDoc):
        return f"database.{doc.metadata.pair}.{doc.metadata.name}"
    if isinstance(doc, GrantDoc):
        return f"grant.{doc.metadata.pair}.{doc.spec.database}.{doc.spec.role}"
    if isinstance(doc, WorkspaceDoc):
        return "workspace"
    raise TypeError(type(doc))
