#!/usr/bin/env python
"""Is the answer space why bart-mini's adapters pick the wrong types? The paper's types against free ones.

A type is scored by `h . sum_j softmax(alpha_t)_j E[l_j]` over the pieces of its label words (`PointerHead`): with a
one-piece label word ("drug", "person") the type's vector is a fixed row of the frozen embedding table and only the
decoder state `h` can move towards it. This benchmark trains the same adapter twice, once as the paper defines it and
once with a free learned offset added to each type's vector (initialised at zero, so training starts from the label
words), and scores two things on each:

- end-to-end F1 (`span_f1`) of the trained model, in memory (the offsets are an ablation, not part of adapter files);
- type accuracy with the gold pointers given (teacher forcing): at every step where the target is a type, whether the
  model's best type is the gold one, per gold type. This isolates the answer space from finding the spans.

Two cases: `tests/test_learning.py`'s recipe (CoNLL-2003, the first 400 training sentences with entities, 20 epochs,
lr 3e-3, scored on the first 300 test sentences) and the 6 hand-written ADR/BODY/DRUG sentences of
`tests/fixtures/adr_drug.jsonl` (300 epochs, batch 8, lr 3e-3, scored on themselves).

    python benchmarks/answer_space.py --json      # about 30 minutes on 2 quiet cores (four trainings)
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from shared_assets import REPO_ROOT, log, shared_dir

sys.path.insert(0, str(REPO_ROOT))

from lightner import modeling_lightner  # noqa: E402
from lightner.data import Sentence  # noqa: E402
from lightner.evaluation import evaluate_sentences  # noqa: E402
from lightner.formats import load_sentences, read_conll, write_jsonl  # noqa: E402
from lightner.tokenization_utils import FIRST_TYPE_INDEX, collate, encode_sentences, encode_target  # noqa: E402
from lightner.train import LightNerTrainingArguments, train  # noqa: E402

BART_MINI = REPO_ROOT / "assets" / "bart-mini"
CONLL = ("data", "lightner", "conll2003")


class trained_models:
    """While active, every `LightNerModel` built is kept, so the model `train` trained can be scored in memory; with
    `free_types`, each `PointerHead` also gets a learned `[T, d]` offset on its type vectors, initialised at zero."""

    def __init__(self, free_types: bool, hidden_size: int):
        self.free_types, self.hidden_size, self.models = free_types, hidden_size, []

    def __enter__(self):
        model_class, head_class = modeling_lightner.LightNerModel, modeling_lightner.PointerHead
        self.originals = (model_class.__init__, head_class.__init__, head_class.type_embeddings)
        init_model, init_head, type_embeddings = self.originals
        models, hidden_size = self.models, self.hidden_size

        def keep(model, *args, **kwargs):
            init_model(model, *args, **kwargs)
            models.append(model)

        def with_offsets(head, label_word_ids):
            init_head(head, label_word_ids)
            head.type_offsets = torch.nn.Parameter(torch.zeros(len(label_word_ids), hidden_size))

        def offset_type_embeddings(head, token_embeddings):
            return type_embeddings(head, token_embeddings) + head.type_offsets.to(token_embeddings.dtype)

        model_class.__init__ = keep
        if self.free_types:
            head_class.__init__, head_class.type_embeddings = with_offsets, offset_type_embeddings
        return self

    def __exit__(self, *exc):
        model_class, head_class = modeling_lightner.LightNerModel, modeling_lightner.PointerHead
        model_class.__init__, head_class.__init__, head_class.type_embeddings = self.originals


@torch.no_grad()
def type_accuracy(model, sentences: Sequence[Sentence]) -> dict:
    """With the gold pointers fed (teacher forcing), how often the best-scoring type is the gold one, per gold type."""
    model.eval()
    types = list(model.config.entity_types)
    type_ids = {name: index for index, name in enumerate(types)}
    sentences = [sentence for sentence in sentences if sentence.entities]
    encoded = encode_sentences(model.tokenizer, [sentence.words for sentence in sentences])
    confusion = collections.Counter()
    for start in range(0, len(sentences), 32):
        chunk, sources = sentences[start : start + 32], encoded[start : start + 32]
        targets = [encode_target(source, s.entities, type_ids, i) for i, (source, s) in enumerate(zip(sources, chunk))]
        batch = collate(sources, model.tokenizer.pad_token_id, targets)
        type_logits = model(**batch).logits[..., FIRST_TYPE_INDEX : FIRST_TYPE_INDEX + len(types)]  # [b, steps, T]
        labels = batch["labels"] - FIRST_TYPE_INDEX  # [b, steps]: a type step holds 0..T-1
        is_type_step = (labels >= 0) & (labels < len(types))
        for gold, chosen in zip(labels[is_type_step].tolist(), type_logits.argmax(-1)[is_type_step].tolist()):
            confusion[types[gold], types[chosen]] += 1
    gold_counts = collections.Counter(gold for gold, _ in confusion.elements())
    return {
        "accuracy": round(sum(n for (gold, chosen), n in confusion.items() if gold == chosen) / confusion.total(), 3),
        "right_of_gold": {name: f"{confusion[name, name]}/{gold_counts[name]}" for name in types},
        "times_chosen": {name: sum(n for (_, chosen), n in confusion.items() if chosen == name) for name in types},
    }


def run_case(train_sentences, test_sentences, free_types: bool, recipe: tuple[int, int, float], work: Path) -> dict:
    epochs, batch_size, max_length_a = recipe
    train_file, test_file = work / "train.jsonl", work / "test.jsonl"
    write_jsonl(train_sentences, train_file)
    write_jsonl(test_sentences, test_file)
    args = LightNerTrainingArguments(
        backbone=str(BART_MINI),
        train_file=str(train_file),
        output_dir=str(work / "adapter"),
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=3e-3,
        dropout=0.0,
        seed=0,
        max_length_a=max_length_a,
        checkpoint_steps=10**9,
        overwrite=True,
    )
    with trained_models(free_types, hidden_size=256) as kept:  # scored inside: the offsets live in the patch
        train(args)
        model = kept.models[0].eval()  # the model `train` trained, offsets included
        scores = evaluate_sentences(model, test_sentences, batch_size=64)
        return {
            "f1": round(scores["f1"], 4),
            "per_type_f1": {name: round(t["f1"], 3) for name, t in scores["per_type"].items()},
            "type_accuracy_train": type_accuracy(model, train_sentences),
            "type_accuracy_test": type_accuracy(model, test_sentences),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    conll = shared_dir(CONLL).joinpath(*CONLL)
    news_train = [s for s in read_conll(conll / "train.txt") if s.entities][:400]
    news_test = read_conll(conll / "test.txt")[:300]
    adr_drug = load_sentences(REPO_ROOT / "tests" / "fixtures" / "adr_drug.jsonl")
    cases = {"conll400": (news_train, news_test, (20, 8, 0.6)), "adr-drug": (adr_drug, adr_drug, (300, 8, 0.8))}
    report = {}
    for case, (train_sentences, test_sentences, recipe) in cases.items():
        for free_types in (False, True):
            name = f"{case}/{'free-type-offsets' if free_types else 'label-words'}"
            log(f"training {name}")
            with tempfile.TemporaryDirectory() as work:
                report[name] = run_case(train_sentences, test_sentences, free_types, recipe, Path(work))
            log(f"{name}: {json.dumps(report[name])}")
    for name, figures in report.items():
        print(
            f"{name:34} F1 {100 * figures['f1']:5.1f}  type accuracy, gold spans given: train "
            f"{figures['type_accuracy_train']['accuracy']:.3f} test {figures['type_accuracy_test']['accuracy']:.3f}"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
