"""Every response body is built here: model outputs + detections → per-face results (labels in canonical
order), model info, and a clip's timeline, tracks and summary. The pipelines compute; this module words."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import numpy.typing as npt

from fermodels.contract import EvaluationMetrics, ModelConfig, TextEncoderConfig, canonical_order, prompts_for
from service.arrays import FloatArray
from service.detection.base import Detections
from service.inference.base import ClipOutputs, ImageOutputs, ServedModel
from service.schemas import (
    LANDMARK_NAMES,
    Box,
    ClipSummary,
    CropInfo,
    ExpressionSegment,
    ExpressionShare,
    FaceResult,
    LabelScore,
    Landmarks,
    ModelInfo,
    ModelMetrics,
    Point,
    TextEncoderInfo,
    TextSimilarity,
    TimelineFrame,
    TrackedFace,
    TrackPoint,
    TrackResult,
    VideoInfo,
    VideoPredictResponse,
)
from service.serving.similarity import TextScores
from service.serving.temporal import segments, smooth, weighted_average, weighted_mean
from service.vision.clip_analysis import ClipAnalysis, FrameFaces

# Pixels to 1/100 px and scores to 6 decimals: more digits are noise and only bloat the JSON.
PIXEL_DECIMALS, SCORE_DECIMALS = 2, 6


def _px(value: float) -> float:
    return round(float(value), PIXEL_DECIMALS)


def _score(value: float) -> float:
    return round(float(value), SCORE_DECIMALS)


UNTRAINED_WARNING = (
    "model {name!r} serves untrained weights ({weights}): its outputs (expression probabilities{text}) "
    "are NOT predictions; use them only to test the plumbing"
)


NO_TEXT_WARNING = (
    "model {name!r} has no text side: text_similarity is zero-shot (method 'conse': the face's expression "
    "probabilities mix the prompts' text embeddings), not a trained image-text match"
)


def label_distribution(probabilities: FloatArray, config: ModelConfig) -> list[LabelScore]:
    """One face's probabilities as (label, probability) pairs in canonical label order."""
    return [
        LabelScore(label=config.labels[i], probability=_score(probabilities[i]))
        for i in canonical_order(config.labels)
    ]


def text_similarities(scores: TextScores, index: int, config: ModelConfig) -> list[TextSimilarity]:
    """One face's scores: the expression prompts in canonical label order, then the caller's in theirs."""
    prompts = config.prompts or prompts_for(config.labels)
    fixed = [
        TextSimilarity(
            label=config.labels[i],
            prompt=prompts[i],
            score=_score(scores.expression[index, i]),
            method=scores.expression_method,
            encoder=scores.expression_encoder,
        )
        for i in canonical_order(config.labels)
    ]
    caller = [
        TextSimilarity(
            label=None,
            prompt=prompt,
            score=_score(scores.caller[index, j]),
            source="caller",
            method=scores.caller_method,
            encoder=scores.caller_encoder,
        )
        for j, prompt in enumerate(scores.caller_prompts)
    ]
    return fixed + caller


def top_label(probabilities: FloatArray, config: ModelConfig) -> LabelScore:
    """The most probable label of one distribution (a face's or a track's)."""
    best = int(np.argmax(probabilities))
    return LabelScore(label=config.labels[best], probability=_score(probabilities[best]))


def face_result(
    detections: Detections, outputs: ImageOutputs, text: TextScores, index: int, config: ModelConfig
) -> FaceResult:
    probabilities = outputs.probabilities[index]
    x1, y1, x2, y2 = (_px(v) for v in detections.boxes[index])
    points = detections.landmarks[index]
    return FaceResult(
        box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
        landmarks=Landmarks(
            **{name: Point(x=_px(points[i, 0]), y=_px(points[i, 1])) for i, name in enumerate(LANDMARK_NAMES)}
        ),
        detection_score=_score(detections.scores[index]),
        expression=top_label(probabilities, config),
        expressions=label_distribution(probabilities, config),
        text_similarity=text_similarities(text, index, config),
        **affect_of(outputs, index, config),
    )


def affect_of(outputs: ImageOutputs, index: int, config: ModelConfig) -> dict[str, float]:
    """The face's valence / arousal, only for a model that regresses them (none is ever invented)."""
    return named_affect(outputs.affect[index], config)


def face_results(
    detections: Detections, outputs: ImageOutputs, text: TextScores, config: ModelConfig
) -> list[FaceResult]:
    return [face_result(detections, outputs, text, i, config) for i in range(len(detections))]


def model_info(model: ServedModel, text_encoder: str = "", caller_encoder: str = "") -> ModelInfo:
    """``text_encoder``: the encoder of the baked-in expression prompts a classifier is scored against;
    ``caller_encoder``: the Triton text encoder that embeds caller prompts (a CLIP model names its own)."""
    config = model.config
    order = canonical_order(config.labels)
    prompts = config.prompts or (prompts_for(config.labels) if config.task == "image" else ())
    return ModelInfo(
        name=config.name,
        version=model.version,
        architecture=config.architecture,
        trained=config.trained,
        weights=config.weights,
        accuracy=config.accuracy,
        dataset=config.dataset,
        metrics=model_metrics(config.metrics),
        inputs=["face_crop", "landmarks"] if config.num_landmarks else ["face_crop"],
        license=config.license,
        task=config.task,
        input_size=config.input_size,
        clip_length=config.clip_length,
        labels=[config.labels[i] for i in order],
        prompts=[prompts[i] for i in order] if prompts else [],
        text_encoder=config.text_encoder or text_encoder,
        text_similarity_method=similarity_method(config),
        clip=config.is_clip,
        caller_prompt_encoder=config.text_encoder if config.is_clip else caller_encoder,
        max_batch_size=model.max_batch_size,
        affect_outputs=list(config.affect_outputs),
        crop=crop_info(config),
    )


def text_encoder_info(config: TextEncoderConfig) -> TextEncoderInfo:
    return TextEncoderInfo(
        encoder=config.encoder,
        dim=config.dim,
        max_tokens=config.max_tokens,
        weights=config.weights,
        license=config.license,
    )


def model_metrics(metrics: EvaluationMetrics | None) -> ModelMetrics | None:
    if metrics is None:
        return None
    return ModelMetrics(
        data=metrics.data,
        num_samples=metrics.num_samples,
        war=metrics.war,
        uar=metrics.uar,
        per_class_recall=dict(metrics.per_class_recall),
    )


def crop_info(config: ModelConfig) -> CropInfo:
    if config.crop_mode == "box":
        steps = [
            "the detector's box as integers, no margin, no alignment, stretched to a square",
            "anti-aliased",
        ]
    else:
        steps = ["5-point similarity warp (rotation removed)", "anti-aliased"]
    steps += ["grey (OpenCV BT.601 on uint8)"] if config.crop_color == "gray" else []
    steps += [f"cut at {config.crop_size} px"]
    steps += ["fed to the weights as BGR"] if config.channel_order == "bgr" else []
    steps += [f"resized to {config.input_size} px"] if config.crop_size != config.input_size else []
    steps += ["averaged with its mirror image"] if config.tta == "flip" else []
    return CropInfo(
        method=", ".join(steps),
        window=list(config.crop_window),
        color=config.crop_color,
        cut_size=config.crop_size,
        test_time_augmentation=config.tta,
    )


def similarity_method(config: ModelConfig) -> Literal["cosine", "conse", "clip", "none"]:
    if config.task != "image":
        return "none"
    if config.is_clip:
        return "clip"
    return "cosine" if config.has_text_side else "conse"


def model_warnings(config: ModelConfig) -> list[str]:
    """Untrained weights, and a classifier's zero-shot text similarity (video models have no faces' text)."""
    text = ", text similarities" if config.has_text_side else ""
    untrained = UNTRAINED_WARNING.format(name=config.name, weights=config.weights, text=text)
    warnings = [] if config.trained else [untrained]
    if not config.has_text_side and config.task == "image":
        warnings.append(NO_TEXT_WARNING.format(name=config.name))
    return warnings


# ----------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipResults:
    """Everything a clip's response is built from, once every stage has run."""

    analysis: ClipAnalysis
    faces: ImageOutputs
    text: TextScores
    track_ids: list[int]
    tracks: ClipOutputs | None  # the spatio-temporal model's, when it ran (trained, or include=stt)
    image_model: ServedModel
    video_model: ServedModel
    text_encoder: str  # what embedded the image model's expression prompts

    @cached_property
    def top_labels(self) -> list[str]:
        """Each face row's top label, computed once (summary, tracks and the expression metric use it)."""
        labels = self.image_model.config.labels
        return [labels[int(row.argmax())] for row in self.faces.probabilities]


@dataclass(frozen=True)
class TrackSmoothing:
    window_s: float
    min_segment_s: float


@dataclass(frozen=True)
class ClipBody:
    """The parts of a clip's response that cost something to build (timed as the "assemble" stage)."""

    timeline: list[TimelineFrame] | None
    tracks: list[TrackResult] | None
    summary: ClipSummary


def clip_body(
    results: ClipResults, *, include_timeline: bool, include_tracks: bool, smoothing: TrackSmoothing
) -> ClipBody:
    image, video = results.image_model.config, results.video_model.config
    return ClipBody(
        timeline=timeline(results, image) if include_timeline else None,
        tracks=track_results(results, image, video, smoothing) if include_tracks else None,
        summary=clip_summary(results),
    )


def clip_response(results: ClipResults, body: ClipBody, timings_ms: dict[str, float]) -> VideoPredictResponse:
    """Built last, once every stage (and the total) has been timed."""
    info, image, video = results.analysis.info, results.image_model, results.video_model
    return VideoPredictResponse(
        video=VideoInfo(
            container=info.container,
            codec=info.codec,
            width=info.width,
            height=info.height,
            fps=round(info.fps, 3),
            duration_s=round(info.duration_s, 3),
            frames_decoded=info.frames_decoded,
            frames_analysed=info.frames_analysed,
            truncated=info.truncated,
        ),
        model=model_info(image, results.text_encoder),
        video_model=model_info(video),
        timeline=body.timeline,
        tracks=body.tracks,
        summary=body.summary,
        timings_ms=timings_ms,
        warnings=_video_warnings(image.config, video.config, info.truncated, results.tracks is not None),
    )


def timeline(results: ClipResults, config: ModelConfig) -> list[TimelineFrame]:
    return list(timeline_frames(results, config))


def timeline_frames(results: ClipResults, config: ModelConfig) -> Iterator[TimelineFrame]:
    """The timeline one frame at a time (a job writes a long video's to disk as it goes)."""
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
        yield TimelineFrame(frame_index=frame.index, timestamp_s=round(frame.timestamp_s, 3), faces=faces)


def dominant(labels: list[str]) -> ExpressionShare:
    if not labels:
        return ExpressionShare(label=None, share=0.0)
    label, count = Counter(labels).most_common(1)[0]
    return ExpressionShare(label=label, share=round(count / len(labels), 4))


def track_results(
    results: ClipResults, image: ModelConfig, video: ModelConfig, smoothing: TrackSmoothing
) -> list[TrackResult]:
    analysis = results.analysis
    tracks = []
    for position, track_id in enumerate(results.track_ids):
        rows = analysis.tracks[track_id]
        placed = [
            (analysis.frames[position], face) for position, face in (analysis.face_places[r] for r in rows)
        ]
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
                dominant=dominant([results.top_labels[row] for row in rows]),
                **track_affect(results.faces, rows, weights, image),
            )
        )
    return tracks


def track_affect(
    faces: ImageOutputs, rows: list[int], weights: npt.NDArray[np.float64], config: ModelConfig
) -> dict[str, float]:
    """A person's valence / arousal over the clip: the per-frame values' average with the expressions'
    weights, not renormalised (they are not a distribution); only for a model that regresses them."""
    if not config.affect_outputs:
        return {}
    return named_affect(weighted_average(faces.affect[rows], weights), config)


def named_affect(values: FloatArray, config: ModelConfig) -> dict[str, float]:
    """One face's (or track's) affect values by name, for the model's ``affect_outputs`` (none: {})."""
    return {name: round(float(value), 4) for name, value in zip(config.affect_outputs, values, strict=True)}


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


def clip_summary(results: ClipResults) -> ClipSummary:
    labels = results.top_labels
    return ClipSummary(people=len(results.track_ids), faces=len(labels), dominant=dominant(labels))


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
