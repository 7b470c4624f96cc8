"""The clip pipeline: analyse (decode → detect → track → align) → infer per face → infer per track → assemble.

Clips run on their own thread pool and admission limit, so a long clip never blocks still images.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from service.config import Settings
from service.exceptions import InvalidVideo
from service.inference.base import ClipOutputs, ImageOutputs, ServedModel
from service.schemas import PredictQuery, VideoPredictResponse
from service.serving.batching import run_batched
from service.serving.image import PipelineBase
from service.serving.responses import ClipResults, TrackSmoothing, clip_body, clip_response
from service.serving.similarity import PromptSet
from service.vision.clip_analysis import (
    AnalysisOptions,
    ClipAnalysis,
    analyse_clip,
    analyse_windows,
    track_clips,
)
from service.vision.tracking import TrackerConfig
from service.vision.video import ClipInfo, SamplingPlan, VideoLimits


@dataclass(frozen=True)
class ClipRequest:
    """One clip request's choices, converted once from its query and capped by Settings."""

    plan: SamplingPlan
    include_timeline: bool = True
    include_tracks: bool = True
    include_stt: bool = False  # the spatio-temporal model's output even when it is untrained
    limits: VideoLimits | None = None  # a job's own limits; None: the app's clip limits

    @classmethod
    def of(cls, query: PredictQuery, settings: Settings) -> ClipRequest:
        return cls(
            plan=sampling_plan(query, settings),
            include_timeline="timeline" in query.include,
            include_tracks="tracks" in query.include,
            include_stt="stt" in query.include,
        )

    @classmethod
    def for_job(cls, query: PredictQuery, settings: Settings) -> ClipRequest:
        """The same options under a job's limits (long videos), capped by the FER_JOBS_* settings."""
        caps = settings.model_copy(
            update={
                "video_max_frames": settings.jobs_max_frames,
                "video_max_duration_s": settings.jobs_max_duration_s,
                "video_max_decoded_frames": settings.jobs_max_decoded_frames,
            }
        )
        return replace(cls.of(query, caps), limits=video_limits(caps))


def video_limits(settings: Settings) -> VideoLimits:
    """What any decode of an uploaded clip may cost, from the settings (analysis and /annotate alike)."""
    return VideoLimits(
        settings.video_max_duration_s, settings.video_max_pixels, settings.video_max_decoded_frames
    )


def sampling_plan(query: PredictQuery, settings: Settings) -> SamplingPlan:
    """The query's fps or stride (fps wins when both are given), each cap no higher than Settings'."""
    uses_stride = query.stride is not None and query.fps is None
    max_frames, max_duration_s = settings.video_max_frames, settings.video_max_duration_s
    return SamplingPlan(
        fps=None if uses_stride else (query.fps or settings.video_default_fps),
        stride=query.stride,
        max_frames=min(query.max_frames or max_frames, max_frames),
        max_duration_s=min(query.max_duration_s or max_duration_s, max_duration_s),
    )


def tracker_config(settings: Settings) -> TrackerConfig:
    """How people are followed across frames: clips and live streams alike."""
    return TrackerConfig(max_gap_s=settings.track_max_gap_s, reid_window_s=settings.track_reid_window_s)


def track_smoothing(settings: Settings) -> TrackSmoothing:
    """How a person's expressions are smoothed and cut into segments: clips and live streams alike."""
    return TrackSmoothing(settings.track_smoothing_s, settings.track_min_segment_s)


@dataclass(frozen=True)
class LongAnalysis:
    """What a job's analysis reports to and is steered by: progress after each window, a stop flag read
    between chunks (cancellation), and the stage timings it fills."""

    on_window: Callable[[ClipInfo], Awaitable[None]]
    stop: threading.Event
    timings: dict[str, float]


def without_embeddings(outputs: ImageOutputs) -> ImageOutputs:
    return replace(outputs, embeddings=outputs.embeddings[:, :0])


class VideoPipeline(PipelineBase):
    """Turns one uploaded clip into a timeline, per-person tracks and a summary."""

    # The limits and the tracker's and smoother's settings are the app's, not a request's: built once.
    @cached_property
    def _limits(self) -> VideoLimits:
        return video_limits(self._settings)

    @cached_property
    def _tracker(self) -> TrackerConfig:
        return tracker_config(self._settings)

    @cached_property
    def _smoothing(self) -> TrackSmoothing:
        return track_smoothing(self._settings)

    async def predict(
        self,
        data: bytes,
        container: str,
        options: ClipRequest,
        model_name: str | None,
        prompts: tuple[str, ...] = (),
    ) -> VideoPredictResponse:
        async with self._caller_prompts(prompts, model_name) as caller:
            return await self._predict(data, container, options, model_name, caller)

    async def _predict(
        self,
        data: bytes,
        container: str,
        options: ClipRequest,
        model_name: str | None,
        caller: asyncio.Task[PromptSet],
    ) -> VideoPredictResponse:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        image_model, video_model = await self._models(model_name)
        with self._metrics.time_stage("video_analyse", timings):
            analysis = await self._analyse(data, container, options, image_model, video_model)
        refuse_without_frames(analysis.info)
        with self._metrics.time_stage("infer", timings):
            faces = await self._infer_images(image_model, analysis.image_batch(), analysis.landmark_batch())
        results = await self._results(analysis, faces, options, (image_model, video_model), caller, timings)
        with self._metrics.time_stage("assemble", timings):
            body = clip_body(
                results,
                include_timeline=options.include_timeline,
                include_tracks=options.include_tracks,
                smoothing=self._smoothing,
            )
        elapsed = time.perf_counter() - start
        timings["total"] = round(elapsed * 1000.0, 3)
        self._observe_clip(analysis, elapsed)
        self._metrics.observe_expressions(results.top_labels)
        return clip_response(results, body, timings)

    async def analyse_long(
        self,
        source: Path,
        container: str,
        options: ClipRequest,
        model_name: str | None,
        prompts: tuple[str, ...],
        job: LongAnalysis,
    ) -> ClipResults:
        """A long video (a job) as a stream of windows, each inferred as soon as it is analysed and kept
        only as small per-face rows: the same analysis and inference as a clip, in memory bounded by the
        window and the number of people, not by the video's length."""
        async with self._caller_prompts(prompts, model_name) as caller:
            models = await self._models(model_name)
            analysis, faces = await self._stream(source, container, options, models, job)
            refuse_without_frames(analysis.info)
            return await self._results(analysis, faces, options, models, caller, job.timings)

    async def _stream(
        self,
        source: Path,
        container: str,
        options: ClipRequest,
        models: tuple[ServedModel, ServedModel],
        job: LongAnalysis,
    ) -> tuple[ClipAnalysis, ImageOutputs]:
        image, video = models
        # Crops are kept for the video model only when it will run: an untrained one is left out unless
        # asked for, and its sample (64 crops a person) is what grows with the number of people.
        runs_video = video.config.trained or options.include_stt
        sample = 4 * video.config.clip_length if runs_video else 0
        windows = analyse_windows(
            source,
            container,
            self._detector,
            image.config,
            video.config,
            self._analysis_options(options),
            self._settings.jobs_window_frames,
            self._metrics.video_frames.labels("analysed").inc,
            job.stop.is_set,
        )
        merged: ClipAnalysis | None = None
        outputs: list[ImageOutputs] = []
        while (window := await self._offload(next, windows, None)) is not None:
            with self._metrics.time_stage("infer", job.timings):
                faces = await self._infer_images(image, window.image_batch(), window.landmark_batch())
            outputs.append(without_embeddings(faces))  # no response uses them; they would grow with time
            merged = merged or ClipAnalysis(info=window.info)
            merged.absorb(window, sample)
            await job.on_window(window.info)
        assert merged is not None  # the stream always yields its last window
        self._metrics.video_frames.labels("decoded").inc(merged.info.frames_decoded)
        return merged, ImageOutputs.concatenate(outputs)

    async def _models(self, model_name: str | None) -> tuple[ServedModel, ServedModel]:
        image_model = await self._inference.served_model(model_name or self._settings.default_model)
        return image_model, await self._inference.served_model(self._settings.default_video_model)

    async def _results(
        self,
        analysis: ClipAnalysis,
        faces: ImageOutputs,
        options: ClipRequest,
        models: tuple[ServedModel, ServedModel],
        caller: asyncio.Task[PromptSet],
        timings: dict[str, float],
    ) -> ClipResults:
        """Per-track inference and text scores: what a clip's response is built from, clip or job alike."""
        image_model, video_model = models
        track_ids, tracks = sorted(analysis.tracks), None
        if video_model.config.trained or options.include_stt:
            with self._metrics.time_stage("video_infer", timings):
                track_ids, tracks = await self._infer_tracks(video_model, analysis)
        with self._metrics.time_stage("text", timings):
            text = self._text.score(image_model.config, faces, await caller)
        return ClipResults(
            analysis,
            faces,
            text,
            track_ids,
            tracks,
            image_model,
            video_model,
            self._text.expression_encoder(image_model.config),
        )

    @property
    def smoothing(self) -> TrackSmoothing:
        return self._smoothing

    def _analysis_options(self, options: ClipRequest) -> AnalysisOptions:
        limits = options.limits or self._limits
        settings = self._settings
        return AnalysisOptions(
            options.plan,
            limits,
            self._tracker,
            settings.video_detect_batch,
            self._selection,
            settings.video_detect_pixels,
        )

    async def _analyse(
        self, data: bytes, container: str, options: ClipRequest, image: ServedModel, video: ServedModel
    ) -> ClipAnalysis:
        analysed = self._metrics.video_frames.labels("analysed")
        abandoned = threading.Event()  # the thread stops at its next chunk once nobody awaits it
        try:
            return await self._offload(
                analyse_clip,
                data,
                container,
                self._detector,
                image.config,
                video.config,
                self._analysis_options(options),
                analysed.inc,
                abandoned.is_set,
            )
        except asyncio.CancelledError:
            abandoned.set()
            raise

    async def _infer_tracks(
        self, model: ServedModel, analysis: ClipAnalysis
    ) -> tuple[list[int], ClipOutputs]:
        track_ids, clips = track_clips(analysis, model.config.clip_length)
        return track_ids, ClipOutputs.concatenate(await run_batched(model, clips, self._inference.infer_clip))

    def _observe_clip(self, analysis: ClipAnalysis, elapsed_s: float) -> None:
        self._metrics.video_frames.labels("decoded").inc(analysis.info.frames_decoded)
        self._metrics.faces.inc(analysis.face_count)  # faces/s on the dashboard counts clips' faces too
        duration = analysis.info.duration_s
        self._metrics.video_duration.observe(duration)
        if duration > 0:
            self._metrics.video_realtime_factor.observe(elapsed_s / duration)


def refuse_without_frames(info: ClipInfo) -> None:
    """Refuse a clip of which no frame decoded, before anything runs on it. Some containers (a WebM cut
    inside its first cluster, an AVI whose movi list is empty) open cleanly and end without a frame or an
    FFmpeg error, where MP4/MKV cut the same way fail to open: either way the clip is unusable, and every
    container must say so alike."""
    if info.frames_decoded == 0:
        raise InvalidVideo("no frame of the clip could be decoded: it is cut short or empty")
