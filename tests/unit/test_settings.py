import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults_are_sane() -> None:
    settings = Settings()
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.triton_url is None  # embedded Triton by default
    assert settings.triton_protocol == "grpc"


def test_every_field_is_documented() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_TRITON_URL", "triton:8001")
    monkeypatch.setenv("FER_MAX_IN_FLIGHT", "3")
    monkeypatch.setenv("FER_DETECTOR_THRESHOLDS", "[0.5, 0.6, 0.7]")
    settings = Settings()
    assert settings.triton_url == "triton:8001"
    assert settings.max_in_flight == 3
    assert settings.detector_thresholds == (0.5, 0.6, 0.7)


@pytest.mark.parametrize(
    "overrides",
    [{"triton_protocol": "smoke-signals"}, {"max_in_flight": 0}, {"detector_thresholds": (0.5, 1.5, 0.7)}],
)
def test_invalid_values_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "runs_on"),
    [
        ({}, "OpenVinoNet"),  # the default: compiled for this CPU
        ({"detector_runtime": "torch"}, "ONet"),  # facenet-pytorch's own module
        ({"detector_runtime": "openvino", "device": "meta"}, "ONet"),  # not a CPU: torch on that device
    ],
)
def test_the_detector_runtime_setting_picks_where_the_local_nets_run(
    overrides: dict[str, object], runs_on: str
) -> None:
    from service.detection.factory import cascade_nets

    nets = cascade_nets(Settings(**overrides))  # type: ignore[arg-type]
    assert type(nets.onet).__name__ == runs_on


@pytest.mark.parametrize(("warmup", "calls"), [(True, 1), (False, 0)])
def test_the_openvino_nets_are_warmed_before_the_first_request_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, warmup: bool, calls: int
) -> None:
    import service.detection.factory as factory

    warmed: list[object] = []
    monkeypatch.setattr(factory, "warm_up", warmed.append)
    nets = factory.cascade_nets(Settings(detector_warmup=warmup))
    assert warmed == [nets] * calls
