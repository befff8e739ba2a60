"""Host operations of a plan: create, clone, rejoin, start... run over SSH before any SQL."""

from __future__ import annotations

from collections.abc import Callable

from pgaasctl.apply.nodes import remove_node
from pgaasctl.errors import PgaasError
from pgaasctl.hosts.bootstrap import Bootstrap, RewindFailed, target_of
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.live.connect import connect
from pgaasctl.live.discovery import primary_timeline
from pgaasctl.live.topology import history_listing, rewinding_newer, timeline_of_history
from pgaasctl.plan.build import PairInputs
from pgaasctl.plan.model import HostOperation
from pgaasctl.spec.models import CreatedPairSpec, FailoverSettings
from providers.base import Host

OperationCallback = Callable[[str, HostOperation, str], None]  # (pair, operation, "start" | "done")


class HostOperator:
    """Runs one pair's host operations in plan order."""

    def __init__(self, inputs: PairInputs, ssh: SshSessions, on_progress: OperationCallback | None = None) -> None:
        self.inputs = inputs
        self.ssh = ssh
        self.on_progress = on_progress or (lambda pair, op, status: None)
        spec = inputs.pair.doc.spec
        admin_password = ""
        failover = None
        if isinstance(spec, CreatedPairSpec):
            admin_password = inputs.creator.admin_password(inputs.pair.name, create=True) or ""
            failover = spec.failover
        self.bootstrap = Bootstrap(ssh=ssh, failover=failover or FailoverSettings(), admin_password=admin_password,
                                   push=inputs.push, tls=inputs.node_tls(),
                                   clients=[str(n) for n in getattr(spec, "clients", [])],
                                   networks=sorted({h.own_network for h in [*inputs.hosts, *filter(None, [
                                       inputs.witness_host()])] if h.own_network}))
        self._destroyed = False
        self._ids: dict[str, int] = {}

    @property
    def pair(self) -> str:
        return self.inputs.pair.name

    def _host(self, node: str) -> Host:
        for host in self.inputs.provider.hosts(self.inputs.pair.doc):
            if host.node == node:
                return host
        witness = self.inputs.witness_host()
        if witness is not None and witness.node == node:
            return witness
        raise PgaasError(f"pair {self.pair!r} has no node {node!r}")

    def _node_id(self, node: str) -> int:
        """The repmgr node id discovery assigned (registered, recorded, or new); by position for a plan made
        before ids were carried in operations."""
        if node in self._ids:
            return self._ids[node]
        names = [n.name for n in self.inputs.pair.doc.spec.nodes]
        return names.index(node) + 1 if node in names else len(names) + 1

    def run(self, operations: list[HostOperation]) -> list[str]:
        self._ids = {op.node: op.node_id for op in operations if op.node_id is not None}
        done = []
        for op in operations:
            self.on_progress(self.pair, op, "start")
            self._run(op)
            self.on_progress(self.pair, op, "done")
            done.append(f"node {op.node}: {op.detail}")
        return done

    def _run(self, op: HostOperation) -> None:
        doc = self.inputs.pair.doc
        provider = self.inputs.provider
        if op.kind == "create_host":
            provider.create_hosts(doc, [op.node])
        elif op.kind == "start_host":
            provider.start_hosts(doc, [op.node])
        elif op.kind == "init_primary":
            self.bootstrap.create_primary(self._host(op.node), self._node_id(op.node))
        elif op.kind == "clone_standby":
            self._clone(op.node, op.peer or "", force=True)
        elif op.kind == "rejoin":
            self._rejoin(op.node, op.peer or "")
        elif op.kind == "recover_node":
            self._recover(op.node, op.peer or "")
        elif op.kind == "start_postgres":
            self.bootstrap.start_postgres(self._host(op.node))
        elif op.kind == "register_standby":
            self.bootstrap.register_standby(self._host(op.node))
        elif op.kind == "reconfigure_repmgr":
            primary = self._host(op.peer) if op.peer is not None and op.peer != op.node else None
            self.bootstrap.reconfigure_repmgr(self._host(op.node), self._node_id(op.node), primary)
        elif op.kind == "start_repmgrd":
            self.bootstrap.start_repmgrd(self._host(op.node))
        elif op.kind == "start_keepalived":
            self.inputs.creator.start_virtual_ip(doc, op.node)
        elif op.kind == "stop_keepalived":
            self.inputs.creator.stop_virtual_ip(doc, op.node)
        elif op.kind == "init_witness":
            primary_host = self._host(op.peer or "")
            self.bootstrap.create_witness(self._host(op.node), self._node_id(op.node), primary_host,
                                          self.bootstrap.repmgr_password(primary_host))
        elif op.kind == "register_witness":
            self.bootstrap.register_witness(self._host(op.node), self._host(op.peer or ""))
        elif op.kind == "fence_node":
            self.bootstrap.fence(self._host(op.node), op.detail)
        elif op.kind == "remove_node":
            remove_node(self.inputs, self.ssh, op)
        elif op.kind == "destroy_hosts":
            if not self._destroyed:
                self.ssh.close()  # sessions to hosts about to vanish
                provider.destroy_hosts(doc)
                self._destroyed = True
        else:  # pragma: no cover - the Literal type lists every kind
            raise PgaasError(f"unknown host operation {op.kind}")

    def _clone(self, node: str, primary: str, force: bool) -> None:
        primary_host = self._host(primary)
        password = self.bootstrap.repmgr_password(primary_host)
        self.bootstrap.create_standby(self._host(node), self._node_id(node), primary_host, password, force=force)

    def _rejoin(self, node: str, primary: str) -> None:
        """pg_rewind the failed node onto the new primary. Only when pg_rewind itself cannot work is the node
        cloned afresh (which wipes its data directory); an SSH error or a failed start is reported as itself."""
        host = self._host(node)
        self._refuse_rewinding_newer(host, self._host(primary))
        try:
            self.bootstrap.rejoin(host, self._host(primary))
        except RewindFailed:
            if self.bootstrap.postgres_running(host):
                self.bootstrap.stop_postgres(host)
            self._clone(node, primary, force=True)
        self.bootstrap.restart_repmgrd(host)

    def _refuse_rewinding_newer(self, host: Host, primary: Host) -> None:
        """Checked again right before a rewind (the plan may not have reached the node): a node on a newer
        timeline than the primary holds commits the primary lacks, and is never rewound onto it."""
        address = self.inputs.addresses.get(primary.node)
        if host.layout is None or address is None:
            return
        listing = self.ssh.run(target_of(host), history_listing(host.layout.data_dir)).stdout.strip()
        newer = timeline_of_history(listing, has_data=True)
        with connect(address) as conn:
            running = primary_timeline(conn)
        if newer is not None and newer > running:
            raise rewinding_newer(self.pair, host, newer, primary, running)

    def _recover(self, node: str, primary: str) -> None:
        host = self._host(node)
        assert host.layout is not None
        if not self.bootstrap.postgres_running(host):
            self._rejoin(node, primary)

