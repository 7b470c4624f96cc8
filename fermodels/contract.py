"""The serving contract: one config object per served model, what export writes, what the gateway reads,
what tests check (the one module of ``fermodels`` the gateway ships).

The config travels with the weights: export serialises it as JSON into the model's ``config.pbtxt``
(``parameters { key: "fer_config" ... }``) and ``labels.txt``, and the gateway reads it back from Triton,
so nothing model-specific (input size, label order, prompts, provenance) is hard-coded in the gateway.

This module is deliberately dependency-free (no torch, no numpy): the gateway imports it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

# The API's label vocabulary and order (AffectNet-8 order). Every model names its outputs with these
# words, in its own order; the gateway re-orders to this order. 7-class models simply lack "contempt".
CANONICAL_LABELS: Final[tuple[str, ...]] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)

# Class orders of the public datasets, in canonical words, so a checkpoint's output index maps to a label.
RAFDB_LABELS: Final = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
FER2013_LABELS: Final = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
DFEW_LABELS: Final = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")

# Adjectives for prompts ("a happy facial expression" reads better than "a happiness facial expression").
LABEL_ADJECTIVES: Final[dict[str, str]] = {
    "neutral": "neutral",
    "happiness": "happy",
    "sadness": "sad",
    "surprise": "surprised",
    "fear": "fearful",
    "disgust": "disgusted",
    "anger": "angry",
    "contempt": "contemptuous",
}

# KE-FER's prompt template (arXiv 2409.08598); "{}" takes the article and adjective ("an angry").
DEFAULT_PROMPT_TEMPLATE: Final = "a photo of a person making {} facial expression."

# ImageNet's channel statistics (RGB), which the authors' POSTER, POSTER++ and HSEmotion transforms use.
IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)

# ArcFace's canonical 5-point template for a 112x112 crop: eyes, nose tip, mouth corners (x, y).
ARCFACE_TEMPLATE_112: Final[tuple[tuple[float, float], ...]] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

# The crop window of the ArcFace template itself, in its own coordinates (pixel centres on integers, so the
# 112-px crop spans -0.5 .. 111.5): centre x, centre y, side.
ARCFACE_WINDOW: Final[tuple[float, float, float]] = (55.5, 55.5, 112.0)

# The crop window of imported CLIP image towers: 1.5 times ArcFace's side, centred 7.5 template units
# higher, so the crop holds the whole head (hair, ears and chin) the way faces appear in CLIP's web photos.
# NOT measured: choosing it by zero-shot accuracy needs real CLIP weights, which were not available when it
# was set (docs/models.md, "CLIP checkpoints"); override it per deployment by re-importing with a new one.
CLIP_WINDOW: Final[tuple[float, float, float]] = (55.5, 48.0, 168.0)
# OpenAI CLIP's preprocessing statistics (RGB), shared by OpenCLIP's and transformers' CLIP models.
CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)

Task = Literal["image", "video"]
CropColor = Literal["rgb", "gray"]
TestTimeAugmentation = Literal["none", "flip"]
# "aligned": a similarity warp of the 5 landmarks onto the ArcFace template (``crop_window``). "box": the
# detector's box as integers, no margin and no rotation, stretched to a square (HSEmotion's test code).
CropMode = Literal["aligned", "box"]
# The channel order the weights expect. The serving contract stays RGB: "bgr" is swapped inside the model.
ChannelOrder = Literal["rgb", "bgr"]
# How a model's text similarities are made. "": its own text side or ConSE (see has_text_side). "clip": the
# model is a CLIP image tower; its unit embedding (OUTPUT__1) lives in the space of the Triton text encoder
# named by ``text_encoder``, so a caller's prompts are embedded by that encoder and scored by true cosine.
Similarity = Literal["", "clip"]
SIMILARITIES: Final = ("", "clip")
CROP_MODES: Final = ("aligned", "box")
CHANNEL_ORDERS: Final = ("rgb", "bgr")
# What an ``AFFECT_OUTPUT`` column may hold: continuous affect, AffectNet's valence / arousal in [-1, 1].
AFFECT_DIMENSIONS: Final = ("valence", "arousal")
PBTXT_PARAMETER_KEY: Final = "fer_config"
# The serving contract's tensors: the face crop(s), and for models with ``num_landmarks`` the landmarks.
IMAGE_INPUT: Final = "INPUT__0"
LANDMARKS_INPUT: Final = "INPUT__1"
# Its outputs: softmax probabilities in ``labels`` order, the unit-norm embedding, and for a model with a
# text side (``prompts``) the cosine of the image with each prompt. Export, the Triton client and the
# responses all read these names and ``ModelConfig.has_text_side`` from here.
PROBABILITIES_OUTPUT: Final = "OUTPUT__0"
EMBEDDING_OUTPUT: Final = "OUTPUT__1"
TEXT_OUTPUT: Final = "OUTPUT__2"
# For a model whose config has ``affect_outputs``: FP32 [N, len(affect_outputs)], raw regression values in
# that order (e.g. valence, arousal). It sits at tuple position 3 (libtorch names outputs by position), so a
# model without a text side returns an empty [N, 0] tensor at position 2, which config.pbtxt does not list.
AFFECT_OUTPUT: Final = "OUTPUT__3"
# The gateway's detector gives 5 points (eyes, nose tip, mouth corners): all a landmark model can get.
DETECTOR_LANDMARKS: Final = len(ARCFACE_TEMPLATE_112)


def prompts_for(labels: tuple[str, ...], template: str = DEFAULT_PROMPT_TEMPLATE) -> tuple[str, ...]:
    """One text prompt per label, in the label order."""
    return tuple(template.format(_with_article(LABEL_ADJECTIVES[label])) for label in labels)


def _with_article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


@dataclass(frozen=True)
class EvaluationMetrics:
    """What ``python -m fermodels evaluate`` measured for the exported weights (its metrics.json)."""

    data: str  # the dataset and split evaluated on, e.g. "rafdb test"
    num_samples: int
    war: float  # weighted average recall (accuracy)
    uar: float  # unweighted average recall (mean per-class recall)
    per_class_recall: tuple[tuple[str, float | None], ...]  # (label, recall); None: no sample of it

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvaluationMetrics:
        """From this class's JSON (recall as pairs) or evaluate's metrics.json (recall as a mapping)."""
        recall = raw["per_class_recall"]
        pairs = recall.items() if isinstance(recall, dict) else recall
        return cls(
            data=str(raw["data"]),
            num_samples=int(raw["num_samples"]),
            war=float(raw["war"]),
            uar=float(raw["uar"]),
            per_class_recall=tuple((str(label), value) for label, value in pairs),
        )


@dataclass(frozen=True)
class ModelConfig:
    """Everything about a served model that is not a weight."""

    name: str
    architecture: str
    task: Task = "image"
    input_size: int = 112
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    labels: tuple[str, ...] = RAFDB_LABELS
    prompts: tuple[str, ...] = field(default_factory=tuple)
    text_encoder: str = ""
    embed_dim: int = 256
    clip_length: int = 1
    # The crop geometry the weights were trained on (what the gateway cuts; see service/vision/cropping.py).
    # crop_window: the square the crop covers, as (centre x, centre y, side) in ArcFace-112 template units;
    # every crop is a similarity warp on the 5 landmarks, so rotation is removed whatever the window.
    crop_window: tuple[float, float, float] = ARCFACE_WINDOW
    # "gray": the face is converted to grey on uint8 with OpenCV's weights before resampling (FER2013).
    crop_color: CropColor = "rgb"
    # The native resolution of the training images when it is below input_size (FER2013: 48 px, upsampled
    # to 64 by the training code): the crop is cut at this size, kept in uint8 steps, then resized bilinearly.
    crop_source_size: int = 0
    # Test-time augmentation: "flip" averages each face with its mirror image, in the same Triton calls.
    tta: TestTimeAugmentation = "none"
    trained: bool = False
    weights: str = "random initialisation (untrained)"
    license: str = "Apache-2.0"
    accuracy: str = "not measured"
    max_batch_size: int = 16
    # Triton instances per device (export's default; `--instance-count` overrides it for one deployment).
    instance_count: int = 1
    # What the weights were trained on ("" for untrained or ported weights), and what evaluate measured.
    dataset: str = ""
    metrics: EvaluationMetrics | None = None
    # 0: the crop alone. K > 0: a second input ``LANDMARKS_INPUT`` [N, K, 2], the face's landmarks in the
    # crop's own coordinates scaled to [0, 1] (``normalised_landmark_template`` where they sit nominally).
    num_landmarks: int = 0
    # How the face is cut ("aligned": crop_window on the landmarks; "box": the detector's box, squashed).
    crop_mode: CropMode = "aligned"
    # The channel order the weights take; mean/std are given in this order. The input stays RGB.
    channel_order: ChannelOrder = "rgb"
    # Continuous outputs beside the classes (``AFFECT_OUTPUT``), names from AFFECT_DIMENSIONS, in order.
    affect_outputs: tuple[str, ...] = field(default_factory=tuple)
    # "clip": ``text_encoder`` is the Triton model name of this image tower's own text tower (see Similarity).
    similarity: Similarity = ""

    def __post_init__(self) -> None:
        unknown = [label for label in self.labels if label not in CANONICAL_LABELS]
        if unknown:
            raise ValueError(f"labels not in the canonical vocabulary: {unknown}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.prompts and len(self.prompts) != len(self.labels):
            raise ValueError("one prompt per label is required")
        if min(self.input_size, self.clip_length, self.max_batch_size, self.instance_count) <= 0:
            raise ValueError("input_size, clip_length, max_batch_size and instance_count must be positive")
        if self.crop_window[2] <= 0:
            raise ValueError("crop_window side must be positive")
        if not 0 <= self.crop_source_size <= self.input_size:
            raise ValueError("crop_source_size must be in [0, input_size]")
        if self.num_landmarks not in (0, DETECTOR_LANDMARKS):
            raise ValueError(f"num_landmarks must be 0 or {DETECTOR_LANDMARKS} (what the detector gives)")
        if self.num_landmarks and self.tta != "none":
            raise ValueError("test-time augmentation is not defined for landmark inputs")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        unknown_affect = [name for name in self.affect_outputs if name not in AFFECT_DIMENSIONS]
        if unknown_affect or len(set(self.affect_outputs)) != len(self.affect_outputs):
            raise ValueError(f"affect_outputs must be distinct names from {AFFECT_DIMENSIONS}")
        if self.affect_outputs and (self.has_text_side or self.num_landmarks or self.task != "image"):
            raise ValueError("affect outputs are defined for plain image classifiers only")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.is_clip and not (self.text_encoder and self.has_text_side and self.task == "image"):
            raise ValueError("a CLIP model needs prompts and the name of its Triton text encoder")

    @property
    def is_clip(self) -> bool:
        """A CLIP image tower whose caller prompts go through its own text tower (``text_encoder``)."""
        return self.similarity == "clip"

    @property
    def has_text_side(self) -> bool:
        """Trained with text prompts: the model itself scores each prompt (``TEXT_OUTPUT``)."""
        return bool(self.prompts)

    @property
    def output_names(self) -> tuple[str, ...]:
        """What every client reads: probabilities, embedding and (text side) the prompt cosines. The
        affect output is separate (``affect_output_names``) so readers of these three stay unchanged."""
        text = (TEXT_OUTPUT,) if self.has_text_side else ()
        return (PROBABILITIES_OUTPUT, EMBEDDING_OUTPUT, *text)

    @property
    def affect_output_names(self) -> tuple[str, ...]:
        """``(AFFECT_OUTPUT,)`` for a model with affect outputs, else empty."""
        return (AFFECT_OUTPUT,) if self.affect_outputs else ()

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        raw: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        for key in ("mean", "std", "labels", "prompts", "crop_window", "affect_outputs"):
            if key in values:
                values[key] = tuple(values[key])
        if values.get("metrics") is not None:
            values["metrics"] = EvaluationMetrics.from_dict(values["metrics"])
        return cls(**values)

    @property
    def crop_size(self) -> int:
        """Side of the crop as cut from the image (the training images' resolution when it is lower)."""
        return self.crop_source_size or self.input_size

    def landmark_template(self, size: int | None = None) -> tuple[tuple[float, float], ...]:
        """The 5 canonical landmark positions (x, y) in the pixels of a ``size`` crop (default: crop_size)
        of ``crop_window``; pixel centres on integers, as in the ArcFace template."""
        side_px = size or self.crop_size
        centre_x, centre_y, side = self.crop_window
        left, top = centre_x - side / 2.0, centre_y - side / 2.0
        scale = side_px / side
        return tuple(((x - left) * scale - 0.5, (y - top) * scale - 0.5) for x, y in ARCFACE_TEMPLATE_112)

    def normalised_landmark_template(self) -> tuple[tuple[float, float], ...]:
        """The 5 canonical landmarks in [0, 1] crop coordinates (the crop's edges are 0 and 1): where an
        aligned face's landmarks sit before expression moves them; what a dataset without landmarks gets."""
        side = self.crop_size
        return tuple(((x + 0.5) / side, (y + 0.5) / side) for x, y in self.landmark_template(side))


@dataclass(frozen=True)
class DetectorStage:
    """One of MTCNN's nets as a Triton model (FER_DETECTOR_BACKEND=triton): what export writes and the
    gateway's Triton client sends and reads. ``INPUT__0`` FP32 ``[N, *input_dims]``, ``OUTPUT__i``."""

    name: str  # the Triton model name
    weights: str  # facenet-pytorch's file stem
    input_dims: tuple[int, int, int]  # -1: any size
    output_dims: tuple[tuple[int, ...], ...]
    max_batch_size: int
    dynamic_batching: bool  # candidates of concurrent requests share one execution
    sample_size: int  # spatial size of the verification / warm-up input

    input_name: ClassVar[str] = "INPUT__0"

    @property
    def output_names(self) -> tuple[str, ...]:
        """``OUTPUT__i``, in the order the net returns its outputs."""
        return tuple(f"OUTPUT__{i}" for i in range(len(self.output_dims)))


DETECTOR_STAGES: Final = (
    # Pyramid levels differ in size, so P-Net requests rarely share a batch: no dynamic batching.
    DetectorStage("mtcnn_pnet", "pnet", (3, -1, -1), ((4, -1, -1), (2, -1, -1)), 16, False, 64),
    DetectorStage("mtcnn_rnet", "rnet", (3, 24, 24), ((4,), (2,)), 1024, True, 24),
    DetectorStage("mtcnn_onet", "onet", (3, 48, 48), ((4,), (10,), (2,)), 512, True, 48),
)
# Their Triton model names: what /v1/models lists apart from the expression models.
DETECTOR_STAGE_NAMES: Final = tuple(stage.name for stage in DETECTOR_STAGES)


def canonical_order(labels: tuple[str, ...]) -> tuple[int, ...]:
    """Indices into a model's outputs that list its labels in canonical order."""
    return tuple(sorted(range(len(labels)), key=lambda i: CANONICAL_LABELS.index(labels[i])))


TEXT_ENCODER_PARAMETER_KEY: Final = "fer_text_encoder"
# The text encoder's tensors (INPUT__i in this order: token ids, attention mask) and its embedding output.
TEXT_ENCODER_INPUTS: Final = ("INPUT__0", "INPUT__1")
TEXT_ENCODER_OUTPUT: Final = "OUTPUT__0"

# Committed assets the gateway reads too (its image copies them next to this file): the expression prompts'
# embeddings (fermodels/text.py writes them) and the text encoder's tokenizer (fermodels/text_export.py).
PACKAGE_DIR: Final = Path(__file__).resolve().parent
TEXT_EMBEDDINGS_ASSET: Final = PACKAGE_DIR / "assets" / "text_embeddings.json"
TOKENIZER_ASSET: Final = PACKAGE_DIR / "assets" / "minilm_tokenizer.json.gz"


@dataclass(frozen=True)
class TextEncoderConfig:
    """The served text encoder (Triton model ``name``): what export writes into its config.pbtxt and the
    gateway reads back. ``INPUT__0`` INT64 ``[N, L]`` token ids, ``INPUT__1`` INT64 ``[N, L]`` attention
    mask (from ``tokenizer``, applied in the gateway) → ``OUTPUT__0`` FP32 ``[N, dim]`` unit-norm embedding.
    The fixed class prompts' embeddings in ``fermodels/assets/text_embeddings.json`` come from the same
    encoder, so a request's own prompts are comparable with them."""

    name: str = "text_encoder"
    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    dim: int = 384
    max_tokens: int = 256  # the checkpoint's max_seq_length: longer prompts are truncated, as in ST
    max_batch_size: int = 32
    tokenizer: str = "tokenizer.json"  # the tokenizers-library file shipped with the weights
    tokenizer_sha256: str = ""
    weights: str = ""
    license: str = "Apache-2.0"
    # The id padded prompts are filled with (the tokenizer's own attention mask marks them).
    pad_id: int = 0
    # Text cleaning the gateway applies before the tokenizer (what tokenizers-library rules cannot express):
    # "openclip": open_clip's ``_clean_lower`` (ftfy.fix_text, HTML entities unescaped twice, whitespace
    # collapsed, lower case), so the tokens equal ``open_clip.tokenize``'s.
    clean: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TextEncoderConfig:
        raw: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


TEXT_ENCODER: Final = TextEncoderConfig()


# ----------------------------------------------------------------------------- the committed assets, read
# Standard library only: the gateway reads them through this module (the only fermodels file it ships).


class MissingPromptError(LookupError):
    """The asset holds no embedding for a prompt; regenerate it with ``python -m fermodels.text --write``."""


@dataclass(frozen=True)
class TextEmbeddings:
    """Unit-norm embeddings of ``prompts`` (same order) and the encoder that made them."""

    encoder: str
    dim: int
    prompts: tuple[str, ...]
    vectors: tuple[tuple[float, ...], ...]


def load_text_embeddings(
    prompts: tuple[str, ...] | list[str], asset: Path = TEXT_EMBEDDINGS_ASSET
) -> TextEmbeddings:
    """The committed embeddings of ``prompts``, in that order; raises MissingPromptError for unknown ones."""
    data = json.loads(asset.read_text(encoding="utf-8"))
    table: dict[str, list[float]] = data["embeddings"]
    missing = [prompt for prompt in prompts if prompt not in table]
    if missing:
        raise MissingPromptError(
            f"{asset.name} has no embedding for {missing}; run `python -m fermodels.text --write`"
        )
    vectors = tuple(tuple(table[prompt]) for prompt in prompts)
    return TextEmbeddings(
        encoder=data["encoder"], dim=int(data["dim"]), prompts=tuple(prompts), vectors=vectors
    )


def tokenizer_bytes(path: Path) -> bytes:
    """A tokenizers-library ``tokenizer.json``, gunzipped when the file is ``.gz`` (the committed asset)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (weights and checkpoints can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
