"""Connections to nodes, with errors that say which node, which address, and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr

from pgaasctl.errors import ConnectionFailed
from pgaasctl.live import scram_keys
from pgaasctl.live.kept import KeptConnection, Unanswered, current_keeper
from pgaasctl.secrets import resolve_secret
from pgaasctl.spec.models import ExistingNode


@dataclass(frozen=True)
class NodeAddress:
    """How to reach one node as the admin user. The password stays a SecretStr."""

    pair: str
    name: str
    host: str
    port: int
    user: str
    password: SecretStr | None
    admin_database: str
    sslmode: str
    connect_timeout: int
    sslrootcert: str | None = None  # the CA file sslmode=verify-full checks the server's certificate against

    @property
    def label(self) -> str:
        return f"node {self.name} of pair {self.pair} ({self.host}:{self.port})"

    @classmethod
    def from_spec(cls, pair: str, node: ExistingNode, spec_dir: Path, host: str, port: int) -> NodeAddress:
        password = None
        if node.admin_password is not None:
            password = resolve_secret(node.admin_password, spec_dir, f"pair.{pair} node {node.name} admin_password")
        return cls(
            pair=pair, name=node.name, host=host, port=port, user=node.admin_user, password=password,
            admin_database=node.admin_database, sslmode=node.sslmode, connect_timeout=node.connect_timeout,
        )


def connect(node: NodeAddress, database: str | None = None, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection to `database` (default: the admin database) on `node`; inside kept.keeping() (the
    agent), an autocommit session may be one kept from an earlier look."""
    dbname = database or node.admin_database
    password = node.password.get_secret_value() if node.password else ""
    keeper = current_keeper() if autocommit else None
    key = (node.host, node.port, node.user, dbname, node.sslmode, password, node.sslrootcert)
    if keeper is not None:
        try:
            kept = keeper.lease(key, node.connect_timeout)
        except Unanswered:
            raise ConnectionFailed(
                f"{node.label} is unreachable: its session did not answer within {node.connect_timeout}s",
                "Check that PostgreSQL runs there and is not stopped or overloaded.",
            ) from None
        if kept is not None:
            return kept
    login = scram_keys.login_of(node.host, node.port, node.user, password) if password else None
    keys = scram_keys.parameters(login, password) if login is not None else None
    try:
        conn = _open(node, dbname, password, autocommit, keeper is not None, keys)
    except psycopg.OperationalError as exc:
        if keys is None or not _refused_login(exc):
            raise ConnectionFailed(*describe_connect_error(node, dbname, exc)) from None
        assert login is not None
        scram_keys.forget(login)  # the verifier changed since they were derived: the password says what is true now
        try:
            conn = _open(node, dbname, password, autocommit, keeper is not None, None)
        except psycopg.OperationalError as again:
            raise ConnectionFailed(*describe_connect_error(node, dbname, again)) from None
    if login is not None and autocommit:
        scram_keys.learn(login, conn)  # its first session only
    if keeper is not None:
        assert isinstance(conn, KeptConnection)
        return keeper.adopt(key, conn)
    return conn


def _open(node: NodeAddress, dbname: str, password: str, autocommit: bool, kept: bool,
          keys: dict[str, str] | None) -> psycopg.Connection:
    return (KeptConnection if kept else psycopg.Connection).connect(
        host=node.host, port=node.port, user=node.user, dbname=dbname, password=password or None,
        sslmode=node.sslmode, connect_timeout=node.connect_timeout, autocommit=autocommit,
        application_name="pgaasctl", **({"sslrootcert": node.sslrootcert} if node.sslrootcert else {}), **(keys or {}),
    )


def _refused_login(exc: Exception) -> bool:
    return "password authentication failed" in str(exc).lower()


def describe_connect_error(node: NodeAddress, dbname: str, exc: Exception) -> tuple[str, str]:
    text = str(exc)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"{node.label}: authentication failed for user {node.user!r}",
            "Check admin_user and admin_password in the Pair spec.",
        )
    if "not currently accepting connections" in lowered:
        return (
            f"{node.label}: database {dbname!r} does not accept connections",
            "Its allow_connections is false; set it to true to let pgaasctl work inside it.",
        )
    if "does not exist" in lowered and "database" in lowered:
        return f"{node.label}: database {dbname!r} does not exist", "Check admin_database in the Pair spec."
    if "too many clients" in lowered or "remaining connection slots are reserved" in lowered:
        return (
            f"{node.label} refused the connection: it has no connection slot left (max_connections reached)",
            "Other clients hold the server's sessions: close some, raise max_connections, or lower the Workspace's "
            "`sessions` (what pgaasctl opens at once).",
        )
    if "pg_hba.conf" in lowered:
        return f"{node.label}: the server's pg_hba.conf rejects user {node.user!r}", "Allow pgaasctl's address in pg_hba.conf."
    reason = next((line.split(":", 1)[-1].strip() for line in text.splitlines() if "failed:" in line or "timeout" in line), "")
    reason = reason or (text.strip().splitlines() or ["no answer"])[-1]
    return (
        f"{node.label} is unreachable: {reason}",
        "Check that PostgreSQL runs there and listens on that address and port.",
    )
