"""CoNLL column files: a word per line, its tag in the last column, a blank line after each sentence.

Read as labelled sentences (`read_conll`, any of the tag schemes of `lightner.data`), as `lightner predict`'s word
input (`read_documents`: the first column, tags ignored) and written from either (`write_conll`, `write_document`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from os import PathLike
from pathlib import Path

from ..data import DataFormatError, Sentence, Span, decode_tags, tag_parser, tags_from_spans
from .base import NEWLINE, Document, Format, FoundEntities, Stream, is_file_input, lines, read_utf8

logger = logging.getLogger(__name__)

_TAG = re.compile(r"^(O|[BIES]-\S+)$")


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
    parse = tag_parser(scheme)
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
        sentences.append(Sentence([columns[0] for _, columns in block], decode_tags(tags), line=block[0][0]))
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


def read_documents(path: Path | Stream, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per sentence of a CoNLL column file (the word in the first column; tags ignored)."""
    words, first = [], None
    for number, line in lines(path, NEWLINE):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                yield Document(first, words=words)
            words, first = [], None
            continue
        words.append(columns[0])
        first = first or number
    if words:
        yield Document(first, words=words)


def write_document(document: Document, found: FoundEntities) -> str:
    """`word<TAB>tag` lines in IOB2 and a blank line (text input is split into words as the pipeline splits it).

    BIO tags cannot hold overlapping or discontinuous entities: of an overlap the higher-scoring entity is kept, a
    discontinuous entity is left out, and either is logged with the document's line (JSON Lines and BRAT keep all)."""
    text, spans = document.as_text()
    words = document.words if document.words is not None else [text[start:end] for start, end in spans]
    kept: list[Span] = []
    converted = found.input_words()
    for entity in sorted(converted, key=lambda e: -e["score"]):
        fits = all(entity["end"] <= span.start or span.end <= entity["start"] for span in kept)
        if fits and "fragments" not in entity:
            kept.append(Span(entity["start"], entity["end"], entity["type"]))
    if len(kept) < len(converted):
        logger.warning(
            f"line {document.line}: {len(converted) - len(kept)} overlapping or discontinuous entities cannot be "
            "written as CoNLL tags and were left out (--output-format jsonl or brat keeps them)"
        )
    tags = tags_from_spans(kept, len(words), scheme="IOB2")
    return "".join(f"{word}\t{tag}\n" for word, tag in zip(words, tags)) + "\n"


def starts_tagged(opened: Path | Stream) -> bool:
    """Whether the first 50 non-blank lines of a prediction input (a look that leaves a stream to be read again) are
    all `is_tagged`: so little is read that detection costs nothing on a large corpus."""
    sample = list(islice((line for _, line in lines(opened, keep=True) if line.strip()), 50))
    return bool(sample) and all(is_tagged(line) for line in sample)


def is_tagged(line: str) -> bool:
    """Whether a non-blank line looks like CoNLL: a `-DOCSTART-` line, or `word ... TAG` with a BIOES tag last."""
    columns = line.split()
    return columns[0] == "-DOCSTART-" or (len(columns) >= 2 and bool(_TAG.match(columns[-1])))


FORMAT = Format(
    "conll",
    "a CoNLL column file (word first, tag last), any other file",
    matches=lambda path: True,
    matches_input=lambda opened: is_file_input(opened) and starts_tagged(opened),
    read=lambda path, o: read_conll(path, scheme=o.scheme),
    write=lambda sentences, path, o: write_conll(sentences, path, scheme=o.scheme),
    read_documents=read_documents,
    input_description="a CoNLL column file: words in the first column, a sentence per block",
    write_document=write_document,
    output_description="CoNLL: word<TAB>IOB2 tag, a blank line after each document",
)
