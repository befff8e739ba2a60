"""The console's reading pages: sign in and out, the overview, a pair, a database. Each reads through the API as
the signed-in user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from pgaasctl.api.auth import SESSION_COOKIE
from pgaasctl.api.sessions import SESSION_DAYS
from pgaasctl.console.client import ApiFailure, segment
from pgaasctl.console.web import Page, SignedOut, check_csrf, go, sign_in_page, signed_in

router = APIRouter(include_in_schema=False)
SignedIn = Annotated[Page, Depends(signed_in)]


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> Response:
    try:
        page = await signed_in(request)
    except SignedOut:
        return sign_in_page(request)
    pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
    return page.render("overview.html", section="overview", pairs=pairs)


@router.get("/ui/pairs", response_class=HTMLResponse)
async def overview_pairs(page: SignedIn) -> Response:
    pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
    return page.render("_pairs.html", pairs=pairs)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    form = await check_csrf(request)
    name, password = form.get("name", ""), form.get("password", "")
    http = request.app.state.console_http
    answer = await http.post("/v1/sessions", json={"name": name[:63], "password": password[:200]})
    token = answer.cookies.get(SESSION_COOKIE) if answer.status_code == 200 else None
    if token is None:
        return sign_in_page(request, name=name[:63],  # 200: the form again, with its error (not a failed load)
                            error="The name or the password is wrong, or the user is disabled.")
    response = go("/", request)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_DAYS * 86400, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    await check_csrf(request)
    try:
        page = await signed_in(request)
        await page.api.call("DELETE", "/v1/sessions")
    except (SignedOut, ApiFailure):
        pass  # signed out already
    response = go("/", request)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


PERIODS = {"15m": "15 minutes", "1h": "hour", "6h": "6 hours", "24h": "day", "7d": "week"}


def period_of(since: str | None) -> str:
    return since if since in PERIODS else "1h"


@router.get("/pairs/{pair}", response_class=HTMLResponse)
async def pair_page(page: SignedIn, pair: str, since: str | None = None) -> Response:
    period = period_of(since)
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    connection = await page.api.get(f"/v1/pairs/{segment(pair)}/connection")
    vip = (await page.api.get(f"/v1/pairs/{segment(pair)}/connection", virtual_ip="true")
           if detail["virtual_ip"] else None)
    databases = (await page.api.get(f"/v1/pairs/{segment(pair)}/databases", page_size=500))["items"]
    operations = (await page.api.get("/v1/operations", pair=pair, page_size=10))["items"]
    report = await page.api.get(f"/v1/pairs/{segment(pair)}/report", since=period)
    [figures] = report["pairs"]
    lag = next((c for c in figures["charts"] if c["title"] == "Replication lag"), None)
    return page.render("pair.html", section="overview", pair=detail, connection=connection, vip=vip,
                       databases=databases, operations=operations, lag=lag, events=figures["events"],
                       period=period, periods=PERIODS)


@router.get("/ui/pairs/{pair}/status", response_class=HTMLResponse)
async def pair_status(page: SignedIn, pair: str) -> Response:
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    return page.render("_pair_status.html", pair=detail)


@router.get("/pairs/{pair}/databases/{name}", response_class=HTMLResponse)
async def database_page(page: SignedIn, pair: str, name: str, since: str | None = None) -> Response:
    period = period_of(since)
    detail = await page.api.get(f"/v1/pairs/{segment(pair)}")
    database = await page.api.get(f"/v1/pairs/{segment(pair)}/databases/{segment(name)}")
    try:
        report = await page.api.get(f"/v1/pairs/{segment(pair)}/report", since=period, database=name)
        charts = report["pairs"][0]["charts"]
    except ApiFailure as exc:
        if exc.reason != "no_samples":
            raise
        charts = []  # the agent has not sampled it yet
    roles = (await page.api.get(f"/v1/pairs/{segment(pair)}/roles", page_size=500))["items"]
    connecting = {a["role"] for a in database["access"]} | {database["spec"].get("owner") or ""}
    certifiable = sorted(r["name"] for r in roles if "certificate" in r["actions"] and r["name"] in connecting)
    return page.render("database.html", section="overview", pair=detail, database=database, charts=charts,
                       period=period, periods=PERIODS, errors={}, plan=None, certifiable=certifiable)
