"""Convert a DeepKE LightNER checkpoint (`best_model.pth`) into a LightNER adapter folder.

    python convert/deepke_to_lightner.py --checkpoint best_model.pth --output my-adapter --labels conll2003

The reference implementation saves its whole model (1.6 GB for bart-large) without a label map. An adapter keeps only
what the reference trained: its three prompt sets, folded into per-layer keys and values, and its label-word weights,
plus a config naming the backbone, the entity types and their label words. What the checkpoint holds, and its traps
(prompt sets named after the wrong attention, the decoder's shape used for all three sets, five unused embedding
rows), are described in `docs/deepke_checkpoint.md`; the constants below encode them.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, BartConfig, BartModel

from lightner.configuration_lightner import (
    ATTENTION_KINDS,
    BACKBONE_SHAPE_FIELDS,
    LightNerConfig,
    backbone_shape_mismatches,
)
from lightner.convert.presets import DEEPKE_PRESETS, load_label_map
from lightner.hub_lightner import ADAPTER_WEIGHTS_NAME
from lightner.modeling_lightner import LABEL_WORD_WEIGHTS_NAME, PROMPT_TENSOR_NAMES, LightNerModel
from lightner.tokenization_utils import label_word_token_ids

DEFAULT_BACKBONE = "facebook/bart-large"
ENCODER_PREFIX = "prompt_model.prompt_encoder.bart_encoder."
DECODER_PREFIX = "prompt_model.prompt_decoder.bart_decoder."
MAPPING_KEY = "prompt_model.prompt_decoder.mapping"
# One tensor per type whose label words have more than one piece, numbered in type order (the spelling is DeepKE's).
LABEL_WEIGHTS_PREFIX = "prompt_model.prompt_decoder.averge_weights."
# The attention each reference prompt set feeds, which its name does not say: (embedding, Linear-tanh-Linear MLP).
PROMPT_SETS = {
    "encoder_self": ("prompt_model.prompt_cross_embed.weight", "prompt_model.cross_mlp"),
    "decoder_self": ("prompt_model.encoder_prompt_embed.weight", "prompt_model.encoder_mlp"),
    "decoder_cross": ("prompt_model.decoder_prompt_embed.weight", "prompt_model.decoder_mlp"),
}
REQUIRED_KEYS = (
    MAPPING_KEY,
    *(key for embedding, mlp in PROMPT_SETS.values() for key in (embedding, f"{mlp}.0.weight", f"{mlp}.2.weight")),
    *(f"{mlp}.{layer}.bias" for _, mlp in PROMPT_SETS.values() for layer in (0, 2)),
    *(
        prefix + name
        for prefix in (ENCODER_PREFIX, DECODER_PREFIX)
        for name in ("embed_tokens.weight", "embed_positions.weight", "layers.0.fc1.weight")
    ),
)


# BART's learned position embedding has two rows more than the positions it serves.
POSITION_OFFSET = 2


class ConversionError(ValueError):
    """The checkpoint cannot be converted as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------------------------
# Reading the checkpoint
# ---------------------------------------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _torch_load_reason(error: BaseException) -> str:
    """What a `torch.load` error says is wrong with the file, without its advice on loading the file unsafely."""
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if unsupported:
        return f"it holds a pickled {unsupported.group(1)}, which is code, not a tensor"
    match = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    return match.group(1).split(". ")[0].strip() if match else _first_line(error)


def load_deepke_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, read without unpickling code (`weights_only=True`), memory-mapped when possible.

    Refuses anything but a state dict holding the reference's prompt sets, label mapping and BART backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # torch reports unreadable files as pickle, zip or runtime errors alike
        raise ConversionError(
            f"{path} is not a DeepKE LightNER checkpoint: torch.load(weights_only=True) cannot read it "
            f"({_torch_load_reason(error)}); it is no PyTorch file, or it holds objects other than tensors"
        ) from error
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ConversionError(
            f"{path} is not a DeepKE LightNER checkpoint: it holds a {type(state).__name__}, not a state dict of "
            "tensors (the `best_model.pth` that DeepKE's trainer saves)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ConversionError(
            f"{path} is not a DeepKE LightNER state dict: it lacks {shown}. Convert the `best_model.pth` saved by "
            "DeepKE's few-shot NER trainer with prompts on (use_prompt=True)"
        )
    return dict(state)


def backbone_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone under `BartModel`'s names; the reference's second copy of the decoder (`decoder.*`) is skipped."""
    tensors = {}
    for key, tensor in state.items():
        for prefix, part in ((ENCODER_PREFIX, "encoder."), (DECODER_PREFIX, "decoder.")):
            if key.startswith(prefix):
                tensors[part + key[len(prefix) :]] = tensor
    tensors["shared.weight"] = tensors["encoder.embed_tokens.weight"]
    return tensors


def _layer_count(tensors: Mapping[str, torch.Tensor], part: str) -> int:
    pattern = re.compile(rf"{part}\.layers\.(\d+)\.")
    return 1 + max(int(match.group(1)) for key in tensors if (match := pattern.match(key)))


def backbone_shape(tensors: Mapping[str, torch.Tensor]) -> dict[str, int | None]:
    """The backbone's shape (`BACKBONE_SHAPE_FIELDS`), read off its tensors since the checkpoint keeps no config;
    the head counts are not visible in them (None)."""
    vocab_size, d_model = tensors["shared.weight"].shape
    shape = {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "encoder_layers": _layer_count(tensors, "encoder"),
        "decoder_layers": _layer_count(tensors, "decoder"),
    }
    return {field: shape.get(field) for field in BACKBONE_SHAPE_FIELDS}


# ---------------------------------------------------------------------------------------------------------------------
# Folding the prompts and carrying the label-word weights over
# ---------------------------------------------------------------------------------------------------------------------


def prompt_mlp_output(state: Mapping[str, torch.Tensor], embedding_key: str, mlp: str) -> torch.Tensor:
    """`Linear -> tanh -> Linear` over a set's `[P, d]` embedding, as the reference computes it: `[P, 2 layers d]`."""
    hidden = torch.tanh(
        F.linear(state[embedding_key].float(), state[f"{mlp}.0.weight"].float(), state[f"{mlp}.0.bias"].float())
    )
    return F.linear(hidden, state[f"{mlp}.2.weight"].float(), state[f"{mlp}.2.bias"].float())


def fold_prompts(state: Mapping[str, torch.Tensor], shape: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Per-kind `[layers, 2, P, d]` prompts (slot 0 keys, slot 1 values) from the reference's three prompt MLPs.

    The reference views every MLP output as `[P, 2 * decoder layers, heads, d / heads]` and gives layer i slots 2i
    (key) and 2i + 1 (value); the encoder reads the first slots of its set. Flattening heads back into d keeps the same
    numbers in the same order, so the folded prompts do not depend on the head count.
    """
    d_model, decoder_layers = shape["d_model"], shape["decoder_layers"]
    layers = {kind: shape[fields.layers_field] for kind, fields in ATTENTION_KINDS.items()}
    prompts = {}
    for kind, (embedding_key, mlp) in PROMPT_SETS.items():
        if state[embedding_key].shape[-1] != d_model:
            raise ConversionError(
                f"{embedding_key} has width {state[embedding_key].shape[-1]}, but the backbone's d_model is {d_model}"
            )
        output = prompt_mlp_output(state, embedding_key, mlp)
        length, width = output.shape
        if width != 2 * decoder_layers * d_model:
            raise ConversionError(
                f"{mlp} writes {width} numbers per prompt slot, not 2 x {decoder_layers} decoder layers x {d_model}: "
                "the prompts do not fit this checkpoint's backbone"
            )
        per_layer = output.view(length, decoder_layers, 2, d_model).permute(1, 2, 0, 3)
        prompts[kind] = per_layer[: layers[kind]].contiguous()
    return prompts


def checkpoint_label_weights(state: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The reference's `averge_weights`, in order (one per multi-piece type)."""
    numbered = {
        int(key[len(LABEL_WEIGHTS_PREFIX) :]): tensor
        for key, tensor in state.items()
        if key.startswith(LABEL_WEIGHTS_PREFIX) and key[len(LABEL_WEIGHTS_PREFIX) :].isdigit()
    }
    return [numbered[index] for index in sorted(numbered)]


@dataclass
class LabelSet:
    """The user's label set: entity types in index order, their label words, and the pieces those words encode to."""

    entity_types: list[str]
    label_words: list[str]
    pieces: list[list[int]]

    @classmethod
    def from_map(cls, label_map: Mapping[str, str], tokenizer) -> LabelSet:
        words = list(label_map.values())
        return cls(list(label_map), words, label_word_token_ids(tokenizer, words))


def check_label_set(state: Mapping[str, torch.Tensor], labels: LabelSet, tokenizer, base_vocab: int) -> None:
    """Refuse a label set the checkpoint was not trained with.

    The checkpoint's `mapping` is `[<s>, </s>, first piece of each type's label words]`, so the number of types and
    each type's first piece must match it, and its `averge_weights` must match the multi-piece types one for one.
    """
    mapping = state[MAPPING_KEY].tolist()
    if len(mapping) - 2 != len(labels.entity_types):
        raise ConversionError(
            f"the checkpoint was trained with {len(mapping) - 2} entity types (its mapping holds {len(mapping)} ids), "
            f"but the label set has {len(labels.entity_types)} ({', '.join(labels.entity_types)})"
        )
    if mapping[:2] != [tokenizer.bos_token_id, tokenizer.eos_token_id]:
        raise ConversionError(
            f"the checkpoint's mapping starts with {mapping[:2]}, not this tokenizer's <s> and </s> "
            f"{[tokenizer.bos_token_id, tokenizer.eos_token_id]}: it was trained with another tokenizer"
        )
    if any(token_id >= base_vocab for token_id in mapping[2:]):
        raise ConversionError(
            f"the checkpoint scores entity types with tokens added to the vocabulary (ids >= {base_vocab}), as DeepKE "
            "does with learn_weights=False; an adapter scores a type by its label words, so it cannot be converted"
        )
    mismatches = [
        f"{name} ({words!r} starts with {pieces[0]} {tokenizer.decode([pieces[0]])!r}, the checkpoint with "
        f"{expected} {tokenizer.decode([expected])!r})"
        for name, words, pieces, expected in zip(labels.entity_types, labels.label_words, labels.pieces, mapping[2:])
        if pieces[0] != expected
    ]
    if mismatches:
        raise ConversionError(
            "the label words do not reproduce the checkpoint's mapping, so the types or their order differ from "
            "training: " + "; ".join(mismatches)
        )
    lengths = [len(weights) for weights in checkpoint_label_weights(state)]
    expected_lengths = [len(pieces) for pieces in labels.pieces if len(pieces) > 1]
    if lengths != expected_lengths:
        raise ConversionError(
            f"the checkpoint has label-word weights of lengths {lengths} (one per type whose label words have "
            f"several pieces, in type order), but these label words need {expected_lengths}"
        )


def label_word_weights(state: Mapping[str, torch.Tensor], labels: LabelSet) -> torch.Tensor:
    """The adapter's `[T, max pieces]` alpha table: a multi-piece type's row starts with its `averge_weights`.

    A single-piece type has no weights in the checkpoint and needs none (a softmax over one entry is 1); its row, like
    every entry past a type's pieces, stays 0 and is ignored.
    """
    weights = iter(checkpoint_label_weights(state))
    table = torch.zeros(len(labels.pieces), max(len(pieces) for pieces in labels.pieces))
    for row, pieces in enumerate(labels.pieces):
        if len(pieces) > 1:
            table[row, : len(pieces)] = next(weights).float()
    return table


# ---------------------------------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str):
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"could not load the tokenizer {name_or_path!r} ({_first_line(error)}); on an offline machine pass "
            "--tokenizer with a local folder holding the BART tokenizer files"
        ) from error


def named_backbone_config(name: str) -> tuple[BartConfig | None, str | None]:
    """The named backbone's config, or None and why it could not be loaded (offline, say): conversion goes on."""
    try:
        return BartConfig.from_pretrained(name), None
    except (OSError, ValueError) as error:
        return None, _first_line(error)


def drop_unused_rows(tensors: dict[str, torch.Tensor], base_vocab: int) -> int:
    """Drop the embedding rows DeepKE appended for its `<<label>>` tokens; returns how many there were.

    Called once `check_label_set` has shown that no type is scored by them; nothing else reads them, since the
    tokenizer's ids stop below `base_vocab`. The backbone then has the named backbone's vocabulary again.
    """
    rows = tensors["shared.weight"].shape[0]
    if rows <= base_vocab:
        return 0
    embedding = tensors["shared.weight"][:base_vocab]
    for key in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        tensors[key] = embedding
    return rows - base_vocab


def check_checkpoint_shape(shape: Mapping[str, int | None], named: BartConfig | None, name: str) -> None:
    if shape["encoder_layers"] > shape["decoder_layers"]:
        raise ConversionError(
            f"the checkpoint's encoder has more layers ({shape['encoder_layers']}) than its decoder "
            f"({shape['decoder_layers']}); the reference sizes every prompt set by the decoder, so it has no prompts "
            "for the extra encoder layers"
        )
    if named is None:
        return
    mismatches = backbone_shape_mismatches(shape, named, recorded_as="checkpoint", actual_as="named backbone")
    if mismatches:
        raise ConversionError(
            f"the checkpoint's backbone does not have the shape of {name!r} ({'; '.join(mismatches)}); pass the "
            "backbone it was trained with as --backbone"
        )


def build_backbone(
    tensors: Mapping[str, torch.Tensor], shape: Mapping[str, int], named: BartConfig | None
) -> BartModel:
    """A `BartModel` made of the checkpoint's own tensors: nothing downloaded, nothing copied.

    Without the named backbone's config, the feed-forward widths and positions are read off the tensors, the rest of
    the config is BART's defaults (bart-large's) and the head count the usual `d_model / 64`; the folded prompts do not
    depend on it.
    """
    if named is not None:
        config = named
    else:
        heads = max(shape["d_model"] // 64, 1)
        known = {field: value for field, value in shape.items() if value is not None}
        config = BartConfig(
            **known,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=tensors["encoder.layers.0.fc1.weight"].shape[0],
            decoder_ffn_dim=tensors["decoder.layers.0.fc1.weight"].shape[0],
            max_position_embeddings=tensors["encoder.embed_positions.weight"].shape[0] - POSITION_OFFSET,
        )
    with torch.device("meta"):
        model = BartModel(config)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as error:
        raise ConversionError(
            f"the checkpoint's backbone tensors do not make a BART model: {str(error).strip()[:500]}"
        ) from error
    model.tie_weights()
    return model.eval()


def backbone_differences(converted: BartModel, named: BartModel) -> tuple[int, int, float]:
    """How many of the converted backbone's parameters differ from the named backbone's, of how many, and the
    largest absolute difference."""
    reference = dict(named.named_parameters())
    differing, largest = 0, 0.0
    parameters = list(converted.named_parameters())
    for name, tensor in parameters:
        other = reference[name].to(tensor.dtype)
        if not torch.equal(tensor, other):
            differing += 1
            largest = max(largest, (tensor.float() - other.float()).abs().max().item())
    return differing, len(parameters), largest


def compare_with_named(
    converted: BartModel, name: str, named: BartConfig | None, problem: str | None
) -> tuple[str, int]:
    """What the report says about the checkpoint's backbone next to the named one, and how many tensors differ."""
    if named is not None:
        try:
            differing, total, largest = backbone_differences(converted, BartModel.from_pretrained(name))
        except OSError as error:
            problem = _first_line(error)
        else:
            if differing == 0:
                return f"identical to {name!r}", 0
            return (
                f"differs from {name!r} in {differing} of {total} tensors (largest difference {largest:.3g})",
                differing,
            )
    assumed = "" if named is not None else f"; heads assumed d_model / 64 = {converted.config.encoder_attention_heads}"
    return (
        f"not compared with {name!r}, which could not be loaded ({problem}){assumed}; if the checkpoint was trained "
        "with the backbone unfrozen, convert it with --export-backbone DIR"
    ), 0


def resolve_backbone(
    converted: BartModel, tokenizer, name: str, named: BartConfig | None, problem: str | None, export: Path | None
) -> tuple[str, str]:
    """The backbone the adapter names, and what the report says about it.

    A backbone that differs from the named one (trained unfrozen) must travel with the adapter: it is exported when
    asked, and the conversion is refused otherwise, since the adapter would silently run on the wrong weights.
    """
    finding, differing = compare_with_named(converted, name, named, problem)
    if export is not None:
        converted.save_pretrained(export)
        tokenizer.save_pretrained(export)
        return str(export.resolve()), f"checkpoint's backbone {finding}; exported to {export}"
    if differing:
        raise ConversionError(
            f"the checkpoint's backbone {finding}: it was trained with the backbone unfrozen. Pass --export-backbone "
            "DIR to save it as a BART folder that the adapter names, or name the backbone it was trained with as "
            "--backbone"
        )
    return name, f"checkpoint's backbone {finding}"


# ---------------------------------------------------------------------------------------------------------------------
# Conversion and report
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    checkpoint: Path
    output: Path
    label_source: str
    labels: LabelSet
    label_mix: list[list[float]]
    prompt_shapes: dict[str, tuple[int, ...]]
    prompt_hidden_size: int
    backbone: str
    backbone_finding: str
    dropped_rows: int

    def format(self) -> str:
        lines = [f"Converted {self.checkpoint} -> {self.output}", f"Label map ({self.label_source}):"]
        width = max(len(name) for name in self.labels.entity_types)
        for index, (name, words, pieces, mix) in enumerate(
            zip(self.labels.entity_types, self.labels.label_words, self.labels.pieces, self.label_mix)
        ):
            mixed = "" if len(pieces) == 1 else f"  weights {[round(w, 3) for w in mix]}"
            lines.append(f"  {index + 2:>3}  {name:<{width}}  {words!r} -> {pieces}{mixed}")
        lines.append(f"Prompts (MLP of width {self.prompt_hidden_size} folded; [layers, key/value, length, d]):")
        for kind, shape in self.prompt_shapes.items():
            embedding, mlp = PROMPT_SETS[kind]
            lines.append(f"  {kind:<13}  {list(shape)}  from {embedding.split('.')[1]} + {mlp.split('.')[1]}")
        dropped = f"; {self.dropped_rows} unused embedding rows dropped" if self.dropped_rows else ""
        lines.append(f"Backbone: {self.backbone} ({self.backbone_finding}{dropped})")
        before = self.checkpoint.stat().st_size
        after = (self.output / ADAPTER_WEIGHTS_NAME).stat().st_size
        lines.append(
            f"Size: {_human(before)} checkpoint -> {_human(after)} adapter ({ADAPTER_WEIGHTS_NAME}, "
            f"{after / before:.2%})"
        )
        lines.append(f'Load with: AutoModel.from_pretrained("{self.output}", trust_remote_code=True)')
        return "\n".join(lines)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} GB"


def convert_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    label_map: Mapping[str, str],
    *,
    backbone: str = DEFAULT_BACKBONE,
    tokenizer: str | None = None,
    export_backbone: str | Path | None = None,
    label_source: str = "given",
) -> ConversionReport:
    """Write the adapter folder for a DeepKE checkpoint trained with `label_map` (`{type: label words}`, in order)."""
    checkpoint, output = Path(checkpoint), Path(output)
    state = load_deepke_state_dict(checkpoint)
    bart_tokenizer = load_tokenizer(tokenizer or backbone)
    labels = LabelSet.from_map(label_map, bart_tokenizer)
    named, problem = named_backbone_config(backbone)
    base_vocab = named.vocab_size if named is not None else len(bart_tokenizer)
    check_label_set(state, labels, bart_tokenizer, base_vocab)

    tensors = backbone_tensors(state)
    dropped_rows = drop_unused_rows(tensors, base_vocab)
    shape = backbone_shape(tensors)
    check_checkpoint_shape(shape, named, backbone)
    prompts = fold_prompts(state, shape)
    weights = label_word_weights(state, labels)
    bart = build_backbone(tensors, shape, named)
    export = Path(export_backbone) if export_backbone is not None else None
    adapter_backbone, finding = resolve_backbone(bart, bart_tokenizer, backbone, named, problem, export)

    embedding_key, mlp = PROMPT_SETS["decoder_self"]
    config = LightNerConfig(
        backbone=adapter_backbone,
        entity_types=labels.entity_types,
        label_words=labels.label_words,
        prompt_length=state[embedding_key].shape[0],
        prompt_hidden_size=state[f"{mlp}.0.weight"].shape[0],
    )
    model = LightNerModel(config, backbone=bart, tokenizer=bart_tokenizer, reparameterize=False)
    adapter = {PROMPT_TENSOR_NAMES[kind]: tensor for kind, tensor in prompts.items()}
    adapter[LABEL_WORD_WEIGHTS_NAME] = weights
    model.load_adapter_state_dict(adapter, source=str(checkpoint))
    model.save_pretrained(output)

    return ConversionReport(
        checkpoint=checkpoint,
        output=output,
        label_source=label_source,
        labels=labels,
        label_mix=[weights[row, : len(pieces)].softmax(0).tolist() for row, pieces in enumerate(labels.pieces)],
        prompt_shapes={kind: tuple(tensor.shape) for kind, tensor in prompts.items()},
        prompt_hidden_size=config.prompt_hidden_size,
        backbone=adapter_backbone,
        backbone_finding=finding,
        dropped_rows=dropped_rows,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options, for this script's parser and for the `lightner` CLI's subcommand."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="DeepKE `best_model.pth` to convert")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the adapter to")
    parser.add_argument(
        "--labels",
        required=True,
        help=f"the label set the checkpoint was trained with: a preset ({', '.join(DEEPKE_PRESETS)}), or a "
        "JSON/YAML file or inline JSON object mapping each type, in training order, to its label words "
        '(DeepKE style, e.g. \'{"loc": "<<location>>", "per": "<<person>>"}\')',
    )
    parser.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help="hub id or local folder of the BART backbone the adapter names (default: %(default)s)",
    )
    parser.add_argument("--tokenizer", help="hub id or local folder of the BART tokenizer (default: the backbone's)")
    parser.add_argument(
        "--export-backbone",
        type=Path,
        metavar="DIR",
        help="also save the checkpoint's backbone as a BART folder, which the adapter then names (needed when it "
        "was trained unfrozen)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepke_to_lightner",
        description="Convert a DeepKE LightNER checkpoint (best_model.pth) into a LightNER adapter folder.",
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Convert as `args` say and print the report; a refusal prints its reason and returns 1."""
    try:
        label_map, label_source = load_label_map(args.labels)
        report = convert_checkpoint(
            args.checkpoint,
            args.output,
            label_map,
            backbone=args.backbone,
            tokenizer=args.tokenizer,
            export_backbone=args.export_backbone,
            label_source=label_source,
        )
    except ValueError as error:  # ConversionError, and bad label sets
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.format())
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
