"""The console's admin page: users (create, disable, enable, a new password), tokens (revoke), and which members
may create databases on which pairs (the `pgaas.members` label of pairs made through the API)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from pgaasctl.console.client import ApiFailure, segment
from pgaasctl.console.pages import SignedIn
from pgaasctl.console.web import Page, check_csrf, signed_in

router = APIRouter(include_in_schema=False)


async def _admin_page(page: Page, errors: dict[str, str] | None = None, notice: str | None = None,
                      shown: dict[str, str] | None = None, form: dict[str, str] | None = None) -> Response:
    people = await page.api.get("/v1/users")
    tokens = await page.api.get("/v1/tokens")
    pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
    return page.render("admin.html", section="admin", people=people, tokens=tokens, pairs=pairs,
                       errors=errors or {}, notice=notice, shown=shown, form=form or {})


@router.get("/admin", response_class=HTMLResponse)
async def admin_page(page: SignedIn) -> Response:
    if page.me["role"] != "admin":
        return page.render("error.html", status=403, message="The admin page is for admins.")
    return await _admin_page(page)


@router.post("/admin/users", response_class=HTMLResponse)
async def create_user(request: Request) -> Response:
    form = await check_csrf(request)
    page = await signed_in(request)
    try:
        made = await page.api.call("POST", "/v1/users", {"name": form.get("name", "").strip(),
                                                         "role": form.get("role", "member")})
    except ApiFailure as exc:
        field = "role" if (exc.field or "").startswith("role") else "name"
        return await _admin_page(page, errors={field: exc.message}, form=form)
    return await _admin_page(page, shown={"user": made["user"]["name"], "password": made["password"]})


@router.post("/admin/users/{name}/{action}", response_class=HTMLResponse)
async def user_action(request: Request, name: str, action: str) -> Response:
    """disable, enable, or password (a new one-time password)."""
    await check_csrf(request)
    page = await signed_in(request)
    if action not in ("disable", "enable", "password"):
        return await _admin_page(page)
    try:
        answer = await page.api.call("POST", f"/v1/users/{segment(name)}/{action}")
    except ApiFailure as exc:
        return await _admin_page(page, errors={"": exc.message})
    if action == "password":
        return await _admin_page(page, shown={"user": name, "password": answer["password"]})
    return await _admin_page(page, notice=f"User {name} {action}d.")


@router.post("/admin/tokens/{token_id}/revoke", response_class=HTMLResponse)
async def revoke_token(request: Request, token_id: str) -> Response:
    await check_csrf(request)
    page = await signed_in(request)
    await page.api.call("DELETE", f"/v1/tokens/{segment(token_id)}")
    return await _admin_page(page, notice=f"Token {token_id} revoked.")


@router.post("/admin/pairs/{pair}/members", response_class=HTMLResponse)
async def pair_members(request: Request, pair: str) -> Response:
    """Open a pair to members ("*", or names separated by commas; empty: to nobody). Applied as an operation."""
    form = await check_csrf(request)
    page = await signed_in(request)
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    members = ",".join(m.strip() for m in form.get("members", "").split(",") if m.strip())
    labels = dict(detail["labels"])
    try:
        operation = await page.api.call("PATCH", f"/v1/pairs/{segment(pair)}",
                                        {"labels": {**labels, "pgaas.members": members} if members else
                                         {k: v for k, v in labels.items() if k != "pgaas.members"}})
    except ApiFailure as exc:
        return await _admin_page(page, errors={f"members-{pair}": exc.message})
    return page.render("operation.html", section="admin", operation=operation, pair=detail)
