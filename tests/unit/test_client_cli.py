"""The CLI's pure parts: which files a folder contributes, and results as table, CSV and JSON rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from fer_client.cli import media_files, render, warnings_of
from fer_client.errors import FerError
from fer_client.output import Outcome, models_table, rows, table
from service.schemas import ModelsResponse, PredictResponse, VideoPredictResponse
from tests.unit.test_client import EXAMPLE, video_example

DATA = Path(__file__).parent / "data"

IMAGE = PredictResponse.model_validate_json(EXAMPLE)
CLIP = VideoPredictResponse.model_validate_json(video_example())


def test_folders_give_their_media_files_sorted_and_files_are_kept_as_given(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "notes.txt", "sub/c.mp4", "sub/d.avi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    odd = tmp_path / "notes.txt"
    found = media_files([tmp_path, odd])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.PNG", "b.jpg", "sub/c.mp4", "sub/d.avi", "notes.txt"
    ]  # fmt: skip


def test_an_image_gives_one_row_per_face_and_a_clip_one_per_person() -> None:
    (face,) = rows(Outcome("messi5.jpg", IMAGE))
    assert face["media"] == "image" and face["face"] == "1" and face["measure"] == "probability"
    assert face["expression"] == IMAGE.faces[0].expression.label
    assert face["box"].count(",") == 3 and face["model"] == "mini_xception_fer2013"
    (person,) = rows(Outcome("Megamind.avi", CLIP))
    assert (person["face"], person["time_s"], person["expression"], person["score"]) == (
        "#1", "0.20-6.40", "sadness", "0.812"
    )  # fmt: skip
    assert person["measure"] == "share of frames"


def test_errors_and_faceless_pictures_still_get_a_row() -> None:
    error = Outcome("bad.jpg", error=FerError(422, "invalid_image", "image data is truncated"))
    assert rows(error)[0]["expression"] == "ERROR invalid_image: image data is truncated"
    empty = IMAGE.model_copy(update={"faces": []})
    assert rows(Outcome("fruits.jpg", empty))[0]["expression"] == "(no face)"


def test_table_aligns_columns_and_drops_empty_ones() -> None:
    text = table(rows(Outcome("messi5.jpg", IMAGE)) + rows(Outcome("a-longer-name.jpg", IMAGE)))
    header, rule, first, second = text.splitlines()
    assert header.split() == ["file", "media", "face", "expression", "score", "measure", "box", "model"]
    assert "time_s" not in header  # no clip among the files
    assert len(first) == len(second) and set(rule) <= {"-", " "}


def test_csv_and_json() -> None:
    outcomes = [Outcome("messi5.jpg", IMAGE), Outcome("x.jpg", error=FerError(415, "unsupported", "no"))]
    records = list(csv.DictReader(io.StringIO(render(outcomes, "csv"))))
    assert [r["file"] for r in records] == ["messi5.jpg", "x.jpg"] and records[0]["score"]
    parsed = json.loads(render(outcomes, "json"))
    assert parsed[0]["response"]["faces"] and parsed[1]["error"]["code"] == "unsupported"


def test_warnings_are_reported_once() -> None:
    assert warnings_of([Outcome("a", IMAGE), Outcome("b", IMAGE)]) == IMAGE.warnings


def test_the_models_table_names_the_text_tower_that_scores_a_clip_models_prompts() -> None:
    # /v1/models of `make run` with a seeded OpenCLIP ViT-B-32 imported as clip_vitb32 (the default).
    listing = ModelsResponse.model_validate_json((DATA / "models_with_clip.json").read_text())
    lines = {line.split()[0]: line for line in models_table(listing).splitlines()[1:]}
    assert "clip (clip_vitb32_text)" in lines["clip_vitb32"]
    assert "conse" in lines["mini_xception_fer2013"]
    assert "OpenCLIP ViT-B-32-quickgelu text tower" in lines["clip_vitb32_text"]
