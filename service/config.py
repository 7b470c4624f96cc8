"""Every knob of the gateway, in one validated place (environment variables prefixed ``FER_``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Settings(BaseSettings):
    """Gateway settings. ``FER_TRITON_URL`` unset means: start the embedded local Triton."""

    # hide_input_in_errors: a key pasted into FER_API_KEY_SHA256 by mistake must not reach a log or traceback.
    model_config = SettingsConfigDict(
        env_prefix="FER_", env_file=None, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server binds to.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics, /healthz and /readyz on this port too (on `host`, no API key), and "
        "/metrics only there: deployments keep it off the public Service. Unset: /metrics is on `port`.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="`json`: one JSON object per line, with the request id (X-Request-ID); `text`: for a "
        "terminal.",
    )

    api_key_sha256: tuple[str, ...] = Field(
        (),
        description="SHA-256 hex digests of the accepted API keys (a JSON list; keys go in "
        "`Authorization: Bearer KEY` or `X-API-Key`); empty: no key needed. /healthz, /readyz and /metrics "
        "are always open.",
    )
    triton_url: str | None = Field(
        None,
        description="Triton address host:port for the chosen protocol. Unset: `python -m service` starts "
        "a local Triton from the nvidia-pytriton wheel on free loopback ports and uses it.",
    )
    triton_protocol: Literal["grpc", "http"] = Field("grpc", description="Protocol to talk to Triton.")
    triton_timeout_s: float = Field(10.0, gt=0, description="Deadline of one Triton inference call.")
    triton_retry_after_s: int = Field(
        5, ge=1, description="Retry-After seconds sent with 503 when Triton is unavailable."
    )
    model_repository: Path = Field(
        Path("model_repository"), description="Model repository served by the embedded local Triton."
    )
    triton_home: Path | None = Field(
        None,
        description="Writable home the embedded Triton is prepared in; unset: the launcher's own default, "
        "<repo>/.cache/triton-home.",
    )
    triton_startup_timeout_s: float = Field(
        180.0, gt=0, description="How long the embedded Triton may take to become ready."
    )
    triton_watch_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the gateway checks that Triton still runs (embedded) and answers (either).",
    )
    triton_probe_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Hard timeout of one health probe of Triton (one every FER_TRITON_WATCH_INTERVAL_S).",
    )
    triton_hang_timeout_s: float = Field(
        30.0,
        ge=0,
        description="Triton counts as hung once no health probe has been answered for this long: the "
        "embedded one is killed and restarted, an external one makes /healthz answer 503 until it answers "
        "again. 0: not watched.",
    )
    triton_restart_backoff_s: float = Field(
        1.0,
        gt=0,
        description="Wait before restarting an embedded Triton that exited; doubles after each failed try.",
    )
    triton_restart_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between two restart attempts of the embedded Triton."
    )
    triton_max_restart_failures: int = Field(
        5,
        ge=1,
        description="Failed restarts in a row after which /healthz answers 503 (the embedded Triton cannot "
        "come back: restart the process). Restarts go on.",
    )
    default_model: str = Field(
        "mini_xception_fer2013",
        description="Image model used when a request names none (the trained one; fer_former is untrained).",
    )

    max_upload_bytes: int = Field(
        20 * MiB, gt=0, description="Largest accepted request body; larger bodies get 413."
    )
    max_image_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Largest decoded image (width x height); larger ones get 422 (decompression bombs).",
    )
    memory_limit_bytes: int = Field(
        2048 * MiB,
        ge=256 * MiB,
        description="The gateway's memory limit (the pod's, in Kubernetes): the memory budget is what it "
        "leaves after FER_MEMORY_RESERVE_BYTES.",
    )
    memory_reserve_bytes: int = Field(
        1400 * MiB,
        ge=0,
        description="What the gateway holds at rest (models, detector nets, thread pools, allocator heaps), "
        "set aside from the limit; measured in docs/robustness.md.",
    )
    memory_bodies_bytes: int = Field(
        128 * MiB,
        ge=0,
        description="The part of the memory budget that request bodies being read may hold; the rest is for "
        "the work on them. Capped so that bodies waiting for their work cannot take the memory it needs.",
    )
    memory_follow_resident: bool = Field(
        True,
        description="Shrink the work pool by what the process's resident memory has grown since its warm "
        "start (heaps fragmenting, caches filling), so the limit holds when the rest grows. Off only for a "
        "gateway embedded in a larger process (the test runner), whose resident memory is not the gateway's.",
    )
    memory_trim_interval_s: float = Field(
        1.0,
        ge=0,
        description="Shortest time between two hand-backs of the allocator's free heap (glibc malloc_trim, "
        "which walks the heap on the event loop), done only when resting memory has grown and would shrink "
        "the work pool.",
    )
    memory_wait_s: float = Field(
        5.0,
        ge=0,
        description="How long a request waits for its share of the memory budget before it gets 429.",
    )
    image_bytes_per_pixel: int = Field(
        10,
        ge=1,
        description="Memory reserved per image pixel for its decode and analysis (measured: Pillow's RGBA "
        "buffer, the RGB array, the detector's tables and crops).",
    )
    max_request_head_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request line plus headers; larger requests get 400 malformed_request.",
    )
    request_head_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a client may take to send its request line and headers (from its first byte, "
        "or from the connection when it sends none); then it gets 408 and the connection closes.",
    )
    write_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a response may sit unread in the socket's buffer while the client reads "
        "nothing; then the connection is dropped with what it held.",
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open HTTP connections the gateway keeps at most; one more is answered 503 with "
        "Retry-After and closed before its request is read.",
    )
    body_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a request may take to send its whole body; a slower or stalled upload gets "
        "408 (it takes no admission slot while it sends).",
    )
    graceful_shutdown_timeout_s: int = Field(
        30,
        ge=1,
        description="On SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled.",
    )
    max_in_flight: int = Field(
        32,
        ge=1,
        description="Still images processed at once (clips have their own FER_VIDEO_MAX_IN_FLIGHT); the next "
        "image gets 429 instead of queueing.",
    )
    json_max_images: int = Field(
        16,
        ge=1,
        description="Most images in one JSON batch (POST /v1/predict); more get 422 too_many_images.",
    )
    json_max_decoded_bytes: int = Field(
        12 * MiB,
        gt=0,
        description="Most image bytes (after base64 decoding, all images together) in one JSON batch; more "
        "get 413 batch_too_large. The body itself is bounded by FER_MAX_UPLOAD_BYTES (base64 adds a third).",
    )
    max_faces: int = Field(64, ge=1, description="Faces analysed per image (highest detection scores first).")

    detector_thresholds: tuple[float, float, float] = Field(
        (0.6, 0.7, 0.7), description="MTCNN P-Net, R-Net, O-Net score thresholds."
    )
    detector_min_face_size: int = Field(20, ge=8, description="Smallest face MTCNN looks for, in pixels.")
    detector_backend: Literal["local", "triton"] = Field(
        "local",
        description="Where MTCNN's nets run: 'local' in the gateway (CPU, or FER_DEVICE), 'triton' as the "
        "mtcnn_pnet/rnet/onet models of the Triton repository (`python -m fermodels export-detector`), "
        "e.g. on the GPU next to the FER models; the cascade's logic stays in the gateway either way.",
    )
    detector_runtime: Literal["openvino", "torch"] = Field(
        "openvino",
        description="How the local nets run on the CPU (FER_DETECTOR_BACKEND=local, FER_DEVICE=cpu): "
        "'openvino' compiles them for this CPU (the fastest measured, docs/benchmarks.md), 'torch' "
        "runs facenet-pytorch's modules channels-last. A CUDA device always uses torch.",
    )
    detector_warmup: bool = Field(
        True,
        description="With FER_DETECTOR_RUNTIME=openvino, run R-Net's and O-Net's batch sizes once at startup "
        "so the first requests do not prepare them. It allocates at startup what traffic brings within "
        "minutes anyway (startup time, throughput and memory with and without: docs/benchmarks.md).",
    )
    detector_max_side: int = Field(
        1280,
        ge=0,
        description="Longest side face detection looks at: larger images are detected on an anti-aliased "
        "reduced copy (boxes and landmarks mapped back exactly; crops still cut from full resolution). "
        "0: always full resolution.",
    )
    detector_min_face_ratio: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Smallest face looked for, as a share of the analysed image's shorter side (on top of "
        "detector_min_face_size); e.g. 0.05 skips tiny background faces and the pyramid levels they need.",
    )
    detector_workers: int = Field(
        1,
        ge=1,
        description="Threads running detection cascades; each takes every image queued when it is free (with "
        "OpenVINO, each on its own stream of the FER_TORCH_THREADS threads). On 2 cores, 2 workers gave the "
        "same throughput as 1 and a slower single request (see the README benchmark).",
    )
    detector_max_batch: int = Field(
        16,
        ge=1,
        description="Images (or clip frames) of concurrent requests merged into one detection cascade call.",
    )
    detector_min_score: float = Field(
        0.9, ge=0.0, le=1.0, description="Faces with a final detection score below this are dropped."
    )
    device: str = Field("cpu", description="Torch device for face detection and alignment (cpu, cuda:0).")
    torch_threads: int = Field(
        2,
        ge=1,
        description="Intra-op threads torch may use in the gateway; also the OpenVINO detector's threads.",
    )
    cpu_workers: int = Field(
        8,
        ge=1,
        description="Threads running decode/detect/crop off the event loop. Detection itself runs on one "
        "thread that merges the waiting requests' images, so these mostly wait: more of them means more "
        "requests merged into one cascade call, not more threads competing for the cores.",
    )

    default_video_model: str = Field(
        "stt", description="Spatio-temporal model giving each tracked face its dynamic expression."
    )
    video_max_duration_s: float = Field(
        60.0, gt=0, description="Longest clip accepted (seconds); longer clips get 422 video_too_long."
    )
    video_max_pixels: int = Field(
        1920 * 1080,
        gt=0,
        description="Largest frame (width x height) accepted; larger gets 422 video_too_large.",
    )
    video_max_decoded_frames: int = Field(
        3600, gt=0, description="Most frames decoded from one clip (bounds CPU on high frame rates)."
    )
    video_max_frames: int = Field(
        64, ge=1, description="Most frames analysed per clip; a request may ask for fewer, never more."
    )
    video_default_fps: float = Field(
        5.0,
        gt=0,
        description="Frames analysed per second of clip when a request gives neither fps nor stride.",
    )
    video_max_in_flight: int = Field(
        2,
        ge=1,
        description="Clips analysed at once, reserved for clips (images cannot take them); the next clip "
        "gets 429.",
    )
    video_workers: int = Field(
        1, ge=1, description="Threads decoding and detecting clips, apart from the image pool."
    )
    video_detect_batch: int = Field(8, ge=1, description="Frames MTCNN detects in one batched pass.")
    video_detect_pixels: int = Field(
        3_100_000,
        ge=1,
        description="Most pixels (frames x width x height) in one batched detection pass of a clip or a job: "
        "larger frames go fewer at a time (always at least one), as the detector's working "
        "memory grows with the pixels of a pass (docs/robustness.md); the default keeps 8 frames of 720x528.",
    )
    track_max_gap_s: float = Field(
        1.0, ge=0, description="How long a face may go undetected and keep its track by position."
    )
    track_reid_window_s: float = Field(
        5.0,
        ge=0,
        description="How long a lost track can be re-joined by appearance (leaving and re-entering).",
    )

    text_encoder_model: str = Field(
        "text_encoder",
        description="Triton model that embeds the prompts a request brings (`prompts=`); the fixed "
        "expression prompts' embeddings are baked in, so a request without prompts= never calls it.",
    )
    text_tokenizer: Path | None = Field(
        None,
        description="tokenizer.json (or .json.gz) of the text encoder; unset: the committed "
        "fermodels/assets/minilm_tokenizer.json.gz. Its sha256 must equal the one the served encoder's "
        "config.pbtxt records.",
    )
    text_tokenizer_dir: Path | None = Field(
        None,
        description="Where the tokenizers of other served text encoders (a CLIP model's own text tower, "
        "`<name>_text`) are read: `<dir>/<encoder>/tokenizer.json`, the layout `python -m fermodels import` "
        "writes; unset: FER_MODEL_REPOSITORY (the embedded Triton's). Each file's sha256 must equal its "
        "encoder's config.",
    )
    text_max_prompts: int = Field(
        8, ge=0, description="Most caller prompts (`prompts=`) per request; more get 422 too_many_prompts."
    )
    text_max_prompt_chars: int = Field(
        200,
        ge=1,
        description="Longest caller prompt, in characters; longer, empty or whitespace-only prompts get 422 "
        "invalid_prompt.",
    )
    text_cache_size: int = Field(
        1024, ge=0, description="Caller-prompt embeddings kept in the gateway's LRU cache (0: no cache)."
    )

    track_smoothing_s: float = Field(
        1.0,
        ge=0,
        description="Window of the centred, detection-weighted mean that smooths each track's per-frame "
        "expression distributions (tracks[].timeline and segments).",
    )
    track_min_segment_s: float = Field(
        0.5,
        ge=0,
        description="Shortest expression segment of a track; a shorter run joins its longer neighbour.",
    )

    stream_max_open: int = Field(
        16,
        ge=1,
        description="Live streams (GET /v1/stream) open at once over the whole gateway; one more is closed "
        "at once with code 4429 (overloaded).",
    )
    stream_default_fps: float = Field(
        10.0, gt=0, le=60, description="Frames a live stream analyses per second when it asks for no `fps`."
    )
    stream_max_fps: float = Field(
        30.0,
        gt=0,
        le=60,
        description="Most frames one live stream may have analysed per second (its `fps` is capped to it); "
        "frames that come sooner are dropped and counted.",
    )
    stream_max_frame_bytes: int = Field(
        2 * MiB,
        ge=64 * 1024,
        description="Largest encoded frame of a live stream (a bigger one gets an error message, the stream "
        "goes on); a WebSocket message larger than its base64 form is refused by the server (close 1009).",
    )
    stream_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A live stream that sends nothing (no frame, no message) for this long is closed with "
        "code 4408 (request_timeout); so is one whose opening message does not come in time.",
    )
    stream_send_queue: int = Field(
        8,
        ge=1,
        description="Answers a live stream may have waiting to be sent while its client does not read; one "
        "more closes it with code 4408 (slow_reader), so a slow reader holds bounded memory.",
    )
    stream_history_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="How far back a live stream keeps each person's expressions for smoothing and the "
        "current segment (a person unseen for FER_TRACK_REID_WINDOW_S is forgotten).",
    )

    annotate_max_frames: int = Field(
        24, ge=1, description="Most analysed frames on a clip's /annotate contact sheet (evenly spaced)."
    )
    annotate_max_side: int = Field(
        2048,
        ge=256,
        le=16384,
        description="Longest side of an /annotate picture: a larger photo or contact sheet is drawn shrunk "
        "to it, which bounds the picture's memory and size (and keeps JPEG within its 65,535-pixel limit).",
    )
    annotate_tile_width: int = Field(
        320, ge=64, le=1920, description="Width in pixels of one frame on a clip's /annotate contact sheet."
    )

    jobs_dir: Path = Field(
        Path(".cache/jobs"),
        description="Where long-video jobs keep their state (jobs.sqlite3), spooled uploads and results; a "
        "volume that survives restarts (shared by the replicas in Redis mode).",
    )
    jobs_max_upload_bytes: int = Field(
        2048 * MiB, gt=0, description="Largest video accepted by POST /v1/jobs; larger gets 413."
    )
    jobs_upload_timeout_s: float = Field(
        3600.0, gt=0, description="Longest a job's upload may take to arrive; slower gets 408."
    )
    jobs_max_duration_s: float = Field(
        7200.0, gt=0, description="Longest video a job accepts (seconds); longer gets 422 video_too_long."
    )
    jobs_max_decoded_frames: int = Field(
        7200 * 60, gt=0, description="Most frames decoded from one job's video (bounds CPU on high rates)."
    )
    jobs_max_frames: int = Field(
        7200 * 5, ge=1, description="Most frames analysed per job; a job may ask for fewer, never more."
    )
    jobs_window_frames: int = Field(
        64,
        ge=1,
        description="Sampled frames a job analyses and infers at a time before their crops are dropped: "
        "bounds a job's memory whatever the video's length.",
    )
    jobs_workers: int = Field(1, ge=1, description="Jobs a gateway process analyses at once.")
    jobs_max_queued: int = Field(
        100, ge=1, description="Jobs waiting at most; one more gets 429 (each holds its upload on disk)."
    )
    jobs_max_attempts: int = Field(
        3,
        ge=1,
        description="Times a job is started; one interrupted more often (the gateway died while running it) "
        "fails with job_interrupted instead of being queued again.",
    )
    jobs_retention_s: float = Field(
        86400.0, gt=0, description="How long a finished job's status and results are kept, then deleted."
    )
    jobs_progress_interval_s: float = Field(
        1.0, gt=0, description="Least time between two progress writes of a running job."
    )
    jobs_redis_url: str = Field(
        "",
        description="Redis URL (redis://host:6379/0) that moves job state and the queue to Redis so several "
        "gateway replicas share the work (FER_JOBS_DIR then a volume they all mount); empty: SQLite in "
        "FER_JOBS_DIR, jobs run by the process that accepted them.",
    )
    jobs_redis_prefix: str = Field(
        "fer:jobs", min_length=1, description="Prefix of every Redis key of the jobs (one per deployment)."
    )
    jobs_lease_s: float = Field(
        30.0,
        gt=0,
        description="Redis mode: a running job's lease, renewed by its worker every third of it; a job whose "
        "worker stopped renewing (its replica died) is taken over by another replica once it lapses. Also "
        "how soon a cancel reaches the replica running the job (a third of it).",
    )
    jobs_page_size: int = Field(
        500, ge=1, le=10000, description="Timeline frames per page of GET /v1/jobs/{id}/result by default."
    )

    @property
    def memory_budget_bytes(self) -> int:
        """Per-request memory the gateway may hold at once (reserved before it is allocated)."""
        return self.memory_limit_bytes - self.memory_reserve_bytes

    @property
    def memory_work_bytes(self) -> int:
        """The budget less the bodies' share: decoding, analysis and pictures."""
        return self.memory_budget_bytes - self.memory_bodies_bytes

    def body_reservation_bytes(self, declared: int | None) -> int:
        """A body being read, and the one copy multipart parsing makes of it."""
        return 2 * min(declared if declared is not None else self.max_upload_bytes, self.max_upload_bytes)

    def json_body_reservation_bytes(self, declared: int | None) -> int:
        """A JSON batch being read: the body, its parsed strings, their validated copies and the decoded
        images (three quarters of the body at most)."""
        body = min(declared if declared is not None else self.max_upload_bytes, self.max_upload_bytes)
        return 3 * body + min(self.json_max_decoded_bytes, body)

    def image_reservation_bytes(self, pixels: int) -> int:
        return min(pixels, self.max_image_pixels) * self.image_bytes_per_pixel

    @property
    def clip_reservation_bytes(self) -> int:
        """A clip's analysis: frames are decoded one at a time and detected in chunks of at most
        video_detect_batch frames (and video_detect_pixels pixels, which only makes a chunk smaller), so
        video_detect_batch of the largest frames bound it."""
        return self.video_detect_batch * self.video_max_pixels * self.image_bytes_per_pixel

    @property
    def stream_message_bytes(self) -> int:
        """The largest WebSocket message a stream may send: a frame as base64 inside its JSON envelope."""
        return (self.stream_max_frame_bytes + 2) // 3 * 4 + 4096

    @property
    def stream_reservation_bytes(self) -> int:
        """What an open stream holds between frames: the message being received, the newest frame waiting
        for analysis (decoded from base64: at most the message) and its queue of answers (small JSON)."""
        return 2 * self.stream_message_bytes + self.stream_send_queue * 64 * 1024

    @property
    def annotate_reservation_bytes(self) -> int:
        """An /annotate picture: the drawn RGB image, its working copy and the encoded bytes."""
        return 3 * 3 * self.annotate_max_side**2

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("FER_METRICS_PORT must differ from FER_PORT (unset it to serve /metrics there)")
        return self

    @model_validator(mode="after")
    def _largest_request_fits_the_budget(self) -> Settings:
        largest = (
            max(self.image_reservation_bytes(self.max_image_pixels), self.clip_reservation_bytes)
            + self.annotate_reservation_bytes
        )
        if largest > self.memory_work_bytes:
            raise ValueError(
                f"the memory budget's work share (FER_MEMORY_LIMIT_BYTES - FER_MEMORY_RESERVE_BYTES - "
                f"FER_MEMORY_BODIES_BYTES = {self.memory_work_bytes // MiB} MiB) cannot hold the largest "
                f"request the limits allow ({largest // MiB} MiB): raise the limit, or lower "
                "FER_MAX_IMAGE_PIXELS"
            )
        # A JSON batch's body pool share covers its parsed and decoded copies; its images then take the
        # work pool a wave (at most FER_MAX_IMAGE_PIXELS) at a time, which `largest` already covers.
        body = max(self.body_reservation_bytes(None), self.json_body_reservation_bytes(None))
        if body > self.memory_bodies_bytes:
            raise ValueError(
                f"FER_MEMORY_BODIES_BYTES ({self.memory_bodies_bytes // MiB} MiB) cannot hold the largest "
                f"body being read ({body // MiB} MiB: twice FER_MAX_UPLOAD_BYTES, or a JSON batch's three "
                "copies plus its decoded images)"
            )
        return self

    @field_validator("api_key_sha256")
    @classmethod
    def _hashes_are_sha256_hex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hashes = tuple(digest.strip().lower() for digest in value)
        if not all(_SHA256_HEX.fullmatch(digest) for digest in hashes):
            raise ValueError("each entry must be the 64-hex-digit SHA-256 of a key, not the key itself")
        return hashes

    @field_validator("detector_thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.0 < t < 1.0 for t in value):
            raise ValueError("each detector threshold must be in (0, 1)")
        return value
