"""MTCNN's three nets compiled by OpenVINO for this CPU (``FER_DETECTOR_RUNTIME=openvino``, the default).

Chosen by measurement: each net alone on the inputs the cascade gives it, in every runtime installed,
and the whole cascade against facenet-pytorch's ``detect`` (`make bench`; the table and the runtimes
tried are on docs/benchmarks.md).

The nets are converted in process from facenet-pytorch's modules (``openvino.convert_model``: no file, no
ONNX step), so its wheel stays the weights' only source. Outputs equal torch's to ~3e-6
(tests/integration/test_detector_parity.py holds the whole cascade to facenet-pytorch's ``detect``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch
from torch import Tensor

from service.detection.mtcnn import CascadeNets, load_nets

logger = logging.getLogger(__name__)

# P-Net is fully convolutional (any H x W); R-Net and O-Net take fixed 24- and 48-px crops.
INPUT_SHAPES = ([-1, 3, -1, -1], [-1, 3, 24, 24], [-1, 3, 48, 48])
EXAMPLES = ((1, 3, 64, 64), (2, 3, 24, 24), (2, 3, 48, 48))

# The CPU plugin prepares every new input shape once and caches it (an entry per node and shape). Its default
# of 5000 entries let the process grow with every new candidate count and photo size, towards the pod's
# memory limit (docs/benchmarks.md, "Where the detection time goes", has the measurements):
# - R-Net, O-Net: 1000 entries hold all their batch buckets; the cache pays for these small nets;
# - P-Net: 100. Its shapes follow the photo sizes, and its convolutions dwarf the preparation, so a small
#   cache costs it nothing measurable while bounding its largest buffers.
SHAPE_CACHE_ENTRIES = (100, 1000, 1000)  # P-Net, R-Net, O-Net


def batch_bucket(count: int) -> int:
    """The batch size R-Net and O-Net run at for ``count`` crops: powers of two up to 64, then eight sizes
    an octave (72, 80, ... 128, 144, ...). So the nets meet ~70 batch shapes up to 16k crops (16 merged
    1080p images' worth), all prepared and cached after a little traffic, instead of a new shape per
    candidate count. The padding rows are zeros and are dropped (the nets treat every crop on its own):
    at most 2x for a handful of crops, under 1/8 more work past 64."""
    if count <= 64:
        return 1 << max(0, count - 1).bit_length()
    step = 1 << ((count - 1).bit_length() - 4)
    return -(-count // step) * step


# Batch buckets prepared at startup (FER_DETECTOR_WARMUP): R-Net's up to 1024 crops, O-Net's up to 256, the
# candidate counts of one to a few merged photos.
WARM_UP_CROPS = (1024, 256)


def warm_up(nets: CascadeNets, crops: tuple[int, int] = WARM_UP_CROPS) -> int:
    """Runs every R-Net and O-Net batch bucket up to ``crops`` once, on zeros; returns how many. The plugin's
    shape cache is shared by all infer requests of a net, so the first requests after startup run at the
    cached speed instead of preparing their shapes."""
    count, start = 0, time.perf_counter()
    with torch.inference_mode():
        for net, side, most in ((nets.rnet, 24, crops[0]), (nets.onet, 48, crops[1])):
            for batch in sorted({batch_bucket(n) for n in range(1, most + 1)}):
                net(torch.zeros((batch, side, side, 3)).permute(0, 3, 1, 2))
                count += 1
    logger.info("MTCNN nets warmed: %d batch shapes in %.2f s", count, time.perf_counter() - start)
    return count


class OpenVinoNet:
    """One compiled net as a callable: N x 3 x H x W float32 in (any memory layout), its outputs back.

    ``bucketed``: the batch runs padded to ``batch_bucket`` (R-Net, O-Net; P-Net's shapes are its pyramid
    levels). An infer request holds its own buffers, so each calling thread gets its own
    (FER_DETECTOR_WORKERS may run several cascades at once)."""

    def __init__(self, compiled: Any, *, bucketed: bool = False) -> None:
        self._compiled = compiled
        self._bucketed = bucketed
        self._local = threading.local()

    def __call__(self, batch: Tensor) -> tuple[Tensor, ...]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        count = int(batch.shape[0])
        runs_at = batch_bucket(count) if self._bucketed else count
        # The cascade builds its inputs channels-last (N x C x H x W over N x H x W x C memory), which is the
        # NHWC layout the compiled model takes: handed over without a copy (unless padded to its bucket).
        pixels = batch.permute(0, 2, 3, 1)
        if runs_at != count:
            padded = torch.zeros((runs_at, *pixels.shape[1:]), dtype=pixels.dtype)
            padded[:count] = pixels
            pixels = padded
        # share_outputs=False copies the outputs: the request reuses its buffers on the next call.
        result = request.infer({0: pixels.contiguous().numpy()}, share_inputs=True, share_outputs=False)
        return tuple(torch.from_numpy(result[output][:count]) for output in self._compiled.outputs)


def nhwc_input(model: Any) -> Any:
    """The model takes N x H x W x C; OpenVINO folds the transpose into the first convolution."""
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_layout("NHWC")
    steps.input().model().set_layout("NCHW")
    return steps.build()


def compile_config(threads: int, streams: int, cache_entries: int) -> dict[str, Any]:
    return {
        "NUM_STREAMS": streams,
        "INFERENCE_NUM_THREADS": threads,
        # f32 on purpose: on CPUs with AMX/AVX512-BF16 OpenVINO would otherwise default to bf16, which moves
        # scores by more than the 1e-3 the parity test allows.
        "INFERENCE_PRECISION_HINT": "f32",
        # Write-only: the compiled model does not report it back.
        "CPU_RUNTIME_CACHE_CAPACITY": cache_entries,
    }


def openvino_nets(threads: int, streams: int = 1) -> CascadeNets:
    """The three nets on ``threads`` CPU threads in all, split over ``streams`` (one per detection worker:
    each runs its cascade's calls on its own stream, concurrently with the others)."""
    import openvino as ov

    core = ov.Core()
    compiled = []
    with torch.inference_mode():
        for net, shape, example, entries in zip(
            load_nets(), INPUT_SHAPES, EXAMPLES, SHAPE_CACHE_ENTRIES, strict=True
        ):
            model = ov.convert_model(net, example_input=torch.zeros(example), input=[ov.PartialShape(shape)])
            config = compile_config(threads, streams, entries)
            fixed_size_crops = shape[2] != -1
            compiled.append(
                OpenVinoNet(core.compile_model(nhwc_input(model), "CPU", config), bucketed=fixed_size_crops)
            )
    logger.info(
        "MTCNN nets compiled by OpenVINO %s (%d threads, %d streams)", ov.__version__, threads, streams
    )
    pnet, rnet, onet = compiled
    return CascadeNets(pnet, rnet, onet)
