"""Active learning (`lightner select`): rank unlabelled sentences by how unsure the model is of them, so that the
next sentences a person labels are those that teach the adapter most.

A generative tagger has its uncertainty for free: it writes the entities as a sequence of pointer and type tokens,
each with a probability. The sentence is decoded greedily once, and two measures are read off that one pass:

- `sequence`: the mean negative log-probability of the tokens it wrote (`</s>` included), i.e. how unlikely its
  whole answer was under the constrained decoding distribution; length-normalised, so that long sentences with many
  entities are not chosen for their length alone;
- `margin`: one minus the smallest margin, over the steps, between the decoder's two most probable next tokens (its
  own distribution over types, pointers and `</s>`): a sentence where the model nearly wrote something else at one
  step (another boundary, another type, stopping early) ranks high even if its other steps were sure;
- `diverse`: `sequence`, spread over the pool (`spread_out`, after Zhdanov 2019, "Diverse mini-batch active
  learning"). Why: the k most uncertain sentences are often k near-copies of one confusing pattern, and an adapter
  trained on tens of sentences gains more from k different ones. The `CANDIDATES_PER_PICK` * k most uncertain are
  clustered into k groups by their encoder states (the adapter's prompts included), each sentence weighted by its
  uncertainty, and the sentence nearest each group's centre is chosen.

`random` ranks by a seeded shuffle: the baseline the others must beat (`benchmarks/active_learning.py` measures it).
Empty sentences have nothing to label and rank last.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .tokenization_utils import END_INDEX, collate, encode_sentences

# Rank of an empty sentence under every strategy: after all others.
NOTHING_TO_LABEL = float("-inf")
DIVERSE = "diverse"
CANDIDATES_PER_PICK = 10  # `diverse` clusters the 10 * k most uncertain sentences (Zhdanov's beta)
KMEANS_ITERATIONS = 20
TASKS_SUFFIX = ".json"  # an output named so gets Label Studio tasks, pre-annotated by the model


@dataclass(frozen=True)
class Uncertainty:
    """One sentence's uncertainty under each measure (higher: less sure), see the module docstring; `embedding`, when
    asked for, is the mean of the encoder's last states over the sentence's tokens `[d]`, for `spread_out`."""

    sequence: float
    margin: float
    embedding: torch.Tensor | None = None


def uncertainties(
    model, sentences: Sequence[Sequence[str]], batch_size: int = 32, embed: bool = False
) -> list[Uncertainty]:
    """Both measures for every sentence (lists of words), from one greedy decoding pass per batch, and with `embed`
    each sentence's mean encoder state (one more encoder pass); raises `ValueError` naming the sentence for one the
    model cannot take (too long, a word that encodes to nothing)."""
    results = [Uncertainty(NOTHING_TO_LABEL, NOTHING_TO_LABEL)] * len(sentences)
    rows = [index for index, words in enumerate(sentences) if len(words) > 0]
    max_positions = model.backbone.config.max_position_embeddings
    try:
        encoded = encode_sentences(model.tokenizer, [sentences[i] for i in rows], max_positions)
    except ValueError as error:
        raise ValueError(f"cannot rank the sentences: {error}") from None
    device = model.backbone.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(rows), batch_size):
            chunk = encoded[first : first + batch_size]
            batch = collate(chunk, model.tokenizer.pad_token_id)
            with torch.no_grad():
                output = model.generate(
                    batch["input_ids"].to(device),
                    batch["attention_mask"].to(device),
                    word_starts=[sentence.word_starts for sentence in chunk],
                    num_beams=1,
                    output_step_logits=True,
                )
                states = _mean_encoder_states(model, batch, device) if embed else [None] * len(chunk)
            for offset, (value, state) in enumerate(zip(_batch_uncertainties(output), states)):
                results[rows[first + offset]] = replace(value, embedding=state)
    finally:
        model.train(was_training)
    return results


def _mean_encoder_states(model, batch: dict, device) -> torch.Tensor:
    """`[batch, d]` float32: each sentence's encoder states (with the active adapter's prompts) averaged over its
    tokens, padding left out."""
    mask = batch["attention_mask"].to(device)  # [batch, source]
    source = model.encode(batch["input_ids"].to(device), mask, model.adapter_batch())
    weights = mask.unsqueeze(-1).float()  # [batch, source, 1]
    return ((source.hidden.float() * weights).sum(1) / weights.sum(1)).cpu()  # [batch, d]


def _batch_uncertainties(output) -> list[Uncertainty]:
    """Per sentence of one greedy `generate` output: the mean negative log-probability of its tokens up to its first
    `</s>`, and one minus its smallest top-two margin over the steps it was still writing."""
    sequences, log_probs = output.sequences.cpu(), output.token_log_probs.float().cpu()
    steps = torch.stack(output.step_logits, dim=1).float().cpu()  # [batch, steps, vocab], NaN once finished
    values = []
    for row in range(sequences.shape[0]):
        ends = (sequences[row] == END_INDEX).nonzero()
        length = int(ends[0]) + 1 if len(ends) else sequences.shape[1]
        sequence = -float(log_probs[row, :length].sum()) / length
        logits = steps[row]
        written = logits[~torch.isnan(logits).any(-1)]  # the steps this sentence was decoded at
        if len(written) == 0:
            values.append(Uncertainty(sequence, 0.0))
            continue
        top = written.softmax(-1).topk(2, dim=-1).values  # [steps, 2]
        margin = 1.0 - float((top[:, 0] - top[:, 1]).min())
        values.append(Uncertainty(sequence, margin))
    return values


def random_scores(count: int, seed: int) -> list[float]:
    """The `random` strategy's scores: a seeded shuffle's ranks, so that a run can be repeated."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    scores = [0.0] * count
    for rank, index in enumerate(order):
        scores[index] = float(count - rank)
    return scores


# Strategy name -> its score per sentence from the measured uncertainties (None for `random`, which needs no model);
# `diverse` ranks by `sequence` and then spreads its choice over the pool (`choose`).
STRATEGIES: dict[str, Callable[[Uncertainty], float] | None] = {
    "sequence": lambda u: u.sequence,
    "margin": lambda u: u.margin,
    DIVERSE: lambda u: u.sequence,
    "random": None,
}


def strategy_scores(
    strategy: str, sentences: Sequence[Sequence[str]], model=None, batch_size: int = 32, seed: int = 0
) -> list[float]:
    """Each sentence's score under `strategy` (higher: label it sooner); empty sentences get `NOTHING_TO_LABEL`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; expected one of {tuple(STRATEGIES)}")
    measure = STRATEGIES[strategy]
    if measure is None:
        scores = random_scores(len(sentences), seed)
        return [score if len(words) else NOTHING_TO_LABEL for score, words in zip(scores, sentences)]
    if model is None:
        raise ValueError(f"strategy {strategy!r} needs a model")
    return [measure(u) for u in uncertainties(model, sentences, batch_size)]


def choose(
    strategy: str, sentences: Sequence[Sequence[str]], k: int, model=None, batch_size: int = 32, seed: int = 0
) -> tuple[list[int], list[float]]:
    """The indices of the `k` sentences to label next under `strategy`, most uncertain first, and every sentence's
    score (for `sequence`, `margin` and `random` the order of the scores; for `diverse` their `sequence` values).

        >>> choose("random", [["cheap", "sushi"], [], ["near", "boston"]], k=5, seed=1)[0]
        [2, 0]
    """
    if strategy != DIVERSE:
        scores = strategy_scores(strategy, sentences, model, batch_size, seed)
        return top_k(scores, k), scores
    if model is None:
        raise ValueError(f"strategy {strategy!r} needs a model")
    measured = uncertainties(model, sentences, batch_size, embed=True)
    scores = [STRATEGIES[DIVERSE](u) for u in measured]
    candidates = top_k(scores, CANDIDATES_PER_PICK * k)
    if len(candidates) <= k:
        return candidates, scores
    points = torch.stack([measured[i].embedding for i in candidates])  # [candidates, d]
    weights = torch.tensor([scores[i] for i in candidates])  # [candidates]
    picked = [candidates[i] for i in spread_out(points, weights, k, seed)]
    return sorted(picked, key=lambda i: (-scores[i], i)), scores


def spread_out(points: torch.Tensor, weights: torch.Tensor, k: int, seed: int = 0) -> list[int]:
    """`k` distinct rows of `points` `[n, d]` that cover them: weighted k-means (k-means++ start, seeded) on the unit
    vectors, then the row nearest each centre. A row's `weights` (its uncertainty, >= 0) pull centres towards it, so
    among near-copies the most uncertain region wins, yet no region gets two picks while another has none."""
    if not 1 <= k <= len(points):
        raise ValueError(f"cannot spread {k} picks over {len(points)} points")
    units = torch.nn.functional.normalize(points.float(), dim=-1)  # [n, d]
    weights = weights.float().clamp(min=0) + 1e-6  # [n]
    centres = _kmeans_plus_plus(units, weights, k, torch.Generator().manual_seed(seed))  # [k, d]
    for _ in range(KMEANS_ITERATIONS):
        nearest = torch.cdist(units, centres).argmin(-1)  # [n]
        members = torch.nn.functional.one_hot(nearest, k).float() * weights[:, None]  # [n, k]
        totals = members.sum(0)  # [k]
        moved = (members.T @ units) / totals.clamp(min=1e-12)[:, None]  # [k, d]
        centres = torch.where(totals[:, None] > 0, moved, centres)  # an empty group keeps its centre
    picked: list[int] = []
    for distances in torch.cdist(centres, units):  # [n] per centre
        order = distances.argsort().tolist()
        picked.append(next(i for i in order if i not in picked))
    return picked


def _kmeans_plus_plus(units: torch.Tensor, weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`k` starting centres `[k, d]`: each drawn with probability weight x squared distance to the nearest so far."""
    first = int(torch.multinomial(weights, 1, generator=generator))
    chosen = [first]
    nearest = (units - units[first]).pow(2).sum(-1)  # [n] squared distance to the closest centre
    for _ in range(k - 1):
        odds = weights * nearest
        following = int(torch.multinomial(odds if odds.sum() > 0 else weights, 1, generator=generator))
        chosen.append(following)
        nearest = torch.minimum(nearest, (units - units[following]).pow(2).sum(-1))
    return units[chosen].clone()


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """The indices of the `k` highest scores, highest first (ties in input order); sentences with nothing to label
    are never chosen, so fewer than `k` come back when the pool has fewer sentences with words."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return [i for i in ranked if scores[i] != NOTHING_TO_LABEL and not math.isnan(scores[i])][:k]


def needs_model(strategy: str, output: Path) -> bool:
    """Whether choosing with `strategy` into `output` runs the model: to rank the pool (every strategy but `random`),
    or to pre-annotate the chosen documents as Label Studio tasks (`.json`)."""
    return STRATEGIES.get(strategy) is not None or Path(output).suffix.lower() == TASKS_SUFFIX


def select_documents(
    model,
    source: str,
    output: Path,
    k: int,
    strategy: str = "random",
    input_format: str = "auto",
    batch_size: int = 32,
    seed: int = 0,
) -> int:
    """`lightner select`: the `k` documents of `source` to label next under `strategy`, written to `output` by its
    suffix (`.json`: Label Studio tasks with the model's pre-annotations, or none with `random` and no model;
    `.jsonl`: the documents' JSON Lines with their `uncertainty`; else plain text). Returns how many were written."""
    from .formats import read_documents
    from .text_utils import split_words

    documents = [document for document in read_documents(source, input_format) if not document.skipped]
    words = [
        document.words if document.words is not None else [document.text[s:e] for s, e in split_words(document.text)]
        for document in documents
    ]
    indices, scores = choose(strategy, words, k, model, batch_size, seed)
    chosen = [documents[index] for index in indices]
    chosen_scores = [scores[index] for index in indices]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_selection_text(chosen, chosen_scores, output, model), encoding="utf-8")
    return len(chosen)


def _selection_text(documents, scores: Sequence[float], output: Path, model) -> str:
    import json

    from .formats.label_studio import task_with_prediction

    suffix = output.suffix.lower()
    if suffix == TASKS_SUFFIX:
        texts = [document.as_text()[0] for document in documents]
        if model is not None:
            from .pipeline_lightner import LightNerPipeline

            pipeline = LightNerPipeline(model=model)
            entities = [pipeline(text) if text.strip() else [] for text in texts]
        else:
            entities = [[] for _ in texts]
        tasks = [task_with_prediction(t, e, d.fields) for t, e, d in zip(texts, entities, documents)]
        if model is None:
            tasks = [{"data": task["data"]} for task in tasks]
        return json.dumps(tasks, ensure_ascii=False, indent=1) + "\n"
    if suffix == ".jsonl":
        lines = []
        for document, score in zip(documents, scores):
            body = {"tokens": document.words} if document.words is not None else {"text": document.text}
            lines.append(json.dumps({**document.fields, **body, "uncertainty": score}, ensure_ascii=False))
        return "".join(line + "\n" for line in lines)
    return "".join(document.as_text()[0].replace("\n", " ") + "\n" for document in documents)


__all__ = [
    "STRATEGIES",
    "Uncertainty",
    "choose",
    "needs_model",
    "random_scores",
    "select_documents",
    "spread_out",
    "strategy_scores",
    "top_k",
    "uncertainties",
]
