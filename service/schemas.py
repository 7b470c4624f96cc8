"""The API contract: request options, responses and the error envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

EXAMPLES_DIR = Path(__file__).parent / "examples"


def _add_predict_example(schema: dict[str, Any]) -> None:
    """A real response (messi5.jpg, trained mini-Xception) for /docs; read when the schema is built."""
    example = json.loads((EXAMPLES_DIR / "predict_response.json").read_text(encoding="utf-8"))
    schema["examples"] = [example]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())


class PredictQuery(BaseModel):
    """Query parameters of /predict; video options are ignored for still images."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # Triton's model names are folder names; anything else is refused before it can be echoed in an error.
    model: str | None = Field(
        None,
        description="Image model to use (a name from GET /v1/models); default from settings.",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
    )
    media: Literal["auto", "image", "video"] = Field(
        "auto",
        description="auto: clip or image by content; image: first frame only (e.g. of an animated GIF).",
    )
    fps: float | None = Field(None, gt=0, le=60, description="Clip frames analysed per second.")
    stride: int | None = Field(None, ge=1, description="Analyse every n-th decoded frame (instead of fps).")
    max_frames: int | None = Field(None, ge=1, description="Most frames to analyse (capped by settings).")
    max_duration_s: float | None = Field(
        None, gt=0, description="Analyse only the first seconds of the clip."
    )
    include: list[Literal["timeline", "tracks", "stt"]] = Field(
        ["timeline", "tracks"],
        description="Which clip outputs to return (the summary is always returned). `stt`: also each "
        "track's output of the spatio-temporal model when it is untrained (a trained one is always shown).",
    )
    prompts: list[str] = Field(
        [],
        description="Your own texts to score every face against (repeat the parameter), next to the fixed "
        "expression prompts; limits: FER_TEXT_MAX_PROMPTS, FER_TEXT_MAX_PROMPT_CHARS.",
        examples=[["a person smiling broadly"]],
    )


class ErrorDetail(_Schema):
    code: str = Field(description="Stable machine-readable error code.", examples=["invalid_image"])
    message: str = Field(description="Human-readable explanation.", examples=["image data is truncated"])


class ErrorResponse(_Schema):
    error: ErrorDetail


class Box(_Schema):
    x1: float = Field(description="Left edge, pixels.", examples=[226.7])
    y1: float = Field(description="Top edge, pixels.", examples=[93.9])
    x2: float = Field(description="Right edge, pixels.", examples=[254.2])
    y2: float = Field(description="Bottom edge, pixels.", examples=[132.5])


class Point(_Schema):
    x: float
    y: float


class Landmarks(_Schema):
    """MTCNN's 5 points in image pixels; left/right as seen in the image."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class LabelScore(_Schema):
    label: str = Field(description="Canonical expression label.", examples=["happiness"])
    probability: float = Field(ge=0.0, le=1.0, examples=[0.83])


class TextSimilarity(_Schema):
    label: str | None = Field(
        description="Expression the prompt describes; null for a caller's own prompt.", examples=["happiness"]
    )
    prompt: str = Field(examples=["a photo of a person making a happy facial expression."])
    score: float = Field(
        description="Cosine similarity of the face's and the prompt's embeddings, in [-1, 1]."
    )
    source: Literal["expression", "caller"] = Field(
        "expression", description="expression: a fixed prompt of the model's labels; caller: from prompts=."
    )
    method: Literal["cosine", "conse", "clip"] = Field(
        "cosine",
        description="cosine: the model's own image embedding against the prompt (a model with a text side); "
        "conse: zero-shot, the face's text-space embedding is the probability-weighted mean of its class "
        "prompts' embeddings (ConSE, Norouzi et al., ICLR 2014); clip: a CLIP image tower's embedding "
        "against the prompt embedded by the same CLIP's text tower (true image-text cosine).",
    )
    encoder: str = Field("", description="Text encoder that embedded the prompt.")


class FaceResult(_Schema):
    box: Box
    landmarks: Landmarks
    detection_score: float = Field(ge=0.0, le=1.0, description="MTCNN face probability.")
    expression: LabelScore = Field(description="Most probable expression.")
    expressions: list[LabelScore] = Field(description="Full distribution in canonical label order.")
    text_similarity: list[TextSimilarity] = Field(
        description="Similarity of the face embedding to the text embedding of each expression prompt."
    )
    valence: float | None = Field(
        None,
        description="Valence (unpleasant -1 to pleasant +1) as the model regresses it, unclamped; null when "
        "the model has no valence output (see model.affect_outputs).",
    )
    arousal: float | None = Field(
        None,
        description="Arousal (calm -1 to excited +1) as the model regresses it, unclamped; null when the "
        "model has no arousal output.",
    )


class ImageInfo(_Schema):
    width: int = Field(examples=[548])
    height: int = Field(examples=[342])
    format: str = Field(description="Container format detected from the bytes.", examples=["JPEG"])


class CropInfo(_Schema):
    """How the face crops this model saw were cut (its training geometry, from its config.pbtxt)."""

    method: str = Field(
        description="The cropping steps, in words.",
        examples=[
            "5-point similarity warp (rotation removed), anti-aliased, grey (OpenCV BT.601), cut at 64 px"
        ],
    )
    window: list[float] = Field(
        description="Crop window around the 5 landmarks: centre x, centre y, side, in ArcFace-112 template "
        "units (55.5, 55.5, 112 is ArcFace's own crop).",
        examples=[[57.0, 61.7, 98.0]],
    )
    color: Literal["rgb", "gray"]
    cut_size: int = Field(description="Side the face is cut at (the training images' resolution).")
    test_time_augmentation: Literal["none", "flip"] = Field(
        description="'flip': each face's numbers are the mean over it and its mirror image."
    )


class ModelMetrics(_Schema):
    """What `python -m fermodels evaluate` measured for the served weights (recorded at export)."""

    data: str = Field(description="Dataset and split evaluated on.", examples=["rafdb test"])
    num_samples: int
    war: float = Field(description="Weighted average recall (accuracy).")
    uar: float = Field(description="Unweighted average recall: the mean of the per-class recalls.")
    per_class_recall: dict[str, float | None] = Field(
        description="Recall of each label (the model's label order); null: no sample of that label."
    )


class ModelInfo(_Schema):
    name: str = Field(examples=["fer_former"])
    version: str = Field(examples=["1"])
    architecture: str = Field(examples=["fer_former"])
    trained: bool = Field(description="False: weights are not trained and outputs are not predictions.")
    weights: str = Field(description="Provenance of the served weights.")
    accuracy: str = Field(description="Measured accuracy and on which data, or 'not measured'.")
    dataset: str = Field("", description="What the weights were trained on; empty when untrained or ported.")
    metrics: ModelMetrics | None = Field(
        None, description="Evaluation of exactly these weights (WAR, UAR, per-class recall); null if none."
    )
    inputs: list[str] = Field(
        default_factory=lambda: ["face_crop"],
        description="What the gateway sends per face: the crop, and the 5 landmarks for landmark models.",
    )
    license: str
    task: Literal["image", "video"] = Field(description="image: one face crop; video: a sequence of crops.")
    input_size: int = Field(description="Side of the aligned square face crop fed to the model.")
    clip_length: int = Field(description="Face crops per sequence (video models); 1 for image models.")
    labels: list[str] = Field(description="The model's labels in canonical order.")
    prompts: list[str] = Field(description="Text prompts behind text_similarity, in label order.")
    text_encoder: str = Field(description="Encoder that produced the prompt embeddings.")
    text_similarity_method: Literal["cosine", "conse", "clip", "none"] = Field(
        "cosine",
        description="How the expression prompts are scored: cosine (the model's text side) or conse "
        "(zero-shot from the expression probabilities), caller prompts then by conse; clip: a CLIP image "
        "tower, expression and caller prompts alike by true cosine with its own text tower's embeddings. "
        "none: a video model, whose per-track output has no faces to score.",
    )
    clip: bool = Field(False, description="A CLIP image tower (text_similarity_method 'clip').")
    caller_prompt_encoder: str = Field(
        "",
        description="The Triton text encoder that embeds this model's caller prompts (prompts=): a CLIP "
        "model's own text tower, else the deployment's text encoder (FER_TEXT_ENCODER_MODEL).",
    )
    max_batch_size: int
    affect_outputs: list[str] = Field(
        default_factory=list,
        description="Continuous affect the model regresses besides its expressions (valence, arousal); "
        "empty for a model without them, whose faces then carry none.",
    )
    crop: CropInfo = Field(description="The crop and augmentation that produced this model's numbers.")


class PredictResponse(_Schema):
    """The answer for a still image."""

    model_config = ConfigDict(frozen=True, protected_namespaces=(), json_schema_extra=_add_predict_example)

    media: Literal["image"] = "image"
    image: ImageInfo
    model: ModelInfo
    faces: list[FaceResult]
    timings_ms: dict[str, float] = Field(
        description="Wall time per pipeline stage (decode, detect, align, infer, assemble) and total."
    )
    warnings: list[str] = Field(default_factory=list)


class VideoInfo(_Schema):
    container: str = Field(examples=["AVI"])
    codec: str = Field(examples=["mpeg4"])
    width: int
    height: int
    fps: float = Field(description="Average frame rate the container declares.")
    duration_s: float
    frames_decoded: int
    frames_analysed: int
    truncated: bool = Field(description="True when analysis stopped at max_frames / max_duration_s.")


class TrackedFace(FaceResult):
    track_id: int = Field(description="The person this face belongs to (see tracks).")


class TimelineFrame(_Schema):
    frame_index: int = Field(description="Index among the clip's decoded frames.")
    timestamp_s: float
    faces: list[TrackedFace]


class ExpressionShare(_Schema):
    label: str | None = Field(description="Most frequent top expression over the frames; null if none.")
    share: float = Field(ge=0.0, le=1.0, description="Fraction of the frames with that top expression.")


class TrackPoint(_Schema):
    timestamp_s: float
    frame_index: int
    expression: LabelScore = Field(description="Top label of the smoothed distribution at this frame.")
    expressions: list[LabelScore] = Field(
        description="The image model's distribution, smoothed over the track's neighbouring frames."
    )


class ExpressionSegment(_Schema):
    label: str = Field(description="Top expression of the smoothed timeline over the segment.")
    start_s: float = Field(description="Timestamp of the segment's first frame.")
    end_s: float = Field(description="Timestamp of the segment's last frame.")
    frames: int = Field(description="Analysed frames in the segment.")
    mean_probability: float = Field(description="Mean smoothed probability of `label` over the segment.")


class TrackResult(_Schema):
    track_id: int
    first_s: float
    last_s: float
    frame_indices: list[int]
    dynamic_expression: LabelScore = Field(description="Top label of dynamic_expressions.")
    dynamic_expressions: list[LabelScore] = Field(
        description="This person's expression over the clip: the trained image model's per-frame "
        "distributions averaged with detection-score weights (see dynamic_method)."
    )
    dynamic_method: str = Field(
        "",
        description="Where dynamic_expressions comes from, e.g. 'mini_xception_fer2013 per-frame, "
        "detection-score-weighted mean over 12 frames'.",
    )
    timeline: list[TrackPoint] = Field(
        default_factory=list, description="The smoothed per-frame distributions of this person."
    )
    segments: list[ExpressionSegment] = Field(
        default_factory=list, description="Runs of one smoothed top expression, e.g. happiness 2.1-4.5 s."
    )
    valence: float | None = Field(
        None,
        description="Mean valence over the clip (same weights as dynamic_expressions); null without one.",
    )
    arousal: float | None = Field(
        None,
        description="Mean arousal over the clip (same weights as dynamic_expressions); null without one.",
    )
    stt_expression: LabelScore | None = Field(
        None,
        description="Top label of the spatio-temporal model (video_model); only when it is trained or "
        "include=stt asked for it; see video_model.trained.",
    )
    stt_expressions: list[LabelScore] | None = Field(
        None, description="The spatio-temporal model's distribution for this person's face sequence."
    )
    dominant: ExpressionShare = Field(description="From the per-frame image model: top label, time share.")


class ClipSummary(_Schema):
    people: int = Field(description="Number of tracks.")
    faces: int = Field(description="Face detections over all analysed frames.")
    dominant: ExpressionShare = Field(description="Most frequent top expression over every face-frame.")


class VideoPredictResponse(_Schema):
    """The answer for a clip: who showed which expression when."""

    media: Literal["video"] = "video"
    video: VideoInfo
    model: ModelInfo = Field(description="The per-frame image model.")
    video_model: ModelInfo = Field(
        description="The served spatio-temporal model behind tracks[].stt_expression (shown only when it is "
        "trained, or with include=stt)."
    )
    timeline: list[TimelineFrame] | None = Field(description="Analysed frames; null when not included.")
    tracks: list[TrackResult] | None = Field(description="One per person; null when not included.")
    summary: ClipSummary
    timings_ms: dict[str, float]
    warnings: list[str] = Field(default_factory=list)


class TextEncoderInfo(_Schema):
    encoder: str = Field(examples=["sentence-transformers/all-MiniLM-L6-v2"])
    dim: int = Field(description="Embedding size.", examples=[384])
    max_tokens: int = Field(description="Longer prompts are truncated to this many tokens.")
    weights: str = Field(description="Provenance of the served weights.")
    license: str


class ModelState(_Schema):
    name: str
    version: str
    state: str = Field(description="Triton's state of the model, e.g. READY or UNAVAILABLE.")
    kind: Literal["expression", "detector", "text_encoder"] = Field(
        "expression",
        description="'detector': one of MTCNN's nets, served for FER_DETECTOR_BACKEND=triton; "
        "'text_encoder': embeds the prompts of requests (prompts=).",
    )
    info: ModelInfo | None = Field(None, description="Config of a ready expression model.")
    text_encoder: TextEncoderInfo | None = Field(None, description="Config of a ready text encoder.")


class ModelsResponse(_Schema):
    default_model: str = Field(description="Image model used when a request names none.")
    default_video_model: str = Field(description="Spatio-temporal model behind each clip track.")
    text_encoder_model: str = Field(
        "text_encoder", description="The served text encoder that embeds caller prompts (prompts=)."
    )
    models: list[ModelState]


class HealthResponse(_Schema):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = Field(default_factory=dict)


class BatchImage(BaseModel):
    """One image of a JSON batch: its file's bytes as base64, never a URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: str = Field(
        description="The image file (JPEG, PNG, WebP, BMP, TIFF, GIF: first frame) in standard base64 "
        "(RFC 4648 §4: A-Z a-z 0-9 + /, padded with =, no line breaks); a `data:image/...;base64,` prefix "
        "is accepted. URLs are not fetched.",
        examples=["/9j/4AAQSkZJRgABAQEASABIAAD..."],
    )
    id: str | None = Field(
        None, max_length=256, description="Your name for the image, echoed in its result.", examples=["a.jpg"]
    )


class BatchPredictRequest(BaseModel):
    """POST /v1/predict: several still images in one JSON body; options as /predict's query parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    images: list[BatchImage] = Field(
        min_length=1,
        description="The images, answered in this order (at most FER_JSON_MAX_IMAGES, together at most "
        "FER_JSON_MAX_DECODED_BYTES once decoded).",
    )
    model: str | None = Field(
        None,
        description="Image model for every image (as /predict's `model`); or give it in `options`.",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        examples=["mini_xception_fer2013"],
    )
    prompts: list[str] = Field(
        [],
        description="Your own texts to score every face against (as /predict's `prompts`).",
        examples=[["a person smiling broadly"]],
    )
    options: PredictQuery = Field(
        default_factory=PredictQuery,
        description="/predict's query options, same names and limits; every image is analysed as a still "
        "(`media` may be auto or image; the clip options do not apply).",
    )

    @model_validator(mode="after")
    def _options_given_once(self) -> BatchPredictRequest:
        if self.model is not None and self.options.model is not None:
            raise ValueError("give `model` once: at the top level or in `options`, not both")
        if self.prompts and self.options.prompts:
            raise ValueError("give `prompts` once: at the top level or in `options`, not both")
        if self.options.media == "video":
            raise ValueError("a JSON batch takes still images; send a clip to POST /predict")
        return self

    def query(self) -> PredictQuery:
        """The options every image is analysed with: /predict's query, each image a still."""
        return self.options.model_copy(
            update={
                "model": self.model or self.options.model,
                "prompts": self.prompts or self.options.prompts,
                "media": "image",
            }
        )


class BatchItemResult(_Schema):
    """One image's answer: ``response`` when it was analysed, else ``error`` (the rest still are)."""

    index: int = Field(description="Position of the image in the request's `images`.", examples=[0])
    id: str | None = Field(None, description="The image's `id` from the request.", examples=["a.jpg"])
    status: int = Field(
        description="The HTTP status this image alone would have got from POST /predict.", examples=[200]
    )
    response: PredictResponse | None = Field(None, description="The answer, as POST /predict gives it.")
    error: ErrorDetail | None = Field(None, description="Why this image was not analysed.")


class BatchPredictResponse(_Schema):
    """The answer to a JSON batch: one result per image, in the request's order."""

    results: list[BatchItemResult]
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="The whole batch: read (body read and parsed) and total, in milliseconds.",
    )


class BatchLimits(_Schema):
    """What one JSON batch, one clip and one job may carry (GET /v1/limits): clients split their images by
    it, and the page sends a video over the clip limits as a job."""

    max_images: int = Field(description="FER_JSON_MAX_IMAGES.", examples=[16])
    max_decoded_bytes: int = Field(description="FER_JSON_MAX_DECODED_BYTES.", examples=[12582912])
    max_body_bytes: int = Field(description="FER_MAX_UPLOAD_BYTES: the whole JSON body.", examples=[20971520])
    # Defaults, not required: a client's copy of this model still reads a server that predates them.
    clip_max_bytes: int | None = Field(
        None, description="FER_MAX_UPLOAD_BYTES: the largest clip /predict takes.", examples=[20971520]
    )
    clip_max_duration_s: float | None = Field(
        None, description="FER_VIDEO_MAX_DURATION_S: the longest clip /predict takes.", examples=[60.0]
    )
    job_max_bytes: int | None = Field(
        None,
        description="FER_JOBS_MAX_UPLOAD_BYTES: the largest video POST /v1/jobs takes.",
        examples=[2147483648],
    )
    job_max_duration_s: float | None = Field(
        None, description="FER_JOBS_MAX_DURATION_S: the longest video POST /v1/jobs takes.", examples=[7200.0]
    )


# ----------------------------------------------------------------------------- live stream (GET /v1/stream)


class StreamOptions(BaseModel):
    """A live stream's options: its opening JSON message (``{"type": "start", ...}``) or query string."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(
        None,
        description="Image model to use (a name from GET /v1/models); default from settings.",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
    )
    prompts: list[str] = Field([], description="Your own texts to score every face against.")
    fps: float | None = Field(
        None,
        gt=0,
        le=60,
        description="Most frames analysed per second (capped by FER_STREAM_MAX_FPS; default "
        "FER_STREAM_DEFAULT_FPS); frames that come sooner are dropped and counted.",
    )
    smoothing_s: float | None = Field(
        None, ge=0, le=10, description="Smoothing window of each person's expression (FER_TRACK_SMOOTHING_S)."
    )


class StreamLimits(_Schema):
    max_frame_bytes: int
    idle_timeout_s: float
    send_queue: int = Field(description="Answers that may wait unread before the stream is closed.")


class StreamReady(_Schema):
    """Sent when the stream is open, and again after an opening message changed its options."""

    type: Literal["ready"] = "ready"
    model: str
    prompts: list[str]
    fps: float
    smoothing_s: float
    limits: StreamLimits


class StreamFace(TrackedFace):
    smoothed_expression: LabelScore = Field(description="Top label of smoothed_expressions.")
    smoothed_expressions: list[LabelScore] = Field(
        description="This person's distribution smoothed over their recent frames as a clip's track "
        "timeline is (the window's past half: the future has not come yet)."
    )
    segment: ExpressionSegment = Field(description="This person's current segment, up to this frame.")


class StreamResult(_Schema):
    type: Literal["result"] = "result"
    frame: int = Field(description="The frame's number in the stream: 0 for the first frame received.")
    id: str | None = Field(None, description="The frame's `id`, when its JSON message gave one.")
    timestamp_s: float = Field(description="The frame's time: its JSON `timestamp`, else when it arrived.")
    image: ImageInfo
    faces: list[StreamFace]
    dropped: int = Field(description="Frames dropped since the previous answer (they came during analysis).")
    dropped_total: int
    timings_ms: dict[str, float]


class StreamError(_Schema):
    """A frame or message the stream could not use; the stream goes on."""

    type: Literal["error"] = "error"
    frame: int | None = Field(description="The frame's number, when the message was a frame.")
    id: str | None = None
    error: ErrorDetail
    dropped: int = 0
    dropped_total: int = 0


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobProgress(_Schema):
    frames_analysed: int = Field(description="Sampled frames analysed so far.", examples=[1200])
    frames_expected: int = Field(
        description="Sampled frames the video should give (from its duration and the sampling; an "
        "estimate until the job ends).",
        examples=[3000],
    )
    percent: float = Field(description="frames_analysed / frames_expected, 0-100.", examples=[40.0])
    elapsed_s: float = Field(description="Seconds since the job started running (0 while queued).")
    eta_s: float | None = Field(
        description="Seconds left at the rate so far; null until a rate is known.", examples=[90.5]
    )


class JobStatus(_Schema):
    id: str = Field(description="The job's id.", examples=["9f1c2e4a7b6d4c0e8a1b2c3d4e5f6a7b"])
    state: JobState = Field(description="queued → running → succeeded | failed | cancelled.")
    created_at: float = Field(description="Unix time the job was accepted.")
    started_at: float | None = Field(description="Unix time it last started running.")
    finished_at: float | None = Field(description="Unix time it ended (succeeded, failed, cancelled).")
    expires_at: float | None = Field(description="Unix time its status and result are deleted.")
    attempts: int = Field(description="Times it was started (a restart of the gateway starts it again).")
    container: str = Field(description="The upload's container, from its bytes.", examples=["AVI"])
    upload_bytes: int = Field(description="The upload's size.")
    progress: JobProgress
    error: ErrorDetail | None = Field(description="Why it failed (the same envelope /predict answers).")
    status_url: str = Field(description="Where to follow it.", examples=["/v1/jobs/9f1c2e4a"])
    result_url: str = Field(description="Its result, once succeeded (JSON; ?format=csv for the table).")


class JobList(_Schema):
    jobs: list[JobStatus] = Field(description="The caller's jobs, newest first.")
