"""Configuration of a LightNER adapter: the backbone it sits on, its label set, its prompts and its decoding."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import transformers
from packaging.requirements import Requirement
from packaging.version import Version

# The transformers this code runs with, in one place: `setup.py` declares it (reading it from this file), and since
# remote code loads this file first, without the package, it is checked here too, to name it in one line rather than
# fail deep in an import. The upper bound stops after the newest minor release tested: the model hooks into
# transformers internals that move between minor versions.
TRANSFORMERS_REQUIREMENT = "transformers>=5.24,<5.26"
if not Requirement(TRANSFORMERS_REQUIREMENT).specifier.contains(Version(transformers.__version__).base_version):
    raise ImportError(f"LightNER needs {TRANSFORMERS_REQUIREMENT} (found {transformers.__version__})")

from transformers import PretrainedConfig  # noqa: E402

from .config_fields_lightner import DEFAULT_ENTITY_SHAPES, ENTITY_SHAPES, MODEL_FIELDS  # noqa: E402

# Version of the adapter file layout. Bump it when the tensor names or shapes of `model.safetensors` change, and
# teach `LightNerAdapter.load_adapter_state_dict` to read the older layouts.
ADAPTER_FORMAT_VERSION = 1

# The reference implementation's label words for the CoNLL-2003 tags.
_CONLL_LABEL_WORDS = {"loc": "location", "per": "person", "org": "organization", "misc": "others"}


class AttentionKind(NamedTuple):
    """The backbone config fields that size one attention kind's prompts: how many layers, how many heads."""

    layers_field: str
    heads_field: str


# The three attentions LightNER puts prompts into, in the order the adapter file lists them.
ATTENTION_KINDS: dict[str, AttentionKind] = {
    "encoder_self": AttentionKind("encoder_layers", "encoder_attention_heads"),
    "decoder_self": AttentionKind("decoder_layers", "decoder_attention_heads"),
    "decoder_cross": AttentionKind("decoder_layers", "decoder_attention_heads"),
}

# The backbone shape an adapter records, so that pairing an adapter with the wrong backbone fails loudly.
BACKBONE_SHAPE_FIELDS = (
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "d_model",
    "vocab_size",
)


def backbone_shape_mismatches(
    recorded: Mapping[str, int | None], backbone_config, recorded_as: str = "adapter", actual_as: str = "backbone"
) -> list[str]:
    """`field: adapter R, backbone B` for each shape field where `recorded` (None: not known) differs."""
    return [
        f"{field}: {recorded_as} {recorded[field]}, {actual_as} {getattr(backbone_config, field)}"
        for field in BACKBONE_SHAPE_FIELDS
        if recorded.get(field) is not None and recorded[field] != getattr(backbone_config, field)
    ]


def check_backbone_shape(config: LightNerConfig, backbone_config) -> None:
    """Refuse a backbone whose shape differs from the one `config` recorded; record it where none was yet."""
    mismatches = backbone_shape_mismatches(config.backbone_shape, backbone_config)
    if mismatches:
        raise ValueError(
            f"the backbone does not have the shape this adapter was trained on ({'; '.join(mismatches)}); the adapter "
            f"names {config.backbone!r}"
        )
    for field in BACKBONE_SHAPE_FIELDS:
        setattr(config, field, getattr(backbone_config, field))


def default_label_words(entity_type: str) -> str:
    """Label words for a type name, used when the user gives none.

    The answer space scores a type by how well the decoder state matches its label words, so the words should be
    natural language: `LOC` -> `location` (the reference's CoNLL words), `fromloc.city_name` -> `fromloc city name`,
    `Restaurant_Name` -> `restaurant name`, `releaseYear` -> `release year`.
    """
    if entity_type.lower() in _CONLL_LABEL_WORDS:
        return _CONLL_LABEL_WORDS[entity_type.lower()]
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", entity_type)
    words = [word for word in re.split(r"[\s_.\-/]+", spaced) if word]
    if not words:
        raise ValueError(
            f"entity type {entity_type!r} has no letters to derive label words from; give them explicitly"
        )
    return " ".join(words).lower()


class LightNerConfig(PretrainedConfig):
    r"""
    Everything needed to rebuild a LightNER adapter on its backbone.

    A LightNER checkpoint holds only prompts and label-word weights; the config is what makes it self-describing: the
    backbone it was trained on (and that backbone's shape, checked at load time), its entity types with their label
    words in index order, and the decoding defaults.

    Args:
        backbone (`str`):
            Hub id or local path of the BART backbone.
        entity_types (`list[str]`):
            Entity type names in index order (type `t` is decoder index `2 + t`).
        label_words (`list[str]` or `dict[str, str]`, *optional*):
            Label words per type. Defaults to `default_label_words(type)` for each type.
        prompt_length (`int`): Prompt slots per attention (L in the paper).
        prompt_hidden_size (`int`): Width of the reparameterisation MLP used while training.
        dropout (`float`): Dropout on the decoder state and on the score features while training.
        freeze_backbone (`bool`): Train only prompts and label-word weights (LightNER) or everything (BARTNER).
        max_length_a, max_length_b (`float`, `int`):
            Output length limit `max_length_b + max_length_a * len(source pieces)`; the reference uses 0.6 for CoNLL
            and 0.8 for the MIT corpora, with b = 10.
        beam_width (`int`): Default number of beams for generation; 1 is greedy. (Not `num_beams`, which transformers
            reserves for `GenerationConfig`.)
        constrained_decoding (`bool`): Mask ill-formed continuations so that every output parses.
        entity_shapes (`str`): What decoding may write: "flat" (contiguous entities sharing no word), "nested"
            (contiguous entities that may nest or overlap; the default, as before this setting existed) or
            "discontinuous" (entities of several fragments too). Constrained decoding enforces it; the model card
            states it.
        encoder_layers, decoder_layers, encoder_attention_heads, decoder_attention_heads, d_model, vocab_size:
            The backbone's shape, filled in from the backbone when a model is created.
        backbone_revision (`str`, *optional*): The backbone's Hub revision (commit) the adapter was trained on, when
            known; `from_pretrained` loads that revision unless given `backbone_revision=`.
        backbone_subfolder (`str`, *optional*): Set when the backbone was fine-tuned too and saved with the adapter,
            in this subfolder of its repository; `backbone` then only says where it started from.
        training_data (`str`, *optional*): What the adapter was trained on, for its model card.
        training_dataset_id (`str`, *optional*): The Hub dataset it was trained on, when it was one (the card's
            `datasets` metadata links to it).
        evaluation (`dict[str, float]`, *optional*): Its scores as `"<split> <metric>"` (e.g. `{"test f1": 0.91}`),
            for the card's model-index results.
        evaluation_data (`str`, *optional*): The file or dataset those scores were measured on.
        adapter_format_version (`int`): Layout version of the adapter file, so later releases can read this one.
    """

    model_type = "lightner"

    def __init__(
        self,
        backbone: str = MODEL_FIELDS["backbone"].default,
        entity_types: Sequence[str] | None = None,
        label_words: Sequence[str] | Mapping[str, str] | None = None,
        prompt_length: int = MODEL_FIELDS["prompt_length"].default,
        prompt_hidden_size: int = MODEL_FIELDS["prompt_hidden_size"].default,
        dropout: float = MODEL_FIELDS["dropout"].default,
        freeze_backbone: bool = True,
        max_length_a: float = MODEL_FIELDS["max_length_a"].default,
        max_length_b: int = 10,
        beam_width: int = MODEL_FIELDS["beam_width"].default,
        constrained_decoding: bool = True,
        entity_shapes: str = DEFAULT_ENTITY_SHAPES,
        encoder_layers: int | None = None,
        decoder_layers: int | None = None,
        encoder_attention_heads: int | None = None,
        decoder_attention_heads: int | None = None,
        d_model: int | None = None,
        vocab_size: int | None = None,
        backbone_revision: str | None = None,
        backbone_subfolder: str | None = None,
        training_data: str | None = None,
        training_dataset_id: str | None = None,
        evaluation: Mapping[str, float] | None = None,
        evaluation_data: str | None = None,
        adapter_format_version: int = ADAPTER_FORMAT_VERSION,
        **kwargs,
    ):
        self.backbone = backbone
        self.entity_types = self._check_entity_types(entity_types)
        self.label_words = self._resolve_label_words(self.entity_types, label_words)
        self.prompt_length = prompt_length
        self.prompt_hidden_size = prompt_hidden_size
        self.dropout = dropout
        self.freeze_backbone = freeze_backbone
        self.max_length_a = max_length_a
        self.max_length_b = max_length_b
        self.beam_width = beam_width
        self.constrained_decoding = constrained_decoding
        self.entity_shapes = entity_shapes
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_attention_heads = decoder_attention_heads
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.backbone_revision = backbone_revision
        self.backbone_subfolder = backbone_subfolder
        self.training_data = training_data
        self.training_dataset_id = training_dataset_id
        self.evaluation = dict(evaluation) if evaluation else None
        self.evaluation_data = evaluation_data
        self.adapter_format_version = adapter_format_version
        # Tools that read `id2label` (the Hub widget, token-classification habits) see the entity types in order.
        kwargs.pop("num_labels", None)
        kwargs["id2label"] = dict(enumerate(self.entity_types))
        kwargs["label2id"] = {name: index for index, name in enumerate(self.entity_types)}
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def from_entity_types(
        cls, backbone: str, entity_types: Sequence[str] | Mapping[str, str], **overrides
    ) -> LightNerConfig:
        """A new adapter's config: `entity_types` is a list of type names or a dict type name -> label words."""
        if isinstance(entity_types, Mapping):
            overrides.setdefault("label_words", dict(entity_types))
            entity_types = list(entity_types)
        return cls(backbone=backbone, entity_types=entity_types, **overrides)

    @staticmethod
    def _check_entity_types(entity_types) -> list[str]:
        if isinstance(entity_types, str):
            raise TypeError(f"entity_types must be a list of type names, not the string {entity_types!r}")
        entity_types = list(entity_types or [])
        for index, name in enumerate(entity_types):
            if not isinstance(name, str) or not name.strip():
                raise TypeError(f"entity_types[{index}] is {name!r}; every entity type must be a non-empty string")
        return entity_types

    @staticmethod
    def _resolve_label_words(
        entity_types: list[str], label_words: Sequence[str] | Mapping[str, str] | None
    ) -> list[str]:
        if label_words is None:
            return [default_label_words(name) for name in entity_types]
        if isinstance(label_words, Mapping):
            unknown = sorted(set(label_words) - set(entity_types))
            if unknown:
                raise ValueError(f"label_words names types that are not in entity_types: {unknown}")
            return [label_words.get(name) or default_label_words(name) for name in entity_types]
        label_words = list(label_words)
        if len(label_words) != len(entity_types):
            raise ValueError(
                f"label_words has {len(label_words)} entries but entity_types has {len(entity_types)}; "
                "give one label-word string per type, in the same order"
            )
        return label_words

    def _validate(self) -> None:
        if len(set(self.entity_types)) != len(self.entity_types):
            raise ValueError(f"entity_types has duplicates: {self.entity_types}")
        for name, words in zip(self.entity_types, self.label_words):
            if not isinstance(words, str):
                raise TypeError(
                    f"label words for entity type {name!r} are {type(words).__name__} {words!r}; they must be a "
                    "non-empty string"
                )
            if not words.strip():
                raise ValueError(
                    f"label words for entity type {name!r} are {words!r}; they must be a non-empty string"
                )
        for field, minimum in (("prompt_length", 1), ("prompt_hidden_size", 1), ("beam_width", 1)):
            _check_int(field, getattr(self, field), minimum)
        if isinstance(self.max_length_a, bool) or not isinstance(self.max_length_a, int | float):
            raise TypeError(f"max_length_a must be a number, got {type(self.max_length_a).__name__}")
        if self.max_length_a < 0:
            raise ValueError(f"max_length_a must be >= 0, got {self.max_length_a}")
        if self.entity_shapes not in ENTITY_SHAPES:
            raise ValueError(f"entity_shapes must be one of {tuple(ENTITY_SHAPES)}, got {self.entity_shapes!r}")
        if self.adapter_format_version > ADAPTER_FORMAT_VERSION:
            raise ValueError(
                f"this adapter was saved with format version {self.adapter_format_version}, newer than the "
                f"{ADAPTER_FORMAT_VERSION} this code reads; upgrade the lightner package"
            )

    @property
    def num_types(self) -> int:
        return len(self.entity_types)

    def prompt_layers(self, kind: str) -> int:
        """How many layers of attention `kind` the backbone has, each with its own prompts."""
        return getattr(self, ATTENTION_KINDS[kind].layers_field)

    def attention_heads(self, kind: str) -> int:
        return getattr(self, ATTENTION_KINDS[kind].heads_field)

    @property
    def backbone_shape(self) -> dict[str, int | None]:
        return {field: getattr(self, field) for field in BACKBONE_SHAPE_FIELDS}

    def max_output_length(self, source_length: int) -> int:
        """Decoder steps allowed for `source_length` source pieces, `</s>` included (reference rule)."""
        return int(self.max_length_b + self.max_length_a * source_length)


def _check_int(field: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, got {value}")


__all__ = [
    "LightNerConfig",
    "TRANSFORMERS_REQUIREMENT",
    "default_label_words",
    "ADAPTER_FORMAT_VERSION",
    "DEFAULT_ENTITY_SHAPES",
    "ENTITY_SHAPES",
    "ATTENTION_KINDS",
    "BACKBONE_SHAPE_FIELDS",
    "backbone_shape_mismatches",
    "check_backbone_shape",
]
