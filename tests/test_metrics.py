"""Tests of `lightner.metrics` and of the `evaluate` module `lightner/span_f1`, against seqeval's strict IOB2."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from conftest import REPO_ROOT, shared_path
from lightner.data import Span, tags_from_spans
from lightner.formats import read_conll
from lightner.metrics import format_table, span_f1

SPAN_F1_DIR = Path(REPO_ROOT, "lightner", "span_f1")

# Four sentences: exact hits, a wrong type, a wrong boundary, a miss, a false positive in a sentence without gold
# entities, a duplicated prediction and a type (MISC) that only the predictions have.
WORDS = [6, 3, 4, 2]
GOLD = [
    [(0, 2, "PER"), (3, 4, "LOC"), (5, 6, "ORG")],
    [],
    [(0, 1, "ORG"), (1, 3, "PER")],
    [(0, 2, "LOC")],
]
PRED = [
    [(0, 2, "PER"), (3, 4, "ORG"), (5, 6, "ORG"), (0, 2, "PER")],
    [(1, 2, "LOC")],
    [(0, 1, "ORG"), (1, 2, "PER"), (3, 4, "MISC")],
    [{"start": 0, "end": 2, "type": "LOC"}],
]


def seqeval_report(gold, pred, lengths):
    """seqeval's strict IOB2 scores of flat spans, via the tags they encode to."""
    gold_tags = [tags_from_spans(spans, length) for spans, length in zip(gold, lengths)]
    pred_tags = [tags_from_spans(set(map(as_tuple, spans)), length) for spans, length in zip(pred, lengths)]
    kwargs = {"mode": "strict", "scheme": IOB2}
    report = classification_report(gold_tags, pred_tags, output_dict=True, zero_division=0, **kwargs)
    micro = {
        "precision": precision_score(gold_tags, pred_tags, zero_division=0, **kwargs),
        "recall": recall_score(gold_tags, pred_tags, zero_division=0, **kwargs),
        "f1": f1_score(gold_tags, pred_tags, zero_division=0, **kwargs),
    }
    return report, micro


def as_tuple(span) -> tuple:
    return (span["start"], span["end"], span["type"]) if isinstance(span, dict) else tuple(span)


def assert_equals_seqeval(result, gold, pred, lengths):
    report, micro = seqeval_report(gold, pred, lengths)
    for name in ("precision", "recall", "f1"):
        assert result[name] == pytest.approx(micro[name], abs=1e-9)
        assert result["micro"][name] == pytest.approx(report["micro avg"][f"{name}-score" if name == "f1" else name])
        assert result["macro"][name] == pytest.approx(
            report["macro avg"][f"{name}-score" if name == "f1" else name], abs=1e-9
        )
    types = set(report) - {"micro avg", "macro avg", "weighted avg"}
    assert set(result["per_type"]) == types
    for name in types:
        assert result["per_type"][name]["precision"] == pytest.approx(report[name]["precision"], abs=1e-9)
        assert result["per_type"][name]["recall"] == pytest.approx(report[name]["recall"], abs=1e-9)
        assert result["per_type"][name]["f1"] == pytest.approx(report[name]["f1-score"], abs=1e-9)
        assert result["per_type"][name]["support"] == report[name]["support"]


def test_hand_computed_scores():
    result = span_f1(GOLD, PRED)
    # 4 correct of 8 distinct predictions (the duplicate counts once) and 6 gold entities.
    assert (result["num_sentences"], result["num_gold"], result["num_pred"], result["num_correct"]) == (4, 6, 8, 4)
    assert result["precision"] == 4 / 8
    assert result["recall"] == 4 / 6
    assert result["f1"] == 2 * 4 / (6 + 8)
    assert result["micro"] == {"precision": result["precision"], "recall": result["recall"], "f1": result["f1"]}
    assert result["per_type"]["LOC"] == {
        "precision": 1 / 2,
        "recall": 1 / 2,
        "f1": 1 / 2,
        "support": 2,
        "predicted": 2,  # one of them the false positive in the sentence without gold entities
        "correct": 1,
    }
    assert result["per_type"]["PER"] == {
        "precision": 1 / 2,
        "recall": 1 / 2,
        "f1": 1 / 2,
        "support": 2,
        "predicted": 2,
        "correct": 1,
    }
    assert result["per_type"]["MISC"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
        "predicted": 1,
        "correct": 0,
    }
    assert list(result["per_type"]) == ["LOC", "MISC", "ORG", "PER"]
    per_type_f1 = [scores["f1"] for scores in result["per_type"].values()]
    assert result["macro"]["f1"] == pytest.approx(sum(per_type_f1) / 4)
    assert_equals_seqeval(result, GOLD, PRED, WORDS)


def test_false_positive_in_a_sentence_without_gold_entities_counts():
    result = span_f1([[(0, 1, "PER")], []], [[(0, 1, "PER")], [(0, 1, "PER")]])
    assert (result["precision"], result["recall"]) == (0.5, 1.0)


def test_empty_and_degenerate_inputs_score_zero():
    empty = span_f1([], [])
    assert (empty["precision"], empty["recall"], empty["f1"], empty["per_type"]) == (0.0, 0.0, 0.0, {})
    assert empty["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    no_predictions = span_f1([[(0, 1, "PER")]], [[]])
    assert (no_predictions["precision"], no_predictions["recall"], no_predictions["f1"]) == (0.0, 0.0, 0.0)
    perfect = span_f1([[Span(0, 1, "PER")]], [[(0, 1, "PER")]])
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="gold entities for 2 sentences but predictions for 1"):
        span_f1([[], []], [[]])


def test_format_table():
    table = format_table(span_f1(GOLD, PRED))
    lines = table.split("\n")
    assert lines[0].split() == ["type", "precision", "recall", "f1", "support"]
    assert lines[1].split() == ["LOC", "0.5000", "0.5000", "0.5000", "2"]
    assert lines[2].split() == ["MISC", "0.0000", "0.0000", "0.0000", "0"]
    assert lines[5] == ""
    assert lines[4].split() == ["PER", "0.5000", "0.5000", "0.5000", "2"]
    assert lines[6].split() == ["micro", "0.5000", "0.6667", "0.5714", "6"]
    assert lines[7].split()[0] == "macro"
    assert len({len(line) for line in lines if line}) == 1  # aligned


def perturb(gold: list[list[Span]], lengths: list[int], types: list[str], seed: int) -> list[list[Span]]:
    """Predictions made from gold by dropping, shifting, retyping and adding entities, kept flat (non-overlapping)."""
    rng = random.Random(seed)
    predictions = []
    for spans, length in zip(gold, lengths):
        candidates = []
        for start, end, entity_type in spans:
            roll = rng.random()
            if roll < 0.15:
                continue
            if roll < 0.3:
                start, end = (
                    (start + rng.choice([-1, 1]), end) if rng.random() < 0.5 else (start, end + rng.choice([-1, 1]))
                )
            elif roll < 0.4:
                entity_type = rng.choice([name for name in types if name != entity_type])
            candidates.append(Span(start, end, entity_type))
        if rng.random() < 0.2:
            start = rng.randrange(length)
            candidates.append(Span(start, start + rng.randint(1, 3), rng.choice(types)))
        flat = []
        for span in sorted(candidates):
            if 0 <= span.start < span.end <= length and (not flat or span.start >= flat[-1].end):
                flat.append(span)
        predictions.append(flat)
    return predictions


def test_equals_seqeval_strict_iob2_on_conll_test():
    sentences = read_conll(shared_path("data", "lightner", "conll2003", "test.txt"))
    gold = [sentence.entities for sentence in sentences]
    lengths = [len(sentence.words) for sentence in sentences]
    pred = perturb(gold, lengths, ["LOC", "PER", "ORG", "MISC"], seed=0)
    result = span_f1(gold, pred)
    assert result["num_gold"] == 5_648
    assert 0.5 < result["f1"] < 0.95  # the perturbation did something, without destroying everything
    assert any(spans and not gold_spans for spans, gold_spans in zip(pred, gold))
    assert_equals_seqeval(result, gold, pred, lengths)


def as_dicts(sentences):
    return [[{"start": s, "end": e, "type": t} for s, e, t in map(as_tuple, spans)] for spans in sentences]


@pytest.mark.parametrize("target", ["folder", "script"])
def test_evaluate_module_gives_the_same_numbers(tmp_path, monkeypatch, target):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")
    path = SPAN_F1_DIR if target == "folder" else SPAN_F1_DIR / "span_f1.py"
    metric = evaluate.load(str(path), cache_dir=str(tmp_path))
    assert metric.compute(predictions=as_dicts(PRED), references=as_dicts(GOLD)) == span_f1(GOLD, PRED)

    metric.add_batch(predictions=as_dicts(PRED[:2]), references=as_dicts(GOLD[:2]))
    metric.add_batch(predictions=as_dicts(PRED[2:]), references=as_dicts(GOLD[2:]))
    assert metric.compute() == span_f1(GOLD, PRED)


def test_importing_lightner_metrics_does_not_import_evaluate():
    # The scoring shares a file with the `evaluate` wrapper; importing `evaluate` would cost seconds.
    code = "import sys, lightner.metrics; assert 'evaluate' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def random_flat_corpus(seed: int, sentences: int = 300):
    """Flat gold spans over random sentence lengths, and predictions perturbed from them (`perturb`)."""
    rng = random.Random(seed)
    lengths = [rng.randint(1, 25) for _ in range(sentences)]
    gold = []
    for length in lengths:
        spans, cursor = [], 0
        while cursor < length:
            start = cursor + rng.randint(0, 4)
            end = min(length, start + rng.randint(1, 3))
            if start < end:
                spans.append(Span(start, end, rng.choice(["PER", "LOC", "ORG"])))
            cursor = end
        gold.append(spans)
    return gold, perturb(gold, lengths, ["PER", "LOC", "ORG", "MISC"], seed=seed), lengths


@pytest.mark.parametrize("seed", [0, 1])
def test_fragments_leave_flat_scores_equal_to_seqeval(seed):
    gold, pred, lengths = random_flat_corpus(seed)
    result = span_f1(gold, pred)
    assert_equals_seqeval(result, gold, pred, lengths)
    # Flat entities written with their one fragment score the same; all of them are flat, none nested or discontinuous.
    fragmented = [[{"start": s, "end": e, "type": t, "fragments": [[s, e]]} for s, e, t in spans] for spans in pred]
    assert span_f1(gold, fragmented) == result
    shapes = result["per_shape"]
    assert shapes["flat"]["support"] == result["num_gold"] and shapes["flat"]["predicted"] == result["num_pred"]
    assert shapes["flat"]["correct"] == result["num_correct"] and shapes["flat"]["f1"] == result["f1"]
    assert shapes["nested"]["support"] == shapes["discontinuous"]["support"] == 0


def test_evaluate_module_scores_fragments(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(SPAN_F1_DIR), cache_dir=str(tmp_path))
    gold = [[{"start": 2, "end": 6, "type": "ADR", "fragments": [[2, 3], [5, 6]]}]]
    gold[0].append({"start": 4, "end": 6, "type": "ADR"})  # entities with and without fragments mix
    pred = [[{"start": 2, "end": 6, "type": "ADR", "fragments": [[2, 3], [4, 6]]}, gold[0][1]]]
    result = metric.compute(predictions=pred, references=gold)
    assert result == span_f1(gold, pred) and result["num_correct"] == 1
    assert result["per_shape"]["discontinuous"]["support"] == 1 and result["per_shape"]["nested"]["correct"] == 1
    metric.add(prediction=gold[0], reference=gold[0])
    assert metric.compute()["f1"] == 1.0
