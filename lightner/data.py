"""NER data as sentences with word-level entity spans: the data types, the tag schemes and k-shot sampling.

Everything is converted to one small data model, `Sentence` (words plus `Span`s with exclusive ends), so that the
model, the metrics and the k-shot sampler never deal with tag schemes, file formats or Hugging Face feature types.
The files are `lightner.formats`' (one module per format); this module imports none of them. Readers are strict:
malformed input raises `DataFormatError` naming the file and line rather than being guessed at,
because a silently dropped entity shows up much later as an unexplained F1 drop.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import NamedTuple

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


def tag_parser(scheme: str) -> Callable[[str], tuple[str, str]]:
    """What splits one tag of `scheme` into `(prefix, type)` for `decode_tags`; IO tags all read as `I-`."""
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


def decode_tags(tags: Sequence[tuple[str, str]]) -> list[Span]:
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
    parse = tag_parser(scheme)
    parsed = []
    for index, tag in enumerate(tags):
        try:
            parsed.append(parse(tag))
        except ValueError as error:
            raise ValueError(f"tag {index}: {error}") from None
    return decode_tags(parsed)


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
    "DataFormatError",
    "DiscontinuousSpan",
    "Entity",
    "Fragments",
    "IO_SCHEME",
    "Sentence",
    "Span",
    "TAG_SCHEMES",
    "decode_tags",
    "describe_counts",
    "entity_types",
    "is_discontinuous",
    "make_span",
    "sample_k_shot",
    "spans_from_tags",
    "tag_parser",
    "tags_from_spans",
    "type_counts",
]
