import pytest
from pydantic import ValidationError

from service.config import Settings
from service.schemas import LabelScore, PredictQuery, PredictResponse
from service.serving.clip import ClipRequest


def test_predict_query_defaults_and_clip_request() -> None:
    query = PredictQuery()
    assert query.media == "auto" and query.include == ["timeline", "tracks"]
    options = ClipRequest.of(PredictQuery(fps=2.5, max_frames=10, include=["tracks"]), Settings())
    assert options.plan.fps == 2.5 and options.plan.max_frames == 10
    assert options.include_tracks and not options.include_timeline


def test_clip_request_caps_the_query_by_settings_and_prefers_fps() -> None:
    settings = Settings(video_max_frames=20, video_max_duration_s=30.0)
    capped = ClipRequest.of(PredictQuery(max_frames=500, max_duration_s=600.0, stride=3), settings)
    assert (capped.plan.max_frames, capped.plan.max_duration_s) == (20, 30.0)
    assert (capped.plan.fps, capped.plan.stride) == (None, 3)
    both = ClipRequest.of(PredictQuery(fps=2.0, stride=3, include=["timeline"]), settings)
    assert both.plan.fps == 2.0 and both.include_timeline


@pytest.mark.parametrize(
    "bad", [{"fps": 0}, {"fps": 120}, {"stride": 0}, {"max_frames": 0}, {"media": "audio"}, {"fsp": 2}]
)
def test_predict_query_refuses_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PredictQuery(**bad)  # type: ignore[arg-type]


def test_probabilities_are_bounded() -> None:
    with pytest.raises(ValidationError):
        LabelScore(label="happiness", probability=1.5)


def test_the_openapi_example_is_a_valid_response() -> None:
    schema = PredictResponse.model_json_schema()
    (example,) = schema["examples"]
    response = PredictResponse.model_validate(example)
    assert response.media == "image" and response.model.trained is True
