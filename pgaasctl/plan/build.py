"""Make a plan: discover each pair, read its catalog in batches, diff, order, filter by target."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgaasctl.errors import ConnectionFailed, PgaasError, PlanError
from pgaasctl.live.catalog import (
    DatabaseContents,
    LiveCatalog,
    read_cluster,
    read_contents,
)
from pgaasctl.live.connect import NodeAddress
from pgaasctl.live.discovery import PairState, discover
from pgaasctl.passwords import check_passwords
from pgaasctl.plan import diff
from pgaasctl.plan.model import Change, PairPlan, Plan, ShownStatement
from pgaasctl.secrets import resolve_secret
from pgaasctl.spec.desired import DesiredPair, DesiredState
from pgaasctl.spec.models import DatabaseSpec, GrantSpec, RoleSpec
from pgaasctl.store import ManagedObject, Store
from providers import provider_for


@dataclass
class LivePair:
    """A planned pair with what apply needs: the open primary connection and the node addresses."""

    state: PairState
    catalog: LiveCatalog
    plan: PairPlan


def spec_fingerprint(desired: DesiredState) -> str:
    docs = sorted((d.address, d.doc.model_dump(mode="json", by_alias=True)) for d in desired.documents)
    return hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()


def node_addresses(pair: DesiredPair) -> list[NodeAddress]:
    """Where each node is (the provider knows) and how to log in (the spec says)."""
    spec_dir = pair.loaded.source.file.parent
    hosts = {h.node: h for h in provider_for(pair.doc.spec.provider).hosts(pair.doc)}
    return [
        NodeAddress.from_spec(pair.name, node, spec_dir, host=hosts[node.name].address, port=hosts[node.name].port)
        for node in pair.doc.spec.nodes
    ]


def role_passwords(pair: DesiredPair) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, loaded in pair.roles.items():
        source = loaded.doc.spec.password
        if source is not None:
            out[name] = resolve_secret(source, loaded.source.file.parent, loaded.address).get_secret_value()
    return out


def make_plan(desired: DesiredState, store: Store, spec_path: Path, destroy: bool = False,
              targets: list[str] | None = None) -> tuple[Plan, dict[str, LivePair]]:
    """Plan every pair in `desired`. The caller closes the returned LivePair connections (close_pairs)."""
    orphaned = sorted({m.pair for m in store.managed().values()} - set(desired.pairs))
    if orphaned:
        raise PlanError(
            f"the state has managed objects on pair(s) {', '.join(orphaned)} that are no longer in the specs",
            "Put the Pair document back and run `pgaasctl destroy`, or drop them from the state with `pgaasctl state rm ADDR`.",
        )
    # Secrets first: a missing env var fails before any connection is made.
    prepared = [(pair, node_addresses(pair), role_passwords(pair)) for pair in desired.pairs.values()]
    plan = Plan(spec_path=str(spec_path), spec_fingerprint=spec_fingerprint(desired), destroy=destroy,
                targets=list(targets or []))
    live: dict[str, LivePair] = {}
    failures: list[PgaasError] = []

    def one(args: tuple[DesiredPair, list[NodeAddress], dict[str, str]]) -> LivePair:
        pair, nodes, passwords = args
        return plan_pair(pair, nodes, passwords, store, destroy)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(prepared)))) as pool:
        futures = [pool.submit(one, args) for args in prepared]
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
    plan.pairs = [live[name].plan for name in sorted(live)]
    if targets:
        for pair_plan in plan.pairs:
            pair_plan.changes = filter_targets(pair_plan.changes, targets)
    return plan, live


def close_pairs(live: dict[str, LivePair]) -> None:
    for item in live.values():
        item.state.close()


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
        out = []
        for name in sorted(set(self.databases) | {d for d, _ in self.grants} | {d for d, _ in self.gone_grants}):
            if name in self.gone_databases:
                continue
            record = managed.get(f"database.{pair}.{name}")
            db_grants = [g for (d, _), g in self.grants.items() if d == name]
            grant_records = [m.attributes for m in managed.values() if m.kind == "grant" and m.name.split(".", 1)[0] == name]
            if diff.needs_contents(self.databases.get(name), record.attributes if record else None, db_grants, grant_records):
                out.append(name)
        return out


def plan_pair(pair: DesiredPair, nodes: list[NodeAddress], passwords: dict[str, str], store: Store,
              destroy: bool) -> LivePair:
    spec = pair.doc.spec
    state = discover(pair.name, nodes, synchronous=spec.replication == "synchronous")
    try:
        store.record_pair(pair.name, spec.provider)
        store.record_nodes(pair.name, [
            (n.address.name, n.address.host, n.address.port, n.role, n.role != "unreachable") for n in state.nodes
        ])
        managed = store.managed(pair.name)
        objects = PairObjects.of(pair, managed, destroy)
        # Database contents are read over their own sessions while the cluster-wide catalog is read.
        with ThreadPoolExecutor(max_workers=1) as background:
            contents = background.submit(read_contents, state.primary.address, objects.contents_needed(pair.name, managed))
            catalog = read_cluster(state.connection)
            catalog.contents = _readable_contents(catalog, contents.result())
        checks = check_passwords(
            passwords, {name: role.verifier for name, role in catalog.roles.items()}, catalog.can_read_passwords
        )
        ctx = diff.PairContext(pair=pair.name, catalog=catalog, managed=managed, passwords=checks,
                               dropping_databases=set(objects.gone_databases))
        ctx.warnings.extend(state.warnings)
        changes = _pair_changes(ctx, pair, objects, destroy)
        if ctx.errors:
            raise PlanError(f"pair {pair.name!r}: the plan cannot be made:\n  " + "\n  ".join(ctx.errors))
        pair_plan = PairPlan(
            pair=pair.name, primary=state.primary.name, admin_database=state.primary.address.admin_database,
            header=_header(state), warnings=ctx.warnings, changes=changes, live_fingerprint=catalog.fingerprint(),
        )
        for change in changes:
            change.sql = [ShownStatement(database=s.database, text=s.display()) for s in change.statements]
    except psycopg.Error as exc:
        state.close()
        raise PgaasError(
            f"pair {pair.name!r}: reading the catalog on {state.primary.address.label} failed: {str(exc).strip()}",
            f"Check that {state.primary.address.user!r} is a superuser or has the privileges pgaasctl needs.",
        ) from None
    except BaseException:
        state.close()
        raise
    return LivePair(state=state, catalog=catalog, plan=pair_plan)


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
    if destroy and pair.doc.spec.deletion_protection:
        ctx.errors.append(f"{address}: deletion_protection is on; set it to false and apply before destroying")

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
    """Members before the roles they belong to, so no DROP ROLE trips over a membership."""
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        if name in seen:
            return 0
        depth[name] = 1 + max((level(p, seen | {name}) for p in parents.get(name, []) if p in names), default=0)
        return depth[name]

    return sorted(names, key=lambda n: (level(n), n))


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
        parts.append(f"{node.role if node.role != 'unreachable' else 'node'} {node.name} ({node.address.host}:{node.address.port}, {detail})")
    return ", ".join(parts)
