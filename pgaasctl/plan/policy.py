"""The rules of safety, applied in one step over the finished, targeted plan.

Whatever path built a change (a pair's destroy that takes its hosts, an object dropped from the specs, a
--target), the same rules judge it here, and only the changes the plan will run are judged:
- deletion protection: a protected database or pair is never destroyed; the error names the way out;
- adoption: a role or database that exists on the server but that pgaasctl did not create is taken over
  only by an explicit act (`pgaasctl import`, or `adopt: true` in its document);
- a destroy marks what pgaasctl adopted rather than created, and what an unfinished apply may have made;
- problems the diff found (an unknown parameter, a create-only attribute that differs...) stop the plan
  when they concern a targeted object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgaasctl.errors import PlanError
from pgaasctl.plan.model import Change, PairPlan
from pgaasctl.spec.desired import DesiredPair
from pgaasctl.store import ManagedObject

_ADDRESS = re.compile(r"^((?:pair|role|database|grant)\.[^\s:]+): ")


@dataclass(frozen=True)
class Problem:
    """Something in the specs or on the server that keeps one object's change from being planned."""

    address: str
    message: str


def problems_from(pair: str, errors: list[str]) -> list[Problem]:
    """The diff's error lines, each tied to the address it starts with (else to the pair)."""
    out = []
    for error in errors:
        match = _ADDRESS.match(error)
        out.append(Problem(match.group(1) if match else f"pair.{pair}", error))
    return out


def enforce(pair_plan: PairPlan, pair: DesiredPair, managed: dict[str, ManagedObject], problems: list[Problem],
            targets: list[str] | None, adopting: frozenset[str] = frozenset()) -> None:
    """Judge one pair's finished, targeted plan; raise PlanError listing every rule it breaks."""
    errors: list[str] = []
    planned = {c.address for c in pair_plan.changes}
    for problem in problems:
        if not targets or problem.address in planned or _matches(problem.address, targets):
            errors.append(problem.message)
    hosts_go = any(op.kind == "destroy_hosts" for op in pair_plan.operations)
    if hosts_go:
        errors.extend(_protected_with_hosts(pair, managed))
    for change in pair_plan.changes:
        record = managed.get(change.address)
        if change.action == "delete":
            if not (hosts_go and change.kind == "database"):  # judged above, with every database on the hosts
                errors.extend(_protected(change, pair, record))
            _mark_origin(change, record)
        elif change.action == "adopt" and change.kind in ("role", "database") and change.address not in adopting:
            errors.extend(_adoption(change, pair))
    if errors:
        raise PlanError(f"pair {pair.name!r}: the plan cannot be made:\n  " + "\n  ".join(errors))


def _matches(address: str, targets: list[str]) -> bool:
    return any(address == t or address.startswith(t.rstrip(".") + ".") for t in targets)


def _protected(change: Change, pair: DesiredPair, record: ManagedObject | None) -> list[str]:
    if change.kind == "pair" and pair.doc.spec.deletion_protection:
        return [f"{change.address}: deletion_protection is on, so the pair will not be destroyed; "
                "set deletion_protection: false in its spec and apply first"]
    if change.kind == "database":
        declared = pair.databases.get(change.name)
        protected = bool(record and record.attributes.get("deletion_protection")) or bool(
            declared and declared.doc.spec.deletion_protection)
        if protected:
            return [f"{change.address}: deletion_protection is on, so it will not be dropped; "
                    "to drop it, set deletion_protection: false and apply first"]
    return []


def _protected_with_hosts(pair: DesiredPair, managed: dict[str, ManagedObject]) -> list[str]:
    """Destroying a pair's hosts takes every database on them, whatever the plan lists (a --target, one file):
    each database protected in the store or in the specs refuses it."""
    names = {m.name for m in managed.values() if m.kind == "database" and m.attributes.get("deletion_protection")}
    names |= {name for name, d in pair.databases.items() if d.doc.spec.deletion_protection}
    return [f"database.{pair.name}.{name}: deletion_protection is on, and destroying the pair's hosts would drop "
            "it; set deletion_protection: false and apply first" for name in sorted(names)]


def _mark_origin(change: Change, record: ManagedObject | None) -> None:
    if record is None:
        return
    if record.origin in ("adopted", "imported"):
        change.notes.append(f"{record.origin} by {record.origin_by or 'someone'} on {record.created_at[:10]}: "
                            "pgaasctl did not create it")
    elif record.origin == "unknown":
        change.notes.append("managed since before pgaasctl recorded how; it may not have created it")
    if record.pending:
        change.notes.append("an apply that did not finish was making it")


def _adoption(change: Change, pair: DesiredPair) -> list[str]:
    declared = (pair.roles if change.kind == "role" else pair.databases).get(change.name)
    if declared is not None and declared.doc.spec.adopt:
        return []
    return [f"{change.address} already exists on the server, and pgaasctl did not create it; "
            f"to manage it, run `pgaasctl import {change.address}` (or set `adopt: true` in its spec); "
            "to leave it alone, remove it from the specs"]
