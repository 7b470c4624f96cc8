"""The demo page at `/`: plain HTML/CSS/JS shipped in the package (no CDN, no build step), so it works
offline and behind any proxy that reaches the gateway.

Assets are served by a route rather than a StaticFiles mount so that HttpMetrics labels them
`/static/{name}` (a mount leaves no route in the scope and they would count as "unmatched")."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from service.http.errors import error_body

STATIC_DIR = Path(__file__).resolve().parents[2] / "web" / "static"
MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
# One flat folder of plain names: no separators or dots beyond the suffix, so no path can leave it.
# Short, too: a name past the file system's limit would make the lookup itself fail.
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\.(html|css|js)")

router = APIRouter(tags=["web"], include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type=MEDIA_TYPES[".html"])


@router.get("/static/{name}", response_model=None)
async def asset(name: str) -> FileResponse | JSONResponse:
    path = STATIC_DIR / name
    if not _ASSET_NAME.fullmatch(name) or not path.is_file():
        return JSONResponse(error_body("not_found", f"no asset {name!r}"), status_code=404)
    # The page changes with the package version: revalidate instead of caching blindly.
    headers = {"Cache-Control": "no-cache"}
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)
