"""MTCNN's nets as the gateway runs them: OpenVINO-compiled == facenet-pytorch's eager modules.

The cascade hands every net an N x C x H x W tensor over N x H x W x C memory (channels-last); the compiled
models take that memory as it is (service/detection/openvino_nets.py), for any batch size and, for P-Net,
any pyramid-level size. The whole cascade is held to facenet-pytorch's ``detect`` in
tests/integration/test_detector_parity.py; this pins each net on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from service.detection.mtcnn import CascadeNets, load_nets
from service.detection.openvino_nets import (
    SHAPE_CACHE_ENTRIES,
    batch_bucket,
    compile_config,
    openvino_nets,
    warm_up,
)
from tests.models.helpers import assert_same_outputs, seeded_randn

OPENVINO_ATOL = 1e-4  # measured ~3e-6: different kernels, same float32 arithmetic


@pytest.fixture(scope="module")
def compiled() -> CascadeNets:
    return openvino_nets(threads=2)


def channels_last(*shape: int, seed: int = 1) -> torch.Tensor:
    return seeded_randn(*shape, seed=seed).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("stage", "shape"),
    [
        ("pnet", (1, 3, 205, 329)),  # messi5's first pyramid level
        ("pnet", (3, 3, 13, 21)),  # its smallest, for three frames of a clip
        ("rnet", (1, 3, 24, 24)),
        ("rnet", (390, 3, 24, 24)),  # runs padded to 448
        ("rnet", (448, 3, 24, 24)),  # a bucket's own size: no padding
        ("onet", (29, 3, 48, 48)),  # padded to 32
        ("onet", (1, 3, 48, 48)),
    ],
)
def test_openvino_nets_equal_the_eager_modules(
    compiled: CascadeNets, stage: str, shape: tuple[int, ...]
) -> None:
    eager = dict(zip(("pnet", "rnet", "onet"), load_nets(), strict=True))[stage]
    batch = channels_last(*shape)
    with torch.inference_mode():
        expected = tuple(eager(batch))
        actual = getattr(compiled, stage)(batch)
    assert_same_outputs(actual, expected, atol=OPENVINO_ATOL)


def test_a_default_layout_input_gives_the_same_outputs(compiled: CascadeNets) -> None:
    batch = channels_last(7, 3, 24, 24)
    with torch.inference_mode():
        assert_same_outputs(compiled.rnet(batch.contiguous()), compiled.rnet(batch), atol=0.0)


def test_outputs_survive_the_next_call(compiled: CascadeNets) -> None:
    """The request reuses its buffers: what a call returned must not change under the next one."""
    with torch.inference_mode():
        first = compiled.onet(channels_last(4, 3, 48, 48, seed=1))
        kept = tuple(t.clone() for t in first)
        compiled.onet(channels_last(4, 3, 48, 48, seed=2))
    assert_same_outputs(first, kept, atol=0.0)


def test_threads_calling_at_once_each_get_their_own_answers(compiled: CascadeNets) -> None:
    """FER_DETECTOR_WORKERS > 1 runs cascades in several threads: each has its own infer request."""
    inputs = [channels_last(16, 3, 24, 24, seed=seed) for seed in range(4)]
    with torch.inference_mode():
        expected = [compiled.rnet(x) for x in inputs]
    results: dict[int, tuple[torch.Tensor, ...]] = {}

    def work(index: int) -> None:
        with torch.inference_mode():
            for _ in range(20):
                results[index] = compiled.rnet(inputs[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    for index, want in enumerate(expected):
        assert_same_outputs(results[index], want, atol=0.0)


def test_batch_buckets_cover_every_count_with_few_shapes() -> None:
    counts = range(1, 16_385)
    buckets = [batch_bucket(count) for count in counts]
    assert all(bucket >= count for bucket, count in zip(buckets, counts, strict=True))
    assert buckets == sorted(buckets)
    assert len(set(buckets)) <= 72  # what the shape cache has to hold for R-Net and O-Net
    assert all(bucket <= 2 * count for bucket, count in zip(buckets, counts, strict=True))
    large = [(bucket, count) for bucket, count in zip(buckets, counts, strict=True) if count > 512]
    assert all(bucket - count < count / 8 for bucket, count in large)
    examples = (1, 2, 3, 29, 64, 65, 390, 1024, 1025)
    assert [batch_bucket(n) for n in examples] == [1, 2, 4, 32, 64, 72, 416, 1024, 1152]


def test_the_shape_cache_is_bounded() -> None:
    """The plugin's default (5000 entries) grew one R-Net by 540 MiB over 900 batch sizes."""
    assert all(0 < entries <= 1000 for entries in SHAPE_CACHE_ENTRIES)
    assert compile_config(threads=2, streams=1, cache_entries=100)["CPU_RUNTIME_CACHE_CAPACITY"] == 100


def test_padding_never_reaches_the_caller(compiled: CascadeNets) -> None:
    """A padded batch gives each crop what it gets alone, and only as many rows as were sent."""
    batch = channels_last(5, 3, 24, 24)
    with torch.inference_mode():
        together = compiled.rnet(batch)
        alone = [compiled.rnet(batch[i : i + 1]) for i in range(5)]
    assert [t.shape[0] for t in together] == [5, 5]
    for i, single in enumerate(alone):
        assert_same_outputs(tuple(t[i : i + 1] for t in together), single, atol=OPENVINO_ATOL)


def test_warm_up_runs_every_bucket_up_to_its_limit_once() -> None:
    seen: dict[str, list[tuple[int, ...]]] = {"rnet": [], "onet": []}

    def recording(name: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
        def net(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            assert batch.is_contiguous(memory_format=torch.channels_last)
            seen[name].append(tuple(batch.shape))
            return ()

        return net

    nets = CascadeNets(pnet=recording("pnet"), rnet=recording("rnet"), onet=recording("onet"))
    assert warm_up(nets, crops=(100, 10)) == len(seen["rnet"]) + len(seen["onet"])
    assert seen["rnet"] == [(n, 3, 24, 24) for n in (1, 2, 4, 8, 16, 32, 64, 72, 80, 88, 96, 104)]
    assert seen["onet"] == [(n, 3, 48, 48) for n in (1, 2, 4, 8, 16)]
