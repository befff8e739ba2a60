"""The console's changing pages: create, change and delete a database, switch a pair over. Every form is planned
first (the API's dry run: what will change, a restart a setting needs) and applied only once confirmed; the
operation's progress shows until it ends. The API's refusals come back beside the field that caused them."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from pgaasctl.console.client import ApiFailure, segment
from pgaasctl.console.pages import SignedIn
from pgaasctl.console.web import Page, SignedOut, check_csrf, signed_in

router = APIRouter(include_in_schema=False)
DATABASE_FIELDS = ("name", "owner", "connection_limit", "settings", "extensions", "schemas", "deletion_protection")


class FormProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _settings(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise FormProblem("settings", f"line {number}: write one parameter per line as name = value")
        found[name.strip()] = value.strip()
    return found


def database_body(form: dict[str, str], creating: bool) -> dict[str, Any]:
    """The API's request body from the form: only the fields given (a change replaces what it names)."""
    body: dict[str, Any] = {}
    if creating:
        body["name"] = form.get("name", "").strip()
    if form.get("owner", "").strip():
        body["owner"] = form["owner"].strip()
    limit = form.get("connection_limit", "").strip()
    if limit:
        try:
            body["connection_limit"] = int(limit)
        except ValueError:
            raise FormProblem("connection_limit", "a whole number (-1: no limit)") from None
    body["settings"] = _settings(form.get("settings", ""))
    body["extensions"] = _names(form.get("extensions", ""))
    body["schemas"] = _names(form.get("schemas", ""))
    body["deletion_protection"] = form.get("deletion_protection") == "on"
    if creating:
        body = {k: v for k, v in body.items() if v not in ({}, [], False) or k == "name"}
    return body


def form_of(database: dict[str, Any]) -> dict[str, str]:
    """A database's spec as the change form's fields."""
    spec = database["spec"]
    return {
        "owner": spec.get("owner") or "",
        "connection_limit": str(spec.get("connection_limit", -1)),
        "settings": "\n".join(f"{k} = {v}" for k, v in sorted(spec.get("settings", {}).items())),
        "extensions": ", ".join(e["name"] if isinstance(e, dict) else str(e) for e in spec.get("extensions", [])),
        "schemas": ", ".join(s["name"] if isinstance(s, dict) else str(s) for s in spec.get("schemas", [])),
        "deletion_protection": "on" if spec.get("deletion_protection") else "",
    }


def _field_of(failure: ApiFailure) -> str:
    """The form field an API error names (`settings.work_mem` -> settings); '' for the form as a whole."""
    first = (failure.field or "").split(".")[0]
    return first if first in DATABASE_FIELDS else ""


async def _plan_or_problem(page: Page, method: str, path: str, body: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    try:
        return await page.api.call(method, path, body, dry_run="true"), {}
    except ApiFailure as exc:
        if exc.status == 401:
            raise SignedOut() from None
        return None, {_field_of(exc): exc.message}


# ---------------------------------------------------------------- create a database

@router.get("/pairs/{pair}/new-database", response_class=HTMLResponse)
async def new_database(page: SignedIn, pair: str) -> Response:
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    return page.render("database_form.html", section="overview", pair=detail, creating=True, form={}, errors={},
                       plan=None)


@router.post("/pairs/{pair}/new-database", response_class=HTMLResponse)
async def create_database(request: Request, pair: str) -> Response:
    form = await check_csrf(request)
    page = await signed_in(request)
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    path = f"/v1/pairs/{segment(pair)}/databases"
    return await _preview_or_apply(page, form, "database_form.html", "POST", path, pair=detail, creating=True)


async def _preview_or_apply(page: Page, form: dict[str, str], template: str, method: str, path: str,
                            **values: Any) -> Response:
    try:
        body = database_body(form, values["creating"])
    except FormProblem as exc:
        return page.render(template, section="overview", form=form, errors={exc.field: exc.message}, plan=None,
                           **values)
    plan, errors = await _plan_or_problem(page, method, path, body)
    if errors or form.get("step") != "apply":
        return page.render(template, section="overview", form=form, errors=errors, plan=plan, **values)
    try:
        operation = await page.api.call(method, path, body)
    except ApiFailure as exc:
        return page.render(template, section="overview", form=form, errors={_field_of(exc): exc.message},
                           plan=plan, **values)
    return page.render("operation.html", section="overview", operation=operation, **values)


# ---------------------------------------------------------------- change or delete a database

async def _database_of(page: Page, pair: str, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The database's API path, its pair and itself, as the signed-in user reads them."""
    path = f"/v1/pairs/{segment(pair)}/databases/{segment(name)}"
    return path, await page.api.get(f"/v1/pairs/{segment(pair)}"), await page.api.get(path)


@router.get("/pairs/{pair}/databases/{name}/change", response_class=HTMLResponse)
async def change_database_form(page: SignedIn, pair: str, name: str) -> Response:
    _, detail, database = await _database_of(page, pair, name)
    return page.render("database_form.html", section="overview", pair=detail, database=database, creating=False,
                       form=form_of(database), errors={}, plan=None)


@router.post("/pairs/{pair}/databases/{name}/change", response_class=HTMLResponse)
async def change_database(request: Request, pair: str, name: str) -> Response:
    form = await check_csrf(request)
    page = await signed_in(request)
    path, detail, database = await _database_of(page, pair, name)
    return await _preview_or_apply(page, form, "database_form.html", "PATCH", path, pair=detail,
                                   database=database, creating=False)


@router.post("/pairs/{pair}/databases/{name}/delete", response_class=HTMLResponse)
async def delete_database(request: Request, pair: str, name: str) -> Response:
    """Deleting needs the database's name typed again; planned first, then applied once confirmed."""
    form = await check_csrf(request)
    page = await signed_in(request)
    path, detail, database = await _database_of(page, pair, name)
    values = {"pair": detail, "database": database}
    if form.get("confirm_name") != name:
        return page.render("database_delete.html", section="overview", errors={
            "confirm_name": "Type the database's name exactly to delete it."}, plan=None, **values)
    plan, errors = await _plan_or_problem(page, "DELETE", path, {})
    if errors or form.get("step") != "apply":
        shown = {"confirm_name": next(iter(errors.values()))} if errors else {}
        return page.render("database_delete.html", section="overview", errors=shown, plan=plan, **values)
    operation = await page.api.call("DELETE", path)
    if operation is None:  # already gone
        return page.render("operation.html", section="overview", operation=None, **values)
    return page.render("operation.html", section="overview", operation=operation, **values)


# ---------------------------------------------------------------- client certificates

@router.post("/pairs/{pair}/roles/{role}/certificate")
async def client_certificate(request: Request, pair: str, role: str) -> Response:
    """A new client certificate of a role, downloaded as a zip: ROLE.crt, ROLE.key (the key exists nowhere else)
    and root.crt (the CA)."""
    await check_csrf(request)
    page = await signed_in(request)
    issued = await page.api.call("POST", f"/v1/pairs/{segment(pair)}/roles/{segment(role)}/certificate")
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{role}.crt", issued["certificate"])
        key = zipfile.ZipInfo(f"{role}.key")
        key.external_attr = 0o600 << 16  # libpq refuses a key others can read
        archive.writestr(key, issued["private_key"])
        archive.writestr("root.crt", issued["ca"])
    name = f"{pair}-{role}-certificate.zip".replace('"', "")
    return Response(bundle.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


# ---------------------------------------------------------------- operations and switchover

@router.get("/ui/operations/{operation}", response_class=HTMLResponse)
async def operation_progress(page: SignedIn, operation: str) -> Response:
    found = await page.api.get(f"/v1/operations/{segment(operation)}", wait="2s")
    return page.render("_operation.html", operation=found)


@router.post("/pairs/{pair}/switchover", response_class=HTMLResponse)
async def switchover(request: Request, pair: str) -> Response:
    await check_csrf(request)
    page = await signed_in(request)
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    operation = await page.api.call("POST", f"/v1/pairs/{segment(pair)}/switchover")
    return page.render("operation.html", section="overview", operation=operation, pair=detail)
