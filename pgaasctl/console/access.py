"""The console's access pages: ask for access to a database, the inbox where owners and admins approve or deny,
the requester's credentials (shown once), and revoking."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from pgaasctl.console.client import ApiFailure, segment
from pgaasctl.console.pages import SignedIn
from pgaasctl.console.web import Page, check_csrf, go, signed_in

router = APIRouter(include_in_schema=False)
ASK_FIELDS = ("pair", "database", "access", "reason")


async def _access_page(page: Page, form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                       notice: str | None = None) -> Response:
    requests = (await page.api.get("/v1/access-requests", page_size=500))["items"]
    pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
    inbox = [r for r in requests if "approve" in r["actions"]]
    mine = [r for r in requests if r["requester"] == page.me["name"]]
    others = [r for r in requests if r not in inbox and r not in mine]
    return page.render("access.html", section="access", inbox=inbox, mine=mine, others=others, pairs=pairs,
                       form=form or {"access": "read-only"}, errors=errors or {}, notice=notice)


@router.get("/access", response_class=HTMLResponse)
async def access_page(page: SignedIn) -> Response:
    return await _access_page(page)


@router.post("/access/ask", response_class=HTMLResponse)
async def ask(request: Request) -> Response:
    form = await check_csrf(request)
    page = await signed_in(request)
    body = {field: form.get(field, "").strip() for field in ASK_FIELDS}
    try:
        await page.api.call("POST", "/v1/access-requests", body)
    except ApiFailure as exc:
        field = (exc.field or "").split(".")[0]
        if exc.reason == "not_found":
            field = "database"
        return await _access_page(page, form, {field if field in ASK_FIELDS else "": exc.message})
    return await _access_page(page, notice=f"Asked for {body['access']} access to {body['database']}: its owner "
                              "or an admin decides.")


@router.post("/access/{request_id}/{decision}", response_class=HTMLResponse)
async def decide(request: Request, request_id: str, decision: str) -> Response:
    """approve, deny, revoke, or credentials (the requester's, once)."""
    form = await check_csrf(request)
    page = await signed_in(request)
    path = f"/v1/access-requests/{segment(request_id)}"
    if decision == "credentials":
        credentials = await page.api.get(f"{path}/credentials")
        return page.render("credentials.html", section="access", credentials=credentials)
    if decision not in ("approve", "deny", "revoke"):
        return go("/access", request)
    body: dict[str, Any] | None = {"reason": form.get("reason", "")[:500]} if decision != "revoke" else None
    answer = await page.api.call("POST", f"{path}/{decision}", body)
    if decision == "deny":
        return await _access_page(page, notice="Denied.")
    return page.render("operation.html", section="access", operation=answer, pair=None)
