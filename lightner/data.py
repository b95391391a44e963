"""Reading, writing and sampling NER data as sentences with word-level entity spans.

Everything is converted to one small data model, `Sentence` (words plus `Span`s with exclusive ends), so that the
model, the metrics and the k-shot sampler never deal with tag schemes, file formats or Hugging Face feature types.
Readers are strict: malformed input raises `DataFormatError` naming the file and line rather than being guessed at,
because a silently dropped entity shows up much later as an unexplained F1 drop.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from datasets import Dataset


Fragments = tuple[tuple[int, int], ...]


class Span(NamedTuple):
    """A contiguous entity mention: word offsets `[start, end)` and its type."""

    start: int
    end: int
    type: str

    @property
    def fragments(self) -> Fragments:
        """Its one fragment, so that code over fragments treats both kinds of mention alike."""
        return ((self.start, self.end),)


class DiscontinuousSpan(NamedTuple):
    """A mention of two or more word spans with words between them ("muscle and joint **pain**" holds *muscle pain*).

    `start`/`end` cover the whole mention (first word to last, exclusive); `fragments` are the word spans `[start,
    end)`, in order, with at least one word between consecutive ones. Build it with `make_span`, which checks and
    normalises a fragment list; a mention with one fragment is a plain `Span`, so contiguous data never changes.
    """

    start: int
    end: int
    type: str
    fragments: Fragments


Entity = Span | DiscontinuousSpan


def make_span(fragments, entity_type: str) -> Entity:
    """The mention of type `entity_type` made of `fragments` (`[start, end)` word spans): a `Span` for one fragment,
    else a `DiscontinuousSpan`. Fragments that touch (`[0, 2), [2, 3)`) are one fragment, since the pointer target
    cannot tell them apart; a fragment list that is empty, holds an empty or negative span, is out of order or
    overlaps itself raises `ValueError` saying which fragments are wrong."""
    merged: list[list[int]] = []
    for fragment in fragments:
        if isinstance(fragment, str | bytes) or len(fragment) != 2:
            raise ValueError(
                f"fragment {fragment!r} of {_describe(fragments, entity_type)} is not a [start, end] pair"
            )
        start, end = fragment
        if type(start) is not int or type(end) is not int or not 0 <= start < end:
            raise ValueError(
                f"fragment {list(fragment)} of {_describe(fragments, entity_type)} is not a word span with "
                "0 <= start < end"
            )
        if merged and start < merged[-1][0]:
            raise ValueError(f"the fragments of {_describe(fragments, entity_type)} are out of order")
        if merged and start < merged[-1][1]:
            raise ValueError(f"the fragments of {_describe(fragments, entity_type)} overlap each other")
        if merged and start == merged[-1][1]:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    if not merged:
        raise ValueError(f"{_describe(fragments, entity_type)} has no fragments")
    if len(merged) == 1:
        return Span(merged[0][0], merged[0][1], entity_type)
    return DiscontinuousSpan(merged[0][0], merged[-1][1], entity_type, tuple((s, e) for s, e in merged))


def _describe(fragments, entity_type: str) -> str:
    return f"entity {entity_type!r} with fragments {[list(f) if isinstance(f, tuple) else f for f in fragments]}"


def _as_entity(entity) -> Entity:
    """A `Span` or `DiscontinuousSpan` from one of them or a `(start, end, type[, fragments])` tuple, checked."""
    if len(entity) == 4:
        return make_span(entity[3], entity[2])
    return Span(*entity)


def is_discontinuous(entity: Entity) -> bool:
    return len(entity.fragments) > 1


@dataclass
class Sentence:
    """A tokenized sentence and its entities, kept sorted so that equal sentences compare equal.

    Entities are `Span`s or, for mentions with gaps, `DiscontinuousSpan`s. `line` is where the sentence starts in the
    file it was read from (1-based) and `source` that file when it is not the one being read as a whole (a BRAT
    folder's documents), if known, so that a problem found later (a sentence too long for the backbone, an entity
    type outside the label set) can still be located; they take no part in comparisons.
    """

    words: list[str]
    entities: list[Entity] = field(default_factory=list)
    line: int | None = field(default=None, compare=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.entities = sorted(_as_entity(entity) for entity in self.entities)
        for span in self.entities:
            if not 0 <= span.start < span.end <= len(self.words):
                raise ValueError(f"entity {tuple(span)} is not a span with 0 <= start < end <= {len(self.words)}")


class DataFormatError(ValueError):
    """Malformed input data; the message names the source (a file, or a dataset row) and the 1-based line if known.

    The parts are kept as `args` (and attributes) so that the error survives pickling, e.g. across worker processes.
    """

    def __init__(self, source: str | PathLike, line: int | None, problem: str):
        super().__init__(str(source), line, problem)
        self.source, self.line, self.problem = str(source), line, problem

    def __str__(self) -> str:
        location = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{location}: {self.problem}"


# --------------------------------------------------------------------------------------------------------------------
# Tag schemes
# --------------------------------------------------------------------------------------------------------------------

# One decoder (seqeval's rules, see `spans_from_tags`) reads IOB1, IOB2 and BIOES alike, so a scheme only says which
# prefixes are legal; "auto" accepts them all.
_SCHEME_PREFIXES = {
    "auto": ("B", "I", "E", "S"),
    "iob1": ("B", "I"),
    "iob2": ("B", "I"),
    "bio": ("B", "I"),
    "bioes": ("B", "I", "E", "S"),
    "iobes": ("B", "I", "E", "S"),
}


# IO (inside/outside only, as in Few-NERD): a tag is `O` or a type, optionally written `I-<type>`; adjacent words of
# one type form one entity. Types may hold dashes (`person-actor`), so IO is read only when asked for, never guessed.
IO_SCHEME = "io"
TAG_SCHEMES = (*_SCHEME_PREFIXES, IO_SCHEME)


def _scheme_prefixes(scheme: str) -> tuple[str, ...]:
    try:
        return _SCHEME_PREFIXES[scheme.lower()]
    except KeyError:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {sorted(TAG_SCHEMES)}") from None


def _tag_parser(scheme: str) -> Callable[[str], tuple[str, str]]:
    """The function that splits one tag of `scheme` into `(prefix, type)` for `_decode`; IO tags all read as `I-`."""
    if scheme.lower() == IO_SCHEME:
        return lambda tag: ("O", "") if tag == "O" else ("I", tag.removeprefix("I-"))
    prefixes = _scheme_prefixes(scheme)
    return lambda tag: _parse_tag(tag, prefixes)


def _parse_tag(tag: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    """Split a tag into `(prefix, type)`, `("O", "")` for outside; anything else is an error, not a guess."""
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if prefix not in prefixes or not dash or not entity_type:
        expected = ", ".join(f"{p}-<type>" for p in prefixes)
        raise ValueError(f"invalid tag {tag!r}: expected O or {expected}")
    return prefix, entity_type


def _decode(tags: Sequence[tuple[str, str]]) -> list[Span]:
    """Spans of parsed tags: a token continues the open entity only if it is I-/E- after B-/I- of the same type.

    Every other non-O token starts a new entity. This is exactly seqeval's default (non-strict) `get_entities`, so an
    orphan I-X (after O, another type, E- or S-) starts an entity as it does there, and IOB1 decodes correctly.
    """
    spans = []
    start = None
    previous_prefix, previous_type = "O", ""
    for index, (prefix, entity_type) in enumerate(tags):
        continues = previous_prefix in ("B", "I") and prefix in ("I", "E") and entity_type == previous_type
        if not continues:
            if start is not None:
                spans.append(Span(start, index, previous_type))
            start = None if prefix == "O" else index
        previous_prefix, previous_type = prefix, entity_type
    if start is not None:
        spans.append(Span(start, len(tags), previous_type))
    return spans


def spans_from_tags(tags: Sequence[str], *, scheme: str = "auto") -> list[Span]:
    """Entity spans of one sentence's tags, decoded as seqeval's default mode does (an orphan I-X starts an entity).

    `scheme` ("IOB1", "IOB2"/"BIO", "BIOES"/"IOBES" or "auto") only restricts which prefixes are accepted: the same
    rules decode all three schemes, so "auto" needs no detection and accepts B-, I-, E- and S-. "IO" reads every tag
    but `O` as a type (see `IO_SCHEME`).
    """
    parse = _tag_parser(scheme)
    parsed = []
    for index, tag in enumerate(tags):
        try:
            parsed.append(parse(tag))
        except ValueError as error:
            raise ValueError(f"tag {index}: {error}") from None
    return _decode(parsed)


def tags_from_spans(spans: Iterable[Span], length: int, *, scheme: str = "IOB2") -> list[str]:
    """Tags for `length` words in IOB1, IOB2 (BIO) or BIOES; overlapping (nested) and discontinuous entities cannot
    be tagged, so they raise rather than being flattened."""
    scheme = scheme.lower()
    if scheme not in _SCHEME_PREFIXES or scheme == "auto":
        raise ValueError(f"cannot write tags in scheme {scheme!r}; expected IOB1, IOB2, BIO, BIOES or IOBES")
    tags = ["O"] * length
    previous = Span(-1, 0, "")
    entities = [_as_entity(span) for span in spans]
    for entity in entities:
        if is_discontinuous(entity):
            raise ValueError(
                f"entity {entity.type!r} with fragments {[list(f) for f in entity.fragments]} is discontinuous and "
                "cannot be written as tags; use JSON Lines or BRAT"
            )
    for span in sorted(entities):
        start, end, entity_type = span
        if not 0 <= start < end <= length:
            raise ValueError(f"entity {tuple(span)} is not a span with 0 <= start < end <= {length}")
        if start < previous.end:
            raise ValueError(
                f"entities {tuple(previous)} and {tuple(span)} overlap and cannot be written as tags; use JSON Lines "
                "or BRAT"
            )
        tags[start:end] = [f"I-{entity_type}"] * (end - start)
        if scheme in ("bioes", "iobes"):
            tags[start] = f"S-{entity_type}" if end - start == 1 else f"B-{entity_type}"
            if end - start > 1:
                tags[end - 1] = f"E-{entity_type}"
        elif scheme != "iob1" or (start == previous.end and entity_type == previous.type):
            # IOB1 only uses B- to separate an entity from an adjacent one of the same type.
            tags[start] = f"B-{entity_type}"
        previous = span
    return tags


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


# Where a line of plain text ends: at "\r\n", "\n" or a lone "\r", as Python's universal newlines (`open`'s default)
# have it, so that a file with old Mac line ends is not one long line. (`str.splitlines` breaks at more characters.)
LINE_BREAK = r"\r\n|\r|\n"


def read_utf8(path: Path, keep_bom: bool = False) -> str:
    """The file as text, failing with the line of the first undecodable byte so that the file can be fixed.

    A leading byte-order mark is dropped, except with `keep_bom`: BRAT texts keep it, since BRAT counts it as the
    text's first character, and every offset of their annotations after it.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataFormatError(
            path, line, f"not valid UTF-8 (byte 0x{data[error.start]:02x}); convert the file to UTF-8"
        ) from None
    return text if keep_bom else text.removeprefix("\ufeff")


def _split_columns(line: str) -> list[str]:
    """Columns of a CoNLL line: tab-separated if it has a tab (words may then hold spaces), else space-separated.

    Carriage returns are dropped wherever they are: the files have CRLF endings and some have stray CRs.
    """
    line = line.replace("\r", "").strip(" \t")
    if not line:
        return []
    separator = "\t" if "\t" in line else " "
    return [column.strip(" ") for column in line.split(separator) if column.strip(" ")]


def _conll_blocks(text: str) -> Iterator[list[tuple[int, list[str]]]]:
    """Each sentence as `(line number, columns)` pairs; blank and -DOCSTART- lines end a sentence.

    The text is split on "\\n" only: `str.splitlines` would also break lines at a stray CR (and at other Unicode
    line separators), cutting sentences in two.
    """
    block = []
    for number, line in enumerate(text.split("\n"), start=1):
        columns = _split_columns(line)
        if columns and columns[0] != "-DOCSTART-":
            block.append((number, columns))
        elif block:
            yield block
            block = []
    if block:
        yield block


def read_conll(path: str | PathLike, *, scheme: str = "auto") -> list[Sentence]:
    """Sentences of a CoNLL-style column file: the word in the first column, its tag in the last.

    Columns are tab- or space-separated; blank lines and `-DOCSTART-` lines end a sentence; CRLF line endings, stray
    CRs and a UTF-8 byte-order mark are tolerated; sentences without entities are kept. Tags may be IOB1, IOB2 (BIO)
    or BIOES (see `spans_from_tags`), or IO when `scheme` says so: an orphan `I-X`, one that follows neither `B-X` nor
    `I-X`, starts a new entity, as in seqeval's default (non-strict) mode. A line with a single column, an invalid tag
    (or one outside an explicit `scheme`), undecodable bytes or a file without sentences raise `DataFormatError`
    naming the file and line.
    """
    path = Path(path)
    parse = _tag_parser(scheme)
    sentences = []
    for block in _conll_blocks(read_utf8(path)):
        tags = []
        for number, columns in block:
            if len(columns) < 2:
                raise DataFormatError(path, number, f"expected a word and a tag, found a single column {columns[0]!r}")
            try:
                tags.append(parse(columns[-1]))
            except ValueError as error:
                raise DataFormatError(path, number, str(error)) from None
        sentences.append(Sentence([columns[0] for _, columns in block], _decode(tags), line=block[0][0]))
    if not sentences:
        raise DataFormatError(path, None, "no sentences found")
    return sentences


def write_conll(sentences: Iterable[Sentence], path: str | PathLike, *, scheme: str = "IOB2") -> None:
    """Write `word<TAB>tag` lines with a blank line after each sentence, readable back by `read_conll`."""
    lines = []
    for number, sentence in enumerate(sentences, start=1):
        if not sentence.words:
            raise ValueError("a sentence without words cannot be written to a CoNLL file")
        try:
            tags = tags_from_spans(sentence.entities, len(sentence.words), scheme=scheme)
        except ValueError as error:
            raise ValueError(f"sentence {number}: {error}") from None
        for word, tag in zip(sentence.words, tags):
            if not word.strip(" ") or any(char in word for char in "\t\r\n"):
                raise ValueError(f"word {word!r} cannot be written to a CoNLL file")
            lines.append(f"{word}\t{tag}\n")
        lines.append("\n")
    Path(path).write_text("".join(lines), encoding="utf-8", newline="")


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


def read_text(path: str | PathLike) -> list[Sentence]:
    """Unlabelled sentences of a plain-text file, one per line (lines end as `LINE_BREAK` says), split into words as
    the pipeline splits raw text (`text_utils.split_words`: punctuation apart, as in CoNLL data), so that a model
    trained on CoNLL words sees `Paris .` rather than `Paris.`. A blank line is an empty sentence, kept so that
    outputs line up with inputs."""
    from lightner.text_utils import split_words

    path = Path(path)
    lines = re.split(LINE_BREAK, read_utf8(path))
    if lines and lines[-1] == "":
        lines.pop()
    return [
        Sentence([text[start:end] for start, end in split_words(text)], line=number)
        for number, text in enumerate(lines, start=1)
    ]


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------------------------------


def from_hf_dataset(
    dataset: Dataset, tokens_column: str = "tokens", tags_column: str = "ner_tags", scheme: str = "auto"
) -> list[Sentence]:
    """Sentences of a `datasets.Dataset`: `tokens_column` a sequence of strings, `tags_column` a sequence of
    `ClassLabel` or of strings, in the tag `scheme` (IOB1/IOB2/BIOES under "auto", or "io")."""
    missing = [column for column in (tokens_column, tags_column) if column not in dataset.features]
    if missing:
        raise ValueError(f"the dataset has no column {missing[0]!r}; its columns are {list(dataset.features)}")
    _check_words_feature(dataset.features[tokens_column], tokens_column)
    names = _tag_names(dataset.features[tags_column], tags_column)
    parse = _tag_parser(scheme)
    parsed_names = None
    if names is not None:
        try:
            parsed_names = [parse(name) for name in names]
        except ValueError as error:
            raise DataFormatError(f"ClassLabel names of column {tags_column!r}", None, _scheme_hint(error)) from None
    sentences = []
    for row, (words, tags) in enumerate(zip(dataset[tokens_column], dataset[tags_column])):
        if len(words) != len(tags):
            raise DataFormatError(f"dataset row {row}", None, f"{len(words)} tokens but {len(tags)} tags")
        sentences.append(Sentence(list(words), _decode(_row_tags(tags, parsed_names, parse, row, tags_column))))
    return sentences


def _check_words_feature(feature, column: str) -> None:
    """Refuse a words column that is not a sequence of strings (a text column, say, or token ids)."""
    from datasets import Value

    inner = getattr(feature, "feature", None)
    if not (isinstance(inner, Value) and inner.dtype in ("string", "large_string")):
        raise TypeError(f"column {column!r} must be a sequence of strings (the words), got {feature}")


def _tag_names(feature, column: str) -> list[str] | None:
    """The label names of a sequence-of-`ClassLabel` tags column, None for a sequence of strings; else a TypeError."""
    from datasets import ClassLabel, Value

    inner = getattr(feature, "feature", None)
    if isinstance(inner, ClassLabel):
        return inner.names
    if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        return None
    raise TypeError(
        f"column {column!r} must be a sequence of ClassLabel or of strings (the tags), got {feature}; integer ids "
        "need ClassLabel names to say which tag each is"
    )


def _row_tags(tags, parsed_names, parse, row: int, column: str) -> list[tuple[str, str]]:
    """One row's tags as `(prefix, type)`: ClassLabel ids through the parsed names, strings parsed one by one."""
    if parsed_names is None:
        try:
            return [parse(tag) for tag in tags]
        except ValueError as error:
            raise DataFormatError(f"dataset row {row}", None, f"column {column!r}: {_scheme_hint(error)}") from None
    for label_id in tags:
        # A negative id (ClassLabel's "no label" is -1) would silently index from the end of the names.
        if not 0 <= label_id < len(parsed_names):
            raise DataFormatError(f"dataset row {row}", None, f"tag id {label_id} is not a {column!r} label")
    return [parsed_names[label_id] for label_id in tags]


def _scheme_hint(error: ValueError) -> str:
    return f"{error} (tags without B-/I- prefixes, as in Few-NERD, are the IO scheme: pass --tag-scheme io)"


def to_hf_dataset(sentences: Sequence[Sentence], *, types: Sequence[str] | None = None) -> Dataset:
    """A `datasets.Dataset` with `tokens` and IOB2 `ner_tags` (a sequence of `ClassLabel`).

    The label names are `O` then `B-`/`I-` per type, in the order of `types` (default: `entity_types(sentences)`);
    pass `types` to give several splits the same label ids.
    """
    from datasets import ClassLabel, Dataset, Features, List, Value

    types = entity_types(sentences) if types is None else list(types)
    unknown = [name for name in entity_types(sentences) if name not in types]
    if unknown:
        raise ValueError(f"the sentences have entity types missing from `types`: {unknown}")
    names = ["O"] + [f"{prefix}-{name}" for name in types for prefix in ("B", "I")]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    columns = {
        "tokens": [sentence.words for sentence in sentences],
        "ner_tags": [tags_from_spans(sentence.entities, len(sentence.words)) for sentence in sentences],
    }
    return Dataset.from_dict(columns, features=features)


def split_source(source: str | PathLike) -> tuple[str, str | None]:
    """`NAME[:SPLIT]` (a `datasets` folder or Hub id, then optionally a split) as `(NAME, SPLIT)`; an existing path
    is a name whole, colon or not."""
    source = str(source)
    name, colon, split = source.rpartition(":")
    if Path(source).exists() or not colon or not name or not split or "/" in split:
        return source, None
    return name, split


def is_hub_dataset(source: str | PathLike) -> bool:
    """Whether `source` (`NAME[:SPLIT]`) names a Hub dataset: a `datasets` source that is not a local folder."""
    name, _ = split_source(source)
    return detect_format(name) == "hf" and not Path(name).exists()


def data_name(source: str | PathLike) -> str:
    """How a model card names data: a Hub dataset by its id and split, a file or folder by its name."""
    return str(source) if is_hub_dataset(source) else Path(str(source)).name


def load_hf_dataset(source: str | PathLike, split: str | None = None, config_name: str | None = None) -> Dataset:
    """One split of a `datasets` folder (`save_to_disk`) or of a Hub dataset, as `NAME[:SPLIT]` or `split`; a
    source with several splits needs one named."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    name, named_split = split_source(source)
    split = named_split or split
    if Path(name).exists():
        dataset = load_from_disk(name)
    else:
        try:
            dataset = load_dataset(name, config_name, split=split)
        except Exception as error:  # datasets raises many types for a name it cannot resolve
            raise OSError(
                f"{name} is neither a local datasets folder nor a dataset the Hub could give "
                f"({type(error).__name__}: {' '.join(str(error).split())})"
            ) from error
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{name} holds the splits {list(dataset)}; choose one with --split or as {name}:SPLIT")
        dataset = dataset[split]
    return dataset


def read_hf_folder(
    path: str | PathLike,
    split: str | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    scheme: str = "auto",
    config_name: str | None = None,
) -> list[Sentence]:
    """Sentences of a `datasets` folder (`save_to_disk`) or Hub dataset (see `load_hf_dataset`)."""
    dataset = load_hf_dataset(path, split, config_name)
    return from_hf_dataset(dataset, tokens_column=tokens_column, tags_column=tags_column, scheme=scheme)


# --------------------------------------------------------------------------------------------------------------------
# The formats: one table for training, the CLI and the converter
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    """What some readers need beyond the path: a `datasets` source's split, configuration and columns, the tags'
    scheme (CoNLL files and `datasets` alike), whether a BRAT corpus's annotations that do not align with words are
    skipped (counted) rather than an error."""

    split: str | None = None
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    scheme: str = "auto"
    config_name: str | None = None
    skip_misaligned: bool = False


@dataclass(frozen=True)
class WriteOptions:
    """What some writers need: a CoNLL file's tag scheme, a `datasets` folder's label order (shared across splits)."""

    scheme: str = "IOB2"
    types: Sequence[str] | None = None


@dataclass(frozen=True)
class DataFormat:
    """A file format: how to read it, how to write it (None: input only), and whether a path looks like one.

    `labelled` formats hold entities, so they can train and score; plain text only feeds prediction.
    """

    name: str
    description: str
    labelled: bool
    matches: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], list[Sentence]]
    write: Callable[[Sequence[Sentence], Path, WriteOptions], None] | None


_JSON_SUFFIXES = (".jsonl", ".json")


def _is_brat(path: Path) -> bool:
    return path.suffix.lower() == ".ann" or (path.is_dir() and next(path.rglob("*.ann"), None) is not None)


def _read_brat(path: Path, options: ReadOptions) -> list[Sentence]:
    from .brat import read_brat  # it builds on this module

    return read_brat(path, skip_misaligned=options.skip_misaligned)


def _write_brat(sentences: Sequence[Sentence], path: Path, options: WriteOptions) -> None:
    from .brat import write_brat

    write_brat(sentences, path)


def _is_label_studio(path: Path) -> bool:
    from .label_studio import is_label_studio_export  # it builds on this module

    return is_label_studio_export(path)


def _read_label_studio(path: Path, options: ReadOptions) -> list[Sentence]:
    from .label_studio import read_label_studio

    return read_label_studio(path)


def _write_label_studio(sentences: Sequence[Sentence], path: Path, options: WriteOptions) -> None:
    from .label_studio import write_label_studio

    write_label_studio(sentences, path)


# In detection order: the first format whose `matches` accepts a path is that path's format.
FORMATS: dict[str, DataFormat] = {
    spec.name: spec
    for spec in (
        DataFormat(
            "brat",
            "BRAT standoff: a folder of .ann files with their .txt beside them, or one .ann file (detected by that)",
            labelled=True,
            matches=_is_brat,
            read=_read_brat,
            write=_write_brat,
        ),
        DataFormat(
            "hf",
            "a Hugging Face datasets folder (save_to_disk) or Hub dataset id, NAME[:SPLIT], detected as a folder or a "
            "path without suffix",
            labelled=True,
            matches=lambda path: path.is_dir() or (not path.suffix and not path.is_file()),
            read=lambda path, o: read_hf_folder(
                path, o.split, o.tokens_column, o.tags_column, o.scheme, o.config_name
            ),
            write=lambda sentences, path, o: to_hf_dataset(sentences, types=o.types).save_to_disk(str(path)),
        ),
        DataFormat(
            "label-studio",
            "a Label Studio JSON export (a .json file holding a list of tasks; character-offset labels regions)",
            labelled=True,
            matches=_is_label_studio,
            read=_read_label_studio,
            write=_write_label_studio,
        ),
        DataFormat(
            "jsonl",
            "JSON Lines of {tokens, entities}, detected by the suffix .jsonl or .json",
            labelled=True,
            matches=lambda path: path.suffix.lower() in _JSON_SUFFIXES,
            read=lambda path, o: read_jsonl(path),
            write=lambda sentences, path, o: write_jsonl(sentences, path),
        ),
        DataFormat(
            "conll",
            "a CoNLL column file (word first, tag last), any other file",
            labelled=True,
            matches=lambda path: True,
            read=lambda path, o: read_conll(path, scheme=o.scheme),
            write=lambda sentences, path, o: write_conll(sentences, path, scheme=o.scheme),
        ),
        DataFormat(
            "text",
            "plain text, one sentence per line (prediction input only; chosen when a file is not a CoNLL file)",
            labelled=False,
            matches=lambda path: False,
            read=lambda path, o: read_text(path),
            write=None,
        ),
    )
}
LABELLED_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.labelled)


def detect_format(path: str | PathLike) -> str:
    """The name of the first format in `FORMATS` whose detection accepts `path` (for reading or for writing)."""
    return next(name for name, spec in FORMATS.items() if spec.matches(Path(path)))


def _format(name: str, labelled: bool) -> DataFormat:
    allowed = LABELLED_FORMATS if labelled else tuple(FORMATS)
    if name not in allowed:
        raise ValueError(f"unknown data format {name!r}; expected one of {allowed}")
    return FORMATS[name]


def read_sentences(
    path: str | PathLike, data_format: str = "auto", options: ReadOptions = ReadOptions()
) -> list[Sentence]:
    """Labelled sentences of `path` in `data_format` ("auto": `detect_format`)."""
    name = detect_format(path) if data_format == "auto" else data_format
    return _format(name, labelled=True).read(Path(path), options)


def load_sentences(path: str | PathLike, options: ReadOptions = ReadOptions()) -> list[Sentence]:
    """Labelled sentences in the format detected from the path (what training and evaluation read)."""
    return read_sentences(path, options=options)


def read_words(path: str | PathLike, data_format: str = "auto") -> list[list[str]]:
    """Word lists of a labelled file (labels ignored) or of plain text (see `read_text`).

    "auto" reads what `detect_format` says, except that a file which does not parse as CoNLL is read as plain text:
    a text file has no tag column, and its sentences are what the user wants tagged.
    """
    name = detect_format(path) if data_format == "auto" else data_format
    try:
        sentences = _format(name, labelled=False).read(Path(path), ReadOptions())
    except DataFormatError:
        if data_format != "auto" or name != "conll":
            raise
        sentences = read_text(path)
    return [sentence.words for sentence in sentences]


def write_sentences(
    sentences: Sequence[Sentence],
    path: str | PathLike,
    data_format: str = "auto",
    options: WriteOptions = WriteOptions(),
) -> None:
    """Write `sentences` to `path` in `data_format` ("auto": `detect_format`)."""
    name = detect_format(path) if data_format == "auto" else data_format
    spec = _format(name, labelled=True)
    spec.write(sentences, Path(path), options)


def sentence_from_prediction(words: Sequence[str], entities: Iterable[dict]) -> Sentence:
    """A sentence with `predict`'s entities (`{"type", "start", "end"[, "fragments"]}`, word offsets) as its own."""
    return Sentence(list(words), [_span_from_json(entity) for entity in entities])


def write_predictions(
    sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[dict]], path: str | PathLike
) -> None:
    """Write `model.predict`'s output for word lists `sentences`, in the format of `path`'s suffix.

    `.ann`: one BRAT document (`lightner.brat.write_brat`, the text beside it, one sentence per line), each entity's
    score as an `AnnotatorNotes` line. Anything else: JSON Lines, one `{"tokens": [...], "entities": [...]}` per
    sentence with `predict`'s entity dicts as they are (a discontinuous entity carries `fragments`), which
    `read_jsonl` reads back. The folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".ann":
        from .brat import write_brat

        labelled = [sentence_from_prediction(words, entities) for words, entities in zip(sentences, predictions)]
        scores = [{_span_from_json(entity): entity["score"] for entity in entities} for entities in predictions]
        write_brat(labelled, path, scores)
        return
    with path.open("w", encoding="utf-8") as file:
        for words, entities in zip(sentences, predictions):
            file.write(json.dumps({"tokens": list(words), "entities": entities}, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------------------------------
# Entity types and few-shot sampling
# --------------------------------------------------------------------------------------------------------------------


def entity_types(sentences: Iterable[Sentence]) -> list[str]:
    """The entity types present, in order of first appearance, so that label ids do not depend on set ordering."""
    return list(dict.fromkeys(span.type for sentence in sentences for span in sentence.entities))


def type_counts(sentences: Iterable[Sentence]) -> Counter:
    """How many entities of each type the sentences hold."""
    return Counter(span.type for sentence in sentences for span in sentence.entities)


def describe_counts(counts: Counter) -> str:
    """Type counts as messages show them, most frequent first: `PER (12), LOC (3)`."""
    return ", ".join(f"{name} ({count})" for name, count in counts.most_common()) or "none"


def sample_k_shot(sentences: Sequence[Sentence], k: int, seed: int) -> list[Sentence]:
    """A support set with at least `k` mentions of every type (all of them for a type with fewer), by greedy sampling.

    Greedy sampling as used in few-shot NER since Yang & Katiyar (2020, "Simple and Effective Few-Shot Named Entity
    Recognition with Structured Nearest Neighbor Learning"): visit the sentences in an order shuffled with `seed`,
    keep a sentence if one of its types still has fewer than `k` mentions, then drop every kept sentence whose removal
    leaves all types at `k` or more, since early picks are often made redundant by later ones. Sentences without
    entities are never picked. The result is in corpus order and depends only on `sentences`, `k` and `seed`.

    A type in an entity-dense corpus usually ends up with more than `k` mentions. The LightNER paper's own k-shot
    files were not made this way and are not reproducible with it (e.g. `mit-movie/10-shot-train.txt` has 51
    sentences and types with only 3 mentions).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    mentions = [Counter(span.type for span in sentence.entities) for sentence in sentences]
    available = Counter(span.type for sentence in sentences for span in sentence.entities)
    target = {name: min(k, count) for name, count in available.items()}

    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    chosen = []
    counts = Counter()
    for index in order:
        if any(counts[name] < target[name] for name in mentions[index]):
            chosen.append(index)
            counts.update(mentions[index])
    for index in list(chosen):
        if all(counts[name] - count >= target[name] for name, count in mentions[index].items()):
            chosen.remove(index)
            counts.subtract(mentions[index])
    return [sentences[index] for index in sorted(chosen)]


__all__ = [
    "FORMATS",
    "LABELLED_FORMATS",
    "DataFormat",
    "DataFormatError",
    "DiscontinuousSpan",
    "Entity",
    "is_discontinuous",
    "make_span",
    "sentence_from_prediction",
    "write_predictions",
    "ReadOptions",
    "WriteOptions",
    "detect_format",
    "read_hf_folder",
    "read_sentences",
    "read_text",
    "read_utf8",
    "is_blank",
    "parse_json_line",
    "LINE_BREAK",
    "read_words",
    "write_sentences",
    "Sentence",
    "Span",
    "entity_types",
    "describe_counts",
    "type_counts",
    "from_hf_dataset",
    "load_sentences",
    "read_conll",
    "read_jsonl",
    "sample_k_shot",
    "spans_from_tags",
    "tags_from_spans",
    "to_hf_dataset",
    "write_conll",
    "write_jsonl",
]
