"""``python -m fermodels import --format openclip / hf-clip``: seeded CLIP checkpoints, saved as OpenCLIP and
transformers save them, imported; the served image and text towers equal ``open_clip``'s ``encode_image`` /
``encode_text`` and transformers' ``get_image_features`` / ``get_text_features`` (normalised) to 1e-4, the
zero-shot distribution equals the reference computation, the gateway's tokenisation equals the libraries'
on 200 prompts, and bad files fail in one line with the repository unchanged."""

from __future__ import annotations

import json
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fermodels.cli import main
from fermodels.contract import (
    CANONICAL_LABELS,
    CLIP_WINDOW,
    PBTXT_PARAMETER_KEY,
    TEXT_ENCODER_PARAMETER_KEY,
    ModelConfig,
    TextEncoderConfig,
    prompts_for,
)
from fermodels.export import load_scripted
from fermodels.importing.clip import openclip_tokenizer_json
from fermodels.repository import CONFIG_FILENAME, MODEL_FILENAME
from service.serving.prompting import clean_prompt, load_tokenizer
from tests.models.clip_helpers import (
    open_clip,
    save_hf_clip,
    save_openai_archive,
    save_openclip_training_checkpoint,
    seeded_openclip,
    tokenizer_prompts,
)

pytestmark = pytest.mark.skipif(open_clip is None, reason="open-clip-torch is not installed")

ATOL = 1e-4
TEXT_PROMPTS = (
    "a face",
    "A VERY Happy person &amp; a dog",
    "\u201csurprised\u201d caf\u00e9 \U0001f600",
    "x " * 90,
)
OPENCLIP_ARCHS = ("ViT-B-32", "RN50")


def run_import(*args: str) -> tuple[int, str]:
    err = StringIO()
    with redirect_stdout(StringIO()), redirect_stderr(err):
        code = main(["import", *args])
    return code, err.getvalue()


def pbtxt_json(folder: Path, key: str) -> str:
    text = (folder / CONFIG_FILENAME).read_text()
    raw = text.split(f'key: "{key}" value {{ string_value: "', 1)[1].split('" } }', 1)[0]
    unescaped: str = json.loads(f'"{raw}"')
    return unescaped


def gateway_tokens(folder: Path, prompts: list[str] | tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask exactly as the gateway makes them for the encoder in ``folder``."""
    config = TextEncoderConfig.from_json(pbtxt_json(folder, TEXT_ENCODER_PARAMETER_KEY))
    tokenizer = load_tokenizer(folder / config.tokenizer, config.tokenizer_sha256, config)
    encoded = tokenizer.encode_batch([clean_prompt(prompt, config) for prompt in prompts])
    ids = torch.tensor([item.ids for item in encoded], dtype=torch.int64)
    return ids, torch.tensor([item.attention_mask for item in encoded], dtype=torch.int64)


def crops(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def clip_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------- openclip


@pytest.fixture(scope="module", params=OPENCLIP_ARCHS)
def openclip_import(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    arch = request.param
    tmp = tmp_path_factory.mktemp(f"openclip-{arch}")
    model = seeded_openclip(arch)
    checkpoint = save_openclip_training_checkpoint(model, tmp / "epoch_32.pt")
    repository = tmp / "repository"
    code, err = run_import(
        "--format", "openclip", "--arch", arch, "--checkpoint", str(checkpoint), "--name", "clip",
        "--repository", str(repository),
    )  # fmt: skip
    assert code == 0, err
    return arch, model, repository


def test_openclip_image_tower_and_zero_shot_match_open_clip(openclip_import: Any) -> None:
    _, model, repository = openclip_import
    served = load_scripted(repository / "clip" / "1" / MODEL_FILENAME)
    x = crops(3, 224)
    with torch.no_grad():
        probabilities, embedding, cosines = served(x)
        want = model.encode_image(clip_normalise(x), normalize=True)
        text = model.encode_text(open_clip.tokenize(list(prompts_for(CANONICAL_LABELS))), normalize=True)
        want_cos = want @ text.t()
        want_p = (model.logit_scale.exp() * want_cos).softmax(dim=-1)
    assert float((embedding - want).abs().max()) <= ATOL
    assert float((cosines - want_cos).abs().max()) <= ATOL
    assert float((probabilities - want_p).abs().max()) <= ATOL


def test_openclip_text_tower_matches_encode_text_through_the_gateway_tokens(openclip_import: Any) -> None:
    _, model, repository = openclip_import
    folder = repository / "clip_text"
    served = load_scripted(folder / "1" / MODEL_FILENAME)
    ids, mask = gateway_tokens(folder, TEXT_PROMPTS)
    reference = open_clip.tokenize(list(TEXT_PROMPTS))
    assert torch.equal(ids, reference[:, : ids.shape[1]])
    with torch.no_grad():
        got = served(ids, mask)
        want = model.encode_text(reference, normalize=True)
    assert float((got - want).abs().max()) <= ATOL


def test_openclip_configs_name_the_clip_text_tower(openclip_import: Any) -> None:
    arch, _, repository = openclip_import
    config = ModelConfig.from_json(pbtxt_json(repository / "clip", PBTXT_PARAMETER_KEY))
    assert (config.similarity, config.text_encoder, config.is_clip) == ("clip", "clip_text", True)
    assert config.architecture == f"openclip_{arch}" and config.input_size == 224
    assert config.crop_window == CLIP_WINDOW and config.trained and config.labels == CANONICAL_LABELS
    encoder = TextEncoderConfig.from_json(pbtxt_json(repository / "clip_text", TEXT_ENCODER_PARAMETER_KEY))
    assert (encoder.name, encoder.max_tokens, encoder.clean, encoder.pad_id) == (
        "clip_text",
        77,
        "openclip",
        0,
    )
    assert encoder.dim == config.embed_dim and "epoch_32.pt (sha256 " in encoder.weights


def test_the_gateway_tokenises_200_prompts_exactly_as_open_clip(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(openclip_tokenizer_json(open_clip.tokenizer._tokenizer))
    config = TextEncoderConfig(max_tokens=77, clean="openclip")
    tokenizer = load_tokenizer(path, "", config)
    prompts = tokenizer_prompts()
    assert len(prompts) == 200
    encoded = tokenizer.encode_batch([clean_prompt(prompt, config) for prompt in prompts])
    reference = open_clip.tokenize(prompts)
    mismatched = [
        prompt
        for prompt, item, want in zip(prompts, encoded, reference, strict=True)
        if item.ids != want[: len(item.ids)].tolist() or want[len(item.ids) :].any()
    ]
    assert not mismatched
    assert max(len(item.ids) for item in encoded) == 77  # the long ones are truncated, eot last


# ----------------------------------------------------------------------------- hf-clip


@pytest.fixture(scope="module")
def hf_import(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("hf-clip")
    model = save_hf_clip(tmp / "tiny-clip")
    repository = tmp / "repository"
    code, err = run_import(
        "--format", "hf-clip", "--checkpoint", str(tmp / "tiny-clip"), "--name", "hfclip",
        "--repository", str(repository),
    )  # fmt: skip
    assert code == 0, err
    return model, tmp / "tiny-clip", repository


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_hf_image_tower_and_zero_shot_match_transformers(hf_import: Any, batch: int) -> None:
    from transformers import CLIPTokenizerFast  # type: ignore[attr-defined]

    model, folder, repository = hf_import
    served = load_scripted(repository / "hfclip" / "1" / MODEL_FILENAME)
    x = crops(batch, 64, seed=batch)
    tokens = CLIPTokenizerFast.from_pretrained(folder)(list(prompts_for(CANONICAL_LABELS)), padding=True)
    with torch.no_grad():
        probabilities, embedding, cosines = served(x)
        want = F.normalize(model.get_image_features(pixel_values=clip_normalise(x)).pooler_output, dim=-1)
        text = model.get_text_features(
            input_ids=torch.tensor(tokens["input_ids"]), attention_mask=torch.tensor(tokens["attention_mask"])
        ).pooler_output
        want_cos = want @ F.normalize(text, dim=-1).t()
        want_p = (model.logit_scale.exp() * want_cos).softmax(dim=-1)
    assert float((embedding - want).abs().max()) <= ATOL
    assert float((cosines - want_cos).abs().max()) <= ATOL
    assert float((probabilities - want_p).abs().max()) <= ATOL


def test_hf_text_tower_and_tokenizer_match_transformers(hf_import: Any) -> None:
    from transformers import CLIPTokenizerFast  # type: ignore[attr-defined]

    model, folder, repository = hf_import
    text_folder = repository / "hfclip_text"
    prompts = tokenizer_prompts()
    ids, mask = gateway_tokens(text_folder, prompts)
    library = CLIPTokenizerFast.from_pretrained(folder)(prompts, padding=True, truncation=True, max_length=77)
    assert ids.tolist() == library["input_ids"] and mask.tolist() == library["attention_mask"]
    served = load_scripted(text_folder / "1" / MODEL_FILENAME)
    for rows in (slice(0, 1), slice(0, 3), slice(0, 16)):
        with torch.no_grad():
            got = served(ids[rows], mask[rows])
            want = model.get_text_features(input_ids=ids[rows], attention_mask=mask[rows]).pooler_output
        assert float((got - F.normalize(want, dim=-1)).abs().max()) <= ATOL
    config = ModelConfig.from_json(pbtxt_json(repository / "hfclip", PBTXT_PARAMETER_KEY))
    assert (config.is_clip, config.text_encoder, config.input_size) == (True, "hfclip_text", 64)


# ----------------------------------------------------------------------------- bad files


def _listing(repository: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(repository)) for p in repository.rglob("*")) if repository.exists() else []
    )


def test_bad_files_fail_in_one_line_and_leave_the_repository_alone(tmp_path: Path) -> None:
    from tests.unit.test_checkpoint_reader import RunsCode

    model = seeded_openclip("ViT-S-32-alt")
    good = save_openclip_training_checkpoint(model, tmp_path / "good.pt")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": RunsCode(f"touch {marker}")}, evil)
    hf_no_tokenizer = tmp_path / "hf"
    save_hf_clip(hf_no_tokenizer)
    (hf_no_tokenizer / "tokenizer.json").unlink()
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "keep").mkdir()
    before = _listing(repository)
    cases = [
        (("openclip", truncated, "ViT-S-32-alt"), "truncated or corrupt"),
        (("openclip", good, "ViT-B-32"), "do not fit open_clip ViT-B-32"),
        (("openclip", evil, "ViT-S-32-alt"), "not allowed"),
        (("openclip", good, "No-Such-Arch"), "unknown open_clip architecture"),
        (("openclip", good, ""), "needs --arch"),
        (("hf-clip", hf_no_tokenizer, ""), "has no tokenizer.json"),
        (("hf-clip", good, ""), "not a folder"),
    ]
    for (fmt, path, arch), message in cases:
        extra = ["--arch", arch] if arch else []
        code, err = run_import(
            "--format", fmt, "--checkpoint", str(path), "--name", "bad",
            "--repository", str(repository), *extra,
        )  # fmt: skip
        assert code == 2, (fmt, path, err)
        assert message in err and err.count("\n") == 1, err
        assert _listing(repository) == before
    assert not marker.exists()


def test_a_mismatching_state_dict_lists_the_keys(tmp_path: Path) -> None:
    model = seeded_openclip("ViT-S-32-alt")
    state = model.state_dict()
    state.pop("ln_final.weight")
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "plain.pt")
    code, err = run_import(
        "--format", "openclip", "--arch", "ViT-S-32-alt", "--checkpoint", str(tmp_path / "plain.pt"),
        "--name", "x", "--repository", str(tmp_path / "repo"),
    )  # fmt: skip
    assert code == 2
    assert "missing keys: ln_final.weight" in err and "unexpected keys: extra.weight" in err


def test_openais_torchscript_release_is_read_for_its_weights_only(tmp_path: Path) -> None:
    """OpenAI's ``ViT-B-32.pt`` is a float16 ``torch.jit.save`` archive: its module tree is read by the
    restricted reader (no compiled code runs) and served equal to the eager tower with those weights."""
    archived = save_openai_archive(seeded_openclip("ViT-S-32-alt"), tmp_path / "ViT-S-32.pt")
    code, err = run_import(
        "--format", "openclip", "--arch", "ViT-S-32-alt", "--checkpoint", str(tmp_path / "ViT-S-32.pt"),
        "--name", "o", "--repository", str(tmp_path / "repo"),
    )  # fmt: skip
    assert code == 0, err
    served = load_scripted(tmp_path / "repo" / "o" / "1" / MODEL_FILENAME)
    text = load_scripted(tmp_path / "repo" / "o_text" / "1" / MODEL_FILENAME)
    x = crops(2, 224)
    ids, mask = gateway_tokens(tmp_path / "repo" / "o_text", TEXT_PROMPTS)
    with torch.no_grad():
        got_image, got_text = served(x)[1], text(ids, mask)
        want_image = archived.encode_image(clip_normalise(x), normalize=True)
        want_text = archived.encode_text(open_clip.tokenize(list(TEXT_PROMPTS)), normalize=True)
    assert float((got_image - want_image).abs().max()) <= ATOL
    assert float((got_text - want_text).abs().max()) <= ATOL


def test_an_openclip_safetensors_file_imports(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = seeded_openclip("ViT-S-32-alt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    code, err = run_import(
        "--format", "openclip", "--arch", "ViT-S-32-alt", "--checkpoint", str(tmp_path / "m.safetensors"),
        "--name", "s", "--repository", str(tmp_path / "repo"),
    )  # fmt: skip
    assert code == 0, err
    served = load_scripted(tmp_path / "repo" / "s" / "1" / MODEL_FILENAME)
    x = crops(2, 224)
    with torch.no_grad():
        got = served(x)[1]
        want = model.encode_image(clip_normalise(x), normalize=True)
    assert np.abs((got - want).numpy()).max() <= ATOL
    assert not any(p.name.startswith(".import-") for p in (tmp_path / "repo").iterdir())
    assert zipfile.is_zipfile(tmp_path / "repo" / "s_text" / "1" / MODEL_FILENAME)
