"""Raw text in, entities with character offsets out: the `transformers` pipeline of a LightNER adapter.

LightNER reads words and points at them, so the pipeline splits raw text into words the way the training data was
split (`text_utils.split_words`), keeping each word's character offsets; packs the words into windows that fit the
backbone's positions (whole sentences where possible); runs `model.predict` on all windows of all texts at once; and
keeps each entity, in word offsets over the whole text (`predict_words`, which `lightner predict` writes from). Only
then, at the edge, are its words mapped to the exact characters of the original text. The output is the
token-classification pipeline's with aggregation: `entity_group`, `score`, `word`, `start`, `end`, with
`text[start:end] == word`. A discontinuous entity (an adapter with `entity_shapes="discontinuous"`) keeps those
keys, `start`/`end` covering the whole mention and `word` its fragments' texts joined by `FRAGMENT_SEPARATOR` (a
space, as BRAT writes them), and adds `fragments`: `[{"start", "end", "word"}, ...]` with `text[start:end] == word`
for each.

A saved adapter carries this file and `custom_pipelines` in its config, so that
`pipeline("ner", model=<adapter>, trust_remote_code=True)` builds this pipeline
(`hub_lightner.add_pipeline_to_folder`).
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from transformers import Pipeline

from .text_utils import (
    Window,
    character_entity,
    join_words,
    plan_windows,
    sentence_starts,
    split_long_spans,
    split_words,
)
from .tokenization_utils import FRAGMENT_SEPARATOR

DEFAULT_BATCH_SIZE = 32
# Token-classification callers pass an aggregation strategy; LightNER writes whole entities, which is what every
# aggregating strategy produces, and has no per-token output for "none".
WHOLE_ENTITY_STRATEGIES = ("simple", "first", "average", "max")


@dataclass(frozen=True)
class Document:
    """One input text as the model reads it: its words (as character spans) and the windows over them.

    `input_spans` are the words of the input (split from the text, or given); `spans` the same but for a word too long
    for a window, which is read in pieces (`split_long_spans`)."""

    text: str
    spans: list[tuple[int, int]]
    words: list[str]
    windows: list[Window]
    input_spans: list[tuple[int, int]]


@dataclass(frozen=True)
class WordEntities:
    """One input's entities at the word level, the pipeline's one currency: `model.predict`'s entities (`type`,
    `start`, `end`, `text`, `score`, and `fragments` for a discontinuous one), offsets over `document.words`, sorted.
    Character offsets are computed from them at the edge, once (`characters`)."""

    document: Document
    entities: list[dict]

    def characters(self) -> list[dict]:
        """The pipeline's output: each entity as `text_utils.character_entity` puts it in the text's characters."""
        return [character_entity(entity, self.document.text, self.document.spans) for entity in self.entities]

    def input_words(self) -> list[dict]:
        """The entities over the input's own words (`input_spans`): a word read in pieces is one word again, and an
        entity in one of its pieces covers the whole word."""
        text, spans = self.document.text, self.document.input_spans
        starts, words = [start for start, _ in spans], [text[start:end] for start, end in spans]
        owner = [bisect_right(starts, start) - 1 for start, _ in self.document.spans]  # read word -> input word
        return [_over_words(entity, owner, words) for entity in self.entities]


class LightNerPipeline(Pipeline):
    """Named entities in raw text (or pre-split words) with a LightNER adapter.

    ```python
    from transformers import pipeline

    ner = pipeline("ner", model="my-adapter", trust_remote_code=True)
    ner("Angela Merkel visited Paris.")
    # [{'entity_group': 'PER', 'score': 0.97, 'word': 'Angela Merkel', 'start': 0, 'end': 13},
    #  {'entity_group': 'LOC', 'score': 0.99, 'word': 'Paris', 'start': 22, 'end': 27}]
    ```

    or, with the package installed, `LightNerPipeline(model=LightNerModel.from_pretrained("my-adapter"))`.

    Call parameters (also accepted when building the pipeline):
        is_split_into_words (`bool`): inputs are word lists (one list, or a list of lists) rather than text; the text
            offsets then refer to the words joined by single spaces.
        batch_size (`int`): windows per forward pass (default 32); results do not depend on it.
        num_beams (`int`): beam width (default: the adapter's `beam_width`).
        adapter (`str`): which adapter of the model to use (default: the active one).
        threshold (`float`): drop entities scoring below it (default 0: keep all).
        ignore_labels (`list[str]`): entity types to leave out of the output.
        aggregation_strategy (`str` or transformers' `AggregationStrategy`): accepted for token-classification
            habits; "simple", "first", "average" and "max" all mean whole entities here, "none" is refused (LightNER
            predicts whole spans, not tokens).

    Inputs: a string, a list of strings (a list back), or any other iterable of strings, such as a generator, a
    `datasets` column or a `KeyDataset` (an iterator back, results in input order, read `batch_size` texts at a time).
    With `is_split_into_words=True`, an iterable of words (strings) is one sentence, read whole and answered as the
    same words in a list are; an iterable of word lists streams like texts.

    A text longer than the backbone's positions is read in windows of whole sentences; a sentence longer than that is
    read in overlapping windows, each entity kept once. Empty or whitespace-only text gives `[]`.
    """

    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, model, **kwargs):
        super().__init__(model=model, **kwargs)
        if self.tokenizer is None:
            self.tokenizer = model.tokenizer

    def _sanitize_parameters(
        self,
        is_split_into_words: bool | None = None,
        batch_size: int | None = None,
        num_beams: int | None = None,
        adapter: str | None = None,
        threshold: float | None = None,
        ignore_labels: Sequence[str] | None = None,
        aggregation_strategy: str | Enum | None = None,
    ) -> tuple[dict, dict, dict]:
        _check_aggregation_strategy(aggregation_strategy)
        preprocess_params = {} if is_split_into_words is None else {"is_split_into_words": is_split_into_words}
        forward_params = {
            name: value
            for name, value in (("batch_size", batch_size), ("num_beams", num_beams), ("adapter", adapter))
            if value is not None
        }
        postprocess_params = {}
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
                raise ValueError(f"threshold must be a score between 0 and 1, got {threshold!r}")
            postprocess_params["threshold"] = float(threshold)
        if ignore_labels is not None:
            if isinstance(ignore_labels, str) or not all(isinstance(label, str) for label in ignore_labels):
                raise TypeError(f"ignore_labels must be a list of entity types, got {ignore_labels!r}")
            postprocess_params["ignore_labels"] = frozenset(ignore_labels)
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs, **kwargs) -> list[dict] | list[list[dict]] | Iterator[list[dict]]:
        """Entities of one text (a list of dicts) or of each text of a list or an iterator (a list or an iterator of
        lists). All windows of all texts of a list go through `model.predict` together, `batch_size` at a time."""
        preprocess_params, forward_params, postprocess_params = self._call_parameters(kwargs)
        words = preprocess_params.get("is_split_into_words", False)
        if _is_stream(inputs, words):
            first, inputs = _peek(iter(inputs))
            if not (words and isinstance(first, str)):
                return self._stream(inputs, forward_params["batch_size"], kwargs)
            inputs = list(inputs)  # words of one sentence: cut into chunks, it would be read as several sentences
        texts, single = _as_batch(inputs, words)
        found = self._word_entities(texts, preprocess_params, forward_params, postprocess_params)
        results = [entities.characters() for entities in found]
        return results[0] if single else results

    def predict_words(self, inputs: Sequence[str] | Sequence[Sequence[str]], **kwargs) -> list[WordEntities]:
        """What the call finds in each text of a list (or each word list, with `is_split_into_words=True`), before
        its offsets become characters: the entities at the word level with the document they index, which
        `lightner predict` writes from. It takes the call's parameters."""
        preprocess_params, forward_params, postprocess_params = self._call_parameters(kwargs)
        texts, _ = _as_batch(list(inputs), preprocess_params.get("is_split_into_words", False))
        return self._word_entities(texts, preprocess_params, forward_params, postprocess_params)

    def _call_parameters(self, kwargs: dict) -> tuple[dict, dict, dict]:
        """A call's parameters, checked, over those the pipeline was built with; `batch_size` always set."""
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        default_batch_size = DEFAULT_BATCH_SIZE if self._batch_size is None else self._batch_size
        return (
            {**self._preprocess_params, **preprocess_params},
            {"batch_size": default_batch_size, **self._forward_params, **forward_params},
            {**self._postprocess_params, **postprocess_params},
        )

    def _word_entities(
        self, texts: list, preprocess_params: dict, forward_params: dict, postprocess_params: dict
    ) -> list[WordEntities]:
        """All windows of all `texts` through one `model.predict`; each text's entities kept from its windows."""
        documents = [self.preprocess(text, **preprocess_params) for text in texts]
        sentences = [document.words[w.start : w.end] for document in documents for w in document.windows]
        predictions = iter(self.forward({"sentences": sentences}, **forward_params)["entities"])
        return [
            self.postprocess(
                {"document": document, "entities": list(itertools.islice(predictions, len(document.windows)))},
                **postprocess_params,
            )
            for document in documents
        ]

    def _stream(self, inputs: Iterator, chunk_size: int, kwargs: dict) -> Iterator[list[dict]]:
        """Results of an iterator's texts, read and predicted `chunk_size` texts at a time."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {chunk_size!r}")
        while chunk := list(itertools.islice(inputs, chunk_size)):
            yield from self(chunk, **kwargs)

    def preprocess(self, inputs: str | Sequence[str], is_split_into_words: bool = False) -> Document:
        """Words with their character spans, and the windows that fit the backbone."""
        text, input_spans = join_words(inputs) if is_split_into_words else (inputs, split_words(inputs))
        budget = self.model.backbone.config.max_position_embeddings - 2  # <s> and </s>
        spans = split_long_spans(text, input_spans, budget - 1)
        words = [text[start:end] for start, end in spans]
        return Document(text, spans, words, self._windows(text, spans, words, budget), input_spans)

    def _windows(self, text: str, spans: list[tuple[int, int]], words: list[str], budget: int) -> list[Window]:
        """One window when the text surely fits, which needs no tokenizing; else windows packed by token counts.

        Each word is encoded as `" " + word` by a byte-level BPE, so it costs at most one token per byte.
        """
        if not words:
            return []
        if sum(len(word.encode("utf-8")) + 1 for word in words) <= budget:
            return [Window(0, len(words), 0, len(words))]
        pieces = self.tokenizer([" " + word for word in words], add_special_tokens=False)["input_ids"]
        return plan_windows([len(ids) for ids in pieces], sentence_starts(words, text, spans), budget)

    def _forward(
        self,
        model_inputs: dict[str, Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_beams: int | None = None,
        adapter: str | None = None,
    ) -> dict[str, Any]:
        kwargs = {"batch_size": batch_size, "num_beams": num_beams}
        if adapter is not None:
            kwargs["adapter"] = adapter
        return {"entities": self.model.predict(model_inputs["sentences"], **kwargs)}

    def postprocess(
        self, model_outputs: dict[str, Any], threshold: float = 0.0, ignore_labels: frozenset[str] = frozenset()
    ) -> WordEntities:
        """Each entity from the window owning it, its word offsets moved from the window to the document."""
        document: Document = model_outputs["document"]
        entities = []
        for window, predicted in zip(document.windows, model_outputs["entities"]):
            for entity in predicted:
                if entity["score"] < threshold or entity["type"] in ignore_labels:
                    continue
                if window.own_start <= window.start + entity["start"] < window.own_end:
                    entities.append(_moved(entity, window.start))
        return WordEntities(document, sorted(entities, key=lambda e: (e["start"], e["end"], e["type"])))


def _moved(entity: dict, words: int) -> dict:
    """`predict`'s entity with its word offsets (its fragments' too) `words` further on."""
    moved = {**entity, "start": entity["start"] + words, "end": entity["end"] + words}
    if "fragments" in entity:
        moved["fragments"] = [[start + words, end + words] for start, end in entity["fragments"]]
    return moved


def _over_words(entity: dict, owner: Sequence[int], words: Sequence[str]) -> dict:
    """`predict`'s entity over other words: `owner[i]` is the index among `words` of the word that read word i is
    (part of); its text is theirs."""
    spans = entity.get("fragments") or [(entity["start"], entity["end"])]
    fragments = [(owner[start], owner[end - 1] + 1) for start, end in spans]
    moved = {
        "type": entity["type"],
        "start": fragments[0][0],
        "end": fragments[-1][1],
        "text": FRAGMENT_SEPARATOR.join(" ".join(words[start:end]) for start, end in fragments),
        "score": entity["score"],
    }
    if len(fragments) > 1:
        moved["fragments"] = [list(fragment) for fragment in fragments]
    return moved


def _check_aggregation_strategy(strategy: str | Enum | None) -> None:
    """Refuse a strategy LightNER cannot follow; a member of transformers' `AggregationStrategy` is read as its
    value ("first"), its name would not match."""
    if isinstance(strategy, Enum):
        strategy = strategy.value
    if strategy is None or str(strategy).lower() in WHOLE_ENTITY_STRATEGIES:
        return
    if str(strategy).lower() == "none":
        raise ValueError(
            'aggregation_strategy="none" asks for one prediction per token, but LightNER predicts whole entity spans; '
            f"use one of {WHOLE_ENTITY_STRATEGIES} (all give whole entities) or leave it out"
        )
    raise ValueError(f"unknown aggregation_strategy {strategy!r}; expected one of {WHOLE_ENTITY_STRATEGIES}")


def _is_stream(inputs, is_split_into_words: bool) -> bool:
    """Iterables other than a text, a list or a tuple (generators, `datasets` columns, `KeyDataset`s) are streamed."""
    if isinstance(inputs, str | bytes | list | tuple | dict) or inputs is None:
        return False
    if isinstance(inputs, Iterator):
        return True
    return hasattr(inputs, "__iter__") or (hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__"))


_EMPTY = object()


def _peek(items: Iterator) -> tuple[Any, Iterator]:
    """The first item of an iterator (`_EMPTY` if it has none) and an iterator over all its items, that one too."""
    first = next(items, _EMPTY)
    return first, items if first is _EMPTY else itertools.chain([first], items)


def _as_batch(inputs, is_split_into_words: bool) -> tuple[list, bool]:
    """The texts (or word lists) of an input, and whether it was a single one; a `TypeError` for anything else."""
    expected = "a list of words or a list of word lists" if is_split_into_words else "a string or a list of strings"
    if isinstance(inputs, str) and not is_split_into_words:
        return [inputs], True
    if not isinstance(inputs, list | tuple):
        raise TypeError(f"LightNerPipeline takes {expected}, not {type(inputs).__name__}")
    if is_split_into_words and all(isinstance(item, str) for item in inputs) and inputs:
        return [list(inputs)], True
    for index, item in enumerate(inputs):
        if is_split_into_words:
            _check_words(item, index)
        elif not isinstance(item, str):
            hint = " (for pre-split words pass is_split_into_words=True)" if isinstance(item, list | tuple) else ""
            raise TypeError(f"input {index} is {type(item).__name__}, not str{hint}")
        else:
            _check_encodable(item, index)
    return list(inputs), False


def _check_words(words, index: int) -> None:
    if not isinstance(words, list | tuple) or not all(isinstance(word, str) for word in words):
        raise TypeError(f"input {index} is not a list of str words (is_split_into_words=True)")
    for word in words:
        _check_encodable(word, index)


def _check_encodable(text: str, index: int) -> None:
    """Refuse text that no tokenizer can encode (a lone surrogate, typically from a badly decoded file)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"input {index} has an unpaired surrogate {text[error.start]!r} at character {error.start}, which is not "
            "valid Unicode text (was it decoded with errors='surrogateescape'?)"
        ) from None


__all__ = ["LightNerPipeline", "Document", "WordEntities"]
