"""Certificates near their end: the plan's warnings and the health check, from what the store recorded (the
newest unrevoked certificate of each node and role)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pgaasctl.store import open_store
from pgaasctl.tls.certificates import expiry_checks, expiry_warnings


def _at(days: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).isoformat(timespec="seconds")


def test_what_expires_soon_is_warned_of_with_what_to_do(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", mode="create")
    store.record_certificate(1, "server", "orders", "orders-a", _at(-360), _at(10))  # old: replaced below
    store.record_certificate(2, "server", "orders", "orders-a", _at(-1), _at(364))
    store.record_certificate(3, "server", "orders", "orders-b", _at(-355), _at(10.5))  # 10 days left
    store.record_certificate(4, "client", "orders", "report", _at(-400), _at(-2))  # expired
    store.record_certificate(5, "client", "orders", "gone", _at(-300), _at(3))
    store.revoke_certificate("5", _at(0))  # revoked: not in use, not warned of
    warnings = expiry_warnings(store, "orders", 30)
    assert len(warnings) == 2
    assert "client certificate of role report expired" in warnings[0] and "cert issue report --pair orders" in warnings[0]
    assert "server certificate of node orders-b expires on" in warnings[1] and "(in 10 days)" in warnings[1]
    assert "cert rotate orders" in warnings[1]
    checks = {(c.name, c.node or c.value.split(":")[0]): c.status for c in expiry_checks(store, "orders", 30)}
    assert checks == {("certificate expiry", "orders-b"): "warn", ("certificate expiry", "client certificate of report"):
                      "critical"}
    assert expiry_warnings(store, "orders", 5) == [warnings[0]]  # 10 days left is outside a 5-day window
    assert [c.status for c in expiry_checks(store, "orders", 5)] == ["critical"]
    assert expiry_checks(store, "nothing", 30) == []  # a pair without TLS has no such check
    store.close()


def test_an_ok_line_when_every_certificate_has_time_left(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", mode="create")
    store.record_certificate(7, "server", "orders", "orders-a", _at(-1), _at(300))
    [check] = expiry_checks(store, "orders", 30)
    assert check.status == "ok" and "more than 30 days" in check.value
    store.close()
