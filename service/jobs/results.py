"""A job's files: its spooled upload, and its result written once as three files a page can be read from.

``result.json`` is the clip response without its timeline (video, models, tracks, summary, timings);
``timeline.jsonl`` holds one timeline frame per line (pages are read without loading the rest);
``frames.csv`` one row per analysed frame per person, the table researchers load into pandas or R.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from fermodels.contract import ModelConfig, canonical_order
from service.schemas import TimelineFrame, TrackedFace
from service.serving.clip import ClipRequest
from service.serving.responses import ClipResults, TrackSmoothing, clip_body, clip_response, timeline_frames


@dataclass(frozen=True)
class JobFiles:
    """A job's upload, and one result folder per attempt: a stalled replica that lost its lease writes
    into its own attempt's folder, which nobody reads (a job's result is the folder of the attempt that
    the store let finish), so it can neither replace nor break the result of the attempt that took over."""

    root: Path
    job_id: str
    attempt: int = 0

    @property
    def upload(self) -> Path:
        return self.root / "uploads" / self.job_id

    @property
    def folder(self) -> Path:
        """Every attempt's results of this job."""
        return self.root / "results" / self.job_id

    @property
    def results(self) -> Path:
        return self.folder / f"attempt-{self.attempt}"

    @property
    def partial(self) -> Path:
        """Where this attempt writes before renaming into ``results`` (a crash leaves no half result)."""
        return self.folder / f"attempt-{self.attempt}.partial"

    @property
    def head(self) -> Path:
        return self.results / "result.json"

    @property
    def timeline(self) -> Path:
        return self.results / "timeline.jsonl"

    @property
    def table(self) -> Path:
        return self.results / "frames.csv"

    def remove(self) -> None:
        """The upload and every attempt's results, whichever exist (idempotent)."""
        self.upload.unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def remove_attempt(self) -> None:
        """This attempt's results only (it lost the job to another attempt)."""
        shutil.rmtree(self.results, ignore_errors=True)
        shutil.rmtree(self.partial, ignore_errors=True)


def write_results(
    files: JobFiles,
    results: ClipResults,
    options: ClipRequest,
    smoothing: TrackSmoothing,
    timings: dict[str, float],
) -> int:
    """Write the three files into the attempt's partial folder, renamed into place at the end (a crash
    leaves no half-written result); returns the timeline's frame count."""
    partial = files.partial
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    body = clip_body(
        results, include_timeline=False, include_tracks=options.include_tracks, smoothing=smoothing
    )
    head = clip_response(results, body, timings).model_dump(mode="json")
    config = results.image_model.config
    frames = _write_timeline(partial, timeline_frames(results, config), config)
    head["timeline_frames"] = frames
    head["timeline_included"] = options.include_timeline
    (partial / "result.json").write_text(json.dumps(head), encoding="utf-8")
    partial.rename(files.results)
    return frames


def _write_timeline(folder: Path, frames: Iterator[TimelineFrame], config: ModelConfig) -> int:
    count = 0
    with (
        (folder / "timeline.jsonl").open("w", encoding="utf-8") as lines,
        (folder / "frames.csv").open("w", encoding="utf-8", newline="") as table,
    ):
        writer = csv.writer(table)
        writer.writerow(csv_header(config))
        for frame in frames:
            lines.write(frame.model_dump_json() + "\n")
            writer.writerows(csv_row(frame, face) for face in frame.faces)
            count += 1
    return count


def csv_header(config: ModelConfig) -> list[str]:
    labels = [config.labels[i] for i in canonical_order(config.labels)]
    return [
        "timestamp_s",
        "frame_index",
        "track_id",
        "x1",
        "y1",
        "x2",
        "y2",
        "detection_score",
        "expression",
        *labels,
        *config.affect_outputs,
    ]


def csv_row(frame: TimelineFrame, face: TrackedFace) -> list[Any]:
    box = face.box
    affect = [value for value in (face.valence, face.arousal) if value is not None]
    return [
        frame.timestamp_s,
        frame.frame_index,
        face.track_id,
        box.x1,
        box.y1,
        box.x2,
        box.y2,
        face.detection_score,
        face.expression.label,
        *(score.probability for score in face.expressions),
        *affect,
    ]


def read_result(files: JobFiles, offset: int, limit: int) -> dict[str, Any]:
    """The clip response with ``limit`` timeline frames from ``offset`` (no timeline when the job's
    options left it out), plus ``timeline_frames`` (the total) for paging."""
    head: dict[str, Any] = json.loads(files.head.read_text(encoding="utf-8"))
    if not head.pop("timeline_included"):
        return head
    with files.timeline.open(encoding="utf-8") as lines:
        head["timeline"] = [json.loads(line) for line in islice(lines, offset, offset + limit)]
    return head
