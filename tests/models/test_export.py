"""export_model and `python -m fermodels export`: files, overwrite rules, reloaded == eager."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from fermodels.cli import main
from fermodels.contract import RAFDB_LABELS, ModelConfig, load_text_embeddings, prompts_for
from fermodels.export import ExportVerificationError, ServingWrapper, export_model, load_scripted
from fermodels.models.fer_former import FERFormer

PROMPTS = prompts_for(RAFDB_LABELS)
CONFIG = ModelConfig(
    name="tiny_former", architecture="fer_former", labels=RAFDB_LABELS, prompts=PROMPTS, embed_dim=32
)


@pytest.fixture(scope="module")
def tiny() -> FERFormer:
    """A small FERFormer keeps scripting fast; the full-size one is exported once by the CLI test."""
    torch.manual_seed(0)
    vectors = torch.tensor(load_text_embeddings(PROMPTS).vectors)
    return FERFormer(vectors, stem_channels=(8, 16), dim=32, depth=1, num_heads=2).eval()


def test_writes_model_config_and_labels(tiny: FERFormer, tmp_path: Path) -> None:
    model_dir = export_model(tiny, CONFIG, tmp_path, version=3)
    assert model_dir == tmp_path / "tiny_former"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "3",
        "3/model.pt",
        "README.md",
        "config.pbtxt",
        "labels.txt",
    ]
    assert (model_dir / "labels.txt").read_text().splitlines() == list(RAFDB_LABELS)
    readme = (model_dir / "README.md").read_text()
    assert "| trained | **no: outputs are not predictions** |" in readme and CONFIG.weights in readme
    assert 'name: "tiny_former"' in (model_dir / "config.pbtxt").read_text()


def test_reloaded_file_matches_eager(tiny: FERFormer, tmp_path: Path) -> None:
    model_dir = export_model(tiny, CONFIG, tmp_path)
    reloaded = load_scripted(model_dir / "1" / "model.pt")
    images = torch.rand(5, 3, 112, 112, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = ServingWrapper(tiny, CONFIG).eval()(images)
        got = reloaded(images)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=0, atol=1e-5)
    probs, embedding, similarity = got
    assert probs.shape == (5, 7) and embedding.shape == (5, 32) and similarity.shape == (5, 7)


def test_refuses_to_overwrite_and_force_replaces(tiny: FERFormer, tmp_path: Path) -> None:
    target = export_model(tiny, CONFIG, tmp_path) / "1" / "model.pt"
    target.write_bytes(b"sentinel")
    with pytest.raises(FileExistsError, match="force"):
        export_model(tiny, CONFIG, tmp_path)
    assert target.read_bytes() == b"sentinel"
    export_model(tiny, CONFIG, tmp_path, force=True)
    assert target.read_bytes() != b"sentinel"
    load_scripted(target)
    assert not list(target.parent.glob("*.tmp"))


def test_rejects_version_zero(tiny: FERFormer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        export_model(tiny, CONFIG, tmp_path, version=0)


def test_rejects_a_config_that_does_not_match_the_outputs(tiny: FERFormer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not match"):
        export_model(tiny, dataclasses.replace(CONFIG, embed_dim=64), tmp_path)
    assert not (tmp_path / "tiny_former").exists()


def test_rejects_models_without_forward_serving(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="forward_serving"):
        export_model(nn.Linear(2, 2), CONFIG, tmp_path)


class _DiffersWhenScripted(nn.Module):
    """Eager and TorchScript disagree on purpose, to prove the reload check catches it."""

    @torch.jit.export
    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = x.mean(dim=(2, 3))
        shift = 1.0 if torch.jit.is_scripting() else 0.0
        logits = pooled.new_zeros(x.shape[0], 7)
        return logits, pooled.repeat(1, 11)[:, :32] + shift, pooled.new_ones(7, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_reload_mismatch_fails_and_leaves_no_model_file(tmp_path: Path) -> None:
    with pytest.raises(ExportVerificationError, match="OUTPUT__1"):
        export_model(_DiffersWhenScripted(), CONFIG, tmp_path)
    assert not list((tmp_path / "tiny_former").rglob("*.pt*"))


def test_cli_exports_the_registered_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--model", "fer_former", "--repository", str(tmp_path), "--max-queue-delay-us", "750"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("1/model.pt", "config.pbtxt", "labels.txt"):
        assert f"wrote {tmp_path / 'fer_former' / name}" in out
    assert "max_queue_delay_microseconds: 750" in (tmp_path / "fer_former" / "config.pbtxt").read_text()
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_classifier_without_text_side_exports_two_outputs(tmp_path: Path) -> None:
    """The trained mini-Xception path: RGB in, grey inside, probabilities + embedding out, no OUTPUT__2."""
    from fermodels.contract import FER2013_LABELS, ModelConfig
    from fermodels.export import export_model, load_scripted
    from fermodels.models.mini_xception import MiniXception

    config = ModelConfig(
        name="tiny_cls",
        architecture="mini_xception",
        input_size=64,
        labels=FER2013_LABELS,
        embed_dim=128,
        max_batch_size=4,
    )
    model = MiniXception().eval()
    model_dir = export_model(model, config, tmp_path)
    assert "OUTPUT__2" not in (model_dir / "config.pbtxt").read_text()
    scripted = load_scripted(model_dir / "1" / "model.pt")
    probabilities, embedding = scripted(torch.rand(3, 3, 64, 64))
    assert probabilities.shape == (3, 7) and embedding.shape == (3, 128)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))
    grey = torch.rand(1, 1, 64, 64)  # a grey RGB image must give what the model gives its grey input
    served, _ = scripted(grey.expand(1, 3, 64, 64))
    with torch.no_grad():
        direct = model(grey * 2 - 1).softmax(-1)  # the model's own [-1, 1] input scaling
    torch.testing.assert_close(served, direct, atol=1e-5, rtol=0)
