"""The one face-cropping component: detections → the faces kept → each model's crop, for images and clips.

A model's crop geometry comes from its ``ModelConfig`` (read from Triton's config.pbtxt): the window
around the 5 landmarks, grey or colour, the training images' native resolution; or, for ``crop_mode="box"``
(HSEmotion), the detector's box itself, cut as integers and stretched to a square. The image and the clip
pipeline both call ``FaceCropper``, so the two can never cut faces differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

from fermodels.contract import ModelConfig
from service.detection.base import Detections
from service.vision.alignment import Crops, align_faces, crop_corners, estimate_similarity, to_gray

# FER2013 stored its 48x48 faces as uint8: a crop cut at that resolution is rounded to the same steps.
UINT8_LEVELS = 255.0


@dataclass(frozen=True)
class CropGeometry:
    """How one model's crops are cut: a similarity warp of the 5 landmarks onto ``template``, or (``box``)
    the detector's box as integers, stretched to a square."""

    input_size: int  # what the model takes
    cut_size: int  # what is cut from the image (the training images' resolution; == input_size if none)
    template: tuple[tuple[float, float], ...]  # the 5 landmarks in cut_size pixels
    gray: bool
    antialias: bool = True
    box: bool = False  # crop_mode "box": template unused, ``boxes`` required

    @classmethod
    def of(cls, config: ModelConfig, *, antialias: bool = True) -> CropGeometry:
        return cls(
            input_size=config.input_size,
            cut_size=config.crop_size,
            template=config.landmark_template(),
            gray=config.crop_color == "gray",
            antialias=antialias,
            box=config.crop_mode == "box",
        )

    def crop(
        self,
        rgb: npt.NDArray[np.uint8],
        landmarks: npt.NDArray[np.float64],
        boxes: npt.NDArray[np.float64] | None = None,
    ) -> Crops:
        """N x 3 x input_size x input_size float32 RGB in [0, 1] (grey models get 3 equal channels).
        ``boxes`` (N x 4, x1 y1 x2 y2): the detector's boxes, which a ``box`` geometry cuts."""
        if self.box:
            cut = box_faces(rgb, _required(boxes, len(landmarks)), self.cut_size, gray=self.gray)
        else:
            template = np.asarray(self.template, dtype=np.float64)
            cut = align_faces(
                rgb, landmarks, template, self.cut_size, antialias=self.antialias, gray=self.gray
            )
        if self.cut_size != self.input_size:
            cut = _upsampled(np.round(cut * UINT8_LEVELS) / UINT8_LEVELS, self.input_size)
        # The serving contract is RGB: grey is three equal channels, whose luma is the grey itself.
        return np.ascontiguousarray(np.repeat(cut, 3, axis=1) if cut.shape[1] == 1 else cut, dtype=np.float32)

    def crop_landmarks(
        self, landmarks: npt.NDArray[np.float64], boxes: npt.NDArray[np.float64] | None = None
    ) -> npt.NDArray[np.float32]:
        """Each face's landmarks carried into its own crop and scaled to [0, 1] (the crop's edges): N x K x 2,
        what a model with ``num_landmarks`` takes beside its crop (the template's own points map to
        ``ModelConfig.normalised_landmark_template``)."""
        if self.box:
            corners = integer_boxes(_required(boxes, len(landmarks)))
            origin, side = corners[:, None, :2], (corners[:, None, 2:] - corners[:, None, :2])
            return ((landmarks - origin) / side).astype(np.float32)
        template = np.asarray(self.template, dtype=np.float64)
        moved = np.zeros((len(landmarks), len(template), 2), dtype=np.float32)
        for index, points in enumerate(landmarks):
            matrix = estimate_similarity(points, template)  # image px -> crop px, pixel centres on integers
            moved[index] = (points @ matrix[:, :2].T + matrix[:, 2] + 0.5) / self.cut_size
        return moved

    def windows(
        self, landmarks: npt.NDArray[np.float64], boxes: npt.NDArray[np.float64] | None = None
    ) -> npt.NDArray[np.float64]:
        """Each face's crop window in image pixels: N x 4 corners (x, y), clockwise from top-left."""
        if self.box:
            x0, y0, x1, y1 = integer_boxes(_required(boxes, len(landmarks))).astype(np.float64).T
            corners: npt.NDArray[np.float64] = np.stack(
                [np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)],
                axis=1,
            ).reshape(-1, 4, 2)
            return corners
        template = np.asarray(self.template, dtype=np.float64)
        windows = [crop_corners(estimate_similarity(points, template), self.cut_size) for points in landmarks]
        return np.stack(windows) if windows else np.zeros((0, 4, 2))


def _required(boxes: npt.NDArray[np.float64] | None, count: int) -> npt.NDArray[np.float64]:
    if boxes is None or len(boxes) != count:
        raise ValueError("a box crop geometry needs one detector box per face")
    return boxes


def integer_boxes(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The boxes as HSEmotion's test code cuts them: ``astype(int)`` (towards zero; the boxes are clipped to
    the image, so that is the floor), at least one pixel wide and high."""
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(np.int64)
    corners[:, 2] = np.maximum(corners[:, 2], corners[:, 0] + 1)
    corners[:, 3] = np.maximum(corners[:, 3], corners[:, 1] + 1)
    return corners


def box_faces(
    rgb: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float64], size: int, *, gray: bool = False
) -> Crops:
    """``rgb[y1:y2, x1:x2]`` of each integer box resized to size x size by Pillow's bilinear filter
    (antialiased when shrinking), exactly what torchvision's ``Resize((S, S))`` does to the PIL image in
    the authors' transform; N x C x S x S float32 in [0, 1], C = 1 for ``gray``."""
    channels = 1 if gray else 3
    out = np.zeros((len(boxes), channels, size, size), dtype=np.float32)
    height, width = rgb.shape[:2]
    for index, (x0, y0, x1, y1) in enumerate(integer_boxes(boxes)):
        x0, y0 = min(x0, width - 1), min(y0, height - 1)  # a box on the far edge still gets its last pixel
        pixels = np.ascontiguousarray(rgb[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)])
        if gray:
            pixels = to_gray(pixels)[..., 0]
        resized = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
        out[index] = (resized.reshape(size, size, channels).transpose(2, 0, 1)) / UINT8_LEVELS
    return out


def _upsampled(cut: Crops, size: int) -> Crops:
    """Bilinear resize with pixel-centre alignment, as the training code's cv2.resize(INTER_LINEAR) did."""
    tensor = F.interpolate(torch.from_numpy(cut), size=(size, size), mode="bilinear", align_corners=False)
    return tensor.clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True)
class FaceSelection:
    """Which detections become faces: the most confident ``max_faces`` at or above ``min_score``."""

    max_faces: int
    min_score: float

    def apply(self, found: Detections, width: int, height: int) -> Detections:
        return found.top(self.max_faces, self.min_score).clipped_to(width, height)


@dataclass(frozen=True)
class CroppedFaces:
    faces: Detections
    crops: tuple[Crops, ...]  # one N x 3 x S x S batch per geometry, in the order given
    # One N x 5 x 2 array per geometry: the landmarks in that crop's [0, 1] coordinates (landmark models).
    landmarks: tuple[npt.NDArray[np.float32], ...] = ()


class FaceCropper:
    """Selects the faces of one image or frame and cuts them for each model that will see them."""

    def __init__(self, selection: FaceSelection, *geometries: CropGeometry) -> None:
        self._selection = selection
        self._geometries = geometries

    def __call__(self, rgb: npt.NDArray[np.uint8], found: Detections) -> CroppedFaces:
        faces = self._selection.apply(found, int(rgb.shape[1]), int(rgb.shape[0]))
        cut: dict[CropGeometry, Crops] = {}
        for geometry in self._geometries:  # two models with one geometry share their crops
            if geometry not in cut:
                cut[geometry] = geometry.crop(rgb, faces.landmarks, faces.boxes)
        points = tuple(geometry.crop_landmarks(faces.landmarks, faces.boxes) for geometry in self._geometries)
        return CroppedFaces(faces, tuple(cut[geometry] for geometry in self._geometries), points)
