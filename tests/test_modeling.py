"""The math of the LightNER model, pinned on tiny random backbones."""

from __future__ import annotations

import os
import random

import pytest
import torch
from safetensors.torch import load_file

from conftest import byte_level_tokenizer, save_tiny_backbone, shared_path
from lightner.configuration_lightner import ATTENTION_KINDS, LightNerConfig, default_label_words
from lightner.generation_lightner import ReservedRoomLayer
from lightner.modeling_lightner import LightNerModel, PromptKeyValues
from lightner.tokenization_utils import END_INDEX, FIRST_TYPE_INDEX, collate, encode_sentences, encode_target

TYPES = ["PER", "LOC", "ORG", "fromloc.city_name"]
SENTENCES = [
    ["John", "Smith", "lives", "in", "New", "York", "."],
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Hi"],
    ["Peter", "Blackburn"],
    ["The", "flight", "from", "Charlotte", "to", "Las", "Vegas", "leaves", "at", "9", "pm", "on", "Monday", "."],
]


@pytest.fixture()
def model(tiny_backbone) -> LightNerModel:
    torch.manual_seed(0)
    return LightNerModel.from_backbone(tiny_backbone, TYPES, prompt_hidden_size=48).eval()


def batch_for(model: LightNerModel, sentences, entities=None):
    encoded = encode_sentences(model.tokenizer, sentences)
    targets = None
    if entities is not None:
        type_ids = {name: i for i, name in enumerate(model.config.entity_types)}
        targets = [encode_target(e, spans, type_ids) for e, spans in zip(encoded, entities)]
    return encoded, collate(encoded, model.tokenizer.pad_token_id, targets)


GOLD = [[(0, 2, "PER"), (4, 6, "LOC")], [(0, 1, "ORG")], [], [(0, 2, "PER")], [(3, 4, "LOC"), (5, 7, "LOC")]]


def test_label_words_default_and_override():
    assert [default_label_words(t) for t in ["LOC", "PER", "ORG", "MISC"]] == [
        "location",
        "person",
        "organization",
        "others",
    ]
    assert default_label_words("fromloc.city_name") == "fromloc city name"
    assert default_label_words("Restaurant_Name") == "restaurant name"
    assert default_label_words("releaseYear") == "release year"
    assert default_label_words("round-trip") == "round trip"
    with pytest.raises(ValueError, match="no letters"):
        default_label_words("_.-")
    config = LightNerConfig(entity_types=["LOC", "X"], label_words={"X": "thing"})
    assert config.label_words == ["location", "thing"]
    with pytest.raises(ValueError, match="not in entity_types"):
        LightNerConfig(entity_types=["LOC"], label_words={"PER": "person"})


def test_only_adapter_trains_and_backbone_stays_bit_identical(model):
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        *(f"adapters.default.prompt_encoder.reparameterization.{k}.{p}" for k in ATTENTION_KINDS for p in _MLP_PARTS),
        "adapters.default.pointer_head.label_word_weights",
    }
    backbone_before = {name: t.clone() for name, t in model.backbone.state_dict().items()}
    adapter_before = {name: t.clone() for name, t in model.adapter_state_dict().items()}
    model.train()
    _, batch = batch_for(model, SENTENCES, GOLD)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.pointer_head.label_word_weights.grad.abs().sum() > 0  # alpha really trains (reference defect 2)
    optimizer.step()
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, backbone_before[name]), name
    for name, tensor in model.adapter_state_dict().items():
        assert not torch.equal(tensor, adapter_before[name]), f"{name} did not change"


_MLP_PARTS = ["embedding", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]


@pytest.mark.parametrize("num_beams,constrained", [(1, True), (3, True), (3, False)])
def test_cached_decoding_equals_recomputation(model, num_beams, constrained):
    encoded, batch = batch_for(model, SENTENCES)
    kwargs = dict(
        word_starts=[e.word_starts for e in encoded],
        num_beams=num_beams,
        constrained=constrained,
        output_step_logits=True,
    )
    cached = model.generate(batch["input_ids"], batch["attention_mask"], use_cache=True, **kwargs)
    recomputed = model.generate(batch["input_ids"], batch["attention_mask"], use_cache=False, **kwargs)
    assert len(cached.step_logits) == len(recomputed.step_logits) > 3
    for step, (a, b) in enumerate(zip(cached.step_logits, recomputed.step_logits)):
        finite = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), finite), step
        torch.testing.assert_close(a[finite], b[finite], atol=1e-5, rtol=1e-5, msg=f"step {step}")
    assert torch.equal(cached.sequences, recomputed.sequences)


def test_reserved_room_cache_equals_concatenation_when_growing_and_reordering():
    """The decoder's self-attention cache layer holds what HF's concatenating layer holds, also past its room."""
    from transformers.cache_utils import DynamicLayer

    torch.manual_seed(0)
    reserved, growing = ReservedRoomLayer(room=2), DynamicLayer()
    for step in range(7):
        keys, values = torch.randn(3, 2, 1 + step % 2, 4), torch.randn(3, 2, 1 + step % 2, 5)
        got, expected = reserved.update(keys, values), growing.update(keys, values)
        for a, b in zip(got, expected):
            assert torch.equal(a, b), step
        if step % 3 == 2:
            order = torch.tensor([2, 0, 0])
            reserved.reorder_cache(order)
            growing.reorder_cache(order)
            assert torch.equal(reserved.keys, growing.keys) and torch.equal(reserved.values, growing.values)
    assert reserved.get_seq_length() == growing.get_seq_length() == 10


def test_sentence_predicts_the_same_alone_and_in_a_padded_batch(model):
    target = SENTENCES[1]
    others = [SENTENCES[4], SENTENCES[2], SENTENCES[0]]  # longer and shorter: padding on both sides of it
    for num_beams in (1, 3):
        alone = model.predict([target], num_beams=num_beams)[0]
        assert alone, "the sentence must get entities, or the comparison is vacuous"
        batched = model.predict([others[0], target, *others[1:]], num_beams=num_beams, batch_size=4)[1]
        assert [(e["start"], e["end"], e["type"]) for e in alone] == [
            (e["start"], e["end"], e["type"]) for e in batched
        ]
        assert [e["score"] for e in alone] == pytest.approx([e["score"] for e in batched], abs=1e-5)
    _, single = batch_for(model, [target], [GOLD[1]])
    _, padded = batch_for(model, [others[0], target, others[1]], [GOLD[4], GOLD[1], GOLD[2]])
    logits_alone = model(**single).logits[0]
    logits_batched = model(**padded).logits[1, : logits_alone.shape[0], : logits_alone.shape[1]]
    finite = torch.isfinite(logits_alone)
    torch.testing.assert_close(logits_batched[finite], logits_alone[finite], atol=1e-5, rtol=1e-5)
    assert torch.isinf(logits_batched[~finite]).all()


def _teacher_forced_logits(model, batch, prompts: PromptKeyValues) -> torch.Tensor:
    return model(**batch, prompt_key_values=prompts).logits


def test_prompts_reach_every_attention_kind_and_layer(model):
    _, batch = batch_for(model, SENTENCES[:2], GOLD[:2])
    with torch.no_grad():
        full = model.adapter_batch().prompts
        reference = _teacher_forced_logits(model, batch, full)
        for kind in ATTENTION_KINDS:
            without = PromptKeyValues({k: t for k, t in full.tensors.items() if k != kind})
            changed = _teacher_forced_logits(model, batch, without)
            assert not torch.allclose(changed, reference, atol=1e-4, equal_nan=True), f"{kind} prompts have no effect"
            for layer in range(full.tensors[kind].shape[0]):
                perturbed = {k: t.clone() for k, t in full.tensors.items()}
                perturbed[kind][layer] += torch.randn_like(perturbed[kind][layer])
                changed = _teacher_forced_logits(model, batch, PromptKeyValues(perturbed))
                assert not torch.allclose(changed, reference, atol=1e-4, equal_nan=True), (kind, layer)


def test_nested_entities_encode_and_decode_back(model):
    from lightner.tokenization_utils import parse_entities

    words = ["Bank", "of", "New", "York", "Mellon", "chief", "said"]
    nested = [(0, 5, "ORG"), (2, 4, "LOC"), (2, 3, "LOC"), (0, 1, "ORG"), (5, 6, "PER")]
    encoded = encode_sentences(model.tokenizer, [words])[0]
    type_ids = {name: i for i, name in enumerate(TYPES)}
    target = encode_target(encoded, nested, type_ids)
    assert target[0] == 0 and target[-1] == END_INDEX
    decoded = parse_entities(target[1:], encoded, len(TYPES))
    assert sorted((e.start, e.end, TYPES[e.type_id]) for e in decoded) == sorted(nested)


def test_real_tokenizer_source_and_target_layout(real_tokenizer):
    """Word starts checked against the tokenizer's own vocab.json, not against what the implementation returns."""
    import json

    vocab = json.loads((shared_path("assets", "bart-large-tokenizer") / "vocab.json").read_text())
    token_of = {index: token for token, index in vocab.items()}
    words = ["EU", "rejects", "1996-08-22", "Blackburnshire", "boycott", "Zyxwvut"]
    encoded = encode_sentences(real_tokenizer, [words])[0]
    assert encoded.input_ids[0] == vocab["<s>"] and encoded.input_ids[-1] == vocab["</s>"]
    assert encoded.input_ids[1] == vocab["ĠEU"] == 1281  # the word-initial piece, as add_prefix_space=True gives
    ends = [*encoded.word_starts[1:], len(encoded.input_ids) - 1]
    pieces = [[token_of[i] for i in encoded.input_ids[start:end]] for start, end in zip(encoded.word_starts, ends)]
    assert encoded.word_starts[0] == 1 and sum(len(p) for p in pieces) == len(encoded.input_ids) - 2
    for word, tokens in zip(words, pieces):
        assert tokens[0].startswith("Ġ") and not any(t.startswith("Ġ") for t in tokens[1:]), (word, tokens)
        assert "".join(tokens) == "Ġ" + word
    assert sum(len(tokens) > 1 for tokens in pieces) >= 3, "needs multi-piece words"
    target = encode_target(encoded, [(0, 1, "ORG"), (2, 4, "MISC")], {"LOC": 0, "PER": 1, "ORG": 2, "MISC": 3})
    first_pointer = FIRST_TYPE_INDEX + 4
    pointers = [first_pointer + encoded.word_starts[word] for word in (2, 3)]
    assert target == [0, first_pointer + 1, FIRST_TYPE_INDEX + 2, *pointers, FIRST_TYPE_INDEX + 3, END_INDEX]


def test_save_load_reproduces_logits_and_stores_only_the_adapter(model, tmp_path):
    _, batch = batch_for(model, SENTENCES, GOLD)
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    config = model.config
    prompt_numbers = (config.encoder_layers + 2 * config.decoder_layers) * 2 * config.prompt_length * config.d_model
    assert sorted(tensors) == sorted(
        [f"prompt_encoder.prompts.{kind}" for kind in ATTENTION_KINDS] + ["pointer_head.label_word_weights"]
    )
    assert not any(name.startswith("backbone") for name in tensors)
    numbers = sum(t.numel() for t in tensors.values())
    assert numbers == prompt_numbers + model.pointer_head.label_word_weights.numel()
    header = 2048  # safetensors JSON header, a few hundred bytes for five tensors
    assert numbers * 4 <= os.path.getsize(tmp_path / "model.safetensors") <= numbers * 4 + header
    loaded = LightNerModel.from_pretrained(tmp_path)
    with torch.no_grad():
        after = loaded(**batch).logits
    assert torch.equal(before, after)
    assert loaded.predict(SENTENCES) == model.predict(SENTENCES)


def test_loading_refuses_a_backbone_of_another_shape(model, tmp_path):
    model.save_pretrained(tmp_path / "adapter")
    wider = save_tiny_backbone(tmp_path / "wider", d_model=48)
    from transformers import BartModel

    with pytest.raises(ValueError, match="d_model: adapter 32, backbone 48"):
        LightNerModel.from_pretrained(tmp_path / "adapter", backbone=BartModel.from_pretrained(wider))


def test_loading_refuses_a_corrupted_or_mismatched_adapter(model, tmp_path):
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors adapter file"):
        LightNerModel.from_pretrained(tmp_path)
    weights.write_bytes(data)
    config = LightNerConfig.from_pretrained(tmp_path)
    config.entity_types, config.label_words = ["PER", "LOC"], ["person", "location"]
    with pytest.raises(ValueError, match="label_word_weights has shape"):
        LightNerModel.from_pretrained(tmp_path, config=config)


def test_learning_a_few_real_sentences_reaches_f1_one(real_tokenizer, tmp_path):
    """With the backbone frozen, prompts and label-word weights alone fit 8 CoNLL-2003 sentences exactly."""
    from lightner.formats import read_conll

    sentences = [s for s in read_conll(shared_path("data", "lightner", "conll2003", "train.txt")) if s.entities]
    sentences = [s for s in sentences if len(s.words) < 25][:8]
    backbone = save_tiny_backbone(
        tmp_path, tokenizer=real_tokenizer, d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
        dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(backbone, ["LOC", "PER", "ORG", "MISC"], prompt_hidden_size=128, dropout=0.0)
    _, batch = batch_for(model, [s.words for s in sentences], [s.entities for s in sentences])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gold = {(i, *span) for i, s in enumerate(sentences) for span in s.entities}
    f1 = 0.0
    for step in range(800):
        model.train()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 49:
            predicted = model.predict([s.words for s in sentences])
            found = {(i, e["start"], e["end"], e["type"]) for i, entities in enumerate(predicted) for e in entities}
            f1 = 2 * len(gold & found) / (len(gold) + len(found))
            if f1 == 1.0:
                break
    assert f1 == 1.0, f"span F1 {f1:.3f} after {step + 1} steps (loss {loss.item():.4f})"


def _random_sentence(rng: random.Random) -> list[str]:
    vocabulary = [
        "Paris",
        "the",
        "of",
        "Obama",
        "U.S.",
        "1996-08-22",
        "--",
        "(",
        ")",
        "São",
        "東京",
        "x",
        "NEW",
        "it's",
    ]
    return [rng.choice(vocabulary) for _ in range(rng.randint(1, 12))]


def _strictly_well_formed(indices: list[int], word_starts: list[int], num_types: int) -> bool:
    """The whole output is entities (consecutive word-start pointers, then a type) and one closing `</s>`."""
    first_pointer = FIRST_TYPE_INDEX + num_types
    word_of = {position + first_pointer: word for word, position in enumerate(word_starts)}
    open_words: list[int] = []
    for index in indices:
        if index == END_INDEX:
            return not open_words
        if index in word_of and (not open_words or word_of[index] == open_words[-1] + 1):
            open_words.append(word_of[index])
        elif FIRST_TYPE_INDEX <= index < first_pointer and open_words:
            open_words = []
        else:
            return False
    return False


def test_constrained_decoding_always_parses(model):
    rng = random.Random(0)
    sentences = [_random_sentence(rng) for _ in range(200)]
    encoded = encode_sentences(model.tokenizer, sentences, model.backbone.config.max_position_embeddings)
    for num_beams, constrained in ((1, True), (2, True), (1, False)):
        ill_formed = 0
        for start in range(0, len(encoded), 50):
            chunk = encoded[start : start + 50]
            batch = collate(chunk, model.tokenizer.pad_token_id)
            out = model.generate(
                **batch, word_starts=[e.word_starts for e in chunk], num_beams=num_beams, constrained=constrained
            )
            for sentence, indices in zip(chunk, out.sequences.tolist()):
                ill_formed += not _strictly_well_formed(indices, sentence.word_starts, len(TYPES))
        if constrained:
            assert ill_formed == 0
        else:
            assert ill_formed > 0, "random weights should write ill-formed output when unconstrained"


def test_bad_input_gets_clear_errors_or_documented_behaviour(model):
    assert model.predict([[], ["Hi"]])[0] == []
    with pytest.raises(ValueError, match="sentence 0 has no words"):
        encode_sentences(model.tokenizer, [[]])
    with pytest.raises(ValueError, match="word 1 of sentence 0 is empty or whitespace"):
        model.predict([["a", " "]])
    with pytest.raises(TypeError, match="sentence 0 is a string"):
        model.predict(["John lives in Paris"])
    with pytest.raises(ValueError, match="more than the backbone's 128 positions"):
        model.predict([["word"] * 200])
    encoded = encode_sentences(model.tokenizer, [["Paris"]])[0]
    with pytest.raises(ValueError, match="type 'CITY', which is not among the model's types"):
        encode_target(encoded, [(0, 1, "CITY")], {name: i for i, name in enumerate(TYPES)})
    with pytest.raises(ValueError, match=r"entity \[0, 3\) outside its 1 words"):
        encode_target(encoded, [(0, 3, "PER")], {name: i for i, name in enumerate(TYPES)})


def test_a_word_that_encodes_to_nothing_is_named(tiny_backbone):
    from tokenizers import normalizers

    tokenizer = byte_level_tokenizer()
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace("\u200b", ""), normalizers.Strip()]
    )
    with pytest.raises(ValueError, match=r"word 1 of sentence 0 \('\\u200b'\) encodes to no tokens"):
        encode_sentences(tokenizer, [["a", "\u200b"]])


def test_a_model_needs_entity_types(tiny_backbone):
    with pytest.raises(ValueError, match="at least one entity type"):
        LightNerModel.from_backbone(tiny_backbone, [])


def test_docstring_examples_run():
    """The runnable examples in PromptEncoder's and PointerHead's docstrings give what they show."""
    import doctest

    from lightner import modeling_lightner

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for obj in (modeling_lightner.PromptEncoder, modeling_lightner.PointerHead):
        tests = finder.find(obj, obj.__name__, globs=vars(modeling_lightner))
        assert tests and tests[0].examples, f"{obj.__name__} has no example"
        for test in tests:
            runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("version", ["4.57.1", "6.0.0", "5.26.0", "5.23.9"])
def test_an_unsupported_transformers_is_refused_in_one_line(version):
    import subprocess
    import sys

    script = f"import transformers; transformers.__version__ = {version!r}; import lightner.configuration_lightner"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"ImportError: LightNER needs transformers>=5.24,<5.26 (found {version})"
    )


def test_the_runtime_transformers_gate_is_what_setup_declares():
    """`setup.py` declares the range that `configuration_lightner` checks at import: one fact, read from one place."""
    import runpy
    from unittest import mock

    from conftest import REPO_ROOT
    from lightner.configuration_lightner import TRANSFORMERS_REQUIREMENT

    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(REPO_ROOT / "setup.py"))
    assert TRANSFORMERS_REQUIREMENT in setup.call_args.kwargs["install_requires"]


@pytest.mark.parametrize(
    "field,value,error,message",
    [
        ("batch_size", 0, ValueError, "batch_size must be an int >= 1, got 0"),
        ("batch_size", 2.5, TypeError, "batch_size must be an int >= 1, got float 2.5"),
        ("batch_size", True, TypeError, "batch_size must be an int >= 1, got bool True"),
        ("num_beams", -2, ValueError, "num_beams must be an int >= 1, got -2"),
        ("num_beams", 0, ValueError, "num_beams must be an int >= 1, got 0"),
        ("num_beams", 2.5, TypeError, "num_beams must be an int >= 1, got float 2.5"),
    ],
)
def test_predict_and_generate_refuse_bad_batch_sizes_and_beam_counts(model, field, value, error, message):
    with pytest.raises(error, match=message):
        model.predict([["Hi"]], **{field: value})
    if field == "num_beams":
        encoded, batch = batch_for(model, [["Hi"]])
        with pytest.raises(error, match=message):
            model.generate(**batch, word_starts=[e.word_starts for e in encoded], num_beams=value)


@pytest.mark.parametrize("sentences", [None, (words for words in [["Hi"]]), 5, "Hi there"])
def test_predict_needs_a_list_of_word_lists(model, sentences):
    with pytest.raises(TypeError, match="predict takes a list of sentences, each a list of words"):
        model.predict(sentences)


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (dict(max_length_a=-0.1), ValueError, "max_length_a must be >= 0, got -0.1"),
        (dict(prompt_hidden_size=0), ValueError, "prompt_hidden_size must be an int >= 1, got 0"),
        (dict(prompt_length=0), ValueError, "prompt_length must be an int >= 1, got 0"),
        (dict(prompt_length=2.0), TypeError, "prompt_length must be an int >= 1, got float 2.0"),
        (dict(beam_width=0), ValueError, "beam_width must be an int >= 1, got 0"),
        (dict(label_words=["person", ""]), ValueError, "label words for entity type 'LOC' are ''; they must be a non"),
        (
            dict(label_words=["person", 5]),
            TypeError,
            "label words for entity type 'LOC' are int 5; they must be a non",
        ),
        (dict(entity_types="PER"), TypeError, "entity_types must be a list of type names, not the string 'PER'"),
        (dict(entity_types=["PER", None]), TypeError, "entity_types\\[1\\] is None; every entity type must be a"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(overrides, error, message):
    with pytest.raises(error, match=message):
        LightNerConfig(**{"entity_types": ["PER", "LOC"], **overrides})


def test_from_backbone_refuses_a_bare_string_or_a_bad_entry_as_entity_types(tiny_backbone):
    with pytest.raises(TypeError, match="not the string 'PER'"):
        LightNerModel.from_backbone(tiny_backbone, "PER")
    with pytest.raises(TypeError, match="entity_types\\[0\\] is None"):
        LightNerModel.from_backbone(tiny_backbone, [None])
