"""Results as rows: one per face of an image, one per person (track) of a clip; then table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

from fer_client.errors import FerError
from service.schemas import ModelsResponse, ModelState, PredictResponse, VideoPredictResponse

COLUMNS = ("file", "media", "face", "time_s", "expression", "score", "measure", "box", "model")
NUMERIC = frozenset({"score"})


@dataclass(frozen=True)
class Outcome:
    """One file's answer, or the error it got."""

    path: str
    result: PredictResponse | VideoPredictResponse | None = None
    error: FerError | None = None


def rows(outcome: Outcome) -> list[dict[str, str]]:
    if outcome.error is not None:
        return [_row(outcome.path, expression=f"ERROR {outcome.error.code}: {outcome.error.message}")]
    if isinstance(outcome.result, PredictResponse):
        return _image_rows(outcome.path, outcome.result)
    if isinstance(outcome.result, VideoPredictResponse):
        return _clip_rows(outcome.path, outcome.result)
    return []


def _row(path: str, **values: str) -> dict[str, str]:
    return {column: values.get(column, "") for column in COLUMNS} | {"file": path}


def _model(name: str, trained: bool) -> str:
    return name if trained else f"{name} (UNTRAINED)"


def _image_rows(path: str, result: PredictResponse) -> list[dict[str, str]]:
    model = _model(result.model.name, result.model.trained)
    if not result.faces:
        return [_row(path, media="image", expression="(no face)", model=model)]
    return [
        _row(
            path,
            media="image",
            face=str(index),
            expression=face.expression.label,
            score=f"{face.expression.probability:.3f}",
            measure="probability",
            box=f"{face.box.x1:.0f},{face.box.y1:.0f},{face.box.x2:.0f},{face.box.y2:.0f}",
            model=model,
        )
        for index, face in enumerate(result.faces, start=1)
    ]


def _clip_rows(path: str, result: VideoPredictResponse) -> list[dict[str, str]]:
    model = _model(result.model.name, result.model.trained)
    if not result.tracks:
        label = "(no face)" if result.summary.people == 0 else "(tracks not requested)"
        return [_row(path, media="video", expression=label, model=model)]
    return [
        _row(
            path,
            media="video",
            face=f"#{track.track_id}",
            time_s=f"{track.first_s:.2f}-{track.last_s:.2f}",
            expression=track.dominant.label or "",
            score=f"{track.dominant.share:.3f}",
            measure="share of frames",
            model=model,
        )
        for track in result.tracks
    ]


def table(records: Sequence[dict[str, str]], columns: Sequence[str] = COLUMNS) -> str:
    """A plain aligned text table (numbers right-aligned); columns empty in every row are left out."""
    shown = [c for c in columns if any(record.get(c) for record in records)] or list(columns)
    widths = {c: max([len(c), *(len(record.get(c, "")) for record in records)]) for c in shown}

    def line(values: dict[str, str]) -> str:
        cells = [
            values.get(c, "").rjust(widths[c]) if c in NUMERIC else values.get(c, "").ljust(widths[c])
            for c in shown
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * widths[c] for c in shown)
    return "\n".join([line({c: c for c in shown}), rule, *(line(record) for record in records)])


def csv_text(records: Sequence[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def json_text(outcomes: Sequence[Outcome]) -> str:
    items = []
    for outcome in outcomes:
        if outcome.error is not None:
            error = {
                "status": outcome.error.status,
                "code": outcome.error.code,
                "message": outcome.error.message,
            }
            items.append({"file": outcome.path, "error": error})
        elif outcome.result is not None:
            items.append({"file": outcome.path, "response": outcome.result.model_dump(mode="json")})
    return json.dumps(items, indent=1)


def _text_method(entry: ModelState) -> str:
    """How an image model scores prompts (cosine: its text side; conse: zero-shot); the encoder itself."""
    if entry.kind == "text_encoder":
        return entry.text_encoder.encoder if entry.text_encoder else "encoder"
    if entry.info is None or entry.info.task != "image":
        return "no"
    if entry.info.clip:  # true CLIP cosines; the text tower that embeds caller prompts
        return f"clip ({entry.info.caller_prompt_encoder or entry.info.text_encoder})"
    return entry.info.text_similarity_method


def models_table(listing: ModelsResponse) -> str:
    records = []
    for entry in listing.models:
        info = entry.info
        default = {listing.default_model: "image default", listing.default_video_model: "video default"}
        records.append(
            {
                "model": entry.name,
                "version": entry.version,
                "state": entry.state,
                "task": info.task if info else entry.kind,
                "trained": ("yes" if info.trained else "NO") if info else "",
                "labels": str(len(info.labels)) if info else "",
                "text": _text_method(entry),
                "default": default.get(entry.name, ""),
            }
        )
    return table(records, ("model", "version", "state", "task", "trained", "labels", "text", "default"))
