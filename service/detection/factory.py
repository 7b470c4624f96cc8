"""Face detection for the gateway: the MTCNN cascade (mtcnn.py) on its nets (OpenVINO, torch or Triton),
merged across concurrent callers (batched.py), built from the settings in one place."""

from __future__ import annotations

from service.config import Settings
from service.detection.base import FaceDetector
from service.detection.batched import AnalysisSize, BatchedDetector
from service.detection.mtcnn import CascadeDetector, CascadeNets, local_nets
from service.detection.openvino_nets import openvino_nets, warm_up
from service.detection.triton_nets import triton_nets


def cascade_nets(settings: Settings) -> CascadeNets:
    if settings.detector_backend == "local":
        if settings.detector_runtime == "openvino" and settings.device == "cpu":
            nets = openvino_nets(settings.torch_threads, streams=settings.detector_workers)
            if settings.detector_warmup:
                warm_up(nets)
            return nets
        return local_nets(settings.device)
    if settings.triton_url is None:
        raise ValueError("FER_DETECTOR_BACKEND=triton needs a Triton: FER_TRITON_URL is not set")
    return triton_nets(
        settings.triton_url,
        protocol=settings.triton_protocol,
        timeout_s=settings.triton_timeout_s,
        retry_after_s=settings.triton_retry_after_s,
    )


def build_detector(settings: Settings) -> FaceDetector:
    """The gateway's face detector as the settings choose it: the cascade on OpenVINO, torch or Triton's
    nets, merged across concurrent callers at the analysis size."""
    cascade = CascadeDetector(
        thresholds=settings.detector_thresholds,
        min_face_size=settings.detector_min_face_size,
        nets=cascade_nets(settings),
    )
    size = AnalysisSize(
        settings.detector_max_side, settings.detector_min_face_size, settings.detector_min_face_ratio
    )
    return BatchedDetector(
        cascade, size, max_batch=settings.detector_max_batch, workers=settings.detector_workers
    )
