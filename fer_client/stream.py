"""A video file or camera played to GET /v1/stream as a live source: frames sent at the source's pace, answers
read as they come, the time from each frame sent to its answer measured.

    python -m fer_client stream Megamind.avi --fps 10

Each frame goes as JSON with its time in the video (``timestamp``), so the server's tracker and smoothing
see the video's clock; a frame the server drops (it came while another was analysed) gets no answer: the
next answer counts it in ``dropped``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

Answer = dict[str, Any]
OnAnswer = Callable[[Answer, float | None], None]  # an answer, and seconds since its frame was sent


def video_frames(source: str, fps: float | None = None, max_side: int = 0) -> Iterator[tuple[float, bytes]]:
    """(time in the video, JPEG) for each frame of a file or V4L2 device (``/dev/video0``), at most ``fps``
    a second; ``max_side`` > 0 shrinks larger frames first."""
    import av  # the gateway's own decoder; imported here so the rest of the client does not need it

    device = "v4l2" if source.startswith("/dev/video") else None
    with av.open(source, "r", format=device) as container:
        next_time = 0.0
        for frame in container.decode(video=0):
            timestamp = float(frame.time or 0.0)
            if fps is not None and timestamp + 1e-6 < next_time:
                continue
            # The next slot on a fixed 1/fps grid: stepping from each kept frame's own time would drift
            # (a 24 fps video at fps=5 kept a frame every 0.25 s, 4 a second).
            next_time = (math.floor(timestamp * fps + 1e-6) + 1) / fps if fps else timestamp
            yield timestamp, jpeg(Image.fromarray(frame.to_ndarray(format="rgb24")), max_side)


def jpeg(image: Image.Image, max_side: int) -> bytes:
    if max_side > 0 and max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def stream_url(base_url: str) -> str:
    """http(s)://host:port → ws(s)://host:port/v1/stream."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/v1/stream", "", ""))


@dataclass
class StreamStats:
    sent: int = 0
    answered: int = 0
    errors: int = 0
    dropped: int = 0
    latencies_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    close_code: int | None = None
    close_reason: str = ""


@dataclass
class Player:
    """Plays ``frames`` to one stream and reads its answers until every frame is answered or dropped."""

    base_url: str
    api_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    pace: bool = True  # send at the video's own pace (a live source); False: as fast as the link allows
    on_answer: OnAnswer = lambda _answer, _latency: None
    drain_timeout_s: float = 30.0
    stats: StreamStats = field(default_factory=StreamStats)
    _sent_at: dict[int, float] = field(default_factory=dict)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def play(self, frames: Iterator[tuple[float, bytes]]) -> StreamStats:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        start = time.monotonic()
        async with connect(stream_url(self.base_url), additional_headers=headers, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", **self.options}))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                raise RuntimeError(f"the stream did not open: {ready}")
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._send(ws, frames)
                await asyncio.wait_for(self._all_answered(), self.drain_timeout_s)
            except websockets.ConnectionClosed as closed:
                self._closed(closed)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        self.stats.seconds = time.monotonic() - start
        return self.stats

    async def _send(self, ws: ClientConnection, frames: Iterator[tuple[float, bytes]]) -> None:
        start = time.monotonic()
        for timestamp, data in frames:
            if self.pace and (wait := start + timestamp - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            message = {"type": "frame", "data": base64.b64encode(data).decode(), "timestamp": timestamp}
            self._sent_at[self.stats.sent] = time.monotonic()
            self.stats.sent += 1
            await ws.send(json.dumps(message))

    async def _all_answered(self) -> None:
        while self.stats.answered + self.stats.errors + self.stats.dropped < self.stats.sent:
            await self._progress.wait()
            self._progress.clear()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self._take(json.loads(message))
        except websockets.ConnectionClosed as closed:
            self._closed(closed)

    def _take(self, answer: Answer) -> None:
        sent = self._sent_at.pop(answer.get("frame", -1), None)
        latency = time.monotonic() - sent if sent is not None else None
        if answer.get("type") == "result":
            self.stats.answered += 1
            self.stats.dropped = answer["dropped_total"]
            if latency is not None:
                self.stats.latencies_s.append(latency)
        elif answer.get("type") == "error":
            self.stats.errors += 1
        self._progress.set()
        self.on_answer(answer, latency)

    def _closed(self, closed: websockets.ConnectionClosed) -> None:
        if closed.rcvd is not None:
            self.stats.close_code, self.stats.close_reason = closed.rcvd.code, closed.rcvd.reason


@dataclass
class PeopleTable:
    """The per-person table `fer-client stream` prints as answers come (at most every ``every_s``)."""

    every_s: float = 1.0
    people: dict[int, Answer] = field(default_factory=dict)
    _printed: float = 0.0

    def update(self, answer: Answer, latency: float | None) -> str | None:
        if answer.get("type") == "error":
            error = answer["error"]
            return f"frame {answer.get('frame')}: error {error['code']}: {error['message']}"
        for face in answer.get("faces", []):
            self.people[face["track_id"]] = {**face, "_t": answer["timestamp_s"]}
        if time.monotonic() - self._printed < self.every_s:
            return None
        self._printed = time.monotonic()
        return self.render(answer, latency)

    def render(self, answer: Answer, latency: float | None) -> str:
        ms = f"{latency * 1000:.0f} ms" if latency is not None else "-"
        head = (
            f"t={answer['timestamp_s']:.1f}s frame {answer['frame']} faces {len(answer['faces'])} "
            f"dropped {answer['dropped_total']} latency {ms}"
        )
        lines = [head, f"  {'person':>6}  {'now':<18} {'smoothed':<18} segment"]
        for track_id, face in sorted(self.people.items()):
            now, smooth, segment = face["expression"], face["smoothed_expression"], face["segment"]
            lines.append(
                f"  {track_id:>6}  {now['label']:<10} {now['probability']:.2f}  "
                f"{smooth['label']:<10} {smooth['probability']:.2f}  "
                f"{segment['label']} since {segment['start_s']:.1f}s (last seen {face['_t']:.1f}s)"
            )
        return "\n".join(lines)
