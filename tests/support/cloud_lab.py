"""A workspace for the cloud providers' tests: its spec directory and store under /dev/shm, the fakes it talks to,
and the helpers the tests share (the pair's superuser, SQL on a node, which node answers at an address)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.support.local_pair import SpecDir


@dataclass
class CloudLab:
    base: Path
    ws: SpecDir
    fakes: list[Any] = field(default_factory=list)

    @classmethod
    @contextmanager
    def open(cls, tag: str) -> Iterator[CloudLab]:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        base = Path(tempfile.mkdtemp(prefix=f"pgaasctl-it-{tag}-{worker}-", dir="/dev/shm"))
        base.chmod(0o755)
        lab = cls(base=base, ws=SpecDir(base / "ws", {"cloud_dir": str(base / "cloud"),
                                                       "tls": {"ca_dir": str(base / "tls")}}))
        saved = dict(os.environ)
        try:
            yield lab
        finally:
            try:
                lab.ws.reset()
                lab.ws.destroy()  # whatever a failed test left: the fakes are still there to take the calls
            finally:
                for fake in lab.fakes:
                    fake.close()
                os.environ.clear()
                os.environ.update(saved)
                shutil.rmtree(base, ignore_errors=True)

    def name(self, pair: str, node: str = "", suffix: str = "") -> str:
        """The name pgaasctl gives (or gave) a cloud resource of this workspace."""
        from pgaasctl.store import open_store
        from providers.cloud import resource_name

        store = open_store(self.ws.store_url)
        try:
            return resource_name(pair, node, suffix, owner=store.cloud_owner())
        finally:
            store.close()

    def pair_doc(self, name: str, spec: dict[str, Any]) -> str:
        full = {"deletion_protection": False, "replication": "asynchronous", **spec}
        return yaml.safe_dump({"kind": "Pair", "metadata": {"name": name}, "spec": full}, sort_keys=False)

    def leave_nothing(self) -> None:
        """After a test that failed midway: its pairs destroyed and their specs removed, with the fakes' scripted
        faults cleared, so the module's next test starts from an empty cloud instead of failing on leftovers."""
        declared = [p for p in self.ws.specs.glob("*.yaml") if "kind: Pair" in p.read_text()]
        if not declared:
            return
        for fake in self.fakes:
            for scripted in ("faults", "statuses", "operation_errors"):
                getattr(fake, scripted, {}).clear()
        self.ws.destroy()
        for path in declared:
            path.unlink()

    def admin(self, pair: str) -> str:
        return (self.base / "cloud" / pair / "admin-password").read_text().strip()

    def sql(self, pair: str, host: str, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(host=host, port=5432, user="postgres", password=self.admin(pair), dbname="postgres",
                             connect_timeout=3, autocommit=True) as conn:
            return conn.execute(query).fetchall()

    def primary_at(self, pair: str, address: str) -> str | None:
        """The node (named by its data directory, DIRECTORY/PAIR/NODE/data) answering at `address` as a primary."""
        try:
            rows = self.sql(pair, address, "SELECT pg_is_in_recovery(), current_setting('data_directory')")
        except psycopg.Error:
            return None
        return rows[0][1].split("/")[-2] if rows and rows[0][0] is False else None

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.ws.status_json()[0]["nodes"]}
