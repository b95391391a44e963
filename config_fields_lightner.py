"""The model config fields that a training run sets, declared once: name, default and help.

`LightNerConfig` takes its defaults from `MODEL_FIELDS`, and `lightner train`'s options for them
(`LightNerTrainingArguments`) take their defaults and help from it too, as `build_model` passes them on by name. This
file imports nothing, so that building the command line imports no torch; remote code carries it with the config.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# What constrained decoding lets an adapter write (`LightNerConfig.entity_shapes`), each with what it means. "nested"
# is what LightNER always wrote, hence the default.
ENTITY_SHAPES = {
    "flat": "contiguous entities that never share a word",
    "nested": "contiguous entities, which may nest or overlap",
    "discontinuous": "entities of one or more fragments (word spans with words between them), which may nest, "
    "overlap and share words",
}
DEFAULT_ENTITY_SHAPES = "nested"


class ModelField(NamedTuple):
    """A config field with its default, its help on the command line, and the training argument that sets it when
    that is named otherwise (`num_beams`: transformers reserves it for `GenerationConfig`)."""

    default: Any
    help: str
    argument: str | None = None


# Config field name -> its declaration. A new prompt or decoding setting that training sets is one row here (and its
# use in the model); its training option, with this default and help, follows.
MODEL_FIELDS: dict[str, ModelField] = {
    "backbone": ModelField("facebook/bart-large", "BART backbone: Hub id or local folder"),
    "prompt_length": ModelField(10, "prompt slots per attention"),
    "prompt_hidden_size": ModelField(800, "width of the prompt MLP"),
    "dropout": ModelField(0.3, "dropout on decoder states and scores"),
    "max_length_a": ModelField(0.6, "output length limit 10 + A x source pieces"),
    "beam_width": ModelField(1, "beams when evaluating; 1 is greedy", argument="num_beams"),
}


def argument_name(field: str) -> str:
    """The training argument that sets the config field `field`."""
    return MODEL_FIELDS[field].argument or field


__all__ = ["DEFAULT_ENTITY_SHAPES", "ENTITY_SHAPES", "MODEL_FIELDS", "ModelField", "argument_name"]
