"""`python -m fer_client` against the real gateway, Triton and MTCNN, on real photos and a real clip.

The table it prints is kept in .cache/test-artifacts/cli/table.txt, its stderr (progress, warnings) in
progress.txt next to it; the README quotes such a run."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devstack.media import ROOT
from devstack.stack import Gateway

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / ".cache" / "test-artifacts" / "cli"


def fer_client(gateway: Gateway, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fer_client", "--url", gateway.url, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # run from any folder, as an installed client would be
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_table_from_real_photos_and_a_clip(gateway: Gateway, media: Path) -> None:
    files = ("messi5.jpg", "astronaut.png", "fruits.jpg", "Megamind.avi")
    run = fer_client(gateway, "predict", *files, "--concurrency", "2", cwd=media)
    assert run.returncode == 0, run.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "table.txt").write_text(run.stdout, encoding="utf-8")
    (ARTIFACTS / "progress.txt").write_text(run.stderr, encoding="utf-8")
    header, _, *lines = run.stdout.splitlines()
    assert header.split()[:3] == ["file", "media", "face"]
    by_file: dict[str, list[str]] = {}
    for line in lines:
        by_file.setdefault(Path(line.split()[0]).name, []).append(line)
    assert len(by_file["messi5.jpg"]) == 1 and " image " in by_file["messi5.jpg"][0]
    assert "happiness" in by_file["astronaut.png"][0]  # the trained model sees Eileen Collins' smile
    assert "(no face)" in by_file["fruits.jpg"][0]
    assert all(" video " in line and "share of frames" in line for line in by_file["Megamind.avi"])
    assert "[4/4]" in run.stderr and "warning: model 'stt' serves untrained weights" in run.stderr


def test_csv_and_annotated_pictures_from_a_folder(gateway: Gateway, media: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("messi5.jpg", "astronaut.png"):
        (folder / name).write_bytes((media / name).read_bytes())
    run = fer_client(gateway, "predict", str(folder), "--csv", "--annotate", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    records = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [Path(r["file"]).name for r in records] == ["astronaut.png", "messi5.jpg"]
    assert all(0.0 < float(r["score"]) <= 1.0 for r in records)
    with Image.open(tmp_path / "out" / "messi5.annotated.jpg") as picture:
        assert picture.format == "JPEG" and picture.size == (548, 342)


def test_a_bad_file_is_reported_and_the_others_still_analysed(
    gateway: Gateway, media: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    run = fer_client(gateway, "predict", str(fake), str(media / "messi5.jpg"))
    assert run.returncode == 1
    assert "ERROR unsupported_media_type" in run.stdout and "messi5.jpg" in run.stdout


def test_models_and_health(gateway: Gateway) -> None:
    models = fer_client(gateway, "models")
    assert models.returncode == 0, models.stderr
    assert "mini_xception_fer2013" in models.stdout and "image default" in models.stdout
    stt = next(line for line in models.stdout.splitlines() if line.startswith("stt "))
    assert " NO " in stt  # the untrained video model says so
    health = fer_client(gateway, "health")
    assert health.returncode == 0 and "status: ok" in health.stdout and "triton: ok" in health.stdout
