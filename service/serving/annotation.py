"""The serving side of POST /annotate: the same admission, upload parsing and pipelines as /predict, then
the answer drawn onto the picture (or onto a contact sheet of a clip's analysed frames)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.config import Settings
from service.schemas import FaceResult, PredictQuery, PredictResponse, TimelineFrame, VideoPredictResponse
from service.serving.clip import video_limits
from service.serving.drawing import (
    OutputFormat,
    SheetTile,
    contact_sheet,
    drawn,
    encode,
    evenly_spaced,
    shrunk,
    thumbnail,
)
from service.serving.predict import PredictService
from service.vision.decode import decode_preview
from service.vision.video import ClipReader, SamplingPlan

T = TypeVar("T")


class Annotator:
    """Runs one upload through the predict service and draws its answer, inside the request's admission
    slot (drawing and encoding a picture cost memory like the analysis does)."""

    def __init__(
        self,
        serving: PredictService,
        settings: Settings,
        *,
        image_executor: ThreadPoolExecutor,
        clip_executor: ThreadPoolExecutor,
    ) -> None:
        self._serving, self._settings = serving, settings
        self._image_executor, self._clip_executor = image_executor, clip_executor

    async def annotate(self, data: bytes, options: PredictQuery, fmt: OutputFormat) -> bytes:
        # A clip's sheet is drawn from its timeline, so that is always asked for.
        query = options.model_copy(update={"include": sorted({*options.include, "timeline"})})

        async def draw(answer: PredictResponse | VideoPredictResponse) -> bytes:
            if isinstance(answer, PredictResponse):
                return await self._image(data, answer, fmt)
            return await self._clip(data, answer.video.container, answer, fmt)  # as the analysis sniffed it

        return await self._serving.answer(
            data, query, draw, finish_bytes=self._settings.annotate_reservation_bytes
        )

    async def _image(self, data: bytes, response: PredictResponse, fmt: OutputFormat) -> bytes:
        settings, trained = self._settings, response.model.trained
        return await _offload(
            self._image_executor, render_image, data, response.faces, settings, trained, fmt
        )

    async def _clip(
        self, data: bytes, container: str, response: VideoPredictResponse, fmt: OutputFormat
    ) -> bytes:
        settings, trained = self._settings, response.model.trained
        frames = evenly_spaced(response.timeline or [], settings.annotate_max_frames)
        return await _offload(
            self._clip_executor, render_clip, data, container, frames, settings, trained, fmt
        )


async def _offload(executor: ThreadPoolExecutor, function: Callable[..., T], *args: object) -> T:
    """Decoding and drawing are CPU-bound: keep them off the event loop, on the pool of their kind."""
    return await asyncio.get_running_loop().run_in_executor(executor, lambda: function(*args))


def render_image(
    data: bytes, faces: Sequence[FaceResult], settings: Settings, trained: bool, fmt: OutputFormat
) -> bytes:
    # Decoded again (cheap next to detection), upright as the pipeline saw it, and already shrunk to the
    # picture's size: no full-size copy (a JPEG decodes at a reduced scale).
    preview = decode_preview(data, max_pixels=settings.max_image_pixels, max_side=settings.annotate_max_side)
    return encode(drawn(preview.image, preview.scale, faces, trained=trained), fmt)


def render_clip(
    data: bytes,
    container: str,
    frames: Sequence[TimelineFrame],
    settings: Settings,
    trained: bool,
    fmt: OutputFormat,
) -> bytes:
    tiles = clip_tiles(data, container, frames, settings)
    sheet, _ = shrunk(
        contact_sheet(tiles, trained=trained), settings.annotate_max_side, settings.annotate_max_side
    )
    return encode(sheet, fmt)


def clip_tiles(
    data: bytes, container: str, frames: Sequence[TimelineFrame], settings: Settings
) -> list[SheetTile]:
    """Decode the clip again and keep, shrunk, only the frames the sheet shows (memory stays bounded)."""
    wanted = {frame.frame_index: frame for frame in frames}
    limits = video_limits(settings)
    every_frame = SamplingPlan(
        fps=None, stride=1, max_frames=settings.video_max_decoded_frames, max_duration_s=limits.max_duration_s
    )
    tiles: list[SheetTile] = []
    for decoded in ClipReader(data, container, every_frame, limits):
        if decoded.index in wanted:
            image, scale = thumbnail(decoded.rgb, settings.annotate_tile_width)
            tiles.append(SheetTile(image, scale, wanted.pop(decoded.index)))
        if not wanted:
            break
    return tiles
