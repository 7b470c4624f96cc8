"""GET /v1/stream against the real gateway under uvicorn (the server `python -m service` runs), the real local
Triton and real MTCNN, fed real frames of OpenCV's Megamind.avi and a real group photo."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from devstack.stack import Gateway, gateway_settings, start_gateway
from fer_client.stream import Player, stream_url, video_frames
from service.launcher.triton_local import LocalTriton

SECONDS = 6.0  # of Megamind analysed: 30 frames at 5 fps


@pytest.fixture(scope="module")
def stream_gateway(triton: LocalTriton) -> Iterator[Gateway]:
    """A gateway whose slow-reader bounds are short enough for a test to see them act."""
    settings = gateway_settings(triton, stream_send_queue=2, write_timeout_s=3.0, stream_max_fps=60)
    running = start_gateway(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def megamind_frames(media: Path) -> list[tuple[float, bytes]]:
    frames = video_frames(str(media / "Megamind.avi"), fps=5)
    return [(t, data) for t, data in frames if t < SECONDS]


def frame_message(timestamp: float, data: bytes) -> str:
    return json.dumps({"type": "frame", "data": base64.b64encode(data).decode(), "timestamp": timestamp})


def lockstep(url: str, frames: list[tuple[float, bytes]]) -> list[dict[str, Any]]:
    """Each frame sent once the previous one is answered: every frame is analysed."""
    with connect(stream_url(url), open_timeout=30, close_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        answers = []
        for timestamp, data in frames:
            ws.send(frame_message(timestamp, data))
            answers.append(json.loads(ws.recv(timeout=60)))
    return answers


def stream_metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not exported")


def test_megamind_keeps_one_track_id_per_person_across_frames(
    stream_gateway: Gateway, megamind_frames: list[tuple[float, bytes]], media: Path
) -> None:
    answers = lockstep(stream_gateway.url, megamind_frames)
    assert [a["type"] for a in answers] == ["result"] * len(megamind_frames) and len(answers) >= 29
    assert all(a["dropped_total"] == 0 for a in answers)  # lockstep: nothing came during an analysis
    with_faces = [a for a in answers if a["faces"]]
    assert len(with_faces) >= 0.8 * len(answers), "Megamind's face is on screen for most of the clip"
    ids = [face["track_id"] for a in with_faces for face in a["faces"]]
    main, count = Counter(ids).most_common(1)[0]
    assert count >= 0.8 * len(with_faces)  # one person, one id, frame after frame
    assert len(set(ids)) <= 3
    face = next(face for face in with_faces[-1]["faces"] if face["track_id"] == main)
    assert (
        face["segment"]["start_s"] <= face["segment"]["end_s"] == pytest.approx(with_faces[-1]["timestamp_s"])
    )
    assert face["smoothed_expression"]["label"] == face["segment"]["label"]
    assert sum(s["probability"] for s in face["smoothed_expressions"]) == pytest.approx(1.0, abs=1e-3)
    # The clip path, over the same seconds at the same rate, finds the same people.
    clip = httpx.post(
        f"{stream_gateway.url}/predict",
        params={"fps": 5, "max_duration_s": SECONDS},
        content=(media / "Megamind.avi").read_bytes(),
        headers={"Content-Type": "video/x-msvideo"},
        timeout=120,
    ).json()
    assert len(set(ids)) == pytest.approx(clip["summary"]["people"], abs=1)


def test_a_client_faster_than_analysis_gets_the_newest_frame_and_a_dropped_count(
    stream_gateway: Gateway, megamind_frames: list[tuple[float, bytes]]
) -> None:
    player = Player(stream_gateway.url, options={"fps": 60}, pace=False, drain_timeout_s=60)
    stats = asyncio.run(asyncio.wait_for(player.play(iter(megamind_frames)), 120))
    assert stats.close_code is None and stats.errors == 0
    assert stats.dropped > 0 and stats.answered < stats.sent
    assert stats.answered + stats.dropped == stats.sent  # every frame answered or counted as dropped
    # Never a backlog: no answer waits for more than a few analyses, however fast the frames came.
    assert max(stats.latencies_s) < 10.0


def test_a_client_that_stops_reading_is_dropped_and_frees_its_stream(
    stream_gateway: Gateway, megamind_frames: list[tuple[float, bytes]]
) -> None:
    """A client that keeps sending but never reads: its answers fill the socket, then the send queue
    (FER_STREAM_SEND_QUEUE, 2 here); the stream is closed (4408 slow_reader, within the write timeout) and
    its slot and memory come back while the client still holds its end open."""
    address = httpx.URL(stream_gateway.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(30)
    sock.connect((address.host, address.port))
    opened = stream_metric(stream_gateway.url, "fer_streams_open")
    analysed_key = 'fer_stream_frames_total{kind="analysed"}'
    analysed_before = stream_metric(stream_gateway.url, analysed_key)
    closed_early = False
    with connect(
        stream_url(stream_gateway.url), sock=sock, max_queue=1, open_timeout=30, close_timeout=1
    ) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"  # the last message this client reads
        assert stream_metric(stream_gateway.url, "fer_streams_open") == opened + 1
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and stream_metric(stream_gateway.url, "fer_streams_open") > opened:
            timestamp, data = megamind_frames[int(time.monotonic() * 10) % len(megamind_frames)]
            try:
                ws.send(frame_message(timestamp, data))
            except (ConnectionClosed, OSError):
                closed_early = True  # the server cut the socket: it is closed either way
            time.sleep(0.1)
        analysed = stream_metric(stream_gateway.url, analysed_key) - analysed_before
    assert stream_metric(stream_gateway.url, "fer_streams_open") == opened, "the unread stream is still open"
    assert analysed > 2, "it was answered until the socket and the 2-answer queue were full"
    print(f"closed after {analysed:.0f} analysed frames; the client saw its socket fail: {closed_early}")
