"""The dashboard: plain files from `service/ui` (HTML, one stylesheet, ES modules), served as
they ship. No build step and no CDN: the page works offline and is a client of the public API
only, with the same key a script would use."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..guard import PAGE

FILES = Path(__file__).resolve().parents[2] / "ui"
HEADERS = {
    # Everything comes from this server; data is only ever set as text, never as markup.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag, 304) so an upgrade shows at once
}

router = APIRouter(include_in_schema=False)


class Page(StaticFiles):
    """StaticFiles (ETag, Last-Modified, HEAD, no symlinks out of the folder) with the
    headers a page that holds an API key in the tab should carry."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse(PAGE + "/", status_code=307)


def mount(app: FastAPI) -> None:
    app.include_router(router)
    # gzip for the page's files only (bodies of 42 KB -> 17 KB, bench/dashboard.py): a middleware
    # on the whole app would compress artifact downloads too
    page = GZipMiddleware(Page(directory=FILES, html=True), minimum_size=1024)
    app.mount(PAGE, page, name="ui")
