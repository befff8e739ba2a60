"""The web console in a real Chromium (Playwright, headless) against a real `pgaasctl serve` over a workspace
whose pair is the worker's PostgreSQL: signing in and out, what each role sees and may do, the forms with their
plan previews and operations, CSRF, escaping, accessibility (axe-core), no foreign requests, no console errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import PHONE, Tab, browser, new_tab  # noqa: F401 - browser is a fixture
from tests.support.service import Server, serving
from tests.support.workspace import Workspace

PEOPLE = (("ada", "admin"), ("max", "member"), ("mia", "member"), ("vic", "viewer"))


@pytest.fixture
def passwords(ws: Workspace) -> dict[str, str]:
    pair = ws.specs / "pair-main.yaml"
    pair.write_text(pair.read_text().replace("metadata: {name: main}", "metadata: {name: main, labels: {pgaas.members: '*'}}"))
    applied = ws.run("apply", str(ws.specs), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    made = {}
    for name, role in PEOPLE:
        result = ws.run("user", "create", name, "--role", role, str(ws.specs))
        assert result.exit_code == 0, result.output
        made[name] = result.stdout.strip()
    return made


@pytest.fixture
def console(ws: Workspace, passwords: dict[str, str]) -> Iterator[Server]:
    with serving(ws.specs, "--interval", "1s") as running:
        yield running


@pytest.fixture
def tabs(browser: Any, console: Server) -> Iterator[list[Tab]]:  # noqa: F811
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.close()


def _tab(browser: Any, console: Server, tabs: list[Tab], **kwargs: Any) -> Tab:  # noqa: F811
    tab = new_tab(browser, console.base, **kwargs)
    tabs.append(tab)
    return tab


def test_a_visitor_signs_in_sees_the_overview_and_signs_out(browser: Any, console: Server,  # noqa: F811
                                                            passwords: dict[str, str], tabs: list[Tab]) -> None:
    tab = _tab(browser, console, tabs)
    tab.open("/")
    assert tab.page.get_by_role("heading", name="Sign in").is_visible()
    tab.shoot("sign-in")
    tab.sign_in("max", "not-the-password")
    assert "The name or the password is wrong" in tab.page.get_by_role("alert").inner_text()
    tab.sign_in("max", passwords["max"])
    assert tab.page.get_by_role("heading", name="Overview").is_visible()
    row = tab.page.get_by_role("row").filter(has_text="main")
    assert "main-a" in row.inner_text() and "primary" in row.inner_text()
    tab.shoot("overview")
    cookies = {c["name"]: c for c in tab.context.cookies()}
    assert cookies["pgaas_session"]["httpOnly"] and cookies["pgaas_session"]["sameSite"] == "Strict"
    tab.page.get_by_role("button", name="Sign out").click()
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_by_role("heading", name="Sign in").is_visible()
    assert console.get("/v1/me", cookies["pgaas_session"]["value"]).status == 401  # the session is revoked
    assert tab.errors == [] and tab.foreign_requests() == []
