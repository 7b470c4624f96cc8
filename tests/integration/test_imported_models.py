"""Imported authors' checkpoints through the real local Triton and the real gateway: POSTER (RAF-DB),
POSTER++ (7 classes) and HSEmotion's B0 _mtl, each written in the authors' own file format with the
seeded stand-in weights, imported with ``python -m fermodels import``, served by Triton at batch sizes
1, 3 and 16 exactly as the authors' code computes them, and answering /predict on a real photo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from devstack.stack import gateway_process
from fermodels.cli import main
from service.inference.triton import TritonBackend
from service.launcher.triton_local import LocalTriton
from service.metrics import Metrics
from tests.models.test_import_hsemotion import authors_model
from tests.models.test_import_poster import official_checkpoint as poster_checkpoint
from tests.models.test_import_poster_v2 import LABELS_7
from tests.models.test_import_poster_v2 import official_checkpoint as poster_v2_checkpoint

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "models" / "data"
POSTER_EXPECTED = json.loads((DATA / "poster_expected.json").read_text())["variants"]["rafdb"]
POSTER_V2_EXPECTED = json.loads((DATA / "poster_v2_expected.json").read_text())["variants"]["7"]
ATOL = 1e-4
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def import_model(fmt: str, checkpoint: Path, name: str, repository: Path, *extra: str) -> None:
    args = ["import", "--format", fmt, "--checkpoint", str(checkpoint), "--name", name]
    with redirect_stdout(StringIO()):
        assert main([*args, "--repository", str(repository), *extra]) == 0


@pytest.fixture(scope="module")
def imported_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    tmp = tmp_path_factory.mktemp("imported")
    repository = tmp / "repository"
    poster_checkpoint(tmp / "poster_rafdb.pth", "rafdb")
    import_model("poster", tmp / "poster_rafdb.pth", "poster_rafdb", repository)
    with pytest.MonkeyPatch.context() as monkeypatch:
        poster_v2_checkpoint(tmp / "poster_v2.pth", 7, monkeypatch)
    import_model("poster_v2", tmp / "poster_v2.pth", "poster_v2_rafdb", repository, "--labels", LABELS_7)
    torch.save(authors_model("tf_efficientnet_b0", 10), tmp / "enet_b0_8_va_mtl.pt")
    import_model("hsemotion", tmp / "enet_b0_8_va_mtl.pt", "hsemotion_b0_va", repository)
    with LocalTriton(repository) as server:
        yield server


def served_outputs(triton: LocalTriton, name: str, rgb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and affect (N x 0 without) of one Triton call, through the gateway's own client."""

    async def call() -> tuple[np.ndarray, np.ndarray]:
        backend = TritonBackend(
            triton.endpoints.grpc_url, protocol="grpc", timeout_s=120, retry_after_s=1, metrics=Metrics()
        )
        try:
            model = await backend.served_model(name)
            outputs = await backend.infer_image(model, rgb.numpy().astype(np.float32))
            return outputs.probabilities, outputs.affect
        finally:
            await backend.close()

    return asyncio.run(call())


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_poster_through_triton_matches_the_authors(imported_triton: LocalTriton, batch: int) -> None:
    authors_order = torch.rand(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    probabilities, affect = served_outputs(imported_triton, "poster_rafdb", authors_order.flip(1)[:batch])
    np.testing.assert_allclose(probabilities, POSTER_EXPECTED["probabilities"][:batch], atol=ATOL, rtol=0)
    assert affect.shape == (batch, 0)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_poster_v2_through_triton_matches_the_authors(imported_triton: LocalTriton, batch: int) -> None:
    rgb = torch.rand(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    start = {1: 5, 3: 9, 16: 0}[batch]
    probabilities, _ = served_outputs(imported_triton, "poster_v2_rafdb", rgb[start : start + batch])
    want = POSTER_V2_EXPECTED["probabilities"][start : start + batch]
    np.testing.assert_allclose(probabilities, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_hsemotion_through_triton_matches_timm(imported_triton: LocalTriton, batch: int) -> None:
    rgb = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        outputs = authors_model("tf_efficientnet_b0", 10)((rgb - IMAGENET_MEAN) / IMAGENET_STD)
    probabilities, affect = served_outputs(imported_triton, "hsemotion_b0_va", rgb)
    np.testing.assert_allclose(probabilities, outputs[:, :8].softmax(dim=-1).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(affect, outputs[:, 8:].numpy(), atol=ATOL, rtol=0)


def test_the_gateway_answers_with_an_imported_model(
    imported_triton: LocalTriton, media: Path, tmp_path: Path
) -> None:
    """A real photo through the real gateway: HSEmotion's box crop, valence/arousal, the provenance; the
    seeded weights make the label meaningless, which is why nothing is asserted about it."""
    photo = (media / "messi5.jpg").read_bytes()
    with gateway_process(
        imported_triton.endpoints.grpc_url, tmp_path / "gateway.log", FER_DEFAULT_MODEL="hsemotion_b0_va"
    ) as (url, _):
        answers = {
            name: httpx.post(f"{url}/predict", params={"model": name}, files={"file": photo}, timeout=120)
            for name in ("hsemotion_b0_va", "poster_rafdb", "poster_v2_rafdb")
        }
    for name, response in answers.items():
        assert response.status_code == 200, response.text
        body = response.json()
        (face,) = body["faces"]
        assert body["model"]["name"] == name and body["model"]["trained"] is True
        assert "sha256" in body["model"]["weights"]
        has_affect = name == "hsemotion_b0_va"
        assert (face["valence"] is not None) == has_affect and (face["arousal"] is not None) == has_affect
    assert "HSEmotion" in answers["hsemotion_b0_va"].json()["model"]["weights"]
    assert "BGR" in answers["poster_rafdb"].json()["model"]["crop"]["method"]
