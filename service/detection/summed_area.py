"""Area resampling from a summed-area table: the pyramid levels and box crops MTCNN's nets read.

Any integer box of pixels sums in four lookups of an image's table, so a box mean equals what torch's
``interpolate(mode="area")`` (adaptive average pooling) computes, for every pyramid level and every crop of
one image, without a pass over the full image per level. Nothing here knows MTCNN beyond the input
normalisation its nets expect ((x - 127.5) / 128).
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor


def as_tensor(image: npt.NDArray[np.uint8]) -> Tensor:
    """H x W x 3 uint8 → a 1 x 3 x H x W uint8 view (channels-last in memory): no copy. The summed-area
    table is the only thing read from it, so a read-only decoded photo is never written through."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        pixels = torch.from_numpy(np.ascontiguousarray(image))
    return pixels.permute(2, 0, 1).unsqueeze(0)


def crops(images: list[SummedArea], boxes: Tensor, owner: Tensor, size: int) -> Tensor:
    """Every box (``owner``: the index of its image), clipped to its image, area-resampled to size x size:
    the nets' N x 3 x S x S input (normalised, channels-last in memory).

    Equal to facenet-pytorch's per-box ``interpolate(image[:, :, y0:y1, x0:x1], size, mode="area")``
    (adaptive average pooling): each output pixel is the mean of an integer box of input pixels, read
    here from the image's summed-area table in one gather for all boxes.
    """
    if len(images) == 1:  # one photo: its crops are the batch (no scatter into a shared one)
        return images[0].crops(boxes, size).permute(0, 3, 1, 2)
    out = torch.empty((len(boxes), size, size, 3), device=boxes.device)
    for index, image in enumerate(images):
        mine = (owner == index).nonzero().flatten()
        if len(mine):
            out[mine] = image.crops(boxes[mine], size)
    return out.permute(0, 3, 1, 2)


def pyramid_level(images: list[SummedArea], size: tuple[int, int]) -> Tensor:
    """Equally sized images area-resampled to ``size`` (h, w): P-Net's G x C x h x w input (normalised,
    channels-last in memory).

    facenet-pytorch's interpolate(mode="area") bins, read from each image's summed-area table instead of a
    pass over the full image; each image's sums are written straight into the batch (no allocation per
    step, no concatenation)."""
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
        # after the sums (an allocating cumsum() costs a full table copy per call).
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
# in L1 while each column is walked (docs/benchmarks.md has the block-size measurements).
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
