"""The clip pipeline: analyse (decode → detect → track → align) → infer per face → infer per track → assemble.

Clips run on their own thread pool and admission limit, so a long clip never blocks still images.
"""

from __future__ import annotations

import asyncio
import time

from service.batching import run_batched
from service.inference.base import ClipOutputs, ServedModel
from service.inference.similarity import PromptSet
from service.pipeline import PipelineBase
from service.responses import ClipResults, TrackSmoothing, clip_body, clip_response
from service.schemas import VideoPredictResponse
from service.video_options import VideoOptions
from service.vision.clip_analysis import (
    AnalysisOptions,
    ClipAnalysis,
    analyse_clip,
    track_clips,
)
from service.vision.tracking import TrackerConfig
from service.vision.video import SamplingPlan, VideoLimits


class VideoPipeline(PipelineBase):
    """Turns one uploaded clip into a timeline, per-person tracks and a summary."""

    async def predict(
        self,
        data: bytes,
        container: str,
        options: VideoOptions,
        model_name: str | None,
        prompts: tuple[str, ...] = (),
    ) -> VideoPredictResponse:
        caller = self._embed_caller_prompts(prompts)
        try:
            return await self._predict(data, container, options, model_name, caller)
        finally:
            caller.cancel()

    async def _predict(
        self,
        data: bytes,
        container: str,
        options: VideoOptions,
        model_name: str | None,
        caller: asyncio.Task[PromptSet],
    ) -> VideoPredictResponse:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        image_model = await self._inference.served_model(model_name or self._settings.default_model)
        video_model = await self._inference.served_model(self._settings.default_video_model)
        with self._metrics.time_stage("video_analyse", timings):
            analysis = await self._analyse(data, container, options, image_model, video_model)
        with self._metrics.time_stage("infer", timings):
            faces = await self._infer_images(image_model, analysis.image_batch(), analysis.landmark_batch())
        track_ids, tracks = sorted(analysis.tracks), None
        if video_model.config.trained or options.include_stt:
            with self._metrics.time_stage("video_infer", timings):
                track_ids, tracks = await self._infer_tracks(video_model, analysis)
        with self._metrics.time_stage("text", timings):
            text = self._text.score(image_model.config, faces, await caller)
        results = ClipResults(
            analysis,
            faces,
            text,
            track_ids,
            tracks,
            image_model,
            video_model,
            self._text.expression_encoder(image_model.config),
        )
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

    def _analysis_options(self, options: VideoOptions) -> AnalysisOptions:
        s = self._settings
        uses_stride = options.stride is not None and options.fps is None
        plan = SamplingPlan(
            fps=None if uses_stride else (options.fps or s.video_default_fps),
            stride=options.stride,
            max_frames=min(options.max_frames or s.video_max_frames, s.video_max_frames),
            max_duration_s=min(options.max_duration_s or s.video_max_duration_s, s.video_max_duration_s),
        )
        limits = VideoLimits(s.video_max_duration_s, s.video_max_pixels, s.video_max_decoded_frames)
        tracker = TrackerConfig(max_gap_s=s.track_max_gap_s, reid_window_s=s.track_reid_window_s)
        return AnalysisOptions(plan, limits, tracker, s.video_detect_batch, self._selection)

    async def _analyse(
        self, data: bytes, container: str, options: VideoOptions, image: ServedModel, video: ServedModel
    ) -> ClipAnalysis:
        analysed = self._metrics.video_frames.labels("analysed")
        return await self._offload(
            analyse_clip,
            data,
            container,
            self._detector,
            image.config,
            video.config,
            self._analysis_options(options),
            analysed.inc,
        )

    async def _infer_tracks(
        self, model: ServedModel, analysis: ClipAnalysis
    ) -> tuple[list[int], ClipOutputs]:
        track_ids, clips = track_clips(analysis, model.config.clip_length)
        return track_ids, ClipOutputs.concatenate(await run_batched(model, clips, self._inference.infer_clip))

    @property
    def _smoothing(self) -> TrackSmoothing:
        return TrackSmoothing(self._settings.track_smoothing_s, self._settings.track_min_segment_s)

    def _observe_clip(self, analysis: ClipAnalysis, elapsed_s: float) -> None:
        self._metrics.video_frames.labels("decoded").inc(analysis.info.frames_decoded)
        self._metrics.faces.inc(analysis.face_count)  # faces/s on the dashboard counts clips' faces too
        duration = analysis.info.duration_s
        self._metrics.video_duration.observe(duration)
        if duration > 0:
            self._metrics.video_realtime_factor.observe(elapsed_s / duration)
