"""GET /v1/stream: a live stream over WebSocket; thin, the session lives in service/http/streaming.py."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from service.http.state import Resources
from service.http.streaming import serve_stream

router = APIRouter(tags=["stream"])


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    """Frames in (binary JPEG/PNG/WebP, or JSON with base64 and a timestamp), one JSON answer per analysed
    frame out: faces, a stable track_id per person, a smoothed expression and the current segment."""
    resources: Resources = websocket.app.state.resources
    await serve_stream(websocket, resources)
