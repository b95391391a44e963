"""Entity-level precision, recall and F1 by exact match of type and fragments: an `evaluate` metric module.

This file is the single implementation of the score: `lightner.metrics` imports `span_f1` from it, and
`evaluate.load("<repo>/lightner/span_f1")` copies this one file into its cache and loads it there, where it cannot
import `lightner`. Hence the scoring below uses the standard library only, and the `evaluate` wrapper is defined only
when `evaluate` is already loaded, as it is under `evaluate.load`: importing `evaluate` takes seconds, which
`lightner.metrics` should not pay.
"""

from __future__ import annotations

import operator
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_DESCRIPTION = """\
Entity-level precision, recall and F1: a predicted entity counts as correct only if its word offsets `start`, `end`
(exclusive) and its `type` all equal those of a gold entity in the same sentence, and, for a discontinuous entity,
its whole list of `fragments` too (a prediction missing one fragment is wrong). Every sentence counts, including
those without gold entities (a prediction there is a false positive); an entity predicted twice counts once. Returns
micro scores (also at the top level), the unweighted macro average over types, per-type scores with counts, and
per-shape scores (flat, nested, discontinuous). On flat (non-overlapping) entities the scores equal seqeval's strict
IOB2 scores.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `dict`): for each sentence, the predicted entities as
        `{"start": int, "end": int, "type": str}`, with word offsets and an exclusive end; a discontinuous entity
        adds `"fragments": [[start, end], ...]` (its word spans; `start`/`end` cover them).
    references (`list` of `list` of `dict`): the gold entities of the same sentences, in the same form.
Returns:
    `precision`, `recall`, `f1` (micro), `micro` and `macro` (each a dict of the three), `per_type` (for each type:
    `precision`, `recall`, `f1`, `support`, `predicted`, `correct`), `per_shape` (the same for `flat`, `nested` and
    `discontinuous` entities), `num_sentences`, `num_gold`, `num_pred` and `num_correct`. A ratio with a zero
    denominator is 0.0.
Examples:
    >>> span_f1 = evaluate.load("lightner/span_f1")
    >>> references = [[{"start": 0, "end": 2, "type": "PER"}], []]
    >>> predictions = [[{"start": 0, "end": 2, "type": "PER"}], [{"start": 1, "end": 2, "type": "LOC"}]]
    >>> span_f1.compute(predictions=predictions, references=references)["precision"]
    0.5
"""

_CITATION = """\
@inproceedings{tjong-kim-sang-de-meulder-2003-introduction,
    title = "Introduction to the {C}o{NLL}-2003 Shared Task: Language-Independent Named Entity Recognition",
    author = "Tjong Kim Sang, Erik F. and De Meulder, Fien",
    booktitle = "Proceedings of the Seventh Conference on Natural Language Learning at {HLT}-{NAACL} 2003",
    year = "2003",
    pages = "142--147",
}
"""

SpanLike = Sequence[Any] | Mapping[str, Any]
# What an entity is, for matching: its type and its fragments, each `(start, end)`.
Key = tuple[str, tuple[tuple[int, int], ...]]
SHAPES = ("flat", "nested", "discontinuous")


def _as_key(span: SpanLike) -> Key:
    """`(type, fragments)` of a `(start, end, type[, fragments])` tuple or a mapping with `start`, `end`, `type`
    (`predict`'s word-offset entities) or `entity_group` (the pipeline's character-offset output, which users score
    as it comes) and optional `fragments`, with offsets as plain ints; a contiguous entity has the one fragment
    `(start, end)`."""
    if isinstance(span, Mapping):
        entity_type = span["entity_group"] if "entity_group" in span else span["type"]
        fragments = [(f["start"], f["end"]) if isinstance(f, Mapping) else f for f in span.get("fragments") or []]
        span = (span["start"], span["end"], entity_type, fragments)
    start, end, entity_type, *rest = span
    fragments = (rest[0] if rest else None) or [(start, end)]
    return entity_type, tuple((operator.index(s), operator.index(e)) for s, e in fragments)


def _shapes(keys: set[Key]) -> dict[Key, str]:
    """Each entity's shape among the entities of its own sentence and side: `discontinuous` with several fragments,
    else `nested` if it shares a word with another entity (nesting or overlapping), else `flat`."""
    words = {key: {w for start, end in key[1] for w in range(start, end)} for key in keys}
    return {
        key: "discontinuous"
        if len(key[1]) > 1
        else "nested"
        if any(other != key and words[key] & words[other] for other in keys)
        else "flat"
        for key in keys
    }


def _scores(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    # 2c / (g + p) equals 2PR / (P + R) without the rounding of the two divisions.
    f1 = 2 * correct / (gold + predicted) if correct else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _f1(precise: int, predicted: int, correct: int, gold: int) -> float:
    """F1 of precision `precise / predicted` and recall `correct / gold`; `_scores`'s 2c / (g + p) where they agree."""
    if precise == correct:
        return _scores(correct, predicted, gold)["f1"]
    precision, recall = precise / predicted if predicted else 0.0, correct / gold if gold else 0.0
    return 2 * precision * recall / (precision + recall)


def span_f1(gold: Sequence[Iterable[SpanLike]], pred: Sequence[Iterable[SpanLike]]) -> dict[str, Any]:
    """Micro, macro, per-type and per-shape precision, recall and F1 of predicted entities against gold ones.

    `gold[i]` and `pred[i]` are the entities of sentence `i`, each a `(start, end, type)` tuple, a `(start, end, type,
    fragments)` tuple or a mapping with those keys (`fragments` as `[[start, end], ...]`). An entity is correct only
    if its type and its whole set of fragments match. Sentences without gold entities still count (their predictions
    are false positives) and duplicates count once. Types are those of gold or predictions, sorted; the macro average
    is their unweighted mean, as seqeval's.

    `per_shape` scores flat, nested and discontinuous entities apart. Gold entities take their shape among the gold
    entities of their sentence and predictions among the predictions (see `_shapes`), so `support` and recall count
    by the gold shape, `predicted` and precision by the predicted one; `correct` counts by the gold shape. Only
    "discontinuous" is a property of the entity alone; a correct entity is flat on one side and nested on the other
    only where the two sides disagree on what overlaps it.
    """
    if len(gold) != len(pred):
        raise ValueError(f"got gold entities for {len(gold)} sentences but predictions for {len(pred)}")
    gold_counts, predicted_counts, correct_counts = Counter(), Counter(), Counter()
    shape_gold, shape_predicted, shape_correct, shape_precise = Counter(), Counter(), Counter(), Counter()
    for gold_spans, predicted_spans in zip(gold, pred):
        gold_set = {_as_key(span) for span in gold_spans}
        predicted_set = {_as_key(span) for span in predicted_spans}
        correct = gold_set & predicted_set
        gold_counts.update(entity_type for entity_type, _ in gold_set)
        predicted_counts.update(entity_type for entity_type, _ in predicted_set)
        correct_counts.update(entity_type for entity_type, _ in correct)
        gold_shapes, predicted_shapes = _shapes(gold_set), _shapes(predicted_set)
        shape_gold.update(gold_shapes.values())
        shape_predicted.update(predicted_shapes.values())
        shape_correct.update(gold_shapes[key] for key in correct)
        shape_precise.update(predicted_shapes[key] for key in correct)

    per_type = {
        entity_type: {
            **_scores(correct_counts[entity_type], predicted_counts[entity_type], gold_counts[entity_type]),
            "support": gold_counts[entity_type],
            "predicted": predicted_counts[entity_type],
            "correct": correct_counts[entity_type],
        }
        for entity_type in sorted(gold_counts.keys() | predicted_counts.keys())
    }
    num_gold, num_pred, num_correct = gold_counts.total(), predicted_counts.total(), correct_counts.total()
    micro = _scores(num_correct, num_pred, num_gold)
    macro = {
        name: sum(scores[name] for scores in per_type.values()) / len(per_type) if per_type else 0.0
        for name in ("precision", "recall", "f1")
    }
    per_shape = {
        shape: {
            "precision": shape_precise[shape] / shape_predicted[shape] if shape_predicted[shape] else 0.0,
            "recall": shape_correct[shape] / shape_gold[shape] if shape_gold[shape] else 0.0,
            "f1": _f1(shape_precise[shape], shape_predicted[shape], shape_correct[shape], shape_gold[shape]),
            "support": shape_gold[shape],
            "predicted": shape_predicted[shape],
            "correct": shape_correct[shape],
        }
        for shape in SHAPES
    }
    return {
        **micro,
        "micro": dict(micro),
        "macro": macro,
        "per_type": per_type,
        "per_shape": per_shape,
        "num_sentences": len(gold),
        "num_gold": num_gold,
        "num_pred": num_pred,
        "num_correct": num_correct,
    }


if "evaluate" in sys.modules:
    import datasets
    import evaluate

    # `datasets` features cannot leave a key out, so every entity gets `fragments` on its way in (a contiguous one
    # `[[start, end]]`, which scores as the same entity): callers may leave it out, as before fragments existed.
    _SPANS = datasets.List(
        {
            "start": datasets.Value("int32"),
            "end": datasets.Value("int32"),
            "type": datasets.Value("string"),
            "fragments": datasets.List(datasets.List(datasets.Value("int32"))),
        }
    )

    def _with_fragments(sentence):
        return [
            {**entity, "fragments": entity.get("fragments") or [[entity["start"], entity["end"]]]}
            for entity in sentence
        ]

    @evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
    class SpanF1(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description=_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_KWARGS_DESCRIPTION,
                features=datasets.Features({"predictions": _SPANS, "references": _SPANS}),
            )

        def add_batch(self, *, predictions=None, references=None, **kwargs):
            """`evaluate.Metric.add_batch`, each entity given its `fragments` if it has none."""
            predictions = None if predictions is None else [_with_fragments(sentence) for sentence in predictions]
            references = None if references is None else [_with_fragments(sentence) for sentence in references]
            return super().add_batch(predictions=predictions, references=references, **kwargs)

        def add(self, *, prediction=None, reference=None, **kwargs):
            """`evaluate.Metric.add`, each entity given its `fragments` if it has none."""
            prediction = None if prediction is None else _with_fragments(prediction)
            reference = None if reference is None else _with_fragments(reference)
            return super().add(prediction=prediction, reference=reference, **kwargs)

        def _compute(self, predictions, references):
            return span_f1(references, predictions)
