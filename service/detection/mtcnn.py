"""MTCNN (Zhang et al. 2016) with facenet-pytorch's trained P/R/O-Nets, run as fast as these small nets allow.

facenet-pytorch stays the weights' source and the reference implementation (its ``detect_face``; parity is
tested in tests/integration/test_detector_parity.py). What changes is how the cascade is executed:

- the nets get channels-last inputs and run compiled by OpenVINO (service/detection/openvino_nets.py, the
  default) or as facenet-pytorch's modules in channels-last memory, where oneDNN has fast kernels for
  their tiny convolutions (docs/benchmarks.md compares the runtimes and layouts);
- every candidate crop of a stage is cut in ONE vectorised op from a summed-area table of the image:
  facenet-pytorch resizes each clipped box with ``interpolate(mode="area")`` one at a time, and area
  resampling is exactly box sums, so the table gives the same pixels without a loop over boxes;
- non-maximum suppression of all pyramid levels of all images is one batched call;
- several images (of any sizes: frames of a clip, concurrent requests) share one R-Net and one O-Net call,
  and equally sized ones (a clip's frames) one P-Net call per pyramid level.

Thresholds, pyramid factor, box regression, NMS overlaps and the "Min" NMS of the last stage are
facenet-pytorch's own (its helper functions are called directly), so results match the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from service.detection.base import Detections
from service.detection.summed_area import SummedArea, as_tensor, crops, pyramid_level

logger = logging.getLogger(__name__)

PYRAMID_FACTOR = 0.709  # facenet-pytorch's default scale step between pyramid levels
PNET_CELL = 12.0


@dataclass
class Candidates:
    """Boxes of all images of one call: N x 5 (x1, y1, x2, y2, score) and the image each belongs to."""

    boxes: Tensor
    image: Tensor  # N, int64

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, keep: Tensor) -> Candidates:
        return Candidates(self.boxes[keep], self.image[keep])


# The three stages as Triton models (fermodels/detector_export.py writes them into model_repository/).
Net = Callable[[Tensor], tuple[Tensor, ...]]
CPU = torch.device("cpu")


@dataclass(frozen=True)
class CascadeNets:
    """Where the three nets run: in this process (``local_nets``) or on Triton (service/inference)."""

    pnet: Net  # N x 3 x H x W -> (regression N x 4 x h x w, probabilities N x 2 x h x w)
    rnet: Net  # N x 3 x 24 x 24 -> (regression N x 4, probabilities N x 2)
    onet: Net  # N x 3 x 48 x 48 -> (regression N x 4, landmarks N x 10, probabilities N x 2)
    device: torch.device = CPU
    close: Callable[[], None] = lambda: None


def load_nets() -> tuple[nn.Module, nn.Module, nn.Module]:
    """facenet-pytorch's trained nets (weights inside its wheel), in eval mode and channels-last."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    pnet, rnet, onet = (net.eval().to(memory_format=torch.channels_last) for net in (PNet(), RNet(), ONet()))
    return pnet, rnet, onet


def local_nets(device: str = "cpu") -> CascadeNets:
    where = torch.device(device)
    pnet, rnet, onet = (net.to(where) for net in load_nets())
    return CascadeNets(pnet, rnet, onet, where)


class CascadeDetector:
    """Finds faces with 5 landmarks; ``detect_many`` runs several images through one cascade."""

    def __init__(
        self,
        *,
        thresholds: tuple[float, float, float],
        min_face_size: int,
        device: str = "cpu",
        nets: CascadeNets | None = None,
    ) -> None:
        nets = nets or local_nets(device)
        self._device = nets.device
        self._pnet, self._rnet, self._onet = nets.pnet, nets.rnet, nets.onet
        self.close = nets.close
        self._thresholds = thresholds
        self._min_face_size = min_face_size
        logger.info("MTCNN cascade ready on %s (thresholds=%s)", self._device, thresholds)

    def detect(self, rgb: npt.NDArray[np.uint8]) -> Detections:
        return self.detect_many([rgb])[0]

    def detect_batch(self, frames: npt.NDArray[np.uint8]) -> list[Detections]:
        return self.detect_many(list(frames))

    def detect_many(
        self, images: Sequence[npt.NDArray[np.uint8]], min_face_sizes: Sequence[int] | None = None
    ) -> list[Detections]:
        """Faces in each image (any sizes); ``min_face_sizes`` per image, default the detector's own."""
        if not images:
            return []
        sizes = list(min_face_sizes or [self._min_face_size] * len(images))
        with torch.inference_mode():
            tables = [SummedArea(as_tensor(image).to(self._device)) for image in images]
            candidates = self._proposals(tables, sizes)
            candidates = self._refine(tables, candidates)
            boxes, landmarks = self._output(tables, candidates)
        return _split(boxes, landmarks, len(images))

    # --- stage 1: P-Net over each image's pyramid

    def _proposals(self, images: list[SummedArea], min_face_sizes: list[int]) -> Candidates:
        from facenet_pytorch.models.utils.detect_face import generateBoundingBox
        from torchvision.ops import batched_nms

        # Every level of every image first, then P-Net on each, back to back: the cores switch from torch's
        # threads to OpenVINO's once instead of twice a level (measured: docs/benchmarks.md).
        levels = [
            (members, level, scale)
            for members in same_pyramid(images, min_face_sizes)
            for level, scale in enumerate(pyramid(images[members[0]].shape, min_face_sizes[members[0]]))
        ]
        inputs = [
            pyramid_level([images[i] for i in members], scaled(images[members[0]].shape, scale))
            for members, _, scale in levels
        ]
        outputs = [self._pnet(x) for x in inputs]
        found, groups, owners = [], [], []
        for (members, level, scale), (regression, probabilities) in zip(levels, outputs, strict=True):
            boxes, which = generateBoundingBox(regression, probabilities[:, 1], scale, self._thresholds[0])
            owner = torch.tensor(members, dtype=torch.int64)[which]
            found.append(boxes)
            groups.append(owner * 1000 + level)
            owners.append(owner)
        if not found:
            return Candidates(torch.zeros((0, 9)), torch.zeros((0,), dtype=torch.int64))
        boxes, group, owner = torch.cat(found), torch.cat(groups), torch.cat(owners)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], group, 0.5)  # within each level of each image
        boxes, owner = boxes[keep], owner[keep]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], owner, 0.7)  # then across levels, per image
        return _regressed_square(Candidates(boxes[keep], owner[keep]))

    # --- stage 2: R-Net on every candidate of every image at once

    def _refine(self, images: list[SummedArea], candidates: Candidates) -> Candidates:
        from facenet_pytorch.models.utils.detect_face import bbreg, rerec
        from torchvision.ops import batched_nms

        if not len(candidates):
            return candidates
        regression, probabilities = self._rnet(crops(images, candidates.boxes, candidates.image, 24))
        score = probabilities[:, 1]
        passed = score > self._thresholds[1]
        boxes = torch.cat((candidates.boxes[passed, :4], score[passed, None]), dim=1)
        kept, regression = Candidates(boxes, candidates.image[passed]), regression[passed]
        keep = batched_nms(kept.boxes[:, :4], kept.boxes[:, 4], kept.image, 0.7)
        kept, regression = kept.take(keep), regression[keep]
        return Candidates(rerec(bbreg(kept.boxes, regression)), kept.image)

    # --- stage 3: O-Net, landmarks, final boxes

    def _output(self, images: list[SummedArea], candidates: Candidates) -> tuple[Candidates, Tensor]:
        from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg

        if not len(candidates):
            return candidates, torch.zeros((0, 5, 2), device=candidates.boxes.device)
        regression, points, probabilities = self._onet(crops(images, candidates.boxes, candidates.image, 48))
        score = probabilities[:, 1]
        passed = score > self._thresholds[2]
        boxes = torch.cat((candidates.boxes[passed, :4], score[passed, None]), dim=1)
        owner, regression, points = candidates.image[passed], regression[passed], points[passed]
        width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = width * points[:, :5] + boxes[:, 0:1] - 1
        ys = height * points[:, 5:10] + boxes[:, 1:2] - 1
        landmarks = torch.stack((xs, ys), dim=2)
        boxes = bbreg(boxes, regression)
        keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], owner, 0.7, "Min")
        return Candidates(boxes[keep], owner[keep]), landmarks[keep]


def same_pyramid(images: list[SummedArea], min_face_sizes: list[int]) -> list[list[int]]:
    """Indices of the images, grouped by size and smallest face: each group shares its pyramid levels."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, (image, min_face) in enumerate(zip(images, min_face_sizes, strict=True)):
        groups.setdefault((image.height, image.width, min_face), []).append(index)
    return list(groups.values())


def scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """facenet-pytorch's size for the pyramid level at ``scale``: its interpolate(image, (int(h s + 1),
    int(w s + 1)), mode="area")."""
    return int(size[0] * scale + 1), int(size[1] * scale + 1)


def pyramid(size: Sequence[int], min_face_size: int) -> list[float]:
    """facenet-pytorch's scales: the smallest face maps to P-Net's 12-px cell, then steps of 0.709."""
    scale = PNET_CELL / min_face_size
    shortest = min(size) * scale
    scales = []
    while shortest >= PNET_CELL:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
        shortest *= PYRAMID_FACTOR
    return scales


def _regressed_square(candidates: Candidates) -> Candidates:
    """P-Net's box regression, then squared (facenet-pytorch's steps between stage 1 and 2)."""
    from facenet_pytorch.models.utils.detect_face import rerec

    b = candidates.boxes
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    regressed = torch.stack(
        [b[:, 0] + b[:, 5] * w, b[:, 1] + b[:, 6] * h, b[:, 2] + b[:, 7] * w, b[:, 3] + b[:, 8] * h, b[:, 4]],
        dim=1,
    )
    return Candidates(rerec(regressed), candidates.image)


def _split(candidates: Candidates, landmarks: Tensor, count: int) -> list[Detections]:
    boxes, owner = candidates.boxes.cpu().numpy().astype(np.float64), candidates.image.cpu().numpy()
    points = landmarks.cpu().numpy().astype(np.float64)
    return [Detections(boxes[owner == i, :4], points[owner == i], boxes[owner == i, 4]) for i in range(count)]
