"""The console's browser assets: third-party files from node_modules (installed by `make setup` with `npm ci`, at
the versions package-lock.json pins) and the console's own CSS and script. Served under /assets/ from this
process alone: a page never loads anything from another host."""

from __future__ import annotations

import gzip
import mimetypes
import os
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

OWN = Path(__file__).parent / "static"
VENDOR = {  # the URL name -> its file under node_modules
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "pico.min.css": "@picocss/pico/css/pico.min.css",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",  # /docs, the API's Swagger UI
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
}
CACHE = "public, max-age=86400"

router = APIRouter(include_in_schema=False)


def node_modules() -> Path:
    """Where `npm ci` put the packages: $PGAASCTL_NODE_MODULES, else beside the source tree's pyproject.toml."""
    given = os.environ.get("PGAASCTL_NODE_MODULES")
    return Path(given) if given else Path(__file__).resolve().parents[2] / "node_modules"


def missing() -> list[str]:
    """The vendor files that are not installed (the console works without them, unstyled and static)."""
    base = node_modules()
    return [name for name, path in VENDOR.items() if not (base / path).is_file()]


def asset_path(name: str) -> Path | None:
    if name in VENDOR:
        return node_modules() / VENDOR[name]
    own = OWN / name
    return own if name in {p.name for p in OWN.iterdir()} else None


@router.get("/docs")
def swagger_ui() -> Response:
    """The API's Swagger UI, from this process's own assets (FastAPI's default loads it from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(openapi_url="/openapi.json", title="pgaasctl API", swagger_js_url="/assets/swagger-ui-bundle.js",
                               swagger_css_url="/assets/swagger-ui.css", swagger_favicon_url="/assets/favicon.svg")


@lru_cache(maxsize=32)
def _compressed(path: Path, stamp: float) -> bytes:
    """The file gzipped, once per version of it (`stamp`: its mtime)."""
    return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


@router.get("/assets/{name}")
def asset(name: str, request: Request) -> Response:
    path = asset_path(name)
    if path is None or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    headers = {"Cache-Control": CACHE, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):  # a third of the bytes over the wire
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(_compressed(path, path.stat().st_mtime), media_type=media,
                        headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, headers=headers)
