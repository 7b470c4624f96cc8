"""5-point similarity alignment: landmarks → canonical crop, anti-aliased, cut from the full-resolution image.

Each face is warped from its own region of interest: the part of the image its crop window covers. When
the crop is smaller than the face (a 300-px face into a 64-px crop), that region is first reduced with an
anti-aliasing filter to about the crop's scale and only then warped; a bilinear warp straight from the
full-resolution image would read one pixel in five and alias. Only the region is ever converted to float,
so a 40-Mpx photo costs a few small tensors per face, not a 480 MB float copy of the whole image.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from service.arrays import Float64Array, FloatArray

Crops = FloatArray

# OpenCV's fixed-point RGB→grey weights (ITU-R BT.601 in 14-bit fixed point, cv::cvtColor COLOR_RGB2GRAY):
# the conversion `fer` applied to every face before this model saw it, rounding included.
GRAY_WEIGHTS_Q14 = (4899, 9617, 1868)
GRAY_SHIFT = 14


def estimate_similarity(src: Float64Array, dst: Float64Array) -> Float64Array:
    """Least-squares similarity transform (Umeyama 1991) taking ``src`` points onto ``dst``.

    Returns the 2x3 matrix M with dst ≈ M @ [x, y, 1]. Rotation, uniform scale and translation only,
    so a face is never sheared or squashed to fit the template.
    """
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is not a valid face pose
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def _homogeneous(matrix: Float64Array) -> Float64Array:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def affine_inverse(matrix: Float64Array) -> Float64Array:
    """The inverse of a 3x3 affine map (last row 0, 0, 1), in closed form.

    np.linalg.inv solves it with OpenBLAS's parallel LU, which wakes numpy's BLAS worker for a 3x3 matrix;
    the worker then spins for ~0.1 s (service/launcher/openmp.py). Alignment runs a few of these per face."""
    (a, b), (c, d) = matrix[0, :2], matrix[1, :2]
    linear = np.array([[d, -b], [-c, a]]) / (a * d - b * c)
    shift = -(linear @ matrix[:2, 2])
    return np.vstack([np.hstack([linear, shift[:, None]]), [0.0, 0.0, 1.0]])


def _pixel_to_normalised(size_w: int, size_h: int) -> Float64Array:
    """3x3 map from pixel coords (centres on integers) to grid_sample's [-1, 1] (align_corners=False)."""
    return np.array(
        [[2.0 / size_w, 0.0, 1.0 / size_w - 1.0], [0.0, 2.0 / size_h, 1.0 / size_h - 1.0], [0, 0, 1]]
    )


def sampling_grid_theta(matrix: Float64Array, image_wh: tuple[int, int], crop_size: int) -> Float64Array:
    """affine_grid's theta for one face: crop normalised coords → image normalised coords."""
    crop_to_image = affine_inverse(_homogeneous(matrix))
    theta = (
        _pixel_to_normalised(*image_wh)
        @ crop_to_image
        @ affine_inverse(_pixel_to_normalised(crop_size, crop_size))
    )
    result: Float64Array = theta[:2]
    return result


def crop_corners(matrix: Float64Array, crop_size: int) -> Float64Array:
    """The crop's 4 outer corners (top-left, top-right, bottom-right, bottom-left) in image pixels."""
    edge = (-0.5, crop_size - 0.5)
    corners = np.array([[edge[0], edge[0]], [edge[1], edge[0]], [edge[1], edge[1]], [edge[0], edge[1]]])
    crop_to_image = affine_inverse(_homogeneous(matrix))
    image_corners: Float64Array = corners @ crop_to_image[:2, :2].T + crop_to_image[:2, 2]
    return image_corners


def crop_scale(matrix: Float64Array) -> float:
    """Crop pixels per image pixel (the similarity's uniform scale)."""
    return math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))


def _region(corners: Float64Array, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer bounds (x0, y0, x1, y1) of the image part the crop reads, clipped to the image."""
    x0 = math.floor(corners[:, 0].min() - margin)
    y0 = math.floor(corners[:, 1].min() - margin)
    x1 = math.ceil(corners[:, 0].max() + margin) + 1
    y1 = math.ceil(corners[:, 1].max() + margin) + 1
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    return x0, y0, max(min(x1, width), x0 + 1), max(min(y1, height), y0 + 1)


def to_gray(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """H x W x 3 RGB → H x W x 1 grey, bit-exact with OpenCV's COLOR_RGB2GRAY on uint8."""
    weights = np.asarray(GRAY_WEIGHTS_Q14, dtype=np.uint32)
    gray = (rgb.astype(np.uint32) @ weights + (1 << (GRAY_SHIFT - 1))) >> GRAY_SHIFT
    return gray.astype(np.uint8)[..., None]


def _reduced_region(region: torch.Tensor, scale: float, antialias: bool) -> tuple[torch.Tensor, Float64Array]:
    """The region reduced to about the crop's scale (when the crop is smaller), and the 3x3 map from region
    pixels to the reduced pixels."""
    height, width = region.shape[-2:]
    if not antialias or scale >= 1.0:
        return region, np.eye(3)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    reduced = F.interpolate(region, size=size, mode="bilinear", antialias=True, align_corners=False)
    fx, fy = size[1] / width, size[0] / height
    # Pixel centres: u + 0.5 = (x + 0.5) * f, the convention of align_corners=False.
    return reduced, np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])


def align_face(
    image: npt.NDArray[np.uint8],
    matrix: Float64Array,
    crop_size: int,
    *,
    antialias: bool = True,
    gray: bool = False,
) -> torch.Tensor:
    """One face: ``matrix`` (image px → crop px) applied to its region; returns 1 x C x S x S in [0, 1]
    (C = 1 for ``gray``: the region is converted to grey on uint8 first, as OpenCV does, then resampled)."""
    height, width = image.shape[:2]
    scale = crop_scale(matrix)
    # Bilinear reads one pixel beyond the sample point; after a reduction by `scale` that is 1/scale pixels.
    margin = 2.0 / min(scale, 1.0)
    x0, y0, x1, y1 = _region(crop_corners(matrix, crop_size), margin, width, height)
    # np.array copies the region only (the decoded photo itself is read-only and never copied whole).
    pixels = to_gray(image[y0:y1, x0:x1]) if gray else np.array(image[y0:y1, x0:x1])
    region = torch.from_numpy(pixels)
    region = region.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    reduced, region_to_reduced = _reduced_region(region, scale, antialias)
    image_to_region = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    reduced_to_crop = _homogeneous(matrix) @ affine_inverse(region_to_reduced @ image_to_region)
    theta = sampling_grid_theta(reduced_to_crop[:2], (reduced.shape[-1], reduced.shape[-2]), crop_size)
    shape = [1, reduced.shape[1], crop_size, crop_size]
    grid = F.affine_grid(torch.from_numpy(theta).float()[None], shape, align_corners=False)
    # "border": a face at the image edge continues its edge pixels (fer pads with a flat grey instead).
    return F.grid_sample(reduced, grid, mode="bilinear", padding_mode="border", align_corners=False)


def align_faces(
    rgb: npt.NDArray[np.uint8],
    landmarks: Float64Array,
    template: Float64Array,
    crop_size: int,
    *,
    antialias: bool = True,
    gray: bool = False,
) -> Crops:
    """Warp every face to ``template``: N x C x crop x crop float32 in [0, 1] (C = 1 for grey, else 3)."""
    if len(landmarks) == 0:
        return np.zeros((0, 1 if gray else 3, crop_size, crop_size), dtype=np.float32)
    crops = [
        align_face(rgb, estimate_similarity(points, template), crop_size, antialias=antialias, gray=gray)
        for points in landmarks
    ]
    return torch.cat(crops).clamp_(0.0, 1.0).numpy()
