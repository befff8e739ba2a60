"""The state store on SQLite (tmp_path), its locks, and how it reports bad URLs without leaking passwords."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgaasctl.errors import LockHeld, PgaasError
from pgaasctl.store import Store, open_store
from pgaasctl.store.store import actor


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///state/test.db", base=tmp_path)
    yield s
    s.close()


def test_relative_sqlite_url_is_relative_to_base_and_creates_directories(tmp_path: Path):
    s = open_store("sqlite:///deep/er/state.db", base=tmp_path)
    s.close()
    assert (tmp_path / "deep/er/state.db").is_file()


def test_absolute_sqlite_url(tmp_path: Path):
    path = tmp_path / "abs.db"
    s = open_store(f"sqlite:///{path}")  # sqlite:////tmp/.../abs.db
    s.record("role.p.a", "p", "role", "a", {})
    s.close()
    assert path.is_file()
    again = open_store(f"sqlite:///{path}")
    assert list(again.managed()) == ["role.p.a"]
    again.close()


# ---------------------------------------------------------------- managed objects

def test_record_managed_and_forget(store: Store):
    store.record("role.p.app", "p", "role", "app", {"login": True, "member_of": ["b", "a"]})
    store.record("database.p.db", "p", "database", "db", {"owner": "app"})
    store.record("role.q.other", "q", "role", "other", {})

    everything = store.managed()
    assert list(everything) == ["database.p.db", "role.p.app", "role.q.other"]  # ordered by address
    app = everything["role.p.app"]
    assert (app.pair, app.kind, app.name) == ("p", "role", "app")
    assert app.attributes == {"login": True, "member_of": ["b", "a"]}
    assert app.created_at and app.updated_at

    assert set(store.managed("p")) == {"database.p.db", "role.p.app"}
    assert store.managed("nobody") == {}

    assert store.forget("role.p.app") is True
    assert store.forget("role.p.app") is False
    assert "role.p.app" not in store.managed()


def test_record_again_updates_attributes_and_keeps_created_at(store: Store):
    store.record("role.p.app", "p", "role", "app", {"login": False})
    created = store.managed()["role.p.app"].created_at
    store.record("role.p.app", "p", "role", "app", {"login": True})
    objects = store.managed()
    assert len(objects) == 1
    assert objects["role.p.app"].attributes == {"login": True}
    assert objects["role.p.app"].created_at == created


def test_the_store_survives_reopening(tmp_path: Path):
    first = open_store("sqlite:///s.db", base=tmp_path)
    first.record("pair.p", "p", "pair", "p", {"settings": {"work_mem": "8MB"}})
    first.close()
    second = open_store("sqlite:///s.db", base=tmp_path)
    assert second.managed()["pair.p"].attributes == {"settings": {"work_mem": "8MB"}}
    second.close()


# ---------------------------------------------------------------- pairs

def test_record_pair_and_forget_pair(store: Store):
    store.record_pair("b", "existing")
    store.record_pair("a", "existing")
    store.record_pair("a", "local")
    assert store.pairs() == ["a", "b"]
    store.forget_pair("a")
    assert store.pairs() == ["b"]


# ---------------------------------------------------------------- history

def test_history_begin_and_finish(store: Store):
    entry = store.begin("p", "apply")
    running = store.history("p")
    assert len(running) == 1
    assert running[0].id == entry
    assert running[0].status == "running"
    assert running[0].finished_at is None
    assert running[0].actor == actor()
    assert str(os.getpid()) in running[0].actor

    store.finish(entry, "succeeded", {"add": 2, "change": 0, "destroy": 1})
    done = store.history("p")[0]
    assert done.status == "succeeded"
    assert done.finished_at is not None
    assert done.summary == {"add": 2, "change": 0, "destroy": 1}


def test_history_is_newest_first_filtered_and_limited(store: Store):
    ids = [store.begin("p", f"apply-{i}") for i in range(3)]
    other = store.begin("q", "destroy")
    assert len(set(ids + [other])) == 4
    assert [h.id for h in store.history("p")] == list(reversed(ids))
    assert [h.operation for h in store.history("p", limit=2)] == ["apply-2", "apply-1"]
    assert {h.pair for h in store.history()} == {"p", "q"}
    assert [h.id for h in store.history("q")] == [other]


# ---------------------------------------------------------------- locks

def test_try_lock_twice_fails_until_unlocked(store: Store):
    assert store.try_lock("p", "apply", "alice@h pid 1") is True
    assert store.try_lock("p", "apply", "bob@h pid 2") is False
    assert store.try_lock("p", "apply", "alice@h pid 1") is False  # not re-entrant either
    assert store.try_lock("q", "apply", "bob@h pid 2") is True  # locks are per pair
    info = store.lock_info("p")
    assert info is not None and (info.holder, info.operation) == ("alice@h pid 1", "apply")

    store.unlock("p", "bob@h pid 2")  # only the holder's unlock counts
    assert store.try_lock("p", "apply", "bob@h pid 2") is False
    store.unlock("p", "alice@h pid 1")
    assert store.lock_info("p") is None
    assert store.try_lock("p", "apply", "bob@h pid 2") is True


def test_the_lock_is_shared_between_two_store_connections(tmp_path: Path):
    one = open_store("sqlite:///s.db", base=tmp_path)
    two = open_store("sqlite:///s.db", base=tmp_path)
    try:
        assert one.try_lock("p", "apply", "one")
        assert not two.try_lock("p", "apply", "two")
    finally:
        one.close()
        two.close()


def test_locked_holds_the_lock_and_releases_it(store: Store):
    with store.locked("p", "apply", timeout=0) as holder:
        assert holder == actor()
        info = store.lock_info("p")
        assert info is not None and info.holder == holder and info.operation == "apply"
    assert store.lock_info("p") is None


def test_locked_releases_the_lock_on_error(store: Store):
    with pytest.raises(RuntimeError):
        with store.locked("p", "apply", timeout=0):
            raise RuntimeError("boom")
    assert store.lock_info("p") is None


def test_locked_times_out_naming_the_holder_and_force_unlock(store: Store):
    assert store.try_lock("orders", "destroy", "alice@build-1 pid 4242")
    with pytest.raises(LockHeld) as info:
        with store.locked("orders", "apply", timeout=0):
            pytest.fail("got a lock that another process holds")
    message = str(info.value)
    assert "'orders'" in message
    assert "alice@build-1 pid 4242" in message
    assert "destroy" in message
    assert "pgaasctl force-unlock orders" in message
    # the holder's lock is untouched by the failed attempt
    assert store.lock_info("orders").holder == "alice@build-1 pid 4242"  # type: ignore[union-attr]


def test_force_unlock(store: Store):
    assert store.force_unlock("p") is None
    store.try_lock("p", "apply", "ghost pid 1")
    removed = store.force_unlock("p")
    assert removed is not None and removed.holder == "ghost pid 1"
    assert store.lock_info("p") is None
    with store.locked("p", "apply", timeout=0):
        pass


# ---------------------------------------------------------------- URLs and errors

@pytest.mark.parametrize("url", ["mysql://u@h/db", "state.db", "sqlite://relative.db", ""])
def test_a_url_that_is_not_understood(url: str):
    with pytest.raises(PgaasError) as info:
        open_store(url)
    assert "is not understood" in str(info.value)
    assert "sqlite:///" in str(info.value)  # the hint shows the accepted forms


def test_an_sqlite_path_that_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PgaasError) as info:
        open_store("sqlite:///file/sub/state.db", base=tmp_path)
    assert "cannot open the state store" in str(info.value)
    assert str(blocker / "sub" / "state.db") in str(info.value)


def test_a_file_that_is_not_a_database(tmp_path: Path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PgaasError) as info:
        open_store("sqlite:///junk.db", base=tmp_path)
    assert "junk.db" in str(info.value) and "not a database" in str(info.value)


def test_unreachable_postgresql_store_error_does_not_show_the_password():
    with pytest.raises(PgaasError) as info:
        open_store("postgresql://u:topsecret@127.0.0.1:1/db")
    message = str(info.value)
    assert "topsecret" not in message
    assert "postgresql://u@127.0.0.1:1/db" in message
    assert "cannot open the state store" in message


def test_password_is_removed_from_an_unknown_url_too():
    with pytest.raises(PgaasError) as info:
        open_store("mysql://u:topsecret@127.0.0.1:1/db")
    assert "topsecret" not in str(info.value)


def test_password_given_as_a_url_parameter_is_not_shown():
    # libpq URIs may carry the password as a query parameter: postgresql://u@host/db?password=...
    with pytest.raises(PgaasError) as info:
        open_store("postgresql://u@127.0.0.1:1/db?password=topsecret&connect_timeout=2")
    assert "topsecret" not in str(info.value)


def test_password_in_a_conninfo_string_is_not_shown():
    # a libpq key=value string is not a supported store URL, but the error must not echo its password
    with pytest.raises(PgaasError) as info:
        open_store("host=127.0.0.1 port=1 user=u password=topsecret dbname=db")
    assert "topsecret" not in str(info.value)


def test_password_quoted_back_by_libpq_is_redacted():
    from pgaasctl.errors import PgaasError as _Error
    from pgaasctl.store import open_store as _open

    with pytest.raises(_Error) as raised:
        _open("postgresql://bob:TopSecret99@[::1/db")
    assert "TopSecret99" not in str(raised.value)


def test_a_store_from_an_older_pgaasctl_is_named_as_such_by_reading_commands(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    s = open_store(url)
    s._exec("DROP TABLE local_dirs")
    s._exec("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    s.close()
    with pytest.raises(PgaasError) as info:
        open_store(url, mode="read")
    assert "written by an older pgaasctl" in str(info.value) and "pgaasctl init" in str(info.value)
    open_store(url, mode="create").close()  # what init does: adds what is missing
    again = open_store(url, mode="read")
    assert again.local_root("p") is None
    again.close()


def test_a_failing_store_is_an_error_not_a_traceback(store: Store):
    with pytest.raises(PgaasError) as info:
        store._exec("SELECT nothing FROM nowhere")
    assert "the state store" in str(info.value) and "failed" in str(info.value)
