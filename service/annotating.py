"""The serving side of POST /annotate: the same admission, upload parsing and pipelines as /predict, then
the answer drawn onto the picture (or onto a contact sheet of a clip's analysed frames)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from starlette.requests import Request

from service.annotate import (
    OutputFormat,
    SheetTile,
    annotated_image,
    contact_sheet,
    encode,
    evenly_spaced,
    thumbnail,
)
from service.config import Settings
from service.routes.predict import media_container
from service.schemas import FaceResult, PredictQuery, TimelineFrame
from service.state import Resources
from service.uploads import read_upload
from service.vision.decode import decode_image
from service.vision.video import ClipReader, SamplingPlan, VideoLimits

T = TypeVar("T")


class Annotator:
    """Runs one upload through the pipelines and returns the annotated picture's bytes."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def annotate(self, request: Request, options: PredictQuery, fmt: OutputFormat) -> bytes:
        resources = self._resources
        async with resources.admission.slot():
            data = await read_upload(request, resources.settings.max_upload_bytes)
            container = media_container(data, options.media)
            if container is None:
                return await self._image(data, options.model, fmt)
            async with resources.video_admission.slot():
                return await self._clip(data, container, options, fmt)

    async def _image(self, data: bytes, model: str | None, fmt: OutputFormat) -> bytes:
        response = await self._resources.pipeline.predict(data, model)
        max_pixels = self._resources.settings.max_image_pixels
        trained = response.model.trained
        return await _offload(
            self._resources.executor, render_image, data, response.faces, max_pixels, trained, fmt
        )

    async def _clip(self, data: bytes, container: str, options: PredictQuery, fmt: OutputFormat) -> bytes:
        # The sheet is drawn from the timeline, so it is always asked for, whatever `include` says.
        video_options = replace(options.video_options(), include_timeline=True)
        response = await self._resources.video_pipeline.predict(data, container, video_options, options.model)
        frames = evenly_spaced(response.timeline or [], self._resources.settings.annotate_max_frames)
        settings, trained = self._resources.settings, response.model.trained
        executor = self._resources.video_executor
        return await _offload(executor, render_clip, data, container, frames, settings, trained, fmt)


async def _offload(executor: ThreadPoolExecutor, function: Callable[..., T], *args: object) -> T:
    """Decoding and drawing are CPU-bound: keep them off the event loop, on the pool of their kind."""
    return await asyncio.get_running_loop().run_in_executor(executor, lambda: function(*args))


def render_image(
    data: bytes, faces: Sequence[FaceResult], max_pixels: int, trained: bool, fmt: OutputFormat
) -> bytes:
    # Decoded again (cheap next to detection) with the pipeline's own decoder, so EXIF rotation matches.
    image = decode_image(data, max_pixels=max_pixels)
    return encode(annotated_image(image.rgb, faces, trained=trained), fmt)


def render_clip(
    data: bytes,
    container: str,
    frames: Sequence[TimelineFrame],
    settings: Settings,
    trained: bool,
    fmt: OutputFormat,
) -> bytes:
    tiles = clip_tiles(data, container, frames, settings)
    return encode(contact_sheet(tiles, trained=trained), fmt)


def clip_tiles(
    data: bytes, container: str, frames: Sequence[TimelineFrame], settings: Settings
) -> list[SheetTile]:
    """Decode the clip again and keep, shrunk, only the frames the sheet shows (memory stays bounded)."""
    wanted = {frame.frame_index: frame for frame in frames}
    limits = VideoLimits(
        settings.video_max_duration_s, settings.video_max_pixels, settings.video_max_decoded_frames
    )
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
