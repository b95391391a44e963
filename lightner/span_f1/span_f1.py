"""Entity-level precision, recall and F1 by exact `(start, end, type)` match: an `evaluate` metric module.

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
(exclusive) and its `type` all equal those of a gold entity in the same sentence. Every sentence counts, including
those without gold entities (a prediction there is a false positive); a span predicted twice counts once. Returns
micro scores (also at the top level), the unweighted macro average over types, and per-type scores with counts.
On flat (non-overlapping) entities the scores equal seqeval's strict IOB2 scores.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `dict`): for each sentence, the predicted entities as
        `{"start": int, "end": int, "type": str}`, with word offsets and an exclusive end.
    references (`list` of `list` of `dict`): the gold entities of the same sentences, in the same form.
Returns:
    `precision`, `recall`, `f1` (micro), `micro` and `macro` (each a dict of the three), `per_type` (for each type:
    `precision`, `recall`, `f1`, `support`, `predicted`, `correct`), `num_sentences`, `num_gold`, `num_pred` and
    `num_correct`. A ratio with a zero denominator is 0.0.
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


def _as_span(span: SpanLike) -> tuple[int, int, str]:
    """`(start, end, type)` of a tuple or a mapping with `start`, `end` and `type` (`predict`'s entities) or
    `entity_group` (the pipeline's; this file imports nothing, so it restates `text_utils.ENTITY_TYPE_KEYS`), with
    offsets as plain ints."""
    if isinstance(span, Mapping):
        span = (span["start"], span["end"], span["entity_group"] if "entity_group" in span else span["type"])
    start, end, entity_type = span
    return operator.index(start), operator.index(end), entity_type


def _scores(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    # 2c / (g + p) equals 2PR / (P + R) without the rounding of the two divisions.
    f1 = 2 * correct / (gold + predicted) if correct else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def span_f1(gold: Sequence[Iterable[SpanLike]], pred: Sequence[Iterable[SpanLike]]) -> dict[str, Any]:
    """Micro, macro and per-type precision, recall and F1 of predicted entity spans against gold ones, per sentence.

    `gold[i]` and `pred[i]` are the entities of sentence `i`, each a `(start, end, type)` tuple or a mapping with those
    keys. Sentences without gold entities still count (their predictions are false positives) and duplicates count
    once. Types are those of gold or predictions, sorted; the macro average is their unweighted mean, as seqeval's.
    """
    if len(gold) != len(pred):
        raise ValueError(f"got gold entities for {len(gold)} sentences but predictions for {len(pred)}")
    gold_counts, predicted_counts, correct_counts = Counter(), Counter(), Counter()
    for gold_spans, predicted_spans in zip(gold, pred):
        gold_set = {_as_span(span) for span in gold_spans}
        predicted_set = {_as_span(span) for span in predicted_spans}
        gold_counts.update(entity_type for _, _, entity_type in gold_set)
        predicted_counts.update(entity_type for _, _, entity_type in predicted_set)
        correct_counts.update(entity_type for _, _, entity_type in gold_set & predicted_set)

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
    return {
        **micro,
        "micro": dict(micro),
        "macro": macro,
        "per_type": per_type,
        "num_sentences": len(gold),
        "num_gold": num_gold,
        "num_pred": num_pred,
        "num_correct": num_correct,
    }


if "evaluate" in sys.modules:
    import datasets
    import evaluate

    _SPANS = datasets.List(
        {"start": datasets.Value("int32"), "end": datasets.Value("int32"), "type": datasets.Value("string")}
    )

    @evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
    class SpanF1(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description=_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_KWARGS_DESCRIPTION,
                features=datasets.Features({"predictions": _SPANS, "references": _SPANS}),
            )

        def _compute(self, predictions, references):
            return span_f1(references, predictions)
