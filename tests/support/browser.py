"""Debian's Chromium, headless, driven by Playwright, for the console's tests: a signed-in page per user, every
request it makes and every error its console logs recorded (so a test can assert there were none), screenshots
under tests/screenshots/, and axe-core (from node_modules) for accessibility."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "screenshots"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by make setup"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    """One browser context (its own cookies) and its page, with what it asked for and what went wrong in it."""

    base: str
    context: Any
    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        self.page.wait_for_load_state("networkidle")
        return response

    def follow(self, locator: Any) -> None:
        """Click something that loads a new page (a link, a form's button) and wait for that page."""
        with self.page.expect_navigation():
            locator.click()
        self.page.wait_for_load_state("domcontentloaded")

    def sign_in(self, name: str, password: str) -> None:
        self.open("/")
        self.page.get_by_label("Name").fill(name)
        self.page.get_by_label("Password").fill(password)
        self.follow(self.page.get_by_role("button", name="Sign in"))

    def shoot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def axe_violations(self) -> list[dict[str, Any]]:
        """Serious and critical accessibility violations on the current page (axe-core)."""
        self.page.add_script_tag(path=str(AXE))
        found = self.page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
        return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
                 "nodes": [n["html"][:160] for n in v["nodes"][:3]]}
                for v in found if v["impact"] in ("serious", "critical")]

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.base) and not url.startswith("data:")]

    def close(self) -> None:
        self.context.close()


def new_tab(browser: Any, base: str, viewport: dict[str, int] = DESKTOP, bypass_csp: bool = False) -> Tab:
    """`bypass_csp` only for the accessibility checks: axe-core is injected as an inline script, which the console's
    Content-Security-Policy rightly refuses."""
    context = browser.new_context(viewport=viewport, bypass_csp=bypass_csp)
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Tab(base=base, context=context, page=page)
    page.on("request", lambda request: tab.requests.append(request.url))
    page.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    return tab


def create_database(tab: Tab, pair: str, name: str, checked: tuple[str, ...] = (), **fields: str) -> None:
    """Fill the console's new-database form and preview its plan (labels -> values in `fields`)."""
    tab.open(f"/pairs/{pair}/new-database")
    tab.page.get_by_label("Name", exact=True).fill(name)
    for label, value in fields.items():
        tab.page.get_by_label(label).fill(value)
    for label in checked:
        tab.page.get_by_label(label).check()
    tab.follow(tab.page.get_by_role("button", name="Preview the plan"))


def wait_done(tab: Tab) -> str:
    """The status the operation page shows once its operation ended (done or failed)."""
    status = tab.page.locator("#operation-status")
    status.filter(has_text="done").or_(status.filter(has_text="failed")).wait_for(timeout=90_000)
    return str(status.inner_text())
