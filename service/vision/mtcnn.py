"""MTCNN (Zhang et al. 2016) with facenet-pytorch's trained P/R/O-Nets, run as fast as these small nets allow.

facenet-pytorch stays the weights' source and the reference implementation (its ``detect_face``; parity is
tested in tests/integration/test_detector_parity.py). What changes is how the cascade is executed:

- the nets get channels-last inputs and run compiled by OpenVINO (service/vision/openvino_nets.py, the
  default) or as facenet-pytorch's modules in channels-last memory, where oneDNN has fast kernels for
  their tiny convolutions (R-Net on messi5's 390 candidates: 10.8 ms OpenVINO, 14.2 ms channels-last,
  38.4 ms in torch's default layout; see the README benchmark);
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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from fermodels.config import DETECTOR_STAGES
from service.vision.detection import Detections

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
TRITON_STAGES = tuple(stage.name for stage in DETECTOR_STAGES)
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
            tables = [SummedArea(_as_tensor(image).to(self._device)) for image in images]
            candidates = self._proposals(tables, sizes)
            candidates = self._refine(tables, candidates)
            boxes, landmarks = self._output(tables, candidates)
        return _split(boxes, landmarks, len(images))

    # --- stage 1: P-Net over each image's pyramid

    def _proposals(self, images: list[SummedArea], min_face_sizes: list[int]) -> Candidates:
        from facenet_pytorch.models.utils.detect_face import generateBoundingBox
        from torchvision.ops import batched_nms

        # Every level of every image first, then P-Net on each, back to back: the cores switch from torch's
        # threads to OpenVINO's once instead of twice a level (1080p group photo: 79 -> 75 ms for levels
        # and P-Net; 8 clip frames 102 -> 96 ms).
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
        regression, probabilities = self._rnet(crops(images, candidates, 24))
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
        regression, points, probabilities = self._onet(crops(images, candidates, 48))
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


def _as_tensor(image: npt.NDArray[np.uint8]) -> Tensor:
    """H x W x 3 uint8 → a 1 x 3 x H x W uint8 view (channels-last in memory): no copy. The summed-area
    table is the only thing read from it, so a read-only decoded photo is never written through."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        pixels = torch.from_numpy(np.ascontiguousarray(image))
    return pixels.permute(2, 0, 1).unsqueeze(0)


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


def crops(images: list[SummedArea], candidates: Candidates, size: int) -> Tensor:
    """Every candidate, clipped to its image, area-resampled to size x size: the nets' N x 3 x S x S input
    (normalised, channels-last in memory).

    Equal to facenet-pytorch's per-box ``interpolate(image[:, :, y0:y1, x0:x1], size, mode="area")``
    (adaptive average pooling): each output pixel is the mean of an integer box of input pixels, read
    here from the image's summed-area table in one gather for all boxes.
    """
    if len(images) == 1:  # one photo: its crops are the batch (no scatter into a shared one)
        return images[0].crops(candidates.boxes, size).permute(0, 3, 1, 2)
    out = torch.empty((len(candidates), size, size, 3), device=candidates.boxes.device)
    for index, image in enumerate(images):
        mine = (candidates.image == index).nonzero().flatten()
        if len(mine):
            out[mine] = image.crops(candidates.boxes[mine], size)
    return out.permute(0, 3, 1, 2)


def pyramid_level(images: list[SummedArea], size: tuple[int, int]) -> Tensor:
    """Equally sized images area-resampled to ``size`` (h, w): P-Net's G x C x h x w input (normalised,
    channels-last in memory).

    facenet-pytorch's interpolate(mode="area") bins, read from each image's summed-area table instead of a
    pass over the full image; each image's sums are written straight into the batch (measured on a 1080p
    pyramid: 31 ms, against 50 ms for allocating per step and concatenating)."""
    first = images[0]
    zero = torch.zeros(1, dtype=torch.int64, device=first.device)
    (rows0,), (rows1,) = _bins(zero, zero + first.height, size[0])
    (cols0,), (cols1,) = _bins(zero, zero + first.width, size[1])
    scale = _pixel_scale((rows1 - rows0)[:, None, None] * (cols1 - cols0)[None, :, None])
    out = torch.empty((len(images), *size, first.channels), device=first.device)
    for image, sink in zip(images, out, strict=True):
        torch.mul(image.grid_sums((rows0, rows1), (cols0, cols1)), scale, out=sink)
    return out.sub_(PIXEL_SHIFT).permute(0, 3, 1, 2)


# MTCNN's input normalisation (x - 127.5) / 128 of a box mean x = sum / area, as sum * scale - shift: two
# passes over the pixels (multiply, shift) instead of four (to float, divide by the area, shift, scale).
# Each way rounds a few times in float32; the parity tests hold the results to facenet-pytorch's.
PIXEL_SHIFT = 127.5 / 128.0


def _pixel_scale(area: Tensor) -> Tensor:
    return (1.0 / 128.0) / area.to(torch.float32)


class SummedArea:
    """One image's summed-area table: the sum of any integer box of pixels in four lookups.

    Integer sums are exact, so a box mean equals what area resampling computes. The table is H+1 x W+1
    rows of C channels (channels last), so one lookup fetches a pixel's three channels together; int32
    while 255 x H x W fits, which halves the memory each gather reads (the analysis size keeps images far
    below that bound)."""

    def __init__(self, image: Tensor) -> None:
        channels, self.height, self.width = image.shape[1], image.shape[2], image.shape[3]
        dtype = torch.int32 if 255 * self.height * self.width < 2**31 else torch.int64
        table = torch.empty((self.height + 1, self.width + 1, channels), dtype=dtype, device=image.device)
        table[0], table[1:, 0] = 0, 0  # only the border needs zeros: the rest is overwritten
        table[1:, 1:] = image[0].permute(1, 2, 0)
        # In place over the whole table (its zero first row and column stay zero): one buffer, no copy
        # after the sums. The allocating cumsum() took 105 ms on a 1080p frame.
        _cumsum_down(table)
        torch.cumsum(table, 1, out=table)
        self._table = table
        self._flat = table.view(-1, channels)
        self.channels, self.device = channels, image.device
        self._stride = self.width + 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def normalised_means(self, r0: Tensor, r1: Tensor, c0: Tensor, c1: Tensor) -> Tensor:
        """The nets' normalised pixels for the boxes rows [r0, r1) x cols [c0, c1) (broadcast together):
        shape x C, float32.

        A box sum is at most 255 x its area: exact in float32 for boxes under 2^24 / 255 (65,793) pixels,
        which every crop and pyramid level of an image at the default analysis size is; beyond that
        float32 rounds it (relative error 6e-8)."""
        shape = (r0 + c0).shape
        top, bottom = r0 * self._stride, r1 * self._stride

        def at(rows: Tensor, cols: Tensor) -> Tensor:
            return self._flat.index_select(0, (rows + cols).reshape(-1))

        sums = at(bottom, c1).sub_(at(top, c1)).sub_(at(bottom, c0)).add_(at(top, c0))
        scale = _pixel_scale(((r1 - r0) * (c1 - c0)).reshape(-1, 1))
        return torch.mul(sums, scale).sub_(PIXEL_SHIFT).reshape(*shape, -1)

    def grid_sums(self, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]) -> Tensor:
        """Sums of the grid of boxes rows[0][i]..rows[1][i] x cols[0][j]..cols[1][j]: h x w x C.

        A grid separates the four lookups: whole table rows first (the row bands' column sums, h x W+1:
        contiguous copies), then columns of those: half of ``means``' scattered reads. In place after each
        gather: fresh buffers cost page faults on every call."""
        bands = self._table.index_select(0, rows[1]).sub_(self._table.index_select(0, rows[0]))
        return bands.index_select(1, cols[1]).sub_(bands.index_select(1, cols[0]))

    def crops(self, boxes: Tensor, size: int) -> Tensor:
        """Each box (x1, y1, x2, y2), clipped as facenet-pytorch's pad() does, at S x S: N x S x S x C
        normalised pixels."""
        b = boxes[:, :4].trunc().to(torch.int64)
        # pad(): truncate to int, clip to [1, size], then read rows y-1 .. ey-1 (columns alike).
        x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
        x1, y1 = b[:, 2].clamp(max=self.width), b[:, 3].clamp(max=self.height)
        rows0, rows1 = _bins(y0, y1, size)
        cols0, cols1 = _bins(x0, x1, size)
        return self.normalised_means(
            rows0[:, :, None], rows1[:, :, None], cols0[:, None, :], cols1[:, None, :]
        )


# Rows per cumsum call down a summed-area table: a block of 32 table rows of a 1080p frame (32 x 23 kB) stays
# in L1 while each column is walked (measured on 1080p, 16 to 128 rows: 2.5-3.4 ms, against 7.8 ms whole).
ROW_BLOCK = 32


def _cumsum_down(table: Tensor) -> None:
    """``torch.cumsum(table, 0, out=table)``, in blocks of ROW_BLOCK rows, each block's last row carried into
    the next. torch walks each column down the whole table, a row's stride per add, so every add waits on
    a load from L2 or beyond; within a block the rows stay in L1."""
    rows = table.view(table.shape[0], -1)
    for start in range(0, rows.shape[0], ROW_BLOCK):
        block = rows[start : start + ROW_BLOCK]
        torch.cumsum(block, 0, out=block)
        if start:
            block.add_(rows[start - 1])  # the previous block's last row: already a full column sum


def _bins(start: Tensor, stop: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """adaptive_avg_pool's bins over [start, stop): floor(i L / S) .. ceil((i + 1) L / S), per box."""
    length = (stop - start).clamp(min=1)[:, None]
    i = torch.arange(size, device=start.device)[None, :]
    first = start[:, None] + torch.div(i * length, size, rounding_mode="floor")
    last = start[:, None] - torch.div(-(i + 1) * length, size, rounding_mode="floor")
    return first, last


def _split(candidates: Candidates, landmarks: Tensor, count: int) -> list[Detections]:
    boxes, owner = candidates.boxes.cpu().numpy().astype(np.float64), candidates.image.cpu().numpy()
    points = landmarks.cpu().numpy().astype(np.float64)
    return [Detections(boxes[owner == i, :4], points[owner == i], boxes[owner == i, 4]) for i in range(count)]
