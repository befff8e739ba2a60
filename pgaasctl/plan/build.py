"""Make a plan: discover each pair, read its catalog in batches, diff, order, filter by target."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

from pgaasctl.errors import ConnectionFailed, PgaasError, PlanError
from pgaasctl.hosts.bootstrap import node_files_version
from pgaasctl.hosts.ssh import SshSessions
from pgaasctl.live.catalog import (
    DatabaseContents,
    LiveCatalog,
    empty_catalog,
    read_cluster,
    read_contents,
)
from pgaasctl.live.connect import NodeAddress
from pgaasctl.live.discovery import PairState, discover, probe_node
from pgaasctl.live.topology import Topology, discover_topology
from pgaasctl.monitor.lookup import changes, from_state
from pgaasctl.monitor.push import PushTarget, push_target
from pgaasctl.parallel import ThreadPool
from pgaasctl.password_memory import PasswordMemory
from pgaasctl.passwords import PasswordCheck, check_passwords
from pgaasctl.plan import diff, policy
from pgaasctl.plan.model import AttributeChange, Change, HostChange, HostOperation, PairPlan, Plan, ShownStatement
from pgaasctl.plan.planfile import secret_fingerprint
from pgaasctl.plan.settings import PRELOAD_PARAMETERS
from pgaasctl.secrets import resolve_secret
from pgaasctl.spec.desired import DesiredPair, DesiredState
from pgaasctl.spec.models import (
    LOCAL_ADMIN_USER,
    DatabaseSpec,
    ExistingPairSpec,
    GrantSpec,
    CreatedPairSpec,
    RoleSpec,
    WorkspaceSpec,
)
from pgaasctl.store import ManagedObject, Store
from pgaasctl.tls.certificates import expiry_warnings
from pgaasctl.tls.node_files import NodeTls
from pgaasctl.tls.workspace_ca import admin_sslmode, node_tls
from providers import CreatingProvider, provider_for
from providers.base import Host, Provider


@dataclass
class PairInputs:
    """What planning one pair starts from: its spec, its provider's hosts, how to log in to each node."""

    pair: DesiredPair
    provider: Provider
    hosts: list[Host]
    addresses: dict[str, NodeAddress]  # node -> admin login; a node pgaasctl has not created yet has none
    passwords: dict[str, str]  # role -> password, for roles whose password is managed
    recorded_ids: dict[str, int] = field(default_factory=dict)  # node -> repmgr node id, as the store recorded them
    last_primary: str | None = None  # the primary the last apply (or the agent) saw, from the store's lookup
    undeclared: list[Host] = field(default_factory=list)  # hosts of nodes the spec no longer declares
    push: PushTarget | None = None  # where the nodes' repmgr posts its events (the agent), if the workspace says
    node_tls: Callable[[], NodeTls | None] = lambda: None  # the pair's TLS for its nodes (the CA made at first need)
    sessions: int = 8  # sessions on the primary at once (Workspace sessions)
    password_memory: PasswordMemory | None = None  # the checks remembered from earlier applies
    # role -> (password, the verifier the server holds or will after apply, whether it matched already): what apply
    # remembers once it has run (in memory only, never in a plan file)
    checked_passwords: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    @property
    def uses_ssh(self) -> bool:
        """repmgr pairs: discovered and repaired over SSH."""
        return all(h.ssh_port is not None for h in self.hosts)

    @property
    def can_create(self) -> bool:
        return isinstance(self.pair.doc.spec, CreatedPairSpec)

    @property
    def creator(self) -> CreatingProvider:
        """The provider of a pair pgaasctl creates (local or a cloud)."""
        if not self.can_create:
            raise PgaasError(f"pair {self.pair.name!r}: provider {self.pair.doc.spec.provider} does not create hosts")
        return self.provider  # type: ignore[return-value]

    @property
    def synchronous(self) -> bool:
        return self.pair.doc.spec.replication == "synchronous"

    def witness_host(self) -> Host | None:
        """The pair's repmgr witness host, if the spec declares one."""
        return self.creator.witness_host(self.pair.doc) if self.can_create else None

    def topology(self, ssh: SshSessions, ssh_when_needed: bool = False) -> Topology:
        """Discovery of a repmgr pair over SSH (and SQL), with the host operations it needs. `ssh_when_needed`
        (plan and apply): healthy nodes are read over SQL alone (topology._probe_node)."""
        look = getattr(self.provider, "look_at_virtual_ip", None)
        if look is not None:  # cloud servers: what keepalived runs is asked of the nodes themselves
            look(self.pair.doc, self.hosts, ssh)
        return discover_topology(self.pair.name, self.hosts, self.addresses, ssh, self.synchronous, self.can_create,
                                 self.undeclared, self.recorded_ids, self.witness_host(), ssh_when_needed,
                                 self.last_primary)

    def sql_state(self) -> PairState:
        """Discovery of a pair reached over SQL only."""
        return discover(self.pair.name, [self.addresses[n.name] for n in self.pair.doc.spec.nodes], self.synchronous)


@dataclass
class LivePair:
    """A planned pair with what apply needs: the open primary connection (None before the pair exists)."""

    inputs: PairInputs
    state: PairState | None
    catalog: LiveCatalog
    plan: PairPlan
    managed: dict[str, ManagedObject] | None = None  # the store's records of the pair when it was planned

    def close(self) -> None:
        if self.state is not None:
            self.state.close()


def spec_fingerprint(desired: DesiredState) -> str:
    """What the specs said when planned, for a saved plan to check: the texts of the files, as loaded (any edit,
    a comment too, makes a saved plan stale; where the workspace is checked out does not), or the documents
    themselves when they were built in memory."""
    files = {d.source.file for d in desired.documents}
    if files and files <= set(desired.file_digests):
        return hashlib.sha256(" ".join(sorted(desired.file_digests[f] for f in files)).encode()).hexdigest()
    docs = sorted((d.address, d.doc.model_dump(mode="json", by_alias=True)) for d in desired.documents)
    return hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()


def pair_inputs(pair: DesiredPair, workspace: WorkspaceSpec, store: Store, role_secrets: bool = False) -> PairInputs:
    """Hosts and admin logins of a pair; with `role_secrets`, the passwords of its roles too (plan and apply
    need them; discovery, status and connection do not). Fails on a missing secret before any connection."""
    spec_dir = pair.loaded.source.file.parent
    provider = provider_for(pair.doc, workspace, store, spec_dir)
    hosts = provider.hosts(pair.doc)
    addresses: dict[str, NodeAddress] = {}
    spec = pair.doc.spec
    password: str | None = None
    if isinstance(spec, ExistingPairSpec):
        by_name = {h.node: h for h in hosts}
        for node in spec.nodes:
            addresses[node.name] = NodeAddress.from_spec(
                pair.name, node, spec_dir, host=by_name[node.name].address, port=by_name[node.name].pg_port
            )
    else:
        assert isinstance(spec, CreatedPairSpec)
        password = provider.admin_password(pair.name)  # type: ignore[attr-defined]
        managed = store.managed_object(f"pair.{pair.name}")
        sslmode, sslrootcert = admin_sslmode(managed.attributes.get("tls") if managed else None, workspace.tls)
        for host in hosts:
            if host.exists and password is not None:
                addresses[host.node] = NodeAddress(
                    pair=pair.name, name=host.node, host=host.connect_address, port=host.pg_port, user=LOCAL_ADMIN_USER,
                    password=SecretStr(password), admin_database="postgres", sslmode=sslmode,
                    connect_timeout=spec.failover.connect_timeout, sslrootcert=sslrootcert,
                )
    undeclared = provider.undeclared_hosts(pair.doc)
    for host in undeclared:
        if host.exists and isinstance(spec, CreatedPairSpec) and password is not None:
            addresses[host.node] = NodeAddress(
                pair=pair.name, name=host.node, host=host.connect_address, port=host.pg_port, user=LOCAL_ADMIN_USER,
                password=SecretStr(password), admin_database="postgres", sslmode="prefer",
                connect_timeout=spec.failover.connect_timeout,
            )
    passwords = role_passwords(pair) if role_secrets else {}
    push = push_target(workspace.monitoring.agent_url, store.plan_key(), pair.name) if isinstance(spec, CreatedPairSpec) else None
    inputs = PairInputs(pair=pair, provider=provider, hosts=hosts, addresses=addresses, passwords=passwords,
                        recorded_ids=store.node_ids(pair.name), undeclared=undeclared, push=push,
                        last_primary=_last_primary(store, pair.name) if isinstance(spec, CreatedPairSpec) else None,
                        sessions=workspace.sessions,
                        password_memory=PasswordMemory.load(workspace.secrets_dir, store, pair.name)
                        if passwords else None)
    if isinstance(spec, CreatedPairSpec):
        vip = str(spec.virtual_ip) if spec.virtual_ip is not None else None
        inputs.node_tls = lambda: node_tls(workspace.tls, store, pair.name, spec.tls, vip, certificate_roles(pair))
    return inputs


def _last_primary(store: Store, pair: str) -> str | None:
    seen = store.lookup(pair)
    return seen.primary if seen is not None else None


def certificate_roles(pair: DesiredPair) -> list[str]:
    """The pair's roles that log in with a client certificate (pg_hba's `cert` names them)."""
    return sorted(name for name, loaded in pair.roles.items() if loaded.doc.spec.client_certificate)


def role_passwords(pair: DesiredPair) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, loaded in pair.roles.items():
        source = loaded.doc.spec.password
        if source is not None:
            out[name] = resolve_secret(source, loaded.source.file.parent, loaded.address).get_secret_value()
    return out


def make_plan(desired: DesiredState, store: Store, spec_path: Path, ssh: SshSessions, destroy: bool = False,
              targets: list[str] | None = None, adopting: frozenset[str] = frozenset()) -> tuple[Plan, dict[str, LivePair]]:
    """Plan every pair in `desired`, in parallel. The caller closes the returned pairs (close_pairs)."""
    orphaned = sorted(store.managed_pairs() - set(desired.pairs))
    if orphaned:
        raise PlanError(
            f"the state has managed objects on pair(s) {', '.join(orphaned)} that are no longer in the specs",
            "Put the Pair document back and run `pgaasctl destroy`, or drop them from the state with `pgaasctl state rm ADDR`.",
        )
    # Secrets first: a missing env var fails before any connection is made.
    # a destroy sets no password: it needs no role secret
    prepared = [pair_inputs(pair, desired.workspace, store, role_secrets=not destroy)
                for pair in pairs_targeted(desired, targets)]
    plan = Plan(spec_path=str(spec_path), spec_fingerprint=spec_fingerprint(desired), destroy=destroy,
                targets=list(targets or []))
    key = store.plan_key()
    if key is not None:
        plan.secret_fingerprints = {
            f"role.{inputs.pair.name}.{role}": secret_fingerprint(key, f"role.{inputs.pair.name}.{role}", password)
            for inputs in prepared for role, password in sorted(inputs.passwords.items())
        }
    live: dict[str, LivePair] = {}
    failures: list[PgaasError] = []
    with ThreadPool(max_workers=max(1, min(8, len(prepared)))) as pool:
        futures = [pool.submit(plan_pair, inputs, store, ssh, destroy, targets) for inputs in prepared]
        for future in futures:
            try:
                result = future.result()
                live[result.plan.pair] = result
            except PgaasError as exc:
                failures.append(exc)
    if failures:
        close_pairs(live)
        if len(failures) == 1:
            raise failures[0]
        raise PgaasError("\n".join(str(f) for f in failures))
    try:
        for name in sorted(live):
            finish_pair_plan(live[name], store, targets, adopting)
    except BaseException:
        close_pairs(live)
        raise
    if not destroy:
        for name in sorted(live):
            live[name].plan.warnings += expiry_warnings(store, name, desired.workspace.tls.warn_days)
    plan.pairs = [live[name].plan for name in sorted(live)]
    return plan, live


def finish_pair_plan(live: LivePair, store: Store, targets: list[str] | None,
                     adopting: frozenset[str] = frozenset()) -> None:
    """Keep the targeted changes, then apply every safety rule to what is left (policy.enforce).
    `adopting`: addresses `pgaasctl import` takes over explicitly."""
    if targets:
        live.plan.changes = filter_targets(live.plan.changes, targets)
    managed = live.managed if live.managed is not None else store.managed(live.plan.pair)
    policy.enforce(live.plan, live.inputs.pair, managed, live.plan.problems, targets, adopting)


def pairs_targeted(desired: DesiredState, targets: list[str] | None) -> list[DesiredPair]:
    """The pairs a plan with `targets` concerns: a target names its pair second (role.orders...)."""
    if not targets or any(len(t.rstrip(".").split(".")) < 2 for t in targets):
        return list(desired.pairs.values())
    named = {t.split(".")[1] for t in targets}
    return [p for name, p in desired.pairs.items() if name in named]


def close_pairs(live: dict[str, LivePair]) -> None:
    for item in live.values():
        item.close()


@dataclass
class PairObjects:
    """What the specs declare for a pair and what the store manages that they no longer declare."""

    roles: dict[str, RoleSpec]
    databases: dict[str, DatabaseSpec]
    grants: dict[tuple[str, str], GrantSpec]
    gone_roles: list[str]
    gone_databases: list[str]
    gone_grants: list[tuple[str, str]]

    @classmethod
    def of(cls, pair: DesiredPair, managed: dict[str, ManagedObject], destroy: bool) -> PairObjects:
        roles = {} if destroy else {n: d.doc.spec for n, d in pair.roles.items()}
        databases = {} if destroy else {n: d.doc.spec for n, d in pair.databases.items()}
        grants = {} if destroy else {k: d.doc.spec for k, d in pair.grants.items()}
        by_kind: dict[str, list[str]] = {"role": [], "database": [], "grant": []}
        for item in managed.values():
            if item.kind in by_kind:
                by_kind[item.kind].append(item.name)
        return cls(
            roles=roles, databases=databases, grants=grants,
            gone_roles=sorted(n for n in by_kind["role"] if n not in roles),
            gone_databases=sorted(n for n in by_kind["database"] if n not in databases),
            gone_grants=sorted(g for g in (tuple(n.split(".", 1)) for n in by_kind["grant"]) if g not in grants),  # type: ignore[misc]
        )

    def contents_needed(self, pair: str, managed: dict[str, ManagedObject]) -> list[str]:
        """Databases whose insides (extensions, schemas, schema grants) matter to this plan."""
        grants_of: dict[str, list[GrantSpec]] = defaultdict(list)
        for (database, _), grant in self.grants.items():
            grants_of[database].append(grant)
        records_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in managed.values():
            if item.kind == "grant":
                records_of[item.name.split(".", 1)[0]].append(item.attributes)
        out = []
        for name in sorted(set(self.databases) | {d for d, _ in self.grants} | {d for d, _ in self.gone_grants}):
            if name in self.gone_databases:
                continue
            record = managed.get(f"database.{pair}.{name}")
            db_grants = grants_of.get(name, [])
            grant_records = records_of.get(name, [])
            if diff.needs_contents(self.databases.get(name), record.attributes if record else None, db_grants, grant_records):
                out.append(name)
        return out


def targets_pair(pair: str, targets: list[str] | None) -> bool:
    """Whether host-level work (creating, repairing, destroying nodes) is in scope of --target."""
    return not targets or any(t in ("pair", f"pair.{pair}") or f"pair.{pair}".startswith(t.rstrip(".") + ".") for t in targets)


def plan_pair(inputs: PairInputs, store: Store, ssh: SshSessions, destroy: bool,
              targets: list[str] | None = None) -> LivePair:
    live = _plan_pair(inputs, store, ssh, destroy, targets)
    describe = getattr(inputs.provider, "describe_host", None)
    if describe is not None:  # cloud servers: shown as resources of their own
        live.plan.hosts = host_changes(inputs.pair.name, live.plan.operations, lambda node: describe(inputs.pair.doc, node))
    return live


def host_changes(pair: str, operations: list[HostOperation], describe: Callable[[str], str]) -> list[HostChange]:
    out: list[HostChange] = []
    for op in operations:
        action = {"create_host": "create", "destroy_hosts": "delete"}.get(op.kind)
        if op.kind == "remove_node" and "remove its host" in op.detail:
            action = "delete"
        if action is not None and not any(h.address == f"host.{pair}.{op.node}" for h in out):
            out.append(HostChange(address=f"host.{pair}.{op.node}", action=action, description=describe(op.node)))  # type: ignore[arg-type]
    return out


def _plan_pair(inputs: PairInputs, store: Store, ssh: SshSessions, destroy: bool,
               targets: list[str] | None = None) -> LivePair:
    pair = inputs.pair
    operations: list[HostOperation] = []
    warnings: list[str] = []
    sync_names: str | None = None  # synchronous_standby_names, managed on repmgr pairs only
    hosts_in_scope = targets_pair(pair.name, targets)
    if inputs.uses_ssh:
        if destroy and inputs.can_create and hosts_in_scope:
            return _plan_destroy_hosts(inputs, store)
        topology = _discover(inputs, store, ssh)
        operations, warnings = topology.operations, topology.warnings
        cloud_warnings = getattr(inputs.provider, "plan_warnings", None)
        if cloud_warnings is not None:
            warnings = warnings + cloud_warnings(pair.doc)
        if not hosts_in_scope:
            if topology.state is None:
                raise PlanError(f"pair {pair.name!r} has no primary yet: target pair.{pair.name} to create or start it")
            if operations:
                warnings = warnings + [f"pair {pair.name!r} needs host operations; they are left out by --target"]
            operations = []
        if topology.state is None:
            return _plan_without_primary(inputs, store, operations, warnings, destroy)
        state = topology.state
        # managed on every repmgr pair, one node included: a primary left alone must not wait for a standby
        sync_names = "*" if inputs.synchronous and topology.whole_after_operations else ""
        if hosts_in_scope:
            operations += _reconfigure_operations(inputs, store, topology)
    else:
        state = inputs.sql_state()
        warnings = state.warnings
    try:
        _record_nodes(store, pair, state)
        managed = store.managed(pair.name)
        objects = PairObjects.of(pair, managed, destroy)
        # Database contents are read over their own sessions while the cluster-wide catalog is read.
        with ThreadPool(max_workers=1) as background:
            contents = background.submit(read_contents, state.primary.address, objects.contents_needed(pair.name, managed),
                                         inputs.sessions)
            catalog = read_cluster(state.connection, list_libraries=bool(PRELOAD_PARAMETERS & set(pair.doc.spec.settings))
                                   or pair.doc.spec.statements)
            checks = _check_passwords(inputs, catalog)  # while the databases' contents are read
            catalog.contents = _readable_contents(catalog, contents.result())
        pair_plan = _plan_objects(inputs, catalog, managed, objects, destroy, warnings, sync_names, checks)
        pair_plan.primary = state.primary.name
        pair_plan.admin_database = state.primary.address.admin_database
        pair_plan.header = _header(state)
        pair_plan.operations = operations
        _mark_pair_change(pair_plan, created=False)
    except psycopg.Error as exc:
        state.close()
        raise PgaasError(
            f"pair {pair.name!r}: reading the catalog on {state.primary.address.label} failed: {str(exc).strip()}",
            f"Check that {state.primary.address.user!r} is a superuser or has the privileges pgaasctl needs.",
        ) from None
    except BaseException:
        state.close()
        raise
    return LivePair(inputs=inputs, state=state, catalog=catalog, plan=pair_plan, managed=managed)


def _discover(inputs: PairInputs, store: Store, ssh: SshSessions) -> Topology:
    """Discovery of an SSH pair; when its creation never finished (the apply was killed), the way out is named."""
    try:
        return inputs.topology(ssh, ssh_when_needed=True)
    except PgaasError as exc:
        record = store.managed_object(f"pair.{inputs.pair.name}")
        if record is None or not record.pending or not inputs.can_create:
            raise
        spec_file = inputs.pair.loaded.source.file
        raise type(exc)(
            f"{exc.message}\n  (pair {inputs.pair.name!r} was being created by an apply that did not finish)",
            f"Remove what it made with `pgaasctl destroy {spec_file} --auto-approve` (its spec needs "
            "deletion_protection: false), then apply again to create it afresh.",
        ) from None


def _reconfigure_operations(inputs: PairInputs, store: Store, topology: Topology) -> list[HostOperation]:
    """Failover settings changed since the pair was made, or its node files are from an older pgaasctl:
    rewrite repmgr.conf (and the start and promote scripts) and restart repmgrd everywhere."""
    spec = inputs.pair.doc.spec
    managed = store.managed_object(f"pair.{inputs.pair.name}")
    if not isinstance(spec, CreatedPairSpec) or managed is None:
        return []
    tls = diff.tls_record(spec, certificate_roles(inputs.pair))
    if managed.attributes.get("failover") == spec.failover.model_dump() and \
            managed.attributes.get("node_files") == node_files_version(inputs.push) and managed.attributes.get("tls") == tls \
            and managed.attributes.get("clients") == ([str(n) for n in spec.clients] or None):
        return []
    registered = (topology.primary.registered if topology.primary is not None else None) or {}
    detail = "rewrite repmgr.conf and restart repmgrd"
    if managed.attributes.get("tls") != tls:
        detail = (f"TLS {spec.tls.mode} (certificates, pg_hba, ssl; a reload), " if tls else "TLS off (a reload), ") + detail
    primary = topology.primary.name if topology.primary is not None else None
    return [HostOperation(kind="reconfigure_repmgr", node=r.name, detail=detail, peer=primary,
                          node_id=registered[r.name].node_id if r.name in registered else None)
            for r in topology.nodes if r.host.exists]  # down nodes too: after their rejoin or start, which come first


def _record_nodes(store: Store, pair: DesiredPair, state: PairState) -> None:
    """What apply saw of the nodes goes into the lookup too (a reading plan keeps nothing)."""
    store.record_pair(pair.name, pair.doc.spec.provider)
    if not store.read_only:
        previous = store.lookup(pair.name)
        after = from_state(state, "apply", previous)
        store.record_lookup(after, changes(previous, after))


def _check_passwords(inputs: PairInputs, catalog: LiveCatalog) -> dict[str, PasswordCheck]:
    """The spec's passwords against the server's verifiers; what apply will remember of them goes to `inputs`."""
    verifiers = {name: role.verifier for name, role in catalog.roles.items()}
    memory = inputs.password_memory
    checks = check_passwords(inputs.passwords, verifiers, catalog.can_read_passwords,
                             remembered=memory.remembers if memory is not None else None)
    for role, check in checks.items():
        live = verifiers.get(role)
        if check.matches and live and live.startswith("SCRAM-SHA-256$"):
            inputs.checked_passwords[role] = (inputs.passwords[role], live, True)
        elif check.verifier is not None:
            inputs.checked_passwords[role] = (inputs.passwords[role], check.verifier, False)
    return checks


def _plan_objects(inputs: PairInputs, catalog: LiveCatalog, managed: dict[str, ManagedObject], objects: PairObjects,
                  destroy: bool, warnings: list[str], sync_names: str | None,
                  checks: dict[str, PasswordCheck] | None = None) -> PairPlan:
    pair = inputs.pair
    checks = _check_passwords(inputs, catalog) if checks is None else checks
    ctx = diff.PairContext(pair=pair.name, catalog=catalog, managed=managed, passwords=checks,
                           dropping_databases=set(objects.gone_databases), sync_standby_names=sync_names,
                           node_files=node_files_version(inputs.push), certificate_roles=certificate_roles(pair))
    ctx.warnings.extend(warnings)
    changes = _pair_changes(ctx, pair, objects, destroy)
    if catalog.settings and not destroy:  # a live server (not a pair being created)
        changes += _confirmations(managed, catalog, {c.address for c in changes})
    for change in changes:
        change.sql = [ShownStatement(database=s.database, text=s.display()) for s in change.statements]
    planned = PairPlan(pair=pair.name, primary="", header="", warnings=ctx.warnings, changes=changes,
                       problems=policy.problems_from(pair.name, ctx.errors))
    if catalog.settings:  # a live server (not a pair being created)
        planned.fingerprint_later(catalog.fingerprint)
    return planned


def _confirmations(managed: dict[str, ManagedObject], catalog: LiveCatalog, planned: set[str]) -> list[Change]:
    """Objects an unfinished apply was making that exist and need nothing else: the store confirms them (a state
    only change), so their records stop saying `pending`."""
    out = []
    for address, item in sorted(managed.items()):
        exists = {"role": item.name in catalog.roles, "database": item.name in catalog.databases}.get(item.kind, True)
        if item.pending and exists and address not in planned:
            out.append(Change(address=address, kind=item.kind, name=item.name, action="update",  # type: ignore[arg-type]
                              record=item.attributes, attributes=[AttributeChange(
                                  name="record", before="pending (an apply did not finish)", after="confirmed",
                                  note="state only")]))
    return out


def _mark_pair_change(pair_plan: PairPlan, created: bool) -> None:
    """Host operations belong to the pair's change: make sure there is one to show them under."""
    if not pair_plan.operations:
        return
    address = f"pair.{pair_plan.pair}"
    change = next((c for c in pair_plan.changes if c.address == address), None)
    if change is None:
        change = Change(address=address, kind="pair", name=pair_plan.pair, action="update")
        pair_plan.changes.insert(0, change)
    if created:
        change.action = "create"
        change.notes = [n for n in change.notes if "starts managing" not in n]


def _plan_without_primary(inputs: PairInputs, store: Store, operations: list[HostOperation], warnings: list[str],
                          destroy: bool) -> LivePair:
    """A pair to create (or a stopped one to start): objects are planned against what a new cluster holds."""
    pair = inputs.pair
    managed = store.managed(pair.name)
    created = any(op.kind == "init_primary" for op in operations)
    catalog = empty_catalog()
    if created:
        objects = PairObjects.of(pair, managed, destroy)
        pair_plan = _plan_objects(inputs, catalog, managed, objects, destroy, warnings,
                                  "*" if inputs.synchronous and len(inputs.hosts) > 1 else None)
    else:
        pair_plan = PairPlan(pair=pair.name, primary="", header="", warnings=warnings + [
            "its roles, databases and grants are planned once it is up"])
    first = inputs.hosts[0]
    pair_plan.primary = first.node
    pair_plan.header = f'Pair "{pair.name}": ' + ("to be created" if created else "stopped") + ", nodes " + ", ".join(
        f"{h.node} ({h.address})" if h.exists else h.node for h in inputs.hosts
    )
    pair_plan.operations = operations
    _mark_pair_change(pair_plan, created=created)
    return LivePair(inputs=inputs, state=None, catalog=catalog, plan=pair_plan, managed=managed)


def _plan_destroy_hosts(inputs: PairInputs, store: Store) -> LivePair:
    """Destroying a pair pgaasctl created: its hosts go, and every object with them."""
    pair = inputs.pair
    changes: list[Change] = []
    for address, item in sorted(store.managed(pair.name).items()):
        if item.kind != "pair":
            changes.append(Change(address=address, kind=item.kind, name=item.name, action="delete",  # type: ignore[arg-type]
                                  notes=["goes with the pair's hosts"]))
    managed_databases = {item.name for item in store.managed(pair.name).values() if item.kind == "database"}
    unmanaged = sorted(set(_databases_on(inputs)) - managed_databases)
    notes = ["every node is stopped and its files removed"]
    if unmanaged:
        notes.append(f"databases pgaasctl does not manage go with it, and their data is lost: {', '.join(unmanaged)}")
    changes.append(Change(address=f"pair.{pair.name}", kind="pair", name=pair.name, action="delete", notes=notes))
    existing = [h for h in [*inputs.hosts, *filter(None, [inputs.witness_host()])] if h.exists]
    detail = getattr(inputs.provider, "destroy_detail", "stop sshd, PostgreSQL and repmgrd; remove its files")
    operations = [HostOperation(kind="destroy_hosts", node=h.node, detail=detail) for h in existing]
    leftovers = getattr(inputs.provider, "leftovers", None)
    for node, what in leftovers(pair.doc) if leftovers is not None else []:
        if node not in {h.node for h in existing} and (node or not existing):  # an unfinished apply's: removed too
            operations.append(HostOperation(kind="destroy_hosts", node=node or inputs.hosts[0].node,
                                            detail=f"remove what an unfinished apply made: {what}"))
    pair_plan = PairPlan(
        pair=pair.name, primary="",
        header=f'Pair "{pair.name}": nodes ' + (", ".join(f"{h.node} ({h.address})" for h in existing) or "none made"),
        operations=operations, changes=changes,
    )
    return LivePair(inputs=inputs, state=None, catalog=empty_catalog(), plan=pair_plan)


_SYSTEM_DATABASES = ("postgres", "template0", "template1", "repmgr")


def _databases_on(inputs: PairInputs) -> list[str]:
    """The databases of a pair about to be destroyed, from whichever node answers (none: nothing to say)."""
    for address in inputs.addresses.values():
        state, conn = probe_node(address)
        if conn is None:
            continue
        with conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT (datname = ANY(%s))",
                                (list(_SYSTEM_DATABASES),)).fetchall()
        return [r[0] for r in rows]
    return []


def _readable_contents(catalog: LiveCatalog, read: dict[str, DatabaseContents | ConnectionFailed]) -> dict[str, DatabaseContents]:
    """Keep what was read; a database that exists and accepts connections but could not be read is an error."""
    out: dict[str, DatabaseContents] = {}
    for name, result in read.items():
        live = catalog.databases.get(name)
        if isinstance(result, DatabaseContents):
            out[name] = result
        elif live is not None and live.allow_connections:
            raise result
    return out


def _pair_changes(ctx: diff.PairContext, pair: DesiredPair, objects: PairObjects, destroy: bool) -> list[Change]:
    catalog = ctx.catalog
    address = f"pair.{pair.name}"
    changes: list[Change] = []
    pair_change = diff.diff_pair(ctx, None if destroy else pair.doc.spec, address, deleting=destroy)
    if pair_change and not destroy:
        changes.append(pair_change)

    role_changes = {n: c for n, c in ((n, diff.diff_role(ctx, n, s)) for n, s in objects.roles.items()) if c}
    try:
        ordered = diff.role_order(role_changes, objects.roles)
    except ValueError as cycle:
        ctx.errors.append(f"roles of pair {pair.name!r} are members of each other in a circle: {cycle}")
        ordered = sorted(role_changes)
    changes.extend(role_changes[n] for n in ordered)

    for name, db_spec in sorted(objects.databases.items()):
        change = diff.diff_database(ctx, name, db_spec, catalog.contents.get(name))
        if change:
            changes.append(change)
    for (database, role), grant_spec in sorted(objects.grants.items()):
        owner = objects.databases[database].owner or ctx.admin
        change = diff.diff_grant(ctx, database, role, grant_spec, owner, catalog.contents.get(database))
        if change:
            changes.append(change)

    # Destroys, in reverse dependency order: grants, databases, roles (members before parents).
    for database, role in objects.gone_grants:
        live_db = catalog.databases.get(database)
        owner = live_db.owner if live_db else ctx.admin
        change = diff.diff_grant(ctx, database, role, None, owner, catalog.contents.get(database))
        if change:
            changes.append(change)
    for name in objects.gone_databases:
        changes.append(diff.delete_database(ctx, name))
    live_parents = {n: catalog.roles[n].member_of for n in objects.gone_roles if n in catalog.roles}
    for name in _members_first(objects.gone_roles, live_parents):
        changes.append(diff.delete_role(ctx, name))
    if pair_change and destroy:
        changes.append(pair_change)
    return changes


def _members_first(names: list[str], parents: dict[str, list[str]]) -> list[str]:
    """The roles to drop, ordered by how deep they sit among each other's memberships (PostgreSQL has no
    membership cycles). Iterative: a chain of thousands of roles must not reach the recursion limit."""
    wanted = set(names)
    depth: dict[str, int] = {}
    for root in names:
        stack = [root]
        while stack:
            name = stack[-1]
            if name in depth:
                stack.pop()
                continue
            ups = [p for p in parents.get(name, []) if p in wanted and p != name]
            missing = [p for p in ups if p not in depth and p not in stack]
            if missing:
                stack.extend(missing)
                continue
            depth[name] = 1 + max((depth.get(p, 0) for p in ups), default=0)
            stack.pop()
    return sorted(names, key=lambda n: (depth[n], n))


def filter_targets(changes: list[Change], targets: list[str]) -> list[Change]:
    """Keep changes matching a target (exact address or a prefix ending at a dot) and, transitively,
    the changes of the roles and databases they refer to, so the targeted change can succeed."""

    def matches(address: str) -> bool:
        return any(address == t or address.startswith(t.rstrip(".") + ".") for t in targets)

    by_address = {c.address: c for c in changes}
    kept = {c.address for c in changes if matches(c.address)}
    pending = list(kept)
    while pending:
        for needed in by_address[pending.pop()].refers_to():
            if needed in by_address and needed not in kept and by_address[needed].action != "delete":
                kept.add(needed)
                pending.append(needed)
    return [c for c in changes if c.address in kept]


def _header(state: PairState) -> str:
    primary = state.primary.address
    parts = [f'Pair "{state.pair}": primary {primary.name} ({primary.host}:{primary.port})']
    for node in state.nodes:
        if node is state.primary:
            continue
        detail = node.replication if node.role == "standby" else node.role
        where = f"{node.address.host}:{node.address.port}" if node.address.host else "not created yet"
        parts.append(f"{node.role if node.role != 'unreachable' else 'node'} {node.name} ({where}, {detail})")
    return ", ".join(parts)
