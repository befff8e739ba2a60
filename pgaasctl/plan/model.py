"""A plan is data: typed changes with before/after values, rendered elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import sql
from pydantic import BaseModel, Field, PrivateAttr

Action = Literal["create", "update", "delete", "adopt"]
SENSITIVE = "(sensitive)"


class AttributeChange(BaseModel):
    name: str
    before: Any = None
    after: Any = None
    sensitive: bool = False
    note: str | None = None  # e.g. "restart required"


@dataclass
class Statement:
    """One SQL statement. `query` may hold a secret; `shown` is what people and plan files see."""

    query: sql.Composable
    database: str | None = None  # None: the admin database
    transactional: bool = True
    shown: sql.Composable | None = None
    every_node: bool = False  # ALTER SYSTEM writes a file on the node it runs on: standbys need it too

    def display(self) -> str:
        return (self.shown or self.query).as_string()


class ShownStatement(BaseModel):
    database: str | None = None  # None: the admin database
    text: str


class Change(BaseModel):
    address: str
    kind: Literal["pair", "role", "database", "grant"]
    name: str
    action: Action
    attributes: list[AttributeChange] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    sql: list[ShownStatement] = Field(default_factory=list)  # the statements as shown (secrets redacted)
    record: dict[str, Any] | None = None  # what the store keeps after success; None: forget the address
    statements: list[Any] = Field(default_factory=list, exclude=True)  # list[Statement], never serialised

    def refers_to(self) -> list[str]:
        """Addresses of the roles and databases this change's object names (owner, member_of, grantee...)."""
        pair = self.address.split(".")[1]
        record = self.record or {}
        roles = list(record.get("member_of", []))
        roles += [r for r in (record.get("owner"), record.get("role")) if r]
        schemas = record.get("schemas", [])
        if isinstance(schemas, list):  # a database: schema owners
            roles += [s["owner"] for s in schemas if s.get("owner")]
        else:  # a grant: for_role of default privileges
            roles += list(record.get("default_for_roles", {}).values())
        out = [f"role.{pair}.{r}" for r in roles]
        if self.kind == "grant" and record.get("database"):
            out.append(f"database.{pair}.{record['database']}")
        return out


class HostOperation(BaseModel):
    """A step on a node's host, run over SSH before any SQL (create, clone, rejoin, start...)."""

    kind: Literal["create_host", "start_host", "init_primary", "clone_standby", "rejoin", "recover_node",
                  "start_postgres", "register_standby", "start_repmgrd", "reconfigure_repmgr", "destroy_hosts",
                  "remove_node", "fence_node", "start_keepalived", "stop_keepalived", "init_witness",
                  "register_witness"]
    node: str
    peer: str | None = None  # the primary a standby is made from (remove_node: the primary it is removed from)
    node_id: int | None = None  # remove_node: its repmgr node id
    detail: str


class HostChange(BaseModel):
    """A cloud server the plan makes or removes, as `+ host.orders.orders-a (openstack m1.medium, debian-12)`."""

    address: str
    action: Literal["create", "delete"]
    description: str


class PairPlan(BaseModel):
    pair: str
    primary: str
    admin_database: str = "postgres"
    header: str
    warnings: list[str] = Field(default_factory=list)
    operations: list[HostOperation] = Field(default_factory=list)  # run first; then the pair is planned again
    hosts: list[HostChange] = Field(default_factory=list)  # cloud servers the operations make or remove
    changes: list[Change] = Field(default_factory=list)
    live_fingerprint: str = ""  # a digest of the live state planned from; see fingerprinted()
    problems: list[Any] = Field(default_factory=list, exclude=True)  # policy.Problem: judged after targeting
    _fingerprint: Callable[[], str] | None = PrivateAttr(default=None)

    def fingerprint_later(self, compute: Callable[[], str]) -> None:
        """Most plans are only read: the digest (a dump of the whole live catalog) is made when first needed."""
        self._fingerprint = compute

    def fingerprinted(self) -> str:
        """live_fingerprint, made now if it was left for later (saving or checking a plan, printing it as JSON)."""
        if self._fingerprint is not None:
            self.live_fingerprint, self._fingerprint = self._fingerprint(), None
        return self.live_fingerprint


def count_changes(changes: list[Change]) -> dict[str, int]:
    out = {"add": 0, "change": 0, "destroy": 0}
    for c in changes:
        out[{"create": "add", "update": "change", "adopt": "change", "delete": "destroy"}[c.action]] += 1
    return out


class Plan(BaseModel):
    format_version: Literal["1"] = "1"
    spec_path: str
    spec_fingerprint: str
    destroy: bool = False
    targets: list[str] = Field(default_factory=list)
    pairs: list[PairPlan] = Field(default_factory=list)
    # role address -> HMAC of its password under the store's plan key: a saved plan is bound to the secrets it
    # was made with, and the file never holds them (nor anything they could be guessed from without the key)
    secret_fingerprints: dict[str, str] = Field(default_factory=dict)

    def fingerprinted(self) -> Plan:
        """This plan with every pair's live fingerprint made (before it is saved, compared or printed)."""
        for pair in self.pairs:
            pair.fingerprinted()
        return self

    def counts(self) -> dict[str, int]:
        return count_changes([c for p in self.pairs for c in p.changes])

    @property
    def has_changes(self) -> bool:
        return any(p.changes or p.operations for p in self.pairs)
