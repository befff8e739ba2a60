"""Issue 13: one apply creates (and heals) independent pairs in parallel, up to Workspace parallel_pairs at
once, and a pair that fails does not stop the others."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator

import pytest

from pgaasctl.hosts import initdb_cache
from pgaasctl.store import open_store
from tests.support.local_pair import Lab, no_traceback

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


def _control_identity(control: bytes) -> tuple[int, bytes]:
    """A pg_control's system identifier and mock authentication nonce."""
    end = initdb_cache.crc_offset(control)
    return int.from_bytes(control[:8], "little"), control[end - initdb_cache.NONCE_LENGTH:end]


def test_primaries_copied_from_the_initdb_cache_each_have_an_identity_of_their_own(lab: Lab) -> None:
    names = ["ia", "ib"]
    for name in names:
        lab.add_pair(name, replication="asynchronous")
    applied = lab.ws.apply()
    assert applied.exit_code == 0, applied.output
    cache = lab.local_dir / ".initdb-cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    cached = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(cached) == 1, cached  # one initdb for this build and options, made once
    assert not (cached[0] / "data" / "global" / "pg_control").exists()  # no copy can start with the cache's identity
    identities = [_control_identity((cached[0] / "pg_control").read_bytes())]
    for name in names:
        pair = lab.pairs[name]
        primary = pair.primary()
        identities.append(_control_identity((pair.node_dir(primary) / "data" / "global" / "pg_control").read_bytes()))
        system_id = pair.value(primary, "SELECT system_identifier FROM pg_control_system()")  # the admin password works
        assert system_id == identities[-1][0]
        assert pair.value(primary, "SHOW data_checksums") == "on"
        standby = pair.other(primary)
        assert pair.value(standby, "SELECT system_identifier FROM pg_control_system()") == system_id  # its clone
        assert pair.value(standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert len({system_id for system_id, _ in identities}) == 3, identities
    assert len({nonce for _, nonce in identities}) == 3
    assert lab.ws.plan("--detailed-exitcode").exit_code == 0
    # the cache goes with the last pair of the local_dir
    destroyed = lab.ws.destroy()
    assert destroyed.exit_code == 0, destroyed.output
    assert not cache.exists()
    _forget_pairs(lab)


def _forget_pairs(lab: Lab) -> None:
    """The lab's spec dir without the pairs destroyed above (the next test starts from none)."""
    for pair in list(lab.pairs.values()):
        lab.ws.remove(pair.spec_file)
        lab.ws.baseline.pop(pair.spec_file, None)
    lab.ws.remove("bad.yaml")
    lab.ws.baseline.pop("bad.yaml", None)
    lab.pairs.clear()


def test_a_cache_pgaasctl_cannot_read_fails_the_pair_cleanly_and_a_new_cache_heals_it(lab: Lab) -> None:
    lab.add_pair("ka", replication="asynchronous", nodes=("a",))
    assert lab.ws.apply().exit_code == 0
    cache = lab.local_dir / ".initdb-cache"
    cached = next(p for p in cache.iterdir() if not p.name.startswith("."))
    (cached / "pg_control").write_bytes(bytes(8192))  # damaged: no CRC anywhere
    lab.add_pair("kb", replication="asynchronous")
    failed = lab.ws.apply()
    assert failed.exit_code == 1, failed.output
    no_traceback(failed)
    assert "pg_control is not one pgaasctl can read" in failed.output and "initdb cache" in failed.output, failed.output
    data = lab.pairs["kb"].node_dir("kb-a") / "data"
    assert data.is_dir() and not any(data.iterdir())  # the copy that got no identity is gone
    shutil.rmtree(cache)  # what the message says to do: initdb runs on the node then
    healed = lab.ws.apply()  # the host made before the failure holds no data: its primary is made again
    assert healed.exit_code == 0, healed.output
    assert "holds no data yet" in healed.output, healed.output
    assert lab.pairs["kb"].value("kb-a", "SELECT pg_is_in_recovery()") is False
    assert lab.pairs["kb"].value("kb-b", "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    lab.add_pair("kc", replication="asynchronous", nodes=("a",))  # the next pair made makes the cache again
    assert lab.ws.apply().exit_code == 0
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [cached.name]
    assert lab.ws.plan("--detailed-exitcode").exit_code == 0
