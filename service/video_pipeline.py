"""The clip pipeline: analyse (decode → detect → track → align) → infer per face → infer per track → assemble.

Clips run on their own thread pool and admission limit, so a long clip never blocks still images.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fermodels.config import ModelConfig
from service.inference.base import ClipOutputs, FloatArray, ImageOutputs, ServedModel, run_batched
from service.inference.postprocess import (
    face_result,
    label_distribution,
    model_info,
    model_warnings,
    top_label,
)
from service.inference.similarity import PromptSet, TextScores
from service.inference.temporal import segments, smooth, weighted_mean
from service.pipeline import PipelineBase
from service.schemas import (
    ClipSummary,
    ExpressionSegment,
    ExpressionShare,
    TimelineFrame,
    TrackedFace,
    TrackPoint,
    TrackResult,
    VideoInfo,
    VideoPredictResponse,
)
from service.video_options import VideoOptions
from service.vision.clip_analysis import (
    AnalysisOptions,
    ClipAnalysis,
    FrameFaces,
    analyse_clip,
    track_clips,
)
from service.vision.tracking import TrackerConfig
from service.vision.video import SamplingPlan, VideoLimits


@dataclass(frozen=True)
class _Results:
    analysis: ClipAnalysis
    faces: ImageOutputs
    text: TextScores
    track_ids: list[int]
    tracks: ClipOutputs | None  # the spatio-temporal model's, when it ran (trained, or include=stt)


@dataclass(frozen=True)
class TrackSmoothing:
    window_s: float
    min_segment_s: float


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
        with self._metrics.time_stage("assemble", timings):
            results = _Results(analysis, faces, text, track_ids, tracks)
            response = self._assemble(results, image_model, video_model, options)
        elapsed = time.perf_counter() - start
        timings["total"] = round(elapsed * 1000.0, 3)
        self._observe_clip(analysis, elapsed)
        self._metrics.observe_expressions(
            _top_labels(results, list(range(analysis.face_count)), image_model.config)
        )
        return response.model_copy(update={"timings_ms": timings})

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

    def _assemble(
        self,
        results: _Results,
        image_model: ServedModel,
        video_model: ServedModel,
        options: VideoOptions,
    ) -> VideoPredictResponse:
        info = results.analysis.info
        return VideoPredictResponse(
            video=VideoInfo(
                container=info.container,
                codec=info.codec,
                width=info.width,
                height=info.height,
                fps=round(info.fps, 3),
                duration_s=round(info.duration_s, 3),
                frames_decoded=info.frames_decoded,
                frames_analysed=info.frames_sampled,
                truncated=info.truncated,
            ),
            model=model_info(image_model, self._text.expression_encoder(image_model.config)),
            video_model=model_info(video_model),
            timeline=timeline(results, image_model.config) if options.include_timeline else None,
            tracks=track_results(results, image_model.config, video_model.config, self._smoothing)
            if options.include_tracks
            else None,
            summary=clip_summary(results, image_model.config),
            timings_ms={},  # filled in once every stage has run
            warnings=_video_warnings(
                image_model.config, video_model.config, info.truncated, results.tracks is not None
            ),
        )

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


def timeline(results: _Results, config: ModelConfig) -> list[TimelineFrame]:
    frames = []
    for frame in results.analysis.frames:
        count = len(frame.detections)
        span = (frame.first_crop, frame.first_crop + count)
        outputs, text = results.faces.rows(*span), results.text.rows(*span)
        faces = [
            TrackedFace(
                **face_result(frame.detections, outputs, text, i, config).model_dump(),
                track_id=frame.track_ids[i],
            )
            for i in range(count)
        ]
        frames.append(
            TimelineFrame(frame_index=frame.index, timestamp_s=round(frame.timestamp_s, 3), faces=faces)
        )
    return frames


def _top_labels(results: _Results, rows: list[int], config: ModelConfig) -> list[str]:
    return [config.labels[int(np.argmax(results.faces.probabilities[row]))] for row in rows]


def dominant(labels: list[str]) -> ExpressionShare:
    if not labels:
        return ExpressionShare(label=None, share=0.0)
    label, count = Counter(labels).most_common(1)[0]
    return ExpressionShare(label=label, share=round(count / len(labels), 4))


def track_results(
    results: _Results, image: ModelConfig, video: ModelConfig, smoothing: TrackSmoothing
) -> list[TrackResult]:
    analysis = results.analysis
    row_to_frame = {f.first_crop + i: (f, i) for f in analysis.frames for i in range(len(f.detections))}
    tracks = []
    for position, track_id in enumerate(results.track_ids):
        rows = analysis.tracks[track_id]
        placed = [row_to_frame[row] for row in rows]
        frames = [frame for frame, _ in placed]
        weights = np.array([float(frame.detections.scores[i]) for frame, i in placed])
        times = np.array([frame.timestamp_s for frame in frames], dtype=np.float64)
        per_frame = results.faces.probabilities[rows]
        overall = weighted_mean(per_frame, weights)
        smoothed = smooth(per_frame, times, weights, smoothing.window_s)
        stt = results.tracks.probabilities[position] if results.tracks is not None else None
        tracks.append(
            TrackResult(
                track_id=track_id,
                first_s=round(frames[0].timestamp_s, 3),
                last_s=round(frames[-1].timestamp_s, 3),
                frame_indices=[frame.index for frame in frames],
                dynamic_expression=top_label(overall, image),
                dynamic_expressions=label_distribution(overall, image),
                dynamic_method=f"{image.name} per-frame distributions, detection-score-weighted mean over "
                f"{len(rows)} frame{'s' if len(rows) != 1 else ''}",
                timeline=_track_timeline(frames, smoothed, image),
                segments=_segments(smoothed, times, image, smoothing.min_segment_s),
                stt_expression=top_label(stt, video) if stt is not None else None,
                stt_expressions=label_distribution(stt, video) if stt is not None else None,
                dominant=dominant(_top_labels(results, rows, image)),
            )
        )
    return tracks


def _track_timeline(frames: list[FrameFaces], smoothed: FloatArray, config: ModelConfig) -> list[TrackPoint]:
    return [
        TrackPoint(
            timestamp_s=round(frame.timestamp_s, 3),
            frame_index=frame.index,
            expression=top_label(row, config),
            expressions=label_distribution(row, config),
        )
        for frame, row in zip(frames, smoothed, strict=True)
    ]


def _segments(
    smoothed: FloatArray, times: npt.NDArray[np.float64], config: ModelConfig, min_segment_s: float
) -> list[ExpressionSegment]:
    return [
        ExpressionSegment(
            label=config.labels[segment.label],
            start_s=round(float(times[segment.start]), 3),
            end_s=round(float(times[segment.stop]), 3),
            frames=segment.stop - segment.start + 1,
            mean_probability=round(segment.mean_probability, 6),
        )
        for segment in segments(smoothed, times, min_segment_s)
    ]


def clip_summary(results: _Results, config: ModelConfig) -> ClipSummary:
    rows = list(range(results.analysis.face_count))
    return ClipSummary(
        people=len(results.track_ids), faces=len(rows), dominant=dominant(_top_labels(results, rows, config))
    )


STT_LEFT_OUT = (
    "model {name!r} serves untrained weights, so this video model's output is left out of tracks "
    "(include=stt shows it, labelled untrained); each track's dynamic_expression comes from the trained "
    "per-frame image model"
)


def _video_warnings(image: ModelConfig, video: ModelConfig, truncated: bool, stt_shown: bool) -> list[str]:
    warnings = model_warnings(image)
    if not video.trained:
        warnings += model_warnings(video) if stt_shown else [STT_LEFT_OUT.format(name=video.name)]
    if truncated:
        warnings.append("analysis stopped at max_frames / max_duration_s or at a damaged part of the clip")
    return warnings
