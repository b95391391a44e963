"""What every format module builds on: the `Format` record, the read and write options, a prediction input's
`Document`, UTF-8 files read strictly, and inputs read lazily as lines (files, standard input, pipes).

Nothing here knows a particular format; `lightner.formats` holds the table of them. The word splitter
(`text_utils`, which imports torch through `tokenization_utils`) is imported where it is used, so that the table,
and with it the command line's help, costs no torch import.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..data import DataFormatError, Sentence

# `--input -` and `--output -`: standard input and standard output; how messages name standard input.
STANDARD_STREAM = "-"
STDIN_NAME = "<stdin>"
_BLOCK_SIZE = 1 << 16


@dataclass
class Document:
    """One prediction input document: raw `text`, or `words` (word input), with the fields passed through from JSON
    Lines.

    `line` is where it starts in the input (1-based; a row for `datasets` input); `skipped` marks a bad line that
    `--skip-bad-lines` left out, which counts as done for `--resume` but writes nothing. `name` is a BRAT input
    document's path in its folder, without the suffix.
    """

    line: int
    text: str | None = None
    words: list[str] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    name: str | None = None

    def as_text(self) -> tuple[str, list[tuple[int, int]]]:
        """The text the entities' character offsets refer to, and its words' character spans."""
        from ..text_utils import join_words, split_words  # lazily: the format table imports no torch

        if self.words is not None:
            return join_words(self.words)
        return self.text, split_words(self.text)


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


class FoundEntities(Protocol):
    """One document's predicted entities as a writer gets them (`pipeline_lightner.WordEntities`): at the word level,
    in the form each format asks for, computed when it asks."""

    def input_words(self) -> list[dict]:
        """`model.predict`'s entities (`type`, word `start`/`end`, `text`, `score`, `fragments` for a discontinuous
        one) over the document's own words."""

    def characters(self) -> list[dict]:
        """The pipeline's entities (`entity_group`, `score`, `word`, character `start`/`end`, `fragments`)."""


# One reader or writer's signature each; a format fills in those it has (see `Format`).
SentenceReader = Callable[[Path, "ReadOptions"], list[Sentence]]
SentenceWriter = Callable[[Sequence[Sentence], Path, "WriteOptions"], None]
DocumentReader = Callable[[Any, bool], Iterator[Document]]
DocumentWriter = Callable[[Document, FoundEntities], "str | dict[str, str]"]


@dataclass(frozen=True)
class Format:
    """One data format, everything about it side by side: a row of `lightner.formats.FORMATS`.

    - `matches(path)`: whether a path of labelled data looks like this format; `matches_input(opened)`: whether a
      `lightner predict` input (a path, or a `Stream` when `streamable`) is this format, from its path or its first
      lines. `lightner.formats.detect_format` tries the rows in table order, by one or the other; None: never
      detected, only chosen by name.
    - `read`/`write`: sentences with word-level entities (training, evaluation, `convert_data`); `labelled` formats
      hold entities, plain text only feeds prediction.
    - `read_documents(opened, skip_bad_lines)`: `lightner predict`'s input, lazily (`opened` is a path, a `Stream`
      when `streamable`, or a `datasets` source string for `hf`), and `input_description` for the CLI help.
    - `write_document(document, found)`: one document's predictions (`FoundEntities`) as the text appended
      to the output file, or for a `folder_output` format its files as `{suffix: text}`; `output_description` for
      the CLI help.
    - `finish_output(path)`: turns the finished output file into its final form (Label Studio's JSON list, written
      a line per document while predicting so that `--resume` works); such a format cannot write to a stream.
    """

    name: str
    description: str
    labelled: bool = True
    matches: Callable[[Path], bool] | None = None
    matches_input: Callable[[Path | Stream], bool] | None = None
    read: SentenceReader | None = None
    write: SentenceWriter | None = None
    read_documents: DocumentReader | None = None
    input_description: str = ""
    streamable: bool = True
    write_document: DocumentWriter | None = None
    output_description: str = ""
    folder_output: bool = False
    finish_output: Callable[[Path], None] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Files and streams
# ---------------------------------------------------------------------------------------------------------------------

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


# Where input lines end: text and JSON Lines as Python's universal newlines have it (`LINE_BREAK`), CoNLL files at
# "\n" alone, as `read_conll` reads them (a stray "\r" inside a line is whitespace between columns).
ANY_LINE_BREAK = re.compile(LINE_BREAK.encode())
NEWLINE = re.compile(rb"\r?\n")


class Stream:
    """An input that can be read only once: standard input (`-`), or a pipe or device given by its name
    (`/dev/stdin`). What format detection reads of it is kept and given again to the reader, since it cannot seek
    back."""

    def __init__(self, name: str, file: BinaryIO):
        self.name, self.file, self.kept = name, file, []

    def __str__(self) -> str:
        return self.name

    def blocks(self, keep: bool = False) -> Iterator[bytes]:
        """The blocks kept by an earlier look, then the rest of the input; with `keep`, a look: what it reads is kept
        for the next call."""
        kept = list(self.kept)
        if not keep:
            self.kept = []
        yield from kept
        while block := self.file.read1(_BLOCK_SIZE):
            if keep:
                self.kept.append(block)
            yield block


def is_stream(path: str | os.PathLike) -> bool:
    """Whether `path` is standard input or output (`-`), or names something that exists and is neither a regular file
    nor a folder (a pipe, a device such as /dev/stdin or /dev/null): read or written once, as a stream."""
    if str(path) == STANDARD_STREAM:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def is_file_input(opened: Path | Stream) -> bool:
    """Whether a prediction input is (or would be, as a missing path) a file or a stream rather than a folder: what
    the formats read a line at a time need."""
    return isinstance(opened, Stream) or not opened.is_dir()


def open_source(source: str) -> Path | Stream:
    """A file input as its path (opened when read), a stream input as a `Stream`."""
    if source == STANDARD_STREAM:
        return Stream(STDIN_NAME, sys.stdin.buffer)
    if is_stream(source):
        return Stream(source, open(source, "rb"))  # read to its end, closed with the process
    return Path(source)


def _blocks(source: Path | Stream, keep: bool = False) -> Iterator[bytes]:
    if isinstance(source, Stream):
        yield from source.blocks(keep)
        return
    with source.open("rb") as file:
        while block := file.read1(_BLOCK_SIZE):
            yield block


def split_lines(blocks: Iterable[bytes], line_break: re.Pattern[bytes]) -> Iterator[bytes]:
    """The lines of a stream of blocks, without their ends; a carriage return that ends a block is held back for the
    next block, whose first byte may make it a CRLF line end."""
    parts: list[bytes] = []
    held = b""
    for block in blocks:
        block, held = held + block, b""
        if block.endswith(b"\r"):
            block, held = block[:-1], b"\r"
        start = 0
        for match in line_break.finditer(block):
            yield b"".join([*parts, block[start : match.start()]])
            parts, start = [], match.end()
        parts.append(block[start:])
    last = b"".join(parts) + held
    if last:
        end = line_break.search(last)  # only a held carriage return can be a line end here
        yield last[: end.start()] if end else last


def lines(
    source: Path | Stream, line_break: re.Pattern[bytes] = ANY_LINE_BREAK, keep: bool = False
) -> Iterator[tuple[int, str]]:
    """`(line number, line without its end)` of a UTF-8 input, read lazily; a bad byte is named by its line. `keep`:
    a look at the start of a stream that leaves it to be read again (format detection)."""
    for number, raw in enumerate(split_lines(_blocks(source, keep), line_break), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataFormatError(source, number, f"not valid UTF-8 (byte 0x{raw[error.start]:02x})") from None
        yield number, line.removeprefix("\ufeff" if number == 1 else "")
