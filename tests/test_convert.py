"""DeepKE checkpoint conversion and the data converters, checked against the reference's formulas.

The DeepKE-layout state dicts are built here from the layout in docs/deepke_checkpoint.md (keys, shapes, slot layout,
`averge_weights` only for multi-piece types), with random values. The expected prompts, label-word mixes and logits
are computed in this file straight from those tensors, never through the converter or the model's code paths.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import BartModel

from conftest import byte_level_tokenizer, save_tiny_backbone, shared_path
from lightner.convert.deepke_to_lightner import ConversionError, convert_checkpoint, main
from lightner.convert.presets import DEEPKE_PRESETS, load_label_map
from lightner.modeling_lightner import LightNerModel
from lightner.tokenization_utils import collate, encode_sentences, encode_target

TYPES = ["LOC", "PER", "ORG", "MISC"]
# With the byte-level test tokenizer a word is one piece per character: 1, 2, 3 and 1 pieces, so the two multi-piece
# types (averge_weights.0 and .1) sit between single-piece ones.
LABEL_WORDS = ["l", "pe", "org", "m"]
LABEL_MAP = dict(zip(TYPES, LABEL_WORDS))
PROMPT_LENGTH, MLP_WIDTH, EXTRA_ROWS = 3, 24, 5
# Equal head counts (the reference reshapes every set with the decoder's) but a shallower encoder, which reads the
# first slots of its set.
BACKBONE_SHAPE = dict(encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4)
# Reference names -> the attention each set feeds (docs/deepke_checkpoint.md).
SETS = {"decoder_self": "encoder", "decoder_cross": "decoder", "encoder_self": "cross"}
ENCODER = "prompt_model.prompt_encoder.bart_encoder."
DECODER = "prompt_model.prompt_decoder.bart_decoder."
SENTENCES = [["John", "lives", "in", "New", "York"], ["EU", "rejects", "German", "lamb", "."]]
GOLD = [[(0, 1, "PER"), (3, 5, "LOC")], [(0, 1, "ORG"), (2, 3, "MISC")]]


def _embed_key(name: str) -> str:
    return f"prompt_model.{'prompt_cross' if name == 'cross' else name + '_prompt'}_embed.weight"


def deepke_state_dict(backbone: BartModel, tokenizer, label_words, seed: int = 0) -> dict[str, torch.Tensor]:
    """What DeepKE's `torch.save(model.state_dict())` holds for this backbone and these label words."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    d_model, layers = backbone.config.d_model, backbone.config.decoder_layers
    bart = backbone.state_dict()
    embedding = torch.cat([bart["shared.weight"], rand(EXTRA_ROWS, d_model)])  # DeepKE's five `<<label>>` rows
    state = {}
    for key, tensor in bart.items():
        part, _, rest = key.partition(".")
        tensor = embedding if rest == "embed_tokens.weight" else tensor.clone()
        if part == "encoder":
            state[ENCODER + rest] = tensor
        elif part == "decoder":
            state[DECODER + rest] = tensor
            state["decoder.bart_decoder." + rest] = tensor
    for name in SETS.values():
        state[_embed_key(name)] = rand(PROMPT_LENGTH, d_model)
        state[f"prompt_model.{name}_mlp.0.weight"] = rand(MLP_WIDTH, d_model) / d_model**0.5
        state[f"prompt_model.{name}_mlp.0.bias"] = rand(MLP_WIDTH)
        state[f"prompt_model.{name}_mlp.2.weight"] = rand(2 * layers * d_model, MLP_WIDTH) / MLP_WIDTH**0.5
        state[f"prompt_model.{name}_mlp.2.bias"] = rand(2 * layers * d_model)
    pieces = [tokenizer(" " + words, add_special_tokens=False)["input_ids"] for words in label_words]
    mapping = torch.tensor([0, 2] + [ids[0] for ids in pieces])
    multi_piece = [ids for ids in pieces if len(ids) > 1]
    for prefix in ("prompt_model.prompt_decoder.", "decoder."):
        state[prefix + "mapping"] = mapping
        for index, ids in enumerate(multi_piece):
            state[f"{prefix}averge_weights.{index}"] = rand(len(ids)) * 2
        state[prefix + "bart_mlp.0.weight"] = rand(d_model, d_model)
        state[prefix + "bart_mlp.3.weight"] = rand(d_model, d_model)
    return state


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, tokenizer):
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone"), tokenizer=tokenizer, **BACKBONE_SHAPE)


@pytest.fixture(scope="module")
def state(backbone_dir, tokenizer):
    return deepke_state_dict(BartModel.from_pretrained(backbone_dir), tokenizer, LABEL_WORDS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("deepke") / "best_model.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, checkpoint, backbone_dir):
    output = tmp_path_factory.mktemp("adapter")
    report = convert_checkpoint(checkpoint, output, LABEL_MAP, backbone=str(backbone_dir))
    return output, report


# ---------------------------------------------------------------------------------------------------------------------
# The reference's formulas, from the DeepKE tensors
# ---------------------------------------------------------------------------------------------------------------------


def mlp_output(state, name: str) -> torch.Tensor:
    """`[P, 2 * decoder layers * d]`: the set's `Linear -> tanh -> Linear` over its embedding."""
    hidden = torch.tanh(
        state[_embed_key(name)] @ state[f"prompt_model.{name}_mlp.0.weight"].T
        + state[f"prompt_model.{name}_mlp.0.bias"]
    )
    return hidden @ state[f"prompt_model.{name}_mlp.2.weight"].T + state[f"prompt_model.{name}_mlp.2.bias"]


def reference_prompts(state, name: str, heads: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer `(key, value)`, each `[heads, P, head_dim]`, exactly as the reference's `get_prompt` splits them."""
    output = mlp_output(state, name)
    length, width = output.shape
    slots = 2 * BACKBONE_SHAPE["decoder_layers"]
    per_slot = output.view(length, slots, heads, width // slots // heads).permute(1, 2, 0, 3)
    return [(per_slot[2 * layer], per_slot[2 * layer + 1]) for layer in range(slots // 2)]


def attention(state, prefix, queries, memory, prompt, heads, causal=False):
    """BART attention with the prompt keys and values in front of the projected ones; every query sees them."""
    q = F.linear(queries, state[prefix + "q_proj.weight"], state[prefix + "q_proj.bias"])
    k = F.linear(memory, state[prefix + "k_proj.weight"], state[prefix + "k_proj.bias"])
    v = F.linear(memory, state[prefix + "v_proj.weight"], state[prefix + "v_proj.bias"])
    head_dim = q.shape[-1] // heads
    q, k, v = (t.view(t.shape[0], heads, head_dim).transpose(0, 1) for t in (q, k, v))
    k, v = torch.cat([prompt[0], k], dim=1), torch.cat([prompt[1], v], dim=1)
    scores = q @ k.transpose(1, 2) * head_dim**-0.5
    if causal:
        steps = queries.shape[0]
        future = torch.ones(steps, steps, dtype=torch.bool).triu(1)
        scores[:, :, prompt[0].shape[1] :] = scores[:, :, prompt[0].shape[1] :].masked_fill(future, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(0, 1).reshape(queries.shape[0], -1)
    return F.linear(out, state[prefix + "out_proj.weight"], state[prefix + "out_proj.bias"])


def layer_norm(state, prefix, x):
    return F.layer_norm(x, x.shape[-1:], state[prefix + ".weight"], state[prefix + ".bias"], eps=1e-5)


def feed_forward(state, prefix, x):
    hidden = F.gelu(F.linear(x, state[prefix + "fc1.weight"], state[prefix + "fc1.bias"]))
    return F.linear(hidden, state[prefix + "fc2.weight"], state[prefix + "fc2.bias"])


def embed(state, prefix, token_ids):
    positions = state[prefix + "embed_positions.weight"][torch.arange(len(token_ids)) + 2]
    return layer_norm(
        state, prefix + "layernorm_embedding", state[prefix + "embed_tokens.weight"][token_ids] + positions
    )


def reference_logits(state, source: list[int], index_ids: list[int], label_pieces, heads: int) -> torch.Tensor:
    """Teacher-forced scores of one unpadded sentence from the DeepKE tensors: set C prompts the encoder, set A the
    decoder's self-attention, set B its cross-attention; decoder inputs via `mapping`; type scores mix label-word
    pieces by `softmax(averge_weights)`; pointers score `h . (H[p] + E[src[p]]) / 2`."""
    source_ids = torch.tensor(source)
    encoder_prompts, self_prompts, cross_prompts = (
        reference_prompts(state, n, heads) for n in ("cross", "encoder", "decoder")
    )
    hidden = embed(state, ENCODER, source_ids)
    for layer in range(BACKBONE_SHAPE["encoder_layers"]):
        prefix = f"{ENCODER}layers.{layer}."
        attended = attention(state, prefix + "self_attn.", hidden, hidden, encoder_prompts[layer], heads)
        hidden = layer_norm(state, prefix + "self_attn_layer_norm", hidden + attended)
        hidden = layer_norm(state, prefix + "final_layer_norm", hidden + feed_forward(state, prefix, hidden))
    encoded = hidden
    mapping = state["prompt_model.prompt_decoder.mapping"].tolist()
    tokens = torch.tensor([mapping[i] if i < len(mapping) else source[i - len(mapping)] for i in index_ids])
    hidden = embed(state, DECODER, tokens)
    for layer in range(BACKBONE_SHAPE["decoder_layers"]):
        prefix = f"{DECODER}layers.{layer}."
        attended = attention(state, prefix + "self_attn.", hidden, hidden, self_prompts[layer], heads, causal=True)
        hidden = layer_norm(state, prefix + "self_attn_layer_norm", hidden + attended)
        attended = attention(state, prefix + "encoder_attn.", hidden, encoded, cross_prompts[layer], heads)
        hidden = layer_norm(state, prefix + "encoder_attn_layer_norm", hidden + attended)
        hidden = layer_norm(state, prefix + "final_layer_norm", hidden + feed_forward(state, prefix, hidden))
    embeddings = state[DECODER + "embed_tokens.weight"]
    type_scores, multi_piece = [], 0
    for pieces in label_pieces:
        if len(pieces) == 1:
            type_scores.append(hidden @ embeddings[pieces[0]])
        else:
            weights = state[f"prompt_model.prompt_decoder.averge_weights.{multi_piece}"].softmax(0)
            type_scores.append(sum(w * (hidden @ embeddings[p]) for w, p in zip(weights, pieces)))
            multi_piece += 1
    pointers = hidden @ ((encoded + embeddings[source_ids]) / 2).T
    start = torch.full((len(index_ids), 1), float("-inf"))
    return torch.cat([start, (hidden @ embeddings[2])[:, None], torch.stack(type_scores, -1), pointers], dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------


def test_folded_prompts_are_the_mlp_output_in_the_right_kind_layer_slot_and_head(converted, state):
    output, _ = converted
    adapter = load_file(output / "model.safetensors")
    heads, d_model = 4, 32
    head_dim = d_model // heads
    for kind, name in SETS.items():
        prompts = adapter[f"prompt_encoder.prompts.{kind}"]
        layers = BACKBONE_SHAPE["encoder_layers" if kind == "encoder_self" else "decoder_layers"]
        assert prompts.shape == (layers, 2, PROMPT_LENGTH, d_model), kind
        for layer, (key, value) in enumerate(reference_prompts(state, name, heads)[:layers]):
            per_head = prompts[layer].view(2, PROMPT_LENGTH, heads, head_dim).transpose(1, 2)
            torch.testing.assert_close(per_head[0], key, msg=f"{kind} layer {layer} key")
            torch.testing.assert_close(per_head[1], value, msg=f"{kind} layer {layer} value")
    # One number by index arithmetic alone: decoder cross-attention (set B), layer 1, value, position 2, head 3.
    raw = mlp_output(state, "decoder")
    expected = raw[2, (2 * 1 + 1) * d_model + 3 * head_dim + 5]
    torch.testing.assert_close(adapter["prompt_encoder.prompts.decoder_cross"][1, 1, 2, 3 * head_dim + 5], expected)


def test_label_word_weights_carry_over(converted, state, tokenizer):
    output, report = converted
    weights = load_file(output / "model.safetensors")["pointer_head.label_word_weights"]
    pieces = [tokenizer(" " + words, add_special_tokens=False)["input_ids"] for words in LABEL_WORDS]
    assert [len(p) for p in pieces] == [1, 2, 3, 1]
    assert weights.shape == (4, 3)
    torch.testing.assert_close(weights[1, :2], state["prompt_model.prompt_decoder.averge_weights.0"])
    torch.testing.assert_close(weights[2, :3], state["prompt_model.prompt_decoder.averge_weights.1"])
    assert report.labels.pieces == pieces
    mix = state["prompt_model.prompt_decoder.averge_weights.1"].softmax(0).tolist()
    assert report.label_mix[2] == pytest.approx(mix) and report.label_mix[0] == [1.0]


def test_config_and_report_describe_the_adapter(converted, backbone_dir):
    output, report = converted
    config = json.loads((output / "config.json").read_text())
    assert config["backbone"] == str(backbone_dir)
    assert config["entity_types"] == TYPES and config["label_words"] == LABEL_WORDS
    assert config["prompt_length"] == PROMPT_LENGTH and config["prompt_hidden_size"] == MLP_WIDTH
    assert config["vocab_size"] == len(byte_level_tokenizer())  # the five `<<label>>` rows are gone
    text = report.format()
    for expected in ("LOC", "'pe' -> [", "encoder_self   [2, 2, 3, 32]  from prompt_cross_embed + cross_mlp",
                     "decoder_self   [3, 2, 3, 32]  from encoder_prompt_embed + encoder_mlp",
                     "identical to", "5 unused embedding rows dropped", "checkpoint ->"):  # fmt: skip
        assert expected in text, expected


def _batch(tokenizer):
    encoded = encode_sentences(tokenizer, SENTENCES)
    type_ids = {name: index for index, name in enumerate(TYPES)}
    targets = [encode_target(e, gold, type_ids) for e, gold in zip(encoded, GOLD)]
    return encoded, targets, collate(encoded, tokenizer.pad_token_id, targets)


def assert_reference_logits(model, state, tokenizer, heads=4):
    """The converted model's teacher-forced logits, batched with padding, equal the reference formula per sentence."""
    encoded, targets, batch = _batch(tokenizer)
    pieces = [tokenizer(" " + words, add_special_tokens=False)["input_ids"] for words in model.config.label_words]
    with torch.no_grad():
        logits = model(**batch).logits
    for row, (sentence, target) in enumerate(zip(encoded, targets)):
        expected = reference_logits(state, sentence.input_ids, target[:-1], pieces, heads)
        ours = logits[row, : expected.shape[0], : expected.shape[1]]
        # By design the start index and pointers to <s> and </s> score minus infinity (the
        # reference code masks </s> and what follows with -1e32 but leaves <s> open).
        first_pointer = 2 + len(TYPES)
        masked = [0, first_pointer, first_pointer + len(sentence.input_ids) - 1]
        assert torch.isinf(ours[:, masked]).all() and torch.isfinite(ours[:, 1:first_pointer]).all()
        keep = [i for i in range(expected.shape[1]) if i not in masked]
        torch.testing.assert_close(ours[:, keep], expected[:, keep], atol=1e-4, rtol=1e-4)


def test_teacher_forced_logits_equal_the_reference_formula(converted, state, tokenizer):
    model = LightNerModel.from_pretrained(converted[0])
    assert_reference_logits(model, state, tokenizer)


def test_converted_adapter_loads_through_automodel(converted):
    from transformers import AutoModel

    output, _ = converted
    model = AutoModel.from_pretrained(output, trust_remote_code=True)
    assert type(model).__name__ == "LightNerModel"
    assert model.config.entity_types == TYPES
    adapter = load_file(output / "model.safetensors")
    for name, tensor in model.adapter_state_dict().items():
        assert torch.equal(tensor, adapter[name]), name


def test_unfrozen_backbone_is_refused_unless_exported(tmp_path, state, backbone_dir, tokenizer):
    changed = dict(state)
    changed[ENCODER + "layers.1.fc2.weight"] = state[ENCODER + "layers.1.fc2.weight"] + 0.01
    checkpoint = tmp_path / "unfrozen.pth"
    torch.save(changed, checkpoint)
    with pytest.raises(
        ConversionError, match=r"differs from .* in 1 of .* tensors .* trained with the backbone unfrozen"
    ):
        convert_checkpoint(checkpoint, tmp_path / "refused", LABEL_MAP, backbone=str(backbone_dir))
    report = convert_checkpoint(
        checkpoint, tmp_path / "adapter", LABEL_MAP, backbone=str(backbone_dir), export_backbone=tmp_path / "bart"
    )
    assert report.backbone == str((tmp_path / "bart").resolve())
    exported = BartModel.from_pretrained(tmp_path / "bart")
    assert exported.config.vocab_size == 323  # DeepKE's five extra rows dropped: nothing reads them
    assert torch.equal(exported.encoder.layers[1].fc2.weight, changed[ENCODER + "layers.1.fc2.weight"])
    assert torch.equal(exported.shared.weight, state[ENCODER + "embed_tokens.weight"][:323])
    assert_reference_logits(LightNerModel.from_pretrained(tmp_path / "adapter"), changed, tokenizer)


def test_a_backbone_that_cannot_be_loaded_is_reported_and_can_be_exported(tmp_path, tokenizer):
    """Offline, the named backbone cannot be compared: the checkpoint's own backbone is used (BART's default config,
    d_model / 64 heads), and with --export-backbone the adapter runs on it."""
    shape = {**BACKBONE_SHAPE, "d_model": 64, "encoder_attention_heads": 1, "decoder_attention_heads": 1}
    backbone_dir = save_tiny_backbone(tmp_path / "bart", tokenizer=tokenizer, **shape)
    state = deepke_state_dict(BartModel.from_pretrained(backbone_dir), tokenizer, LABEL_WORDS)
    checkpoint = _save(tmp_path, state)
    unloadable = str(tmp_path / "not-downloaded")
    kwargs = dict(backbone=unloadable, tokenizer=str(backbone_dir))
    report = convert_checkpoint(checkpoint, tmp_path / "named", LABEL_MAP, **kwargs)
    assert report.backbone == unloadable
    assert (
        "not compared with" in report.backbone_finding and "heads assumed d_model / 64 = 1" in report.backbone_finding
    )
    convert_checkpoint(checkpoint, tmp_path / "adapter", LABEL_MAP, export_backbone=tmp_path / "exported", **kwargs)
    assert_reference_logits(LightNerModel.from_pretrained(tmp_path / "adapter"), state, tokenizer, heads=1)


def _save(tmp_path, obj, name="bad.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_refuses_what_is_not_a_deepke_lightner_state_dict(tmp_path, backbone_dir):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = {
        garbage: "torch.load\\(weights_only=True\\) cannot read it",
        _save(tmp_path, argparse.Namespace(x=1), "object.pth"): "torch.load\\(weights_only=True\\) cannot read it",
        _save(tmp_path, torch.zeros(3), "tensor.pth"): "it holds a Tensor, not a state dict of tensors",
        _save(tmp_path, BartModel.from_pretrained(backbone_dir).state_dict(), "bart.pth"): (
            "not a DeepKE LightNER state dict: it lacks prompt_model.prompt_decoder.mapping"
        ),
        tmp_path / "missing.pth": "no such file",
    }
    for path, message in cases.items():
        with pytest.raises(ConversionError, match=message) as refusal:
            convert_checkpoint(path, tmp_path / "out", LABEL_MAP, backbone=str(backbone_dir))
        assert "weights_only=False" not in str(refusal.value) and "allowed global" not in str(refusal.value)


def test_a_pickle_with_code_is_refused_naming_what_it_holds(tmp_path, backbone_dir):
    """The refusal names the unsupported global and never suggests loading it unsafely."""
    path = _save(tmp_path, {"args": argparse.Namespace(lr=1e-3), "weights": torch.zeros(2)}, "trainer_state.pth")
    with pytest.raises(ConversionError, match=r"it holds a pickled argparse\.Namespace, which is code") as refusal:
        convert_checkpoint(path, tmp_path / "out", LABEL_MAP, backbone=str(backbone_dir))
    assert "weights_only=False" not in str(refusal.value)


def test_refuses_a_label_set_that_does_not_match(checkpoint, state, tmp_path, backbone_dir):
    def convert(label_map, path=checkpoint):
        return convert_checkpoint(path, tmp_path / "out", label_map, backbone=str(backbone_dir))

    with pytest.raises(ConversionError, match="trained with 4 entity types .* but the label set has 3"):
        convert(dict(list(LABEL_MAP.items())[:3]))
    swapped = {"PER": "pe", "LOC": "l", "ORG": "org", "MISC": "m"}
    with pytest.raises(ConversionError, match=r"do not reproduce the checkpoint's mapping.*PER \('pe' starts with"):
        convert(swapped)
    same_first_piece = {**LABEL_MAP, "ORG": "o"}  # "o" and "org" share their first piece, not their piece count
    with pytest.raises(ConversionError, match=r"label-word weights of lengths \[2, 3\] .* need \[2\]"):
        convert(same_first_piece)
    added_tokens = dict(state)
    added_tokens["prompt_model.prompt_decoder.mapping"] = torch.tensor([0, 2, 323, 324, 325, 326])
    with pytest.raises(ConversionError, match="tokens added to the vocabulary .* learn_weights=False"):
        convert(LABEL_MAP, _save(tmp_path, added_tokens))


def test_refuses_a_backbone_of_another_shape(checkpoint, tmp_path, tokenizer):
    wider = save_tiny_backbone(tmp_path / "wider", tokenizer=tokenizer, **{**BACKBONE_SHAPE, "d_model": 48})
    with pytest.raises(
        ConversionError, match=r"does not have the shape of .*\(d_model: checkpoint 32, named backbone 48\)"
    ):
        convert_checkpoint(checkpoint, tmp_path / "out", LABEL_MAP, backbone=str(wider))
    deeper = save_tiny_backbone(tmp_path / "deeper", tokenizer=tokenizer, **{**BACKBONE_SHAPE, "decoder_layers": 4})
    with pytest.raises(ConversionError, match="decoder_layers: checkpoint 3, named backbone 4"):
        convert_checkpoint(checkpoint, tmp_path / "out", LABEL_MAP, backbone=str(deeper))


# ---------------------------------------------------------------------------------------------------------------------
# Label sets and the command line
# ---------------------------------------------------------------------------------------------------------------------


def test_presets_reproduce_the_reference_mappings(real_tokenizer):
    from lightner.tokenization_utils import label_word_token_ids

    reference = json.loads(shared_path("docs", "deepke_label_maps.json").read_text())
    assert list(DEEPKE_PRESETS) == list(reference)
    for name, label_map in DEEPKE_PRESETS.items():
        assert [t.lower() for t in label_map] == list(reference[name]), name
        assert list(label_map.values()) == [words[2:-2] for words in reference[name].values()], name
    conll = label_word_token_ids(real_tokenizer, list(DEEPKE_PRESETS["conll2003"].values()))
    assert [pieces[0] for pieces in conll] == [2259, 621, 1651, 643] and all(len(p) == 1 for p in conll)
    restaurant = DEEPKE_PRESETS["mit-restaurant"]
    pieces = label_word_token_ids(real_tokenizer, list(restaurant.values()))
    assert [name for name, p in zip(restaurant, pieces) if len(p) > 1] == ["Amenity", "Restaurant_Name"]


def test_label_sets_from_presets_files_and_inline_mappings(tmp_path):
    assert load_label_map("CoNLL-2003") == (DEEPKE_PRESETS["conll2003"], "preset conll2003")
    inline = '{"loc": "<<location>>", "fromloc.city_name": "<<fromloc city name>>"}'
    assert load_label_map(inline)[0] == {"loc": "location", "fromloc.city_name": "fromloc city name"}
    (tmp_path / "labels.yaml").write_text("per: <<person>>\nloc: location\n")
    assert load_label_map(str(tmp_path / "labels.yaml"))[0] == {"per": "person", "loc": "location"}
    (tmp_path / "types.json").write_text('["LOC", "Restaurant_Name"]')
    assert load_label_map(str(tmp_path / "types.json"))[0] == {"LOC": "location", "Restaurant_Name": "restaurant name"}
    for bad, message in [
        ("conll2004", "neither a preset"),
        ('{"loc": ""}', "non-empty string"),
        ("{", "not valid JSON"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_label_map(bad)


def test_command_line_converts_a_conll_checkpoint_with_the_real_tokenizer(tmp_path, real_tokenizer, capsys):
    backbone = save_tiny_backbone(tmp_path / "bart", tokenizer=real_tokenizer, **BACKBONE_SHAPE)
    checkpoint = _save(
        tmp_path,
        deepke_state_dict(BartModel.from_pretrained(backbone), real_tokenizer, DEEPKE_PRESETS["conll2003"].values()),
    )
    arguments = ["--checkpoint", str(checkpoint), "--labels", "conll2003", "--backbone", str(backbone)]
    assert main([*arguments, "--output", str(tmp_path / "adapter")]) == 0
    report = capsys.readouterr().out
    assert "LOC" in report and "[2259]" in report and "checkpoint ->" in report
    assert LightNerModel.from_pretrained(tmp_path / "adapter").config.label_words == list(
        DEEPKE_PRESETS["conll2003"].values()
    )
    assert main([*arguments[:2], "--labels", "mit-movie", *arguments[4:], "--output", str(tmp_path / "x")]) == 1
    assert "error: the checkpoint was trained with 4 entity types" in capsys.readouterr().err

    from lightner.cli import main as lightner_main

    assert lightner_main(["convert-deepke", *arguments, "--output", str(tmp_path / "via-cli")]) == 0
    assert (tmp_path / "via-cli" / "model.safetensors").read_bytes() == (
        tmp_path / "adapter" / "model.safetensors"
    ).read_bytes()


# ---------------------------------------------------------------------------------------------------------------------
# Data converters
# ---------------------------------------------------------------------------------------------------------------------

CONLL_TEXT = (
    "-DOCSTART- O\r\n\r\n"
    "EU\tB-ORG\r\nrejects\tO\r\nGerman\tB-MISC\r\ncall\tO\r\n\r\n"
    "Peter\tB-PER\r\nBlackburn\tI-PER\r\n\r\n"
    "No\tO\r\nentities\tO\r\nhere\tO\r\n\r\n"
    "New\tB-LOC\r\nYork\tI-LOC\r\nCity\tI-LOC\r\n"
)


def test_conll_jsonl_and_datasets_round_trip_every_sentence(tmp_path):
    from lightner.convert.convert_data import convert_data
    from lightner.formats import read_conll

    (tmp_path / "in.txt").write_bytes(CONLL_TEXT.encode())
    original = read_conll(tmp_path / "in.txt")
    assert len(original) == 4 and original[2].entities == []
    steps = [("in.txt", "a.jsonl"), ("a.jsonl", "b-hf"), ("b-hf", "c.txt"), ("c.txt", "d.jsonl")]
    for source, target in steps:
        report = convert_data(tmp_path / source, tmp_path / target)
        assert report.problems == [] and report.written == 4, (source, target)
    assert read_conll(tmp_path / "c.txt") == original
    assert "4 sentences" in report.format() and "3 with entities, 1 without" in report.format()


def test_what_a_format_cannot_hold_is_reported_not_dropped_silently(tmp_path, capsys):
    from lightner.convert.convert_data import main
    from lightner.data import Sentence
    from lightner.formats import read_jsonl, write_jsonl

    sentences = [
        Sentence(["Bank", "of", "New", "York"], [(0, 4, "ORG"), (2, 4, "LOC"), (3, 4, "LOC")]),
        Sentence([], []),
        Sentence(["a\tb", "c"], [(1, 2, "PER")]),
        Sentence(["plain"], []),
    ]
    write_jsonl(sentences, tmp_path / "nested.jsonl")
    assert main([str(tmp_path / "nested.jsonl"), str(tmp_path / "flat.txt")]) == 0
    report = capsys.readouterr().out
    assert "Wrote 2 sentences" in report and "Could not convert 4:" in report
    assert "sentence 1: entity [2, 4) LOC dropped, it overlaps [0, 4) ORG" in report
    assert "sentence 2 left out: it has no words" in report and "sentence 3 left out: word 0 ('a\\tb')" in report
    assert main([str(tmp_path / "nested.jsonl"), str(tmp_path / "hf"), "--types", "LOC,ORG,PER"]) == 0
    assert "Wrote 4 sentences" in capsys.readouterr().out  # a dataset holds empty sentences and odd words
    assert main([str(tmp_path / "hf"), str(tmp_path / "back.jsonl")]) == 0
    back = read_jsonl(tmp_path / "back.jsonl")
    assert [s.words for s in back] == [s.words for s in sentences] and back[0].entities == [(0, 4, "ORG")]


def test_data_converter_errors_name_the_problem(tmp_path, capsys):
    from datasets import DatasetDict

    from lightner.convert.convert_data import main
    from lightner.data import Sentence
    from lightner.formats import to_hf_dataset

    (tmp_path / "bad.txt").write_text("EU\tB-ORG\nrejects\tX-BAD\n")
    assert main([str(tmp_path / "bad.txt"), str(tmp_path / "out.jsonl")]) == 1
    assert "bad.txt:2: invalid tag 'X-BAD'" in capsys.readouterr().err
    split = to_hf_dataset([Sentence(["EU"], [(0, 1, "ORG")])])
    DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dict"))
    assert main([str(tmp_path / "dict"), str(tmp_path / "out.jsonl")]) == 1
    assert "holds the splits ['train', 'test']; choose one with --split" in capsys.readouterr().err
    assert main([str(tmp_path / "dict"), str(tmp_path / "out.jsonl"), "--split", "test"]) == 0


def test_the_conll_test_set_converts_without_loss(tmp_path):
    from lightner.convert.convert_data import convert_data
    from lightner.formats import read_conll

    source = shared_path("data", "lightner", "conll2003", "test.txt")
    report = convert_data(source, tmp_path / "test.jsonl")
    assert convert_data(tmp_path / "test.jsonl", tmp_path / "test.txt").problems == []
    assert read_conll(tmp_path / "test.txt") == report.read == read_conll(source)
    assert len(report.read) == 3453
