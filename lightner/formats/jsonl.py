"""JSON Lines: one `{"tokens": [...], "entities": [{"start", "end", "type"}]}` per line (word offsets), or for
`lightner predict` input `{"text": ...}` (raw text); other fields pass through prediction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any

from ..data import DataFormatError, Entity, Sentence, Span, is_discontinuous, make_span
from .base import Document, Format, FoundEntities, Stream, lines, read_utf8

logger = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".json")


def _span_from_json(entity: Any) -> Entity:
    """An entity object: `{"start", "end", "type"}`, or `{"fragments": [[start, end], ...], "type"}` (where `start`
    and `end`, if also given, must cover the fragments, as `predict`'s output has them)."""
    if (
        not isinstance(entity, dict)
        or "type" not in entity
        or not ({"start", "end"} <= entity.keys() or "fragments" in entity)
    ):
        raise TypeError(
            f'each entity must be an object with "start", "end" and "type", or "fragments" and "type", got {entity!r}'
        )
    entity_type = entity["type"]
    if not isinstance(entity_type, str) or not entity_type:
        raise TypeError(f"entity type must be a non-empty string, got {entity!r}")
    if "fragments" in entity:
        fragments = entity["fragments"]
        if not isinstance(fragments, list) or not all(isinstance(f, list) for f in fragments):
            raise TypeError(f'"fragments" must be a list of [start, end] word spans, got {entity!r}')
        span = make_span(fragments, entity_type)
        covering = (entity.get("start", span.start), entity.get("end", span.end))
        if covering != (span.start, span.end):
            raise ValueError(f'"start" and "end" of {entity!r} do not cover its fragments [{span.start}, {span.end})')
        return span
    start, end = entity["start"], entity["end"]
    # `bool` is a subclass of `int`, but `true` is no offset.
    if type(start) is not int or type(end) is not int:
        raise TypeError(f"entity offsets must be integers, got {entity!r}")
    return Span(start, end, entity_type)


def _span_to_json(span: Entity) -> dict[str, Any]:
    """What `_span_from_json` reads back: a contiguous entity exactly as before fragments existed."""
    if is_discontinuous(span):
        return {"fragments": [list(fragment) for fragment in span.fragments], "type": span.type}
    return span._asdict()


def _sentence_from_json(record: Any) -> Sentence:
    if not isinstance(record, dict):
        raise TypeError(f"expected a JSON object, got {type(record).__name__}")
    for key in ("tokens", "entities"):
        if key not in record:
            raise ValueError(f"missing key {key!r}")
    tokens, entities = record["tokens"], record["entities"]
    if not isinstance(tokens, list):
        raise TypeError(f'"tokens" must be a list, got {type(tokens).__name__}')
    for index, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"token {index} must be a string, got {token!r}")
    if not isinstance(entities, list):
        raise TypeError(f'"entities" must be a list, got {type(entities).__name__}')
    return Sentence(tokens, [_span_from_json(entity) for entity in entities])


def is_blank(line: str) -> bool:
    """Whether a JSON Lines line is blank: every JSON Lines reader (training data, `lightner predict` input) skips
    such lines, so that one file reads the same everywhere."""
    return not line.strip()


def parse_json_line(line: str) -> Any:
    """The value of one JSON Lines line; bad JSON, or JSON nested deeper than the parser can follow (which it reports
    as a `RecursionError`), raises `ValueError` saying what is wrong, for the caller to name the file and line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply for the parser; flatten the line's value") from None


def read_jsonl(path: str | PathLike) -> list[Sentence]:
    """Sentences of a JSON Lines file, one `{"tokens": [...], "entities": [{"start", "end", "type"}]}` per line.

    Offsets are word offsets with an exclusive end; a discontinuous entity gives `"fragments": [[start, end], ...]`
    instead of `start` and `end` (see `make_span`). Blank lines are skipped; anything malformed (bad JSON, a missing
    key, a non-string token, offsets out of range) raises `DataFormatError` naming the file and line.
    """
    path = Path(path)
    sentences = []
    for number, line in enumerate(read_utf8(path).split("\n"), start=1):
        if is_blank(line):
            continue
        try:
            sentence = _sentence_from_json(parse_json_line(line))
        except (TypeError, ValueError) as error:
            raise DataFormatError(path, number, str(error)) from None
        sentence.line = number
        sentences.append(sentence)
    if not sentences:
        raise DataFormatError(path, None, "no sentences found")
    return sentences


def write_jsonl(sentences: Iterable[Sentence], path: str | PathLike) -> None:
    """Write one JSON object per sentence in the format `read_jsonl` reads."""
    with Path(path).open("w", encoding="utf-8", newline="\n") as file:
        for sentence in sentences:
            record = {"tokens": sentence.words, "entities": [_span_to_json(span) for span in sentence.entities]}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_documents(path: Path | Stream, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per line: `{"text": ...}` (raw text) or `{"tokens": [...]}` (words); other fields pass through.
    Blank lines are skipped, as in training data (`is_blank`)."""
    for number, line in lines(path):
        if is_blank(line):
            continue
        try:
            yield _jsonl_document(number, line)
        except ValueError as error:
            if not skip_bad_lines:
                raise DataFormatError(path, number, f"{error} (--skip-bad-lines leaves such lines out)") from None
            logger.warning(f"{path}:{number}: {error}; line left out (--skip-bad-lines)")
            yield Document(number, skipped=True)


def _jsonl_document(number: int, line: str) -> Document:
    record = parse_json_line(line)
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    fields = {key: value for key, value in record.items() if key not in ("text", "tokens")}
    if isinstance(record.get("text"), str):
        return Document(number, text=record["text"], fields=fields)
    tokens = record.get("tokens")
    if isinstance(tokens, list) and all(isinstance(word, str) for word in tokens):
        return Document(number, words=tokens, fields=fields)
    if "text" in record:
        raise ValueError(f"field 'text' is {type(record['text']).__name__}, not a string")
    raise ValueError("no 'text' field (nor a 'tokens' list of words)")


def write_document(document: Document, found: FoundEntities) -> str:
    """Text input: `{..., "text", "entities"}` with the pipeline's character offsets. Word input: `{..., "tokens",
    "entities"}` with word offsets (`read_jsonl` reads them back). Predictions replace any input
    `entities` field."""
    if document.words is not None:
        record = {**document.fields, "tokens": document.words, "entities": found.input_words()}
    else:
        record = {**document.fields, "text": document.text, "entities": found.characters()}
    return json.dumps(record, ensure_ascii=False) + "\n"


FORMAT = Format(
    "jsonl",
    "JSON Lines of {tokens, entities}, detected by the suffix .jsonl or .json",
    matches=lambda path: path.suffix.lower() in SUFFIXES,
    matches_input=lambda opened: (
        isinstance(opened, Path) and not opened.is_dir() and opened.suffix.lower() in SUFFIXES
    ),
    read=lambda path, o: read_jsonl(path),
    write=lambda sentences, path, o: write_jsonl(sentences, path),
    read_documents=read_documents,
    input_description='JSON Lines with a "text" field (or "tokens"), other fields passed through',
    write_document=write_document,
    output_description="JSON Lines: character offsets for text, word offsets for words",
)
