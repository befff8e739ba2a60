"""Issue 13: a first apply always converges. Specs generated from a seed (roles with memberships and settings,
databases and schemas with owners, grants on databases, schemas, the objects in them and their future objects,
to owners and to others) are applied to a fresh server; the next plan must show no change. bench/generated_specs.py
runs many more seeds."""

from __future__ import annotations

import random

import pytest
import yaml

from tests.support.workspace import Workspace

pytestmark = pytest.mark.integration

SUITE_SEEDS = range(8)
ROLE_SETTINGS = {"work_mem": ["4MB", "16MB"], "statement_timeout": ["30s", "5min"], "search_path": ["public"]}
DATABASE_SETTINGS = {"work_mem": ["8MB"], "idle_in_transaction_session_timeout": ["1min"]}


def _some(rng: random.Random, items: list[str], at_least: int = 0) -> list[str]:
    return sorted(rng.sample(items, rng.randint(at_least, len(items))))


def generated_spec(seed: int, pair: str = "main") -> list[dict[str, object]]:
    """Role, Database and Grant documents for pair `pair`, every one valid, drawn from `seed`."""
    rng = random.Random(seed)
    roles = [f"g{seed}_r{i}" for i in range(rng.randint(2, 6))]
    docs: list[dict[str, object]] = []
    for i, role in enumerate(roles):
        spec: dict[str, object] = {"login": rng.random() < 0.5, "inherit": rng.random() < 0.8}
        if i and rng.random() < 0.5:
            spec["member_of"] = _some(rng, roles[:i], 1)  # earlier roles only: no cycle
        if rng.random() < 0.5:
            name = rng.choice(sorted(ROLE_SETTINGS))
            spec["settings"] = {name: rng.choice(ROLE_SETTINGS[name])}
        if rng.random() < 0.3:
            spec["connection_limit"] = rng.randint(1, 20)
        docs.append({"kind": "Role", "metadata": {"name": role, "pair": pair}, "spec": spec})
    databases: dict[str, tuple[str | None, dict[str, str | None]]] = {}
    for i in range(rng.randint(1, 3)):
        name = f"g{seed}_d{i}"
        owner = rng.choice([None, *roles])
        schemas = {f"s{j}": rng.choice([None, *roles]) for j in range(rng.randint(0, 2))}
        spec = {"schemas": [{"name": s, **({"owner": o} if o else {})} for s, o in schemas.items()]}
        if owner:
            spec["owner"] = owner
        if rng.random() < 0.4:
            setting = rng.choice(sorted(DATABASE_SETTINGS))
            spec["settings"] = {setting: rng.choice(DATABASE_SETTINGS[setting])}
        databases[name] = (owner, schemas)
        docs.append({"kind": "Database", "metadata": {"name": name, "pair": pair}, "spec": spec})
    pairs = [(role, database) for role in roles for database in databases]
    for role, database in rng.sample(pairs, rng.randint(1, min(6, len(pairs)))):
        owner, schemas = databases[database]
        spec = {"role": role, "database": database}
        if owner != role and rng.random() < 0.7:
            spec["privileges"] = _some(rng, ["CONNECT", "CREATE", "TEMPORARY"], 1)
        granted: dict[str, object] = {}
        for schema in _some(rng, ["public", *schemas]):
            grant: dict[str, object] = {}
            if rng.random() < 0.7:
                grant["privileges"] = _some(rng, ["USAGE", "CREATE"])
            if rng.random() < 0.5:
                grant["tables"] = _some(rng, ["SELECT", "INSERT", "UPDATE", "DELETE"])
            if rng.random() < 0.3:
                grant["sequences"] = _some(rng, ["USAGE", "SELECT"])
            if rng.random() < 0.3:
                grant["functions"] = _some(rng, ["EXECUTE"])
            if rng.random() < 0.4:
                future: dict[str, object] = {"tables": _some(rng, ["SELECT", "INSERT"], 1)}
                if rng.random() < 0.5:
                    future["for_role"] = rng.choice(roles)
                grant["default_privileges"] = future
            granted[schema] = grant
        if granted:
            spec["schemas"] = granted
        if "privileges" in spec or granted:
            docs.append({"kind": "Grant", "metadata": {"pair": pair}, "spec": spec})
    return docs


@pytest.mark.parametrize("seed", SUITE_SEEDS)
def test_a_generated_spec_converges_in_one_apply(ws: Workspace, seed: int) -> None:
    ws.pair()
    ws.write("generated.yaml", yaml.safe_dump_all(generated_spec(seed), sort_keys=False))
    applied = ws.apply()
    assert applied.exit_code == 0, f"seed {seed}:\n{applied.output}"
    replan = ws.plan("--detailed-exitcode")
    assert replan.exit_code == 0, f"seed {seed}: the first apply did not converge:\n{replan.output}"
