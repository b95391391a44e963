"""Generation: the beam search, its constraints and cache, and what it costs the host (synchronisations)."""

from __future__ import annotations

import pytest
import torch

from conftest import model_with_strong_prompts
from lightner import generation_lightner
from lightner.generation_lightner import ReservedRoomLayer
from lightner.modeling_lightner import LightNerModel, one_query_attention
from lightner.tokenization_utils import END_INDEX, collate, encode_sentences

TYPES = ["PER", "LOC", "ORG"]
SENTENCES = [
    ["John", "Smith", "lives", "in", "New", "York", "."],
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Hi"],
    ["Peter", "Blackburn"],
]


@pytest.fixture()
def model(tiny_backbone) -> LightNerModel:
    return model_with_strong_prompts(tiny_backbone, TYPES)


def _batch(model, sentences=SENTENCES):
    encoded = encode_sentences(model.tokenizer, sentences)
    return encoded, collate(encoded, model.tokenizer.pad_token_id)


def test_fp16_one_query_attention_scales_the_query_before_the_product():
    """Scores of 40 x 40 x 64 = 102400 overflow float16 (max 65504) unless the query is scaled first."""
    torch.manual_seed(0)
    query, key, prompt_key = (torch.full(shape, 40.0) for shape in [(2, 2, 1, 64), (2, 2, 5, 64), (1, 2, 3, 64)])
    key[:, :, 2:] = -40.0
    value, prompt_value = torch.randn(2, 2, 5, 64), torch.randn(1, 2, 3, 64)
    expected, _ = one_query_attention(query, key, value, None, prompt_key, prompt_value, None)
    half = [t.half() for t in (query, key, value)]
    got, _ = one_query_attention(*half, None, prompt_key.half(), prompt_value.half(), None)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, atol=1e-2, rtol=1e-2)


def test_beams_reorder_only_the_self_attention_cache(model, monkeypatch):
    """All beams of a sentence read the same encoder rows: the cross-attention cache is never reordered."""
    from transformers.cache_utils import DynamicLayer

    reordered = []
    original = DynamicLayer.reorder_cache

    def record(self, beam_idx):
        reordered.append(type(self))
        return original(self, beam_idx)

    monkeypatch.setattr(DynamicLayer, "reorder_cache", record)
    monkeypatch.setattr(ReservedRoomLayer, "reorder_cache", record)
    encoded, batch = _batch(model)
    model.generate(**batch, word_starts=[e.word_starts for e in encoded], num_beams=3)
    assert reordered and set(reordered) == {ReservedRoomLayer}


class SyncCounter:
    """Counts the tensor operations that make the host wait for the device: reading values back, and indexing with
    a boolean mask (whose result size the host must learn)."""

    READS = ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "masked_select")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.READS:
            self._wrap(monkeypatch, name, lambda *args: True)
        for name in ("__getitem__", "__setitem__"):
            self._wrap(monkeypatch, name, lambda tensor, index, *rest: _has_bool_tensor(index))

    def _wrap(self, monkeypatch, name, syncs):
        original = getattr(torch.Tensor, name)

        def wrapped(*args, **kwargs):
            self.count += bool(syncs(*args))
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)


def _has_bool_tensor(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts)


@pytest.mark.parametrize("num_beams,constrained", [(1, True), (3, True), (2, False)])
def test_the_decoding_loop_synchronises_at_most_once_per_step(model, monkeypatch, num_beams, constrained):
    encoded, batch = _batch(model)
    word_starts = [e.word_starts for e in encoded]
    counter = SyncCounter(monkeypatch)
    out = model.generate(
        **batch, word_starts=word_starts, num_beams=num_beams, constrained=constrained, output_step_logits=True
    )
    steps = len(out.step_logits)
    assert steps > 5
    assert counter.count <= steps + 2, f"{counter.count} synchronisations for {steps} steps"


def test_entity_scores_cost_no_synchronisation_per_entity(model, monkeypatch):
    encoded, batch = _batch(model)
    output = model.generate(**batch, word_starts=[e.word_starts for e in encoded])
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: output)
    counter = SyncCounter(monkeypatch)
    predictions = model._predict_batch(encoded, ["default"] * len(encoded), None)
    assert sum(len(entities) for entities in predictions) > 4, "needs several entities to show anything"
    assert counter.count <= 2


def test_a_mixed_adapter_batch_stacks_each_adapter_once(model, monkeypatch, tmp_path):
    model.save_pretrained(tmp_path)
    model.load_adapter(tmp_path, adapter_name="other")
    with torch.no_grad():
        model.adapters["other"].prompt_encoder.prompts["encoder_self"].mul_(-1)
    names = ["default", "other", "default", "other", "default", "default"]
    stacked = []
    original = torch.stack

    def record(tensors, *args, **kwargs):
        stacked.append(len(tensors))
        return original(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "stack", record)
    adapters = model.adapter_batch(names)
    assert stacked and max(stacked) == 2, stacked
    assert adapters.type_embeddings.shape[0] == len(names)
    for row, name in enumerate(names):
        alone = model.adapter_batch([name])
        for kind, tensor in adapters.prompts.tensors.items():
            assert torch.equal(tensor[:, :, row], alone.prompts.tensors[kind][:, :, 0]), (row, kind)
        assert torch.equal(adapters.type_embeddings[row], alone.type_embeddings[0])


def test_beam_search_returns_the_best_hypothesis_it_found_and_never_scores_below_greedy(model, monkeypatch):
    from lightner.generation_lightner import BeamSearch

    finished_scores: dict[int, float] = {}  # sentence -> best score of a finished beam seen so far
    original_step = BeamSearch.step

    def step(self, logits):
        source = original_step(self, logits)
        ended = self.finished.view(-1, self.num_beams)  # [sentences still searching, beams]
        best = self.scores.masked_fill(~ended, float("-inf")).max(-1).values.tolist()
        for sentence, score in zip(self.sentences, best):
            finished_scores[sentence] = max(finished_scores.get(sentence, float("-inf")), score)
        return source

    monkeypatch.setattr(BeamSearch, "step", step)
    encoded, batch = _batch(model)
    word_starts = [e.word_starts for e in encoded]
    for constrained in (True, False):
        greedy = model.generate(**batch, word_starts=word_starts, num_beams=1, constrained=constrained)
        finished_scores.clear()
        beam = model.generate(**batch, word_starts=word_starts, num_beams=4, constrained=constrained)
        beam_scores, greedy_scores = beam.token_log_probs.sum(-1), greedy.token_log_probs.sum(-1)
        best_found = torch.tensor([finished_scores[i] for i in range(len(encoded))])
        torch.testing.assert_close(beam_scores, best_found, atol=1e-5, rtol=0)
        assert (beam_scores >= greedy_scores - 1e-5).all(), (beam_scores, greedy_scores)
        assert (beam_scores > greedy_scores + 1e-4).any(), "beam search should beat greedy somewhere here"


@pytest.mark.parametrize("a,b", [(None, None), (0.25, 3), (0.0, 2)])
def test_output_lengths_respect_b_plus_a_times_the_source_length(tiny_backbone, a, b):
    torch.manual_seed(0)
    overrides = {} if a is None else dict(max_length_a=a, max_length_b=b)
    model = LightNerModel.from_backbone(tiny_backbone, TYPES, prompt_hidden_size=16, **overrides).eval()
    a, b = model.config.max_length_a, model.config.max_length_b
    assert (a, b) == ((0.6, 10) if not overrides else (overrides["max_length_a"], overrides["max_length_b"]))
    encoded, batch = _batch(model)
    for num_beams in (1, 3):
        out = model.generate(**batch, num_beams=num_beams, constrained=False)
        hit_limit = False
        for sentence, indices in zip(encoded, out.sequences.tolist()):
            limit = int(b + a * len(sentence.input_ids))
            length = indices.index(1) + 1 if 1 in indices else len(indices)
            assert length <= limit, (length, limit, sentence.input_ids)
            hit_limit |= length == limit
        assert hit_limit, "random weights should write up to the limit somewhere, or the bound is untested"


def _allowed_next(prefix: list[int], word_starts: list[int], first_pointer: int, steps_left: int, vocab: int):
    """The pointer grammar, restated: what may follow `prefix` (indices after the start) with `steps_left` steps."""
    open_word = -1
    for index in prefix:
        if index >= first_pointer:
            open_word = word_starts.index(index - first_pointer)
        elif index >= 2:
            open_word = -1
    allowed = set()
    if open_word < 0:
        allowed.add(1)
        if steps_left >= 3:
            allowed |= {first_pointer + start for start in word_starts}
    else:
        if steps_left >= 2:
            allowed |= set(range(2, first_pointer))
        if steps_left >= 3 and open_word + 1 < len(word_starts):
            allowed.add(first_pointer + word_starts[open_word + 1])
    return sorted(i for i in allowed if i < vocab)


def test_an_entity_score_is_the_product_of_its_token_probabilities_under_the_constraints(model):
    """Recomputed by a teacher-forced forward pass over the predicted output, masked by the restated grammar."""
    sentences = SENTENCES[:2]
    predictions = model.predict(sentences)
    encoded, batch = _batch(model, sentences)
    output = model.generate(**batch, word_starts=[e.word_starts for e in encoded])
    first_pointer = 2 + len(TYPES)
    checked = 0
    for row, (sentence, entities) in enumerate(zip(encoded, predictions)):
        indices = output.sequences[row].tolist()
        indices = indices[: indices.index(1) + 1]
        limit = model.config.max_output_length(len(sentence.input_ids))
        labels = torch.tensor([indices])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sentence.input_ids]), labels=labels).logits[0]
        log_probs = []
        for step, index in enumerate(indices):
            allowed = _allowed_next(
                indices[:step], sentence.word_starts, first_pointer, limit - step, logits.shape[-1]
            )
            step_log_probs = logits[step, allowed].double().log_softmax(-1)
            log_probs.append(step_log_probs[allowed.index(index)].item())
        expected, start = {}, 0  # (start word, end word, type) -> probability of its first writing
        for step, index in enumerate(indices):
            if 2 <= index < first_pointer:
                words = [sentence.word_starts.index(indices[s] - first_pointer) for s in range(start, step)]
                key = (words[0], words[-1] + 1, TYPES[index - 2])
                expected.setdefault(key, torch.tensor(log_probs[start : step + 1]).sum().exp().item())
            if index < first_pointer:
                start = step + 1
        assert {(e["start"], e["end"], e["type"]) for e in entities} == set(expected)
        for entity in entities:
            assert entity["score"] == pytest.approx(expected[entity["start"], entity["end"], entity["type"]], rel=1e-4)
            checked += 1
    assert checked >= 3


def _output_lengths(sequences: torch.Tensor) -> list[int]:
    """Indices written per sentence, its first `</s>` included."""
    return [row.index(END_INDEX) + 1 if END_INDEX in row else len(row) for row in sequences.tolist()]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_finished_sentences_leave_the_batch(model, monkeypatch, tmp_path, num_beams):
    """Each step decodes only the sentences still writing, with their own cache rows, encoder states, pointer features
    and adapter rows; greedily, with every finished sentence leaving at once, a batch then costs exactly the sum of its
    outputs' lengths. Outputs are those of each sentence decoded alone."""
    monkeypatch.setattr(generation_lightner, "RETIRE_AT_FRACTION", 0.0)
    model.save_pretrained(tmp_path)
    model.load_adapter(tmp_path, adapter_name="other")
    with torch.no_grad():
        model.adapters["other"].prompt_encoder.prompts["decoder_self"].mul_(-1)
    names = ["default", "other", "default", "other"]
    encoded, batch = _batch(model)
    word_starts = [e.word_starts for e in encoded]
    rows_per_step = []
    original = model.decode

    def record(index_ids, source, adapters, cache=None, mask=None):
        rows = index_ids.shape[0]
        rows_per_step.append(rows)
        assert source.hidden.shape[0] == source.pointer_features.shape[0] == adapters.type_embeddings.shape[0] == rows
        assert {t.shape[2] for t in adapters.prompts.tensors.values()} == {rows}
        for layer in [*cache.self_attention_cache.layers, *cache.cross_attention_cache.layers]:
            assert not getattr(layer, "is_initialized", False) or layer.keys.shape[0] == rows
        return original(index_ids, source, adapters, cache, mask)

    monkeypatch.setattr(model, "decode", record)
    out = model.generate(**batch, word_starts=word_starts, num_beams=num_beams, adapter_names=names)
    monkeypatch.setattr(model, "decode", original)
    lengths = _output_lengths(out.sequences)
    assert len(set(lengths)) > 1, f"needs outputs of different lengths to show anything: {lengths}"
    assert rows_per_step[0] == len(SENTENCES) * num_beams > rows_per_step[-1]
    if num_beams == 1:
        assert sum(rows_per_step) == sum(lengths)
    for row, (sentence, name) in enumerate(zip(encoded, names)):
        alone = collate([sentence], model.tokenizer.pad_token_id)
        single = model.generate(**alone, word_starts=[sentence.word_starts], num_beams=num_beams, adapter_names=[name])
        steps = single.sequences.shape[1]
        assert torch.equal(out.sequences[row, :steps], single.sequences[0]), row
        assert (out.sequences[row, steps:] == END_INDEX).all()
        torch.testing.assert_close(out.token_log_probs[row, :steps], single.token_log_probs[0], atol=1e-5, rtol=1e-5)


def test_finished_sentences_leave_in_groups_with_the_same_outputs(model, monkeypatch):
    """Leaving copies every staying cache row, so sentences leave once a share `RETIRE_AT_FRACTION` of those still
    searching has finished; the ones waiting write only `</s>`, and every output is the same as leaving at once."""
    encoded, batch = _batch(model)
    word_starts = [e.word_starts for e in encoded]
    runs = {}
    for fraction in (0.0, 0.75, 1.0):
        monkeypatch.setattr(generation_lightner, "RETIRE_AT_FRACTION", fraction)
        rows_per_step, original = [], model.decode

        def record(index_ids, *args, rows_per_step=rows_per_step, original=original):
            rows_per_step.append(index_ids.shape[0])
            return original(index_ids, *args)

        monkeypatch.setattr(model, "decode", record)
        runs[fraction] = (model.generate(**batch, word_starts=word_starts), rows_per_step)
        monkeypatch.setattr(model, "decode", original)
    lengths = sorted(_output_lengths(runs[0.0][0].sequences))
    assert len(set(lengths)) > 2, f"needs three output lengths or more to show anything: {lengths}"
    for fraction, (out, rows_per_step) in runs.items():
        assert torch.equal(out.sequences, runs[0.0][0].sequences), fraction
        torch.testing.assert_close(out.token_log_probs, runs[0.0][0].token_log_probs)
        for before, after in zip(rows_per_step, rows_per_step[1:]):
            assert after == before or before - after >= fraction * before, (fraction, rows_per_step)
    assert runs[1.0][1] == [len(SENTENCES)] * max(lengths)  # nobody leaves before all have finished
    assert sum(runs[0.0][1]) == sum(lengths) < sum(runs[0.75][1]) < sum(runs[1.0][1])
