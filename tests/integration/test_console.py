"""The web console in a real Chromium (Playwright, headless) against a real `pgaasctl serve` over a workspace
whose pair is the worker's PostgreSQL: signing in and out, what each role sees and may do, the forms with their
plan previews and operations, CSRF, escaping, accessibility (axe-core), no foreign requests, no console errors."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import PHONE, Tab, create_database, new_tab, wait_done
from tests.support.local_pair import wait_until
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
def tabs(browser: Any, console: Server) -> Iterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.close()


def _tab(browser: Any, console: Server, tabs: list[Tab], **kwargs: Any) -> Tab:
    tab = new_tab(browser, console.base, **kwargs)
    tabs.append(tab)
    return tab


def test_a_visitor_signs_in_sees_the_overview_and_signs_out(browser: Any, console: Server,
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
    tab.follow(tab.page.get_by_role("button", name="Sign out"))
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_by_role("heading", name="Sign in").is_visible()
    assert console.get("/v1/me", cookies["pgaas_session"]["value"]).status == 401  # the session is revoked
    assert tab.errors == [] and tab.foreign_requests() == []


def test_a_member_creates_changes_and_deletes_a_database_with_the_plan_first(
        ws: Workspace, browser: Any, console: Server, passwords: dict[str, str], tabs: list[Tab]) -> None:
    tab = _tab(browser, console, tabs)
    tab.sign_in("max", passwords["max"])
    create_database(tab, "main", "Bad Name!")
    error = tab.page.locator("#name-error")
    assert error.is_visible() and "name" in error.inner_text().lower()  # beside the field, and nothing made
    assert not (ws.specs / "api").exists() or not list((ws.specs / "api").rglob("*.yaml"))

    create_database(tab, "main", "shop", **{"Settings (one per line: name = value)": "work_mem = 8MB",
                                     "Schemas (comma-separated)": "sales"})
    plan = tab.page.locator(".plan")
    assert "+ create" in plan.inner_text() and "database.main.shop" in plan.inner_text()
    assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'") == []  # a preview changes nothing
    tab.shoot("create-database-plan")
    tab.follow(tab.page.get_by_role("button", name="Apply"))
    assert wait_done(tab) == "done"
    assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'") == [(1,)]
    tab.follow(tab.page.get_by_role("link", name="Open the database"))
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_by_role("heading", name="Database shop").is_visible()
    assert "sales" in tab.page.get_by_role("row").filter(has_text="Schemas").inner_text()
    tab.shoot("database")

    tab.follow(tab.page.get_by_role("button", name="Change settings, extensions, schemas"))
    tab.page.get_by_label("Connection limit (-1: none)").fill("7")
    tab.follow(tab.page.get_by_role("button", name="Preview the plan"))
    assert "connection_limit" in tab.page.locator(".plan").inner_text()
    tab.follow(tab.page.get_by_role("button", name="Apply"))
    assert wait_done(tab) == "done"
    assert ws.server.execute("SELECT datconnlimit FROM pg_database WHERE datname = 'shop'") == [(7,)]

    tab.open("/pairs/main/databases/shop")
    button = tab.page.get_by_role("button", name="Preview the deletion")
    assert button.is_disabled()  # until the name is typed
    tab.page.get_by_label("Type shop to confirm").fill("shop")
    tab.follow(button)
    assert "- delete" in tab.page.locator(".plan").inner_text()
    tab.follow(tab.page.get_by_role("button", name="Delete shop now"))
    assert wait_done(tab) == "done"
    assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'") == []
    assert tab.errors == [] and tab.foreign_requests() == []


def test_a_protected_database_is_not_deleted_and_the_reason_is_shown(
        ws: Workspace, browser: Any, console: Server, passwords: dict[str, str], tabs: list[Tab]) -> None:
    tab = _tab(browser, console, tabs)
    tab.sign_in("max", passwords["max"])
    create_database(tab, "main", "kept", checked=("Deletion protection",))
    tab.follow(tab.page.get_by_role("button", name="Apply"))
    assert wait_done(tab) == "done"
    tab.open("/pairs/main/databases/kept")
    tab.page.get_by_label("Type kept to confirm").fill("kept")
    tab.follow(tab.page.get_by_role("button", name="Preview the deletion"))
    assert "deletion_protection" in tab.page.locator("#confirm_name-error").inner_text()
    assert ws.server.execute("SELECT 1 FROM pg_database WHERE datname = 'kept'") == [(1,)]


def _psql(uri: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", uri, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"})


def test_access_is_asked_approved_in_the_inbox_shown_once_used_with_psql_and_revoked(
        ws: Workspace, browser: Any, console: Server, passwords: dict[str, str], tabs: list[Tab]) -> None:
    owner = _tab(browser, console, tabs)
    owner.sign_in("max", passwords["max"])
    create_database(owner, "main", "ledger")
    owner.follow(owner.page.get_by_role("button", name="Apply"))
    assert wait_done(owner) == "done"
    ws.server.execute("CREATE TABLE entries (n int)", dbname="ledger")
    ws.server.execute("INSERT INTO entries VALUES (1), (2)", dbname="ledger")

    asker = _tab(browser, console, tabs)
    asker.sign_in("mia", passwords["mia"])
    asker.open("/access")
    asker.page.get_by_role("textbox", name="Database").fill("nosuch")
    asker.page.get_by_role("textbox", name="Reason").fill("the Q3 report")
    asker.follow(asker.page.get_by_role("button", name="Ask"))
    assert "nosuch" in asker.page.locator("#database-error").inner_text()  # beside the field
    asker.page.get_by_role("textbox", name="Database").fill("ledger")
    asker.follow(asker.page.get_by_role("button", name="Ask"))
    assert "Asked for read-only access to ledger" in asker.page.get_by_role("status").inner_text()

    owner.open("/access")
    inbox = owner.page.get_by_role("row").filter(has_text="the Q3 report")
    inbox.get_by_label("Reason").fill("ok for Q3")
    owner.shoot("access-inbox")
    owner.follow(inbox.get_by_role("button", name="Approve"))
    assert wait_done(owner) == "done"

    asker.open("/access")
    asker.follow(asker.page.get_by_role("button", name="Show my credentials (once)"))
    password = asker.page.locator("#password").inner_text()
    uri = asker.page.locator("#uri").inner_text()
    assert len(password) >= 24 and "password" not in uri.lower().split("?")[0]
    asker.shoot("credentials")
    assert _psql(uri, password, "SELECT count(*) FROM entries").stdout.strip() == "2"
    refused = _psql(uri, password, "INSERT INTO entries VALUES (3)")
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    asker.open("/access")
    assert asker.page.get_by_role("button", name="Show my credentials (once)").count() == 0  # once
    page_texts = owner.page.content() + asker.page.content()
    assert password not in page_texts  # shown to its owner once, never again, never to anyone else

    asker.follow(asker.page.get_by_role("button", name="Revoke"))
    assert wait_done(asker) == "done"
    assert _psql(uri, password, "SELECT 1").returncode != 0  # the role is gone
    assert owner.errors == [] and asker.errors == [] and asker.foreign_requests() == []


def test_an_admin_makes_a_user_and_disables_another_whose_session_stops_at_once(
        ws: Workspace, browser: Any, console: Server, passwords: dict[str, str], tabs: list[Tab]) -> None:
    victim = _tab(browser, console, tabs)
    victim.sign_in("mia", passwords["mia"])
    assert victim.page.get_by_role("heading", name="Overview").is_visible()
    admin = _tab(browser, console, tabs)
    admin.sign_in("ada", passwords["ada"])
    admin.open("/admin")
    admin.page.get_by_label("New user's name").fill("<b>x</b>")
    admin.follow(admin.page.get_by_role("button", name="Create the user"))
    assert "not allowed" in admin.page.locator("#name-error").inner_text()
    admin.page.get_by_label("New user's name").fill("noor")
    admin.follow(admin.page.get_by_role("button", name="Create the user"))
    fresh_password = admin.page.locator("#one-time-password").inner_text()
    admin.shoot("admin")
    admin.follow(admin.page.get_by_role("button", name="Disable mia"))
    assert "User mia disabled" in admin.page.get_by_role("status").inner_text()

    victim.open("/pairs/main")  # the very next request of the disabled user's session
    assert victim.page.get_by_role("heading", name="Sign in").is_visible()
    newcomer = _tab(browser, console, tabs)
    newcomer.sign_in("noor", fresh_password)
    assert newcomer.page.get_by_role("heading", name="Overview").is_visible()
    assert admin.errors == [] and newcomer.errors == []


def test_a_viewer_sees_no_change_controls_and_crafted_or_forged_posts_are_refused(
        ws: Workspace, browser: Any, console: Server, passwords: dict[str, str], tabs: list[Tab]) -> None:
    viewer = _tab(browser, console, tabs)
    viewer.sign_in("vic", passwords["vic"])
    viewer.open("/pairs/main")
    assert viewer.page.get_by_role("button", name="Create a database").count() == 0
    assert viewer.page.get_by_role("button", name="Switch over").count() == 0
    assert viewer.page.get_by_role("link", name="Admin").count() == 0
    viewer.open("/access")
    assert viewer.page.get_by_role("button", name="Ask").count() == 0
    csrf = next(c["value"] for c in viewer.context.cookies() if c["name"] == "pgaas_csrf")
    crafted = viewer.context.request.post(console.base + "/pairs/main/new-database", form={
        "csrf": csrf, "name": "sneaky", "step": "apply"})
    assert crafted.status == 200 and "may not create databases" in crafted.text()  # the API's refusal, shown
    forged = viewer.context.request.post(console.base + "/pairs/main/new-database", form={
        "name": "forged", "step": "apply"})  # no CSRF token: what a page of another site would send
    assert forged.status == 403
    member = _tab(browser, console, tabs)
    member.sign_in("max", passwords["max"])
    foreign = member.context.request.post(console.base + "/sign-out", form={"csrf": "x" * 43})
    assert foreign.status == 403
    assert ws.server.execute("SELECT datname FROM pg_database WHERE datname IN ('sneaky', 'forged')") == []
    assert member.context.request.get(console.base + "/admin").status == 403


def test_text_from_users_is_shown_escaped(ws: Workspace, browser: Any, console: Server,
                                          passwords: dict[str, str], tabs: list[Tab]) -> None:
    ws.write("by-hand.yaml", "kind: Database\nmetadata: {name: escaped, pair: main, labels: {pgaas.owner: max}}\n")
    assert ws.run("apply", str(ws.specs), "--auto-approve").exit_code == 0
    asker = _tab(browser, console, tabs)
    asker.sign_in("mia", passwords["mia"])
    asker.open("/access")
    hostile = '<img src=x onerror="document.title=1"><b id="bold">bold</b>'
    asker.page.get_by_role("textbox", name="Database").fill("escaped")
    asker.page.get_by_role("textbox", name="Reason").fill(hostile)
    asker.follow(asker.page.get_by_role("button", name="Ask"))
    owner = _tab(browser, console, tabs)
    owner.sign_in("max", passwords["max"])
    owner.open("/access")
    assert hostile in owner.page.get_by_role("row").filter(has_text="escaped").inner_text()  # as text
    assert owner.page.locator("#bold").count() == 0 and owner.page.locator("img[src=x]").count() == 0
    assert owner.page.title() != "1"


def test_health_and_a_downloaded_report(ws: Workspace, browser: Any, console: Server,
                                        passwords: dict[str, str], tabs: list[Tab]) -> None:
    tab = _tab(browser, console, tabs)
    tab.sign_in("ada", passwords["ada"])
    wait_until(lambda: console.get("/healthz").json()["agent_rounds"] >= 2, 30, "two rounds of the agent")
    tab.open("/health")
    assert tab.page.get_by_role("heading", name="main").is_visible()
    assert tab.page.get_by_role("row").filter(has_text="connections").count() >= 1  # a graded check
    tab.open("/reports")
    tab.page.get_by_label("Format").select_option("markdown")
    with tab.page.expect_download() as downloading:
        tab.page.get_by_role("button", name="Download the report").click()
    download = downloading.value
    assert download.suggested_filename == "pgaasctl-main-24h.md"
    text = Path(download.path()).read_text()
    assert text.startswith("# ") and "main" in text


PAGES = ["/", "/pairs/main", "/pairs/main/new-database", "/pairs/main/databases/{db}", "/access", "/health",
         "/reports", "/admin"]


def test_every_page_is_accessible_at_desktop_and_phone_width(ws: Workspace, browser: Any,
                                                             console: Server, passwords: dict[str, str],
                                                             tabs: list[Tab]) -> None:
    ws.write("db.yaml", "kind: Database\nmetadata: {name: tour, pair: main, labels: {pgaas.owner: ada}}\n")
    assert ws.run("apply", str(ws.specs), "--auto-approve").exit_code == 0
    for width, viewport in (("desktop", None), ("phone", PHONE)):
        tab = _tab(browser, console, tabs, bypass_csp=True, **({"viewport": viewport} if viewport else {}))
        tab.open("/")
        assert tab.axe_violations() == [], "sign-in"
        tab.shoot(f"{width}-sign-in")
        tab.sign_in("ada", passwords["ada"])
        for path in PAGES:
            tab.open(path.format(db="tour"))
            assert tab.axe_violations() == [], path
            tab.shoot(f"{width}-{path.strip('/').replace('/', '-').replace('{db}', 'tour') or 'overview'}")
            if width == "phone":  # readable at phone width: nothing wider than the screen but tables' own scroll
                overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, (path, overflow)
        assert tab.errors == [], tab.errors


def test_the_apis_swagger_ui_loads_from_this_server_alone(browser: Any, console: Server, tabs: list[Tab]) -> None:
    tab = _tab(browser, console, tabs)
    tab.open("/docs")
    tab.page.locator(".swagger-ui .information-container").wait_for()
    assert "pgaasctl" in tab.page.locator(".swagger-ui .title").inner_text()
    assert tab.page.locator(".opblock-tag").filter(has_text="databases").count() == 1
    assert tab.foreign_requests() == [] and tab.errors == []


def test_the_console_works_with_the_keyboard_alone(browser: Any, console: Server, passwords: dict[str, str],
                                                   tabs: list[Tab]) -> None:
    tab = _tab(browser, console, tabs)
    tab.open("/")
    keys = tab.page.keyboard
    assert tab.page.evaluate("document.activeElement.id") == "name"  # the form starts where it is filled in
    keys.type("max")
    keys.press("Tab")
    keys.type(passwords["max"])
    with tab.page.expect_navigation():
        keys.press("Enter")
    assert tab.page.get_by_role("heading", name="Overview").is_visible()

    def tab_to(text: str) -> None:
        for _ in range(40):  # no trap: every control is reached in a bounded number of steps
            keys.press("Tab")
            if tab.page.evaluate("document.activeElement.textContent.trim()") == text:
                return
        raise AssertionError(f"{text!r} was never reached with Tab")

    tab_to("Skip to content")
    tab_to("main")
    with tab.page.expect_navigation():
        keys.press("Enter")
    assert tab.page.get_by_role("heading", name="Pair main").is_visible()
    tab_to("Create a database")
    with tab.page.expect_navigation():
        keys.press("Enter")
    assert tab.page.get_by_role("heading", name="New database on main").is_visible()
