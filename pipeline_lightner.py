"""Raw text in, entities with character offsets out: the `transformers` pipeline of a LightNER adapter.

LightNER reads words and points at them, so the pipeline splits raw text into words the way the training data was
split (`text_utils.split_words`), keeping each word's character offsets; packs the words into windows that fit the
backbone's positions (whole sentences where possible); runs `model.predict` on all windows of all texts at once; and
maps every entity's words back to the exact characters of the original text. The output is the token-classification
pipeline's with aggregation: `entity_group`, `score`, `word`, `start`, `end`, with `text[start:end] == word`.

A saved adapter carries this file and `custom_pipelines` in its config, so that
`pipeline("ner", model=<adapter>, trust_remote_code=True)` builds this pipeline
(`hub_lightner.add_pipeline_to_folder`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import Pipeline

from .text_utils import Window, join_words, plan_windows, sentence_starts, split_long_spans, split_words

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Document:
    """One input text as the model reads it: its words (as character spans) and the windows over them."""

    text: str
    spans: list[tuple[int, int]]
    words: list[str]
    windows: list[Window]


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
    ) -> tuple[dict, dict, dict]:
        preprocess_params = {} if is_split_into_words is None else {"is_split_into_words": is_split_into_words}
        forward_params = {
            name: value
            for name, value in (("batch_size", batch_size), ("num_beams", num_beams), ("adapter", adapter))
            if value is not None
        }
        return preprocess_params, forward_params, {}

    def __call__(self, inputs, **kwargs) -> list[dict] | list[list[dict]] | Iterator[list[dict]]:
        """Entities of one text (a list of dicts) or of each text of a list or an iterator (a list or an iterator of
        lists). All windows of all texts of a list go through `model.predict` together, `batch_size` at a time."""
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {
            "batch_size": self._batch_size or DEFAULT_BATCH_SIZE,
            **self._forward_params,
            **forward_params,
        }
        if isinstance(inputs, Iterator):
            return self._stream(inputs, forward_params["batch_size"], kwargs)
        texts, single = _as_batch(inputs, preprocess_params.get("is_split_into_words", False))
        documents = [self.preprocess(text, **preprocess_params) for text in texts]
        sentences = [document.words[w.start : w.end] for document in documents for w in document.windows]
        predictions = iter(self.forward({"sentences": sentences}, **forward_params)["entities"])
        results = [
            self.postprocess(
                {"document": document, "entities": list(itertools.islice(predictions, len(document.windows)))},
                **postprocess_params,
            )
            for document in documents
        ]
        return results[0] if single else results

    def _stream(self, inputs: Iterator, chunk_size: int, kwargs: dict) -> Iterator[list[dict]]:
        """Results of an iterator's texts, read and predicted `chunk_size` texts at a time."""
        while chunk := list(itertools.islice(inputs, chunk_size)):
            yield from self(chunk, **kwargs)

    def preprocess(self, inputs: str | Sequence[str], is_split_into_words: bool = False) -> Document:
        """Words with their character spans, and the windows that fit the backbone."""
        text, spans = join_words(inputs) if is_split_into_words else (inputs, split_words(inputs))
        budget = self.model.backbone.config.max_position_embeddings - 2  # <s> and </s>
        spans = split_long_spans(text, spans, budget - 1)
        words = [text[start:end] for start, end in spans]
        return Document(text, spans, words, self._windows(text, spans, words, budget))

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

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict]:
        """Word offsets within windows to character offsets within the text, each entity from the window owning it."""
        document: Document = model_outputs["document"]
        entities = []
        for window, predicted in zip(document.windows, model_outputs["entities"]):
            for entity in predicted:
                first, last = window.start + entity["start"], window.start + entity["end"] - 1
                if window.own_start <= first < window.own_end:
                    start, end = document.spans[first][0], document.spans[last][1]
                    entities.append(
                        {
                            "entity_group": entity["type"],
                            "score": entity["score"],
                            "word": document.text[start:end],
                            "start": start,
                            "end": end,
                        }
                    )
        return sorted(entities, key=lambda e: (e["start"], e["end"], e["entity_group"]))


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
    return list(inputs), False


def _check_words(words, index: int) -> None:
    if not isinstance(words, list | tuple) or not all(isinstance(word, str) for word in words):
        raise TypeError(f"input {index} is not a list of str words (is_split_into_words=True)")


__all__ = ["LightNerPipeline", "Document"]
