"""A throwaway pgaasctl workspace for tests: spec files in a temp dir, a SQLite store, the CLI run in-process."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from pgaasctl.cli import app
from pgaasctl.store import open_store
from tests.support.pgserver import PgServer

ADMIN_PASSWORD_ENV = "PGAASCTL_TEST_ADMIN_PASSWORD"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def flat(self) -> str:
        """stdout + stderr with runs of whitespace collapsed, for matching aligned plan lines."""
        return " ".join(self.output.split())


def pair_yaml(server: PgServer, name: str = "main", settings: dict[str, Any] | None = None,
              deletion_protection: bool = False, extra_nodes: str = "") -> str:
    """A Pair document (provider: existing) for one test server."""
    lines = [
        "kind: Pair",
        f"metadata: {{name: {name}}}",
        "spec:",
        "  provider: existing",
        f"  deletion_protection: {str(deletion_protection).lower()}",
        "  nodes:",
        f"    - {{name: {name}-a, host: {server.host}, port: {server.port}, admin_user: {server.admin_user},"
        f" admin_password: {{env: {ADMIN_PASSWORD_ENV}}}, connect_timeout: 2}}",
    ]
    if extra_nodes:
        lines.append(textwrap.indent(textwrap.dedent(extra_nodes).strip("\n"), "    "))
    if settings:
        lines.append("  settings:")
        lines.extend(f"    {k}: {v}" for k, v in settings.items())
    return "\n".join(lines) + "\n"


class Workspace:
    """Spec files under `root/specs`, the store at `root/state/pgaasctl.db`."""

    def __init__(self, root: Path, server: PgServer, monkeypatch: Any) -> None:
        self.root = root
        self.server = server
        self.specs = root / "specs"
        self.specs.mkdir(parents=True, exist_ok=True)
        self.store_url = "sqlite:///" + str(root / "state" / "pgaasctl.db")  # absolute: sqlite:////tmp/...
        monkeypatch.setenv(ADMIN_PASSWORD_ENV, server.admin_password)
        monkeypatch.setenv("PGAASCTL_STORE", self.store_url)
        monkeypatch.chdir(root)
        self.runner = CliRunner()
        open_store(self.store_url).close()  # `pgaasctl init`: reading commands (plan first) need a store

    def write(self, name: str, text: str) -> Path:
        path = self.specs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def remove(self, name: str) -> None:
        (self.specs / name).unlink()

    def pair(self, name: str = "main", **kwargs: Any) -> Path:
        return self.write(f"pair-{name}.yaml", pair_yaml(self.server, name, **kwargs))

    def run(self, *args: str, input: str | None = None) -> Result:
        result = self.runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def plan(self, *args: str) -> Result:
        return self.run("plan", str(self.specs), *args)

    def apply(self, *args: str) -> Result:
        result = self.run("apply", str(self.specs), "--auto-approve", *args)
        return result

    def must_apply(self) -> Result:
        result = self.apply()
        assert result.exit_code == 0, result.output
        return result

    def assert_converged(self) -> None:
        """A fresh plan shows no changes (exit 0 with --detailed-exitcode)."""
        result = self.plan("--detailed-exitcode")
        assert result.exit_code == 0, result.output

    def sql(self, query: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        return self.server.execute(query, dbname=dbname)
