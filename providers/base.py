"""The narrow protocol every provider implements: make hosts exist, list them, destroy them.

Everything after a host exists (configuration, initdb, repmgr, repmgrd) is pgaasctl.hosts.bootstrap,
run over SSH, the same for every provider.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from pgaasctl.spec.models import PairDoc


class HostLayout(BaseModel):
    """Where things are on a host pgaasctl bootstraps."""

    bin_dir: str
    data_dir: str
    config_dir: str  # postgresql.conf, pg_hba.conf, repmgr.conf, the promote hook, .pgpass
    socket_dir: str
    log_dir: str

    @property
    def repmgr_conf(self) -> str:
        return f"{self.config_dir}/repmgr.conf"


class Host(BaseModel):
    """A node's host as the provider knows it."""

    pair: str
    node: str
    address: str
    pg_port: int = 5432
    ssh_port: int | None = None  # None: no SSH (provider existing without ssh settings)
    ssh_user: str | None = None
    key_file: str | None = None
    repmgr_conf: str | None = None
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    layout: HostLayout | None = None  # known when pgaasctl bootstraps the host itself
    exists: bool = True  # False: declared but not created yet
    running: bool = True  # False: the host exists but its sshd is not running (local: after a reboot)
    namespace: str | None = None  # local, namespace network: the node's network namespace (it holds only its addresses)
    # keepalived for the pair's virtual IP: "current" (runs the configuration the spec asks for), "stale" (runs or
    # lies with another one), "stopped", "unwanted" (runs, but the spec has no virtual IP); None: nothing to do
    virtual_ip_state: str | None = None
    witness: bool = False  # the pair's repmgr witness, not a data node
    own_network: str | None = None  # the network the node, its peers and pgaasctl share (pg_hba always lets it in)
    cloud: str | None = None  # openstack or gcp: a server pgaasctl made in a cloud
    reach: str | None = None  # where pgaasctl connects (SSH, SQL) when not `address` (a floating IP)
    zone: str | None = None  # the cloud zone the server is in
    # where one machine holds many nodes (local): a directory there that keeps one initdb per PostgreSQL build,
    # copied into each new primary instead of running initdb (pgaasctl/hosts/initdb_cache.py)
    initdb_cache: str | None = None

    @property
    def connect_address(self) -> str:
        """Where pgaasctl itself reaches the node; peers and replication use `address`."""
        return self.reach or self.address

    @property
    def label(self) -> str:
        """The node as messages name it: its name and address, or that it has none yet."""
        return f"{self.node} ({self.address})" if self.address else f"{self.node} (not created yet)"


class Provider(Protocol):
    name: str

    def hosts(self, pair: PairDoc) -> list[Host]:
        """Every declared node's host, whether it exists yet or not."""
        ...

    def create_hosts(self, pair: PairDoc, nodes: list[str]) -> list[Host]:
        """Make the named nodes' hosts exist and answer SSH."""
        ...

    def start_hosts(self, pair: PairDoc, nodes: list[str]) -> None:
        """Bring existing hosts that are not running back up (their SSH only)."""
        ...

    def destroy_hosts(self, pair: PairDoc) -> None:
        """Stop and remove everything the provider created for the pair."""
        ...

    def undeclared_hosts(self, pair: PairDoc) -> list[Host]:
        """Hosts the provider made for nodes the spec no longer declares (renamed or removed nodes)."""
        ...

    def remove_host(self, pair: PairDoc, node: str) -> None:
        """Stop and remove one node's host (a node removed from the spec); nothing for hosts it did not make."""
        ...


class CreatingProvider(Provider, Protocol):
    """A provider that makes its pairs' hosts (local, the clouds): pgaasctl owns everything on them."""

    def admin_password(self, pair: str, create: bool = False) -> str | None:
        """The superuser password pgaasctl generated for the pair (kept beside the pair's key, never in the store)."""
        ...

    def witness_host(self, pair: PairDoc) -> Host | None:
        ...

    def start_virtual_ip(self, pair: PairDoc, node: str) -> None:
        ...

    def stop_virtual_ip(self, pair: PairDoc, node: str) -> None:
        ...

    def virtual_ip_holder(self, pair: PairDoc) -> str | None:
        """The node holding the pair's virtual IP now (None: nobody, or the provider cannot tell)."""
        ...
