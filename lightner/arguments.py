"""The arguments of one training run: a dataclass whose fields carry their own command-line help.

The `lightner train` options are generated from these fields (`lightner.cli`), so a field's name, type, default and
help are written once. A run saves its arguments as `training_args.json`; `from_json_file` reads them back, so that
`lightner train --config OUTPUT/training_args.json` replays the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .config_fields_lightner import ENTITY_SHAPES, MODEL_FIELDS, argument_name
from .data import TAG_SCHEMES
from .formats import ReadOptions

TRAINING_ARGS_NAME = "training_args.json"
MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
ENTITY_SHAPE_CHOICES = tuple(ENTITY_SHAPES)
# What concerns one invocation rather than the run itself: a replay must not resume, overwrite or stop early.
INVOCATION_ONLY = ("resume", "overwrite", "stop_after_steps")


def option(help: str, group: str, flag: str | None = None, **argparse_settings: Any) -> dict[str, Any]:
    """Field metadata for the command line: help text, option group, option name (default `--field-name`) and any
    other `add_argument` setting (`choices`, `metavar`, `type`)."""
    return {"help": help, "group": group, "flag": flag, **argparse_settings}


def label_words_option(value: str) -> dict[str, str]:
    """A JSON object of strings given inline or as a JSON file (the `--label-words` parser; its errors are argparse's
    so that the command line shows them as a usage error)."""
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {error}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise argparse.ArgumentTypeError('expected a JSON object of strings, e.g. {"LOC": "location"}')
    return parsed


DATA, MODEL, OPTIMISATION, RUN = "data", "model", "optimisation", "run"


def model_field(name: str) -> Any:
    """The training argument for the model config field `name` (`MODEL_FIELDS`): its default and help are the
    config's, written once there."""
    spec = MODEL_FIELDS[name]
    return field(default=spec.default, metadata=option(spec.help, MODEL))


def model_settings(arguments: LightNerTrainingArguments) -> dict[str, Any]:
    """The model config fields a run sets, by their config names: what `build_model` passes on."""
    return {name: getattr(arguments, argument_name(name)) for name in MODEL_FIELDS}


_AT_LEAST_ONE = ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "checkpoint_steps")
_AT_LEAST_ONE += ("checkpoints_limit", "logging_steps", "num_beams", "prompt_length", "prompt_hidden_size")
_NON_NEGATIVE = ("max_length_a", "weight_decay", "max_grad_norm")


@dataclass
class LightNerTrainingArguments:
    """Everything one training run needs. Defaults are the reference implementation's CoNLL-2003 settings."""

    backbone: str = model_field("backbone")
    train_file: str | None = field(
        default=None,
        metadata=option("training sentences (required without --protocol)", DATA, "--train", metavar="FILE"),
    )
    output_dir: str | None = field(
        default=None,
        metadata=option("output folder: the adapter and the run's files (required)", RUN, "--output", metavar="DIR"),
    )
    dev_file: str | None = field(
        default=None,
        metadata=option(
            "dev sentences, scored after every epoch to keep the best adapter", DATA, "--dev", metavar="FILE"
        ),
    )
    test_file: str | None = field(
        default=None,
        metadata=option(
            "test sentences, scored once with the kept adapter (never used to select it)",
            DATA,
            "--test",
            metavar="FILE",
        ),
    )
    entity_types: list[str] | None = field(
        default=None,
        metadata=option(
            "entity types to learn, in this order; each must occur in the training data, and entities of other "
            "types are left out with a warning that counts them (default: every type of the train and dev files, in "
            "order of first appearance)",
            DATA,
            "--types",
            metavar="TYPE",
        ),
    )
    skip_misaligned: bool = field(
        default=False,
        metadata=option(
            "BRAT data: leave out (and count) annotations whose offsets do not fall on word boundaries, rather than "
            "stop at the first",
            DATA,
        ),
    )
    entity_shapes: str | None = field(
        default=None,
        metadata=option(
            "what the adapter decodes: flat (contiguous entities sharing no word), nested (contiguous, possibly "
            "nested or overlapping) or discontinuous (entities of several fragments too); default: discontinuous if "
            "the training data has a discontinuous entity, else nested",
            MODEL,
            choices=ENTITY_SHAPE_CHOICES,
        ),
    )
    label_words: dict[str, str] | None = field(
        default=None,
        metadata=option(
            'label words per type, as a JSON object or a JSON file: \'{"LOC": "location"}\'; types left out get words '
            "derived from their names (LOC -> location, fromloc.city_name -> fromloc city name)",
            DATA,
            type=label_words_option,
        ),
    )
    dataset_config: str | None = field(
        default=None,
        metadata=option("configuration of a Hub dataset given as --train (e.g. supervised for Few-NERD)", DATA),
    )
    tokens_column: str = field(default="tokens", metadata=option("words column of a datasets source", DATA))
    tags_column: str = field(
        default="ner_tags", metadata=option("tags column of a datasets source (ClassLabel or strings)", DATA)
    )
    tag_scheme: str = field(
        default="auto",
        metadata=option(
            "tag scheme of the data: auto reads IOB1, IOB2 and BIOES; io reads every tag but O as a type, adjacent "
            "equal tags forming one entity (Few-NERD)",
            DATA,
            choices=TAG_SCHEMES,
        ),
    )
    init_prompts_from: str | None = field(
        default=None,
        metadata=option(
            "start the prompts from this adapter's (cross-domain transfer); label words stay this run's own, and the "
            "prompts then train directly rather than through the reparameterisation MLP",
            MODEL,
            metavar="ADAPTER",
        ),
    )
    init_from: str | None = field(
        default=None,
        metadata=option(
            "start from this whole adapter (its prompts, label words and weights, prompt length and entity shapes): "
            "another round of the annotation loop goes on from the last round's adapter, so that a few epochs do; "
            "types new in the data are added after the adapter's and start from their label words",
            MODEL,
            metavar="ADAPTER",
        ),
    )
    epochs: int = field(default=30, metadata=option("training epochs", OPTIMISATION))
    batch_size: int = field(default=16, metadata=option("training sentences per batch and process", OPTIMISATION))
    eval_batch_size: int = field(default=32, metadata=option("sentences per batch when predicting", OPTIMISATION))
    learning_rate: float = field(default=2e-5, metadata=option("peak AdamW learning rate", OPTIMISATION, "--lr"))
    weight_decay: float = field(default=0.01, metadata=option("AdamW weight decay", OPTIMISATION))
    warmup_ratio: float = field(
        default=0.1, metadata=option("share of steps with linear warm-up, then linear decay (0 to 1)", OPTIMISATION)
    )
    max_grad_norm: float = field(default=1.0, metadata=option("gradient clipping norm; 0 disables", OPTIMISATION))
    gradient_accumulation_steps: int = field(default=1, metadata=option("batches per optimizer step", OPTIMISATION))
    mixed_precision: str = field(
        default="auto",
        metadata=option(
            "auto: what `accelerate launch` was told, else bf16 on an accelerator with native bf16, fp16 on other "
            "accelerators, none on CPU",
            OPTIMISATION,
            choices=MIXED_PRECISION_CHOICES,
        ),
    )
    seed: int = field(default=42, metadata=option("seed of initialisation, shuffling and dropout", OPTIMISATION))
    prompt_length: int = model_field("prompt_length")
    prompt_hidden_size: int = model_field("prompt_hidden_size")
    dropout: float = model_field("dropout")
    full_finetune: bool = field(
        default=False,
        metadata=option(
            "train the backbone too (BARTNER); the fine-tuned backbone is saved in OUTPUT/backbone", MODEL
        ),
    )
    max_length_a: float = model_field("max_length_a")
    num_beams: int = model_field("beam_width")
    checkpoint_steps: int = field(
        default=500,
        metadata=option("save a resumable checkpoint every N optimizer steps (and after every epoch)", RUN),
    )
    checkpoints_limit: int = field(default=2, metadata=option("checkpoints kept, oldest deleted first", RUN))
    logging_steps: int = field(default=10, metadata=option("log training loss every N steps", RUN))
    resume: bool = field(
        default=False,
        metadata=option(
            "continue from the newest checkpoint in OUTPUT/checkpoints (start afresh if there is none)", RUN
        ),
    )
    overwrite: bool = field(
        default=False,
        metadata=option(
            "train into an OUTPUT that already holds a run or an adapter: its checkpoints and run files are deleted "
            "and its adapter files (README.md included) replaced; without it such a folder is refused",
            RUN,
        ),
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata=option(
            "accelerate trackers to log to as well (tensorboard, wandb, mlflow, ...); metrics.jsonl is always kept",
            RUN,
            metavar="TRACKER",
        ),
    )
    stop_after_steps: int | None = field(
        default=None,
        metadata=option(
            "testing aid: exit abruptly after N optimizer steps, as if killed, to exercise --resume", RUN, metavar="N"
        ),
    )

    def __post_init__(self):
        if self.train_file is None or self.output_dir is None:
            raise ValueError("training needs a train file and an output folder")
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> list[str]:
        """What is wrong with the values, each naming its field; checked at construction so that nothing is loaded,
        written or trained with an argument that would only fail (or silently misbehave) later."""
        problems = _number_problems(self)
        if problems:  # the rules below compare numbers
            return problems
        problems += [
            f"{name} must be at least 1, got {getattr(self, name)}"
            for name in _AT_LEAST_ONE
            if getattr(self, name) < 1
        ]
        problems += [
            f"{name} must be at least 0, got {getattr(self, name)}"
            for name in _NON_NEGATIVE
            if getattr(self, name) < 0
        ]
        if not 0 <= self.warmup_ratio <= 1:
            problems.append(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be at least 0 and below 1, got {self.dropout}")
        if self.init_from and self.init_prompts_from:
            problems.append("give init_from (a whole adapter) or init_prompts_from (its prompts only), not both")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            problems.append(f"stop_after_steps must be at least 1, got {self.stop_after_steps}")
        if self.resume and self.overwrite:
            problems.append("resume and overwrite exclude each other: continue the run in OUTPUT or replace it")
        if self.entity_shapes not in (None, *ENTITY_SHAPE_CHOICES):
            problems.append(f"entity_shapes must be flat, nested or discontinuous, got {self.entity_shapes!r}")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            problems.append(f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")
        return problems

    def read_options(self) -> ReadOptions:
        """How the data sources are read: a `datasets` source's configuration and columns, the tag scheme, and
        whether misaligned BRAT annotations are skipped."""
        return ReadOptions(
            tokens_column=self.tokens_column,
            tags_column=self.tags_column,
            scheme=self.tag_scheme,
            config_name=self.dataset_config,
            skip_misaligned=self.skip_misaligned,
        )

    def fingerprint(self) -> dict[str, Any]:
        """The arguments a resumed run must share with the run it continues (everything that shapes the result)."""
        ignored = {*INVOCATION_ONLY, "report_to", "logging_steps", "checkpoint_steps", "checkpoints_limit"}
        return {name: value for name, value in asdict(self).items() if name not in ignored}

    def to_json_file(self, path: str | os.PathLike) -> None:
        """The run's arguments, without those of one invocation (`INVOCATION_ONLY`), for `from_json_file`."""
        values = {name: value for name, value in asdict(self).items() if name not in INVOCATION_ONLY}
        Path(path).write_text(json.dumps(values, indent=1) + "\n", encoding="utf-8")

    @staticmethod
    def read_json_file(path: str | os.PathLike) -> dict[str, Any]:
        """The field values saved in `path`, checked to be field names, so that a replay cannot drop one unnoticed."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of training arguments")
        unknown = sorted(set(values) - {spec.name for spec in fields(LightNerTrainingArguments)})
        if unknown:
            raise ValueError(f"{path}: unknown training arguments {unknown}")
        return values


def _number_problems(arguments: LightNerTrainingArguments) -> list[str]:
    """Every numeric field checked against its type hint: an `int` field holds a whole number, a `float` field a
    finite one. Infinity and NaN pass every range check (`nan < 0` is false) and then train an adapter of NaNs; a
    replayed `--config` file can hold any JSON value."""
    problems = []
    for name, hint in typing.get_type_hints(LightNerTrainingArguments).items():
        value = getattr(arguments, name)
        kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
        if value is None and type(None) in typing.get_args(hint):
            continue
        if kinds == {int} and type(value) is not int:
            problems.append(f"{name} must be a whole number, got {value!r}")
        elif kinds == {float} and (type(value) not in (int, float) or not math.isfinite(value)):
            problems.append(f"{name} must be a finite number, got {value!r}")
    return problems


__all__ = [
    "INVOCATION_ONLY",
    "LightNerTrainingArguments",
    "TRAINING_ARGS_NAME",
    "label_words_option",
    "model_settings",
]
