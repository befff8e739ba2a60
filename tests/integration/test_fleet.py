"""Issue 13: one apply creates (and heals) independent pairs in parallel, up to Workspace parallel_pairs at
once, and a pair that fails does not stop the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgaasctl.store import open_store
from tests.support.local_pair import Lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.open("fleet", slot=3) as lab:
        yield lab


def test_pairs_are_created_in_parallel_and_a_failure_stops_only_its_pair(lab: Lab) -> None:
    names = ["fa", "fb", "fc"]
    for name in names:
        lab.add_pair(name, replication="asynchronous", nodes=("a",))
    lab.ws.write("bad.yaml", "kind: Pair\nmetadata: {name: fz}\nspec: {provider: local, deletion_protection: false, "
                 "nodes: [{name: fz-a}], settings: {shared_buffers: 900TB}}\n")
    applied = lab.ws.apply()
    assert applied.exit_code == 1, applied.output
    assert "pair.fz" in applied.output and "shared_buffers" in applied.output, applied.output
    roles = {p["pair"]: [n["role"] for n in p["nodes"]] for p in lab.ws.status_json()}
    assert all(roles[name] == ["primary"] for name in names), roles
    store = open_store(lab.ws.store_url)
    try:
        spans = {e.pair: (e.started_at, e.finished_at) for e in store.history(limit=20)
                 if e.operation == "apply" and e.pair in names}
    finally:
        store.close()
    assert len(spans) == 3
    # each pair's apply began before another's ended: they ran at the same time
    assert max(start for start, _ in spans.values()) <= min(end for _, end in spans.values() if end), spans
    lab.ws.write("bad.yaml", "kind: Pair\nmetadata: {name: fz}\nspec: {provider: local, deletion_protection: false, "
                 "nodes: [{name: fz-a}]}\n", baseline=True)  # kept by the lab's reset, destroyed at its close
    healed = lab.ws.apply()
    assert healed.exit_code == 0, healed.output
    assert lab.ws.plan("--detailed-exitcode").exit_code == 0
