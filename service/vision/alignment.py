"""5-point similarity alignment: landmarks → canonical crop, all faces of an image in one batched warp."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

FloatArray = npt.NDArray[np.float64]


def estimate_similarity(src: FloatArray, dst: FloatArray) -> FloatArray:
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


def _pixel_to_normalised(size_w: int, size_h: int) -> FloatArray:
    """3x3 map from pixel coords to grid_sample's [-1, 1] coords (align_corners=False)."""
    return np.array(
        [[2.0 / size_w, 0.0, 1.0 / size_w - 1.0], [0.0, 2.0 / size_h, 1.0 / size_h - 1.0], [0, 0, 1]]
    )


def sampling_grid_theta(matrix: FloatArray, image_wh: tuple[int, int], crop_size: int) -> FloatArray:
    """affine_grid's theta for one face: crop normalised coords → image normalised coords."""
    forward = np.vstack([matrix, [0.0, 0.0, 1.0]])  # image px → crop px
    crop_to_image = np.linalg.inv(forward)
    theta = (
        _pixel_to_normalised(*image_wh)
        @ crop_to_image
        @ np.linalg.inv(_pixel_to_normalised(crop_size, crop_size))
    )
    return theta[:2]


def align_faces(
    rgb: npt.NDArray[np.uint8],
    landmarks: FloatArray,
    template: FloatArray,
    crop_size: int,
) -> npt.NDArray[np.float32]:
    """Warp every face to ``template`` at once: returns N x 3 x crop x crop float32 RGB in [0, 1]."""
    if len(landmarks) == 0:
        return np.zeros((0, 3, crop_size, crop_size), dtype=np.float32)
    image_wh = (rgb.shape[1], rgb.shape[0])
    thetas = np.stack(
        [
            sampling_grid_theta(estimate_similarity(points, template), image_wh, crop_size)
            for points in landmarks
        ]
    )
    image = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    grid = F.affine_grid(
        torch.from_numpy(thetas).float(), [len(thetas), 3, crop_size, crop_size], align_corners=False
    )
    # expand() shares the image memory across faces instead of copying it once per face.
    crops = F.grid_sample(
        image.expand(len(thetas), -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return crops.clamp_(0.0, 1.0).numpy()
