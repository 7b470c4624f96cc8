"""What a Triton model folder holds besides the weights: its file names, ``config.pbtxt`` (the serving
contract's tensors, batching, warm-up, instance and backend options, and the model's ``fer_config``),
``labels.txt`` and a README with provenance. Export writes them; nothing here needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fermodels.contract import (
    AFFECT_OUTPUT,
    EMBEDDING_OUTPUT,
    IMAGE_INPUT,
    LANDMARKS_INPUT,
    PBTXT_PARAMETER_KEY,
    PROBABILITIES_OUTPUT,
    TEXT_OUTPUT,
    ModelConfig,
)

MODEL_FILENAME: Final = "model.pt"
LABELS_FILENAME: Final = "labels.txt"
CONFIG_FILENAME: Final = "config.pbtxt"
README_FILENAME: Final = "README.md"  # Triton ignores it; people and reviewers read it


def input_dims(config: ModelConfig) -> tuple[int, ...]:
    """One request item: a 3xSxS face crop, or a Tx3xSxS clip of face crops for a video model."""
    size = config.input_size
    frame = (3, size, size)
    return (config.clip_length, *frame) if config.task == "video" else frame


def landmark_dims(config: ModelConfig) -> tuple[int, int]:
    """``INPUT__1`` of one request item: K landmarks (x, y)."""
    return (config.num_landmarks, 2)


# ----------------------------------------------------------------------------- config.pbtxt


def render_model_readme(config: ModelConfig) -> str:
    """Provenance, licence and accuracy next to the weights (the same facts /v1/models serves)."""
    trained = "yes" if config.trained else "**no: outputs are not predictions**"
    rows = [
        ("architecture", config.architecture),
        ("task", f"{config.task} (input {_dims_text(config)}, RGB in [0, 1])"),
        ("face crop", _crop_text(config)),
        ("trained", trained),
        ("weights", config.weights),
        ("licence", config.license),
        ("trained on", config.dataset or "-"),
        ("accuracy", config.accuracy),
        *_recall_rows(config),
        ("labels (output order)", ", ".join(config.labels)),
        ("text encoder", config.text_encoder or "none (no text side)"),
        *_affect_rows(config),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (
        f"# {config.name}\n\nWritten by `python -m fermodels export`; re-export rather than edit.\n\n"
        f"| | |\n|---|---|\n{table}\n"
    )


def _crop_text(config: ModelConfig) -> str:
    if config.crop_mode == "box":
        crop = "the detector's box as integers, no margin or rotation, stretched to a square"
    else:
        crop = f"aligned on the 5 landmarks (window {config.crop_window} in ArcFace-112 units)"
    order = "; the weights take BGR (swapped inside the model)" if config.channel_order == "bgr" else ""
    return f"{crop}, {config.crop_color}{order}; mean {config.mean}, std {config.std}"


def _affect_rows(config: ModelConfig) -> list[tuple[str, str]]:
    if not config.affect_outputs:
        return []
    return [(f"affect ({AFFECT_OUTPUT})", ", ".join(config.affect_outputs) + " (raw regression outputs)")]


def _recall_rows(config: ModelConfig) -> list[tuple[str, str]]:
    if config.metrics is None:
        return []
    recall = ", ".join(
        f"{label} {'-' if value is None else f'{value:.4f}'}"
        for label, value in config.metrics.per_class_recall
    )
    return [(f"recall per class ({config.metrics.data})", recall)]


def _dims_text(config: ModelConfig) -> str:
    return "x".join(str(d) for d in input_dims(config))


def render_labels(config: ModelConfig) -> str:
    return "".join(f"{label}\n" for label in config.labels)


def render_config_pbtxt(
    config: ModelConfig,
    *,
    max_queue_delay_us: int = 2000,
    queue_timeout_us: int = 5_000_000,
    max_queue_size: int = 64,
    instance_count: int | None = None,
    preferred_batch_sizes: Sequence[int] | None = None,
) -> str:
    """Triton's model configuration (protobuf text format) for an exported image model;
    ``instance_count`` None: the model's own (``ModelConfig.instance_count``)."""
    instance_count = config.instance_count if instance_count is None else instance_count
    if min(max_queue_delay_us, queue_timeout_us, max_queue_size) < 0 or instance_count < 1:
        raise ValueError("queue settings must be >= 0 and instance_count >= 1")
    preferred = preferred_batch_sizes or default_preferred_batch_sizes(config.max_batch_size)
    return "\n".join(
        [
            "# Written by `python -m fermodels export`: re-export rather than edit by hand.",
            f'name: "{config.name}"',
            'platform: "pytorch_libtorch"',
            f"max_batch_size: {config.max_batch_size}",
            _io_section(config),
            _batching_section(preferred, max_queue_delay_us, queue_timeout_us, max_queue_size),
            # No `kind`: Triton then uses the GPU when there is one and the CPU otherwise.
            f"instance_group [ {{ count: {instance_count} }} ]",
            "version_policy: { latest: { num_versions: 1 } }",
            _warmup_section(config),
            _parameters_section(config),
            "",
        ]
    )


def default_preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 4 up, plus the maximum: 1-3 need no preference, the queue delay covers them."""
    return sorted({size for size in (4, 8, 16, 32, 64, 128) if size < max_batch_size} | {max_batch_size})


def _io_section(config: ModelConfig) -> str:
    landmarks = (
        f",\n{render_tensor(LANDMARKS_INPUT, _dims(landmark_dims(config)))}" if config.num_landmarks else ""
    )
    return f"""input [
{render_tensor(IMAGE_INPUT, _dims(input_dims(config)))}{landmarks}
]
output [
{render_tensor(PROBABILITIES_OUTPUT, str(config.num_classes), f'label_filename: "{LABELS_FILENAME}"')},
{render_tensor(EMBEDDING_OUTPUT, str(config.embed_dim))}{_text_output(config)}{_affect_output(config)}
]"""


def _text_output(config: ModelConfig) -> str:
    return f",\n{render_tensor(TEXT_OUTPUT, str(len(config.prompts)))}" if config.has_text_side else ""


def _affect_output(config: ModelConfig) -> str:
    dims = str(len(config.affect_outputs))
    return f",\n{render_tensor(AFFECT_OUTPUT, dims)}" if config.affect_outputs else ""


def render_tensor(name: str, dims: str, extra: str = "", data_type: str = "TYPE_FP32") -> str:
    """One entry of config.pbtxt's ``input`` or ``output`` list (every export writes them alike)."""
    lines = ["  {", f'    name: "{name}"', f"    data_type: {data_type}", f"    dims: [ {dims} ]"]
    return "\n".join([*lines, *([f"    {extra}"] if extra else []), "  }"])


def _batching_section(preferred: Sequence[int], delay_us: int, timeout_us: int, queue_size: int) -> str:
    return f"""dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(size) for size in preferred)} ]
  max_queue_delay_microseconds: {delay_us}
  default_queue_policy {{
    timeout_action: REJECT
    default_timeout_microseconds: {timeout_us}
    allow_timeout_override: true
    max_queue_size: {queue_size}
  }}
}}"""


def _dims(dims: Sequence[int]) -> str:
    return ", ".join(str(d) for d in dims)


def _warmup_section(config: ModelConfig) -> str:
    landmarks = (_dims(landmark_dims(config)),) if config.num_landmarks else ()
    return render_warmup(_dims(input_dims(config)), *landmarks)


def render_warmup(*dims: str, data_type: str = "TYPE_FP32", name: str = "zeros_batch_1") -> str:
    """Triton's warm-up: one all-zeros request of batch 1 with INPUT__i of ``dims[i]`` (e.g. "3, 64, 64")."""
    inputs = "\n".join(
        f"""    inputs {{
      key: "INPUT__{index}"
      value {{ data_type: {data_type}, dims: [ {shape} ], zero_data: true }}
    }}"""
        for index, shape in enumerate(dims)
    )
    return f"""model_warmup [
  {{
    name: "{name}"
    batch_size: 1
{inputs}
  }}
]"""


def _parameters_section(config: ModelConfig) -> str:
    return "\n".join([render_parameter(PBTXT_PARAMETER_KEY, config.to_json()), render_libtorch_options()])


def render_libtorch_options() -> str:
    """The libtorch backend options every model of this repository is served with (detector and text
    encoder too)."""
    return "\n".join(
        [
            # libtorch backend option: run under torch.inference_mode() (no autograd bookkeeping).
            render_parameter("INFERENCE_MODE", "true"),
            # libtorch backend option: TorchScript's profiling optimiser re-specialises for every new batch
            # size the dynamic batcher forms, and each new size paid for it (docs/benchmarks.md).
            render_parameter("DISABLE_OPTIMIZED_EXECUTION", "true"),
            # libtorch backend option: one intra-op thread per instance. These nets are small (a batch of
            # 16 mini-Xception crops is a few ms on one core), and on a CPU host every extra OpenMP thread
            # spins against the gateway's face detector on the same cores: measured on 2 cores, MTCNN under
            # oversubscription ran 4-8x slower. Scale with instance_group count instead.
            render_parameter("INTRA_OP_THREAD_COUNT", "1"),
        ]
    )


def render_parameter(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value {{ string_value: "{pbtxt_escape(value)}" }} }}'


def pbtxt_escape(value: str) -> str:
    """Escape a string for a double-quoted protobuf text-format literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
