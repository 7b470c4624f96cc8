"""Every knob of the gateway, in one validated place (environment variables prefixed ``FER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Gateway settings. ``FER_TRITON_URL`` unset means: start the embedded local Triton."""

    model_config = SettingsConfigDict(env_prefix="FER_", env_file=None, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server binds to.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

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
    max_in_flight: int = Field(
        32, ge=1, description="Requests processed at once; the next one gets 429 instead of queueing."
    )
    max_faces: int = Field(64, ge=1, description="Faces analysed per image (highest detection scores first).")

    detector_thresholds: tuple[float, float, float] = Field(
        (0.6, 0.7, 0.7), description="MTCNN P-Net, R-Net, O-Net score thresholds."
    )
    detector_min_face_size: int = Field(20, ge=8, description="Smallest face MTCNN looks for, in pixels.")
    detector_min_score: float = Field(
        0.9, ge=0.0, le=1.0, description="Faces with a final detection score below this are dropped."
    )
    device: str = Field("cpu", description="Torch device for face detection and alignment (cpu, cuda:0).")
    torch_threads: int = Field(2, ge=1, description="Intra-op threads torch may use in the gateway.")
    cpu_workers: int = Field(
        2, ge=1, description="Threads running CPU-bound decode/detect/align off the event loop."
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
        2, ge=1, description="Clips analysed at once (separate from images); the next one gets 429."
    )
    video_workers: int = Field(
        1, ge=1, description="Threads decoding and detecting clips, apart from the image pool."
    )
    video_detect_batch: int = Field(8, ge=1, description="Frames MTCNN detects in one batched pass.")
    track_max_gap_s: float = Field(
        1.0, ge=0, description="How long a face may go undetected and keep its track by position."
    )
    track_reid_window_s: float = Field(
        5.0,
        ge=0,
        description="How long a lost track can be re-joined by appearance (leaving and re-entering).",
    )

    annotate_max_frames: int = Field(
        24, ge=1, description="Most analysed frames on a clip's /annotate contact sheet (evenly spaced)."
    )
    annotate_tile_width: int = Field(
        320, ge=64, le=1920, description="Width in pixels of one frame on a clip's /annotate contact sheet."
    )

    @field_validator("detector_thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.0 < t < 1.0 for t in value):
            raise ValueError("each detector threshold must be in (0, 1)")
        return value
