import pytest
from pydantic import ValidationError

from service.schemas import LabelScore, PredictQuery, PredictResponse


def test_predict_query_defaults_and_video_options() -> None:
    query = PredictQuery()
    assert query.media == "auto" and query.include == ["timeline", "tracks"]
    options = PredictQuery(fps=2.5, max_frames=10, include=["tracks"]).video_options()
    assert options.fps == 2.5 and options.max_frames == 10
    assert options.include_tracks and not options.include_timeline


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
