"""The console's health and reports pages: every pair's health checks with their remedies, and the report of a
pair (or one database) over a period, downloaded as HTML, Markdown or JSON."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from pgaasctl.console.client import segment
from pgaasctl.console.pages import PERIODS, SignedIn, period_of

router = APIRouter(include_in_schema=False)
FORMATS = {"html": "HTML", "markdown": "Markdown", "json": "JSON"}
SEVERITY = {"critical": 0, "warn": 1, "ok": 2}


@router.get("/health", response_class=HTMLResponse)
async def health_page(page: SignedIn) -> Response:
    pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
    found = []
    for pair in pairs:
        report = await page.api.get(f"/v1/pairs/{segment(pair['name'])}/report", since="15m")
        checks = sorted(report["pairs"][0]["checks"], key=lambda c: SEVERITY.get(c["status"], 3))
        found.append({"pair": pair, "checks": checks})
    return page.render("health.html", section="health", found=found)


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(page: SignedIn) -> Response:
    pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
    return page.render("reports.html", section="reports", pairs=pairs, periods=PERIODS, formats=FORMATS, error=None)


@router.get("/reports/download")
async def download(page: SignedIn, pair: str, since: str = "24h", format: str = "html",
                   database: str | None = None) -> Response:
    fmt = format if format in FORMATS else "html"
    answer = await page.api.http.get(f"/v1/pairs/{segment(pair)}/report", params={
        "since": period_of(since) if since != "24h" else since, "format": fmt, "download": "true",
        **({"database": database} if database else {})}, headers={"Authorization": f"Bearer {page.api.token}"})
    if answer.status_code != 200:
        message = answer.json().get("error", {}).get("message", "the report failed")
        pairs = (await page.api.get("/v1/pairs", page_size=500))["items"]
        return page.render("reports.html", section="reports", pairs=pairs, periods=PERIODS, formats=FORMATS,
                           error=message)
    return Response(answer.content, media_type=answer.headers["content-type"], headers={
        "Content-Disposition": answer.headers.get("content-disposition", "attachment"), "Cache-Control": "no-store"})
