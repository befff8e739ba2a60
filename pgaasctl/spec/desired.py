"""Cross-document checks and the desired state they produce, grouped per pair."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pgaasctl.errors import SpecError
from pgaasctl.spec.loader import LoadedDoc, Problem, load_documents, sorted_problems
from pgaasctl.spec.models import (
    LOCAL_ADMIN_USER,
    DatabaseDoc,
    ExistingPairSpec,
    GrantDoc,
    PairDoc,
    RoleDoc,
    WorkspaceDoc,
    WorkspaceSpec,
)


@dataclass
class DesiredPair:
    """Everything the specs declare for one pair."""

    loaded: LoadedDoc
    roles: dict[str, LoadedDoc] = field(default_factory=dict)
    databases: dict[str, LoadedDoc] = field(default_factory=dict)
    grants: dict[tuple[str, str], LoadedDoc] = field(default_factory=dict)  # (database, role)

    @property
    def name(self) -> str:
        return self.doc.metadata.name

    @property
    def doc(self) -> PairDoc:
        return self.loaded.doc

    def admin_databases(self) -> set[str]:
        if isinstance(self.doc.spec, ExistingPairSpec):
            return {n.admin_database for n in self.doc.spec.nodes}
        return {"postgres"}

    def admin_users(self) -> set[str]:
        if isinstance(self.doc.spec, ExistingPairSpec):
            return {n.admin_user for n in self.doc.spec.nodes}
        return {LOCAL_ADMIN_USER}


@dataclass
class DesiredState:
    pairs: dict[str, DesiredPair]
    workspace: WorkspaceSpec
    documents: list[LoadedDoc]
    file_digests: dict[Path, str] = field(default_factory=dict)  # the files' texts as loaded (none: built in memory)

    def by_address(self) -> dict[str, LoadedDoc]:
        return {d.address: d for d in self.documents}


def load_desired(path: Path) -> DesiredState:
    """Load specs under `path` and check references, names and duplicates. Offline. Every problem, of the
    documents themselves and of their references, is raised at once, sorted by file and line."""
    loaded = load_documents(path)
    desired = build_desired(loaded.documents, loaded.problems, loaded.rejected)
    desired.file_digests = loaded.digests
    return desired


def build_desired(docs: list[LoadedDoc], problems: list[Problem] | None = None,
                  rejected: set[str] | None = None) -> DesiredState:
    """The desired state of `docs`. `problems` were found earlier; `rejected` are the addresses of documents that
    did not validate: references to them are not reported again."""
    problems = list(problems or [])
    rejected = rejected or set()
    seen: dict[str, LoadedDoc] = {}
    for d in docs:
        if d.address in seen:
            problems.append(Problem.at(d.source.file, d.source.line,
                                       f"{d.address} is declared twice (first at {seen[d.address].source})"))
        else:
            seen[d.address] = d
    workspaces = [d for d in docs if isinstance(d.doc, WorkspaceDoc)]
    workspace = workspaces[0].doc.spec if workspaces else WorkspaceSpec()

    pairs = {d.doc.metadata.name: DesiredPair(loaded=d) for d in seen.values() if isinstance(d.doc, PairDoc)}
    for d in seen.values():
        doc = d.doc
        if isinstance(doc, (RoleDoc, DatabaseDoc, GrantDoc)):
            pair = pairs.get(doc.metadata.pair)
            if pair is None:
                if f"pair.{doc.metadata.pair}" not in rejected:
                    known = ", ".join(sorted(pairs)) or "none declared"
                    problems.append(d.problem(("metadata", "pair"),
                                              f"{d.address}: pair {doc.metadata.pair!r} is not declared (pairs: {known})"))
                continue
            if isinstance(doc, RoleDoc):
                pair.roles[doc.metadata.name] = d
            elif isinstance(doc, DatabaseDoc):
                pair.databases[doc.metadata.name] = d
            else:
                pair.grants[(doc.spec.database, doc.spec.role)] = d
    problems.extend(_shared_servers(pairs))
    problems.extend(_virtual_ip_problems(pairs, workspace))
    for pair in pairs.values():
        problems.extend(_reference_problems(pair, rejected))
        problems.extend(_membership_cycles(pair))
    if problems:
        raise SpecError(sorted_problems(problems))
    return DesiredState(pairs=pairs, workspace=workspace, documents=list(seen.values()))


def _reference_problems(pair: DesiredPair, rejected: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    roles = set(pair.roles) | pair.admin_users() | _rejected_names(rejected, "role", pair.name)

    def need_role(d: LoadedDoc, name: str | None, what: str, *loc: str | int) -> None:
        if name is None or name in roles:
            return
        if what == "member_of" and name.startswith("pg_"):
            return
        problems.append(d.problem(
            loc, f"{d.address}: {what} {name!r} is not a role declared for pair {pair.name!r}; declare it (kind: Role) or import it"
        ))

    repmgr = _uses_repmgr(pair)
    for d in pair.roles.values():
        if repmgr and d.doc.metadata.name == "repmgr":
            problems.append(d.problem(("metadata", "name"), f"{d.address}: 'repmgr' is the role pgaasctl's replication "
                                      "runs as on this pair; it cannot be declared (or adopted) as a Role"))
        if d.doc.metadata.name.lower() in RESERVED_ROLE_NAMES:
            problems.append(d.problem(
                ("metadata", "name"),
                f"{d.address}: {d.doc.metadata.name!r} is a name PostgreSQL reserves; a role cannot have it",
            ))
        if d.doc.metadata.name in pair.admin_users():
            problems.append(d.problem(
                ("metadata", "name"),
                f"{d.address}: {d.doc.metadata.name!r} is the admin user pgaasctl connects as; it cannot be declared as a Role",
            ))
        if d.doc.spec.client_certificate and getattr(getattr(pair.doc.spec, "tls", None), "mode", "disable") == "disable":
            problems.append(d.problem(("spec", "client_certificate"), f"{d.address}: a client certificate needs TLS; "
                                      f"set tls.mode to require or verify-full on pair {pair.name!r}"))
        for i, parent in enumerate(d.doc.spec.member_of):
            if parent == d.doc.metadata.name:
                problems.append(d.problem(("spec", "member_of", i), f"{d.address}: a role cannot be a member of itself"))
            need_role(d, parent, "member_of", "spec", "member_of", i)
    for d in pair.databases.values():
        name = d.doc.metadata.name
        if (repmgr and name == "repmgr") or name in pair.admin_databases():
            why = "repmgr's metadata" if name == "repmgr" else "the database pgaasctl connects to"
            problems.append(d.problem(("metadata", "name"), f"{d.address}: {name!r} is {why} on this pair; it cannot "
                                      "be declared (or adopted) as a Database"))
        spec = d.doc.spec
        need_role(d, spec.owner, "owner", "spec", "owner")
        for i, schema in enumerate(spec.schemas):
            need_role(d, schema.owner, "schema owner", "spec", "schemas", i, "owner")
    for (database, role), d in pair.grants.items():
        need_role(d, role, "role", "spec", "role")
        db = pair.databases.get(database)
        if db is None:
            if f"database.{pair.name}.{database}" not in rejected:
                problems.append(d.problem(("spec", "database"),
                                          f"{d.address}: database {database!r} is not declared for pair {pair.name!r}"))
            continue
        owner = db.doc.spec.owner
        if owner == role and d.doc.spec.privileges is not None:
            problems.append(d.problem(
                ("spec", "privileges"),
                f"{d.address}: {role!r} owns database {database!r} and holds every privilege on it (PostgreSQL gives "
                "them back to the owner whenever the database's privileges are written): remove `privileges` here",
            ))
        declared_schemas = {s.name for s in db.doc.spec.schemas} | {"public"}
        for schema, grant in d.doc.spec.schemas.items():
            if schema not in declared_schemas:
                problems.append(d.problem(
                    ("spec", "schemas", schema),
                    f"{d.address}: schema {schema!r} is not declared in database.{pair.name}.{database} (declared: {', '.join(sorted(declared_schemas))})",
                ))
            if grant.default_privileges is not None:
                need_role(d, grant.default_privileges.for_role, "for_role", "spec", "schemas", schema, "default_privileges", "for_role")
    return problems


RESERVED_ROLE_NAMES = frozenset({"public", "none", "current_user", "session_user", "current_role"})


def _shared_servers(pairs: dict[str, DesiredPair]) -> list[Problem]:
    """Two nodes (of one pair or two) at the same host and port are one server: two pairs would fight over it."""
    problems: list[Problem] = []
    first: dict[tuple[str, int], str] = {}
    for name in sorted(pairs):
        pair = pairs[name]
        spec = pair.doc.spec
        if not isinstance(spec, ExistingPairSpec):
            continue
        for i, node in enumerate(spec.nodes):
            key = (node.host.lower(), node.port)
            where = f"node {node.name} of pair {name}"
            if key in first:
                problems.append(pair.loaded.problem(
                    ("spec", "nodes", i, "host"),
                    f"pair.{name}: {where} is the server {node.host}:{node.port}, which {first[key]} already is",
                ))
            else:
                first[key] = where
    return problems


def _virtual_ip_problems(pairs: dict[str, DesiredPair], workspace: WorkspaceSpec) -> list[Problem]:
    """A virtual IP is an address that no other pair uses; on provider local, of the workspace subnet and no node's."""
    problems: list[Problem] = []
    subnet = workspace.subnet_network
    reserved = {subnet.network_address, subnet.broadcast_address, subnet.network_address + 1}
    first: dict[str, str] = {}
    for name in sorted(pairs):
        pair = pairs[name]
        spec = pair.doc.spec
        vip = getattr(spec, "virtual_ip", None)
        if vip is None:
            continue
        loc = ("spec", "virtual_ip")
        on_this_machine = spec.provider == "local"  # a cloud's subnet is the cloud's to say (checked at apply)
        if on_this_machine and vip not in subnet:
            problems.append(pair.loaded.problem(loc, f"pair.{name}: virtual_ip {vip} is outside the workspace subnet "
                                                     f"{subnet}; pick an address in it"))
        elif on_this_machine and vip in reserved:
            problems.append(pair.loaded.problem(loc, f"pair.{name}: virtual_ip {vip} is the subnet's network, broadcast or "
                                                     f"bridge address; pick another address in {subnet}"))
        elif str(vip) in first:
            problems.append(pair.loaded.problem(loc, f"pair.{name}: virtual_ip {vip} is already pair {first[str(vip)]}'s"))
        else:
            first[str(vip)] = name
    return problems


def _uses_repmgr(pair: DesiredPair) -> bool:
    spec = pair.doc.spec
    return not isinstance(spec, ExistingPairSpec) or all(node.ssh is not None for node in spec.nodes)


def _rejected_names(rejected: set[str], kind: str, pair: str) -> set[str]:
    prefix = f"{kind}.{pair}."
    return {address.removeprefix(prefix) for address in rejected if address.startswith(prefix)}


def _membership_cycles(pair: DesiredPair) -> list[Problem]:
    """member_of cycles among the pair's declared roles (PostgreSQL refuses them, mid-apply), each reported once,
    at the membership of its alphabetically first role."""
    problems: list[Problem] = []
    reported: set[tuple[str, ...]] = set()
    done: set[str] = set()
    for start in sorted(pair.roles):
        if start in done:
            continue
        # depth-first without recursion: a chain of thousands of roles must not hit Python's recursion limit
        path = [start]
        parents_left = [iter(pair.roles[start].doc.spec.member_of)]
        while path:
            parent = next(parents_left[-1], None)
            if parent is None:  # every parent of path[-1] is seen
                done.add(path.pop())
                parents_left.pop()
            elif parent in path:
                cycle = _rotated(path[path.index(parent):])
                if len(cycle) > 1 and tuple(cycle) not in reported:  # a member of itself is reported above
                    reported.add(tuple(cycle))
                    problems.append(_cycle_problem(pair, cycle))
            elif parent in pair.roles and parent not in done:
                path.append(parent)
                parents_left.append(iter(pair.roles[parent].doc.spec.member_of))
    return problems


def _rotated(cycle: list[str]) -> list[str]:
    """The cycle starting at its alphabetically first role, so that each cycle has one spelling."""
    first = cycle.index(min(cycle))
    return cycle[first:] + cycle[:first]


def _cycle_problem(pair: DesiredPair, cycle: list[str]) -> Problem:
    d = pair.roles[cycle[0]]
    shown = " -> ".join(cycle + [cycle[0]])
    return d.problem(("spec", "member_of", d.doc.spec.member_of.index(cycle[1])),
                     f"{d.address}: member_of cycle {shown}; remove one of these memberships")
