"""Prediction over a corpus (`lightner predict`): documents are read one at a time, tagged by the pipeline a chunk at
a time, and written as they come, so that a corpus of any size needs the memory of one chunk.

Input (`INPUT_FORMATS`): plain text (a document per line, of any length: the pipeline reads long ones in windows),
JSON Lines (a `text` field, or the labelled `tokens` form; other fields are passed through), or words (a CoNLL column
file or a `datasets` source; tags are ignored). Output (`OUTPUT_FORMATS`, one table so that another format is one
more entry): JSON Lines (character offsets for text, word offsets for words), CoNLL BIO, or spaCy's
`{"text", "ents": [{"start", "end", "label"}]}` (what displaCy's manual mode draws).

Resuming: after every chunk the output is flushed and `<output>.progress` records how many input documents are done,
how many output bytes they produced, a fingerprint of the input read so far and the options that shape the output;
`--resume` checks that the input's first documents and the options are those of the interrupted run, truncates the
output to that size and skips that many documents, so that a killed run, resumed, writes each input exactly once.

Nothing already written is lost: a run refuses an output that is one of its inputs or another of its outputs, and
holds an exclusive lock on its output while it writes, so that a second run into the same output is refused rather
than interleaved with it. `-` reads standard input or writes standard output (a pipe or a device is written as a
stream too), which cannot be resumed.

Several processes (`accelerate launch --num_processes N -m lightner predict ...`): every process reads the input,
tags its share of each chunk (documents `rank::N`), and the main process gathers the results and writes the chunk in
input order, so the output is the one a single process writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TextIO

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked
    fcntl = None

from .brat import ANN_SUFFIX, TEXT_SUFFIX, annotation_file
from .data import (
    LINE_BREAK,
    DataFormatError,
    Span,
    detect_format,
    is_blank,
    load_hf_dataset,
    parse_json_line,
    read_utf8,
    split_source,
    tags_from_spans,
)
from .text_utils import join_words, split_words
from .tokenization_utils import FRAGMENT_SEPARATOR

logger = logging.getLogger(__name__)

PROGRESS_SUFFIX = ".progress"
# Documents per process and chunk, in batches: enough to keep batches full, little enough to lose on a kill.
CHUNK_BATCHES = 4
_TAG = re.compile(r"^(O|[BIES]-\S+)$")
# Files `datasets.save_to_disk` writes, which tell a datasets folder from a folder of BRAT texts.
_DATASETS_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
# A JSON Lines `id` used as a BRAT output name: a plain file name, never a path.
_SAFE_NAME = re.compile(r"^\w[\w.-]*$")
# `--input -` and `--output -`: standard input and standard output; how messages name standard input.
STANDARD_STREAM = "-"
STDIN_NAME = "<stdin>"
# Where input lines end: text and JSON Lines as Python's universal newlines have it (`data.LINE_BREAK`), CoNLL files
# at "\n" alone, as `data.read_conll` reads them (a stray "\r" inside a line is whitespace between columns).
_ANY_LINE_BREAK = re.compile(LINE_BREAK.encode())
_NEWLINE = re.compile(rb"\r?\n")
_BLOCK_SIZE = 1 << 16
# How the pipeline names a document by its place in the batch, which `_tag` replaces by the file and line.
_IN_THE_BATCH = re.compile(r"\b(sentence|input) 0\b")


@dataclass
class Document:
    """One input document: raw `text`, or `words` (word input), with the fields passed through from JSON Lines.

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
        if self.words is not None:
            return join_words(self.words)
        return self.text, split_words(self.text)


# ---------------------------------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------------------------------


class _Stream:
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


def _open_input(source: str) -> Path | _Stream:
    """A file input as its path (opened when read), a stream input as a `_Stream`."""
    if source == STANDARD_STREAM:
        return _Stream(STDIN_NAME, sys.stdin.buffer)
    if is_stream(source):
        return _Stream(source, open(source, "rb"))  # read to its end, closed with the process
    return Path(source)


def _blocks(source: Path | _Stream, keep: bool = False) -> Iterator[bytes]:
    if isinstance(source, _Stream):
        yield from source.blocks(keep)
        return
    with source.open("rb") as file:
        while block := file.read1(_BLOCK_SIZE):
            yield block


def _split_lines(blocks: Iterable[bytes], line_break: re.Pattern[bytes]) -> Iterator[bytes]:
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


def _lines(
    source: Path | _Stream, line_break: re.Pattern[bytes] = _ANY_LINE_BREAK, keep: bool = False
) -> Iterator[tuple[int, str]]:
    """`(line number, line without its end)` of a UTF-8 input, read lazily; a bad byte is named by its line. `keep`:
    a look at the start of a stream that leaves it to be read again (format detection)."""
    for number, raw in enumerate(_split_lines(_blocks(source, keep), line_break), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataFormatError(source, number, f"not valid UTF-8 (byte 0x{raw[error.start]:02x})") from None
        yield number, line.removeprefix("\ufeff" if number == 1 else "")


def read_text_documents(path: Path | _Stream, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per line; a blank line is an empty document, so that outputs line up with inputs."""
    for number, line in _lines(path):
        yield Document(number, text=line)


def read_jsonl_documents(path: Path | _Stream, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per line: `{"text": ...}` (raw text) or `{"tokens": [...]}` (words); other fields pass through.
    Blank lines are skipped, as in training data (`data.is_blank`)."""
    for number, line in _lines(path):
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


def read_word_documents(path: Path | _Stream, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per sentence of a CoNLL column file (the word in the first column; tags ignored)."""
    words, first = [], None
    for number, line in _lines(path, _NEWLINE):
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


def read_dataset_documents(source: str, skip_bad_lines: bool, tokens_column: str = "tokens") -> Iterator[Document]:
    """A document per row of a `datasets` source (`NAME[:SPLIT]`), its words from `tokens_column`; rows are read
    from the memory-mapped table one at a time."""
    for row, record in enumerate(load_hf_dataset(source)):
        yield Document(row + 1, words=list(record[tokens_column]))


def read_brat_documents(path: Path, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per `.txt` file of a BRAT folder (searched recursively, in path order; `.ann` files there are not
    read), named by its path in the folder, so that `--output-format brat` writes each `.ann` under the same name. A
    single `.txt` file is one document. A byte-order mark stays in the text, since BRAT counts it in offsets."""
    for file in _brat_texts(path):
        name = file.relative_to(path).with_suffix("").as_posix() if path.is_dir() else file.stem
        yield Document(1, text=read_utf8(file, keep_bom=True), name=name)


def _brat_texts(path: Path) -> list[Path]:
    return sorted(path.rglob(f"*{TEXT_SUFFIX}")) if path.is_dir() else [path]


@dataclass(frozen=True)
class InputFormat:
    name: str
    description: str
    read: Callable[..., Iterator[Document]]


INPUT_FORMATS: dict[str, InputFormat] = {
    spec.name: spec
    for spec in (
        InputFormat("text", "plain text, a document per line (any length)", read_text_documents),
        InputFormat(
            "jsonl", 'JSON Lines with a "text" field (or "tokens"), other fields passed through', read_jsonl_documents
        ),
        InputFormat(
            "conll", "a CoNLL column file: words in the first column, a sentence per block", read_word_documents
        ),
        InputFormat(
            "hf", "a datasets folder or Hub dataset, NAME[:SPLIT], words in its tokens column", read_dataset_documents
        ),
        InputFormat("brat", "a folder of BRAT .txt documents, each a document of any length", read_brat_documents),
        InputFormat(
            "label-studio",
            "a Label Studio JSON export or task list (.json), a document per task's text, other data fields kept",
            lambda path, skip_bad_lines: _label_studio().read_task_documents(path, skip_bad_lines),
        ),
    )
}


@dataclass
class Input:
    """What a run reads: `source` as given, its `format` (detected for "auto") and what it is opened as (a path, a
    `_Stream`, or the `datasets` source as a string)."""

    source: str
    format: str
    opened: Path | _Stream | str

    def documents(self, skip_bad_lines: bool = False) -> Iterator[Document]:
        """The documents, lazily (a stream can be read once)."""
        return INPUT_FORMATS[self.format].read(self.opened, skip_bad_lines)

    def files(self) -> list[Path]:
        """The local files the documents come from: none for a stream or a Hub dataset."""
        if isinstance(self.opened, _Stream) or (self.format == "hf" and not Path(self.source).exists()):
            return []
        if self.format == "brat":
            return _brat_texts(self.opened)
        if self.format == "hf":
            return sorted(path for path in Path(self.source).rglob("*") if path.is_file())
        return [self.opened]


def open_input(source: str | os.PathLike, data_format: str = "auto") -> Input:
    """`source` in `data_format` ("auto": detected, see `detect_input_format`), checked to exist."""
    source = str(source)
    opened = _open_input(source)
    name = _detect(source, opened) if data_format == "auto" else data_format
    if name not in INPUT_FORMATS:
        raise ValueError(f"unknown input format {name!r}; expected one of {tuple(INPUT_FORMATS)}")
    if isinstance(opened, _Stream):
        if name in ("hf", "brat"):
            raise ValueError(f"--input {source} is a stream, which can hold text, jsonl or conll, not --format {name}")
        return Input(source, name, opened)
    if name == "brat" and opened.is_dir() and not _brat_texts(opened):
        raise FileNotFoundError(_not_an_input_folder(opened))
    found = opened.exists() if name == "brat" else opened.is_file()  # brat: a folder or one .txt
    if name != "hf" and not found:
        raise FileNotFoundError(f"{source}: no such file")
    return Input(source, name, source if name == "hf" else opened)


def detect_input_format(path: str | os.PathLike) -> str:
    """`brat` for a folder of `.txt` files that is not a `datasets` folder, `hf` for a `datasets` source, `jsonl` for
    .jsonl/.json, else `conll` if its first lines are `word ... TAG` columns, else `text`. Only the first 50 non-blank
    lines are read, so detection costs nothing on a large corpus. Standard input (`-`), a pipe or a device is told
    by its first lines; what detection reads of it is lost here (`open_input` keeps it for the reader)."""
    return open_input(path).format


def _detect(source: str, opened: Path | _Stream) -> str:
    if isinstance(opened, _Stream):
        return _format_of_lines(opened)
    if _is_text_folder(opened):
        return "brat"
    if opened.is_dir() and not _is_datasets_folder(opened):
        raise FileNotFoundError(_not_an_input_folder(opened))
    name = detect_format(split_source(source)[0])
    if name in ("hf", "jsonl", "label-studio"):
        return name
    return _format_of_lines(opened)


def _format_of_lines(opened: Path | _Stream) -> str:
    sample = list(islice((line for _, line in _lines(opened, keep=True) if line.strip()), 50))
    tagged = [line for line in sample if line.split()[0] == "-DOCSTART-" or _is_tagged(line)]
    return "conll" if sample and len(tagged) == len(sample) else "text"


def _is_datasets_folder(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _DATASETS_MARKERS)


def _is_text_folder(path: Path) -> bool:
    return path.is_dir() and not _is_datasets_folder(path) and next(path.rglob(f"*{TEXT_SUFFIX}"), None) is not None


def _not_an_input_folder(path: Path) -> str:
    return (
        f"{path} is a folder without {TEXT_SUFFIX} documents (BRAT texts), nor a datasets folder (one holding "
        f"{' or '.join(_DATASETS_MARKERS)}); give a text, JSON Lines or CoNLL file, a folder of {TEXT_SUFFIX} files, "
        "a datasets folder, or - for standard input"
    )


def _is_tagged(line: str) -> bool:
    columns = line.split()
    return len(columns) >= 2 and bool(_TAG.match(columns[-1]))


def read_documents(source: str, data_format: str = "auto", skip_bad_lines: bool = False) -> Iterator[Document]:
    """The documents of `source` in `data_format` ("auto": `detect_input_format`), lazily."""
    return open_input(source, data_format).documents(skip_bad_lines)


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------


def word_entities(document: Document, entities: Sequence[Mapping]) -> list[dict]:
    """The pipeline's character-offset entities as `predict`'s word-offset ones (`type`, `start`, `end`, `text`,
    `score`, and `fragments` for a discontinuous one), over the document's words; the inverse of
    `text_utils.character_entity`."""
    text, spans = document.as_text()
    starts, ends = [start for start, _ in spans], [end for _, end in spans]
    words = document.words if document.words is not None else [text[start:end] for start, end in spans]

    def word_span(start: int, end: int) -> tuple[int, int]:
        return bisect_right(starts, start) - 1, bisect_left(ends, end) + 1

    converted = []
    for entity in entities:
        fragments = [word_span(f["start"], f["end"]) for f in entity.get("fragments") or [entity]]
        converted.append(
            {
                "type": entity["entity_group"],
                "start": fragments[0][0],
                "end": fragments[-1][1],
                "text": FRAGMENT_SEPARATOR.join(" ".join(words[first:end]) for first, end in fragments),
                "score": entity["score"],
            }
        )
        if len(fragments) > 1:
            converted[-1]["fragments"] = [list(fragment) for fragment in fragments]
    return converted


def write_jsonl(document: Document, entities: Sequence[Mapping]) -> str:
    """Text input: `{..., "text", "entities"}` with the pipeline's character offsets. Word input: `{..., "tokens",
    "entities"}` with word offsets (`lightner.data`'s JSON Lines, readable back). Predictions replace any input
    `entities` field."""
    if document.words is not None:
        record = {**document.fields, "tokens": document.words, "entities": word_entities(document, entities)}
    else:
        record = {**document.fields, "text": document.text, "entities": list(entities)}
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_conll(document: Document, entities: Sequence[Mapping]) -> str:
    """`word<TAB>tag` lines in IOB2 and a blank line (text input is split into words as the pipeline splits it).

    BIO tags cannot hold overlapping or discontinuous entities: of an overlap the higher-scoring entity is kept, a
    discontinuous entity is left out, and either is logged with the document's line (JSON Lines and BRAT keep all)."""
    text, spans = document.as_text()
    words = document.words if document.words is not None else [text[start:end] for start, end in spans]
    kept: list[Span] = []
    converted = word_entities(document, entities)
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


def write_spacy(document: Document, entities: Sequence[Mapping]) -> str:
    """spaCy's `{"text", "ents": [{"start", "end", "label"}]}` with character offsets (word input: the words joined
    by spaces), one per line: each line is what `displacy.render(..., style="ent", manual=True)` takes. A
    discontinuous entity is drawn as the one span around its fragments, since displaCy has no fragments."""
    text, _ = document.as_text()
    ents = [{"start": e["start"], "end": e["end"], "label": e["entity_group"]} for e in entities]
    return json.dumps({"text": text, "ents": ents}, ensure_ascii=False) + "\n"


def write_brat_files(document: Document, entities: Sequence[Mapping]) -> dict[str, str]:
    """BRAT standoff: the document's text (`.txt`; word input: the words joined by spaces) and its entities
    (`.ann`): a `T` line each, a discontinuous one with all its fragments (`T1<TAB>ADR 10 16;27 31<TAB>muscle pain`),
    and its score as an `AnnotatorNotes` line."""
    text, _ = document.as_text()
    annotated = (
        (
            entity["entity_group"],
            [(f["start"], f["end"]) for f in entity.get("fragments") or [entity]],
            entity["score"],
        )
        for entity in entities
    )
    return {TEXT_SUFFIX: text, ANN_SUFFIX: annotation_file(annotated, text)}


@dataclass(frozen=True)
class OutputFormat:
    """An output format: `write(document, entities)` is the text of one document (the pipeline's entities) in the
    output file, or, for a `folder` format, the document's files as `{suffix: text}`."""

    name: str
    description: str
    write: Callable[[Document, Sequence[Mapping]], str | dict[str, str]]
    folder: bool = False
    # Turns the finished file into its final form (Label Studio's JSON list); such a format cannot go to a stream.
    finish: Callable[[Path], None] | None = None


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    spec.name: spec
    for spec in (
        OutputFormat("jsonl", "JSON Lines: character offsets for text, word offsets for words", write_jsonl),
        OutputFormat("conll", "CoNLL: word<TAB>IOB2 tag, a blank line after each document", write_conll),
        OutputFormat("spacy", 'spaCy/displaCy JSON Lines: {"text", "ents": [{"start", "end", "label"}]}', write_spacy),
        OutputFormat(
            "brat",
            "BRAT standoff, --output a folder: NAME.txt and NAME.ann per document (NAME: a BRAT input's file name, a "
            "JSON Lines `id`, else doc-LINE), discontinuous entities with all their fragments",
            write_brat_files,
            folder=True,
        ),
        OutputFormat(
            "label-studio",
            "Label Studio tasks with predictions (a JSON list to import; a region per entity with its score, a task "
            "score)",
            lambda document, entities: _label_studio().task_line(document, entities),
            finish=lambda path: _label_studio().finish_task_file(path),
        ),
    )
}


def _label_studio():
    from . import label_studio  # it builds on this module

    return label_studio


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """How far a run got (`<output>.progress`): input documents done, the output bytes they produced, what the run had
    read of its input (`InputFingerprint.record`) and the options that shaped the output (`PredictionRun.options`),
    for `--resume` to check against its own."""

    documents: int = 0
    output_bytes: int = 0
    input: dict[str, Any] | None = None
    options: dict[str, Any] | None = None

    @staticmethod
    def path(output: Path) -> Path:
        """Beside the output's real file, so that an output named through a link (`/dev/stdout` redirected to a
        file) gets its progress file where it can be written."""
        output = Path(os.path.realpath(output))
        return output.with_name(output.name + PROGRESS_SUFFIX)

    @classmethod
    def temporary_path(cls, output: Path) -> Path:
        return cls.path(output).with_suffix(".tmp")

    @classmethod
    def read(cls, output: Path) -> Progress:
        path = cls.path(output)
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist, so there is no interrupted run to continue")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (TypeError, ValueError) as error:  # not JSON, not UTF-8, or other fields
            raise ValueError(
                f"--resume: {path} is not a progress file of lightner predict ({error}); start again without --resume"
            ) from None

    def write(self, output: Path) -> None:
        """Replace the progress file at once (a kill never leaves half of it)."""
        temporary = self.temporary_path(output)
        temporary.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(temporary, self.path(output))


@dataclass
class InputFingerprint:
    """What a run has read of its input: the input files' total size and latest modification time as the run began
    (None for a stream or a Hub dataset), and a SHA-256 over the documents read so far, in order, so that `--resume`
    can tell whether the documents it skips are those the interrupted run tagged."""

    size: int | None
    mtime_ns: int | None
    digest: Any = field(default_factory=hashlib.sha256)

    @classmethod
    def of(cls, files: Sequence[Path]) -> InputFingerprint:
        stats = [path.stat() for path in files]
        if not stats:
            return cls(None, None)
        return cls(sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))

    def add(self, document: Document) -> None:
        key = [document.line, document.name, document.text, document.words, document.fields, document.skipped]
        self.digest.update(json.dumps(key, sort_keys=True).encode("ascii") + b"\n")

    def record(self) -> dict[str, Any]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.digest.hexdigest()}


@dataclass
class PredictionRun:
    """One `lightner predict`: what to read, how to tag, what to write. `model` and `quantize` name the adapter that
    tags and how (they are recorded for `--resume`, which refuses another)."""

    source: str
    output: Path
    input_format: str = "auto"
    output_format: str = "jsonl"
    batch_size: int = 32
    num_beams: int | None = None
    min_score: float = 0.0
    resume: bool = False
    skip_bad_lines: bool = False
    show_progress: bool = True
    html: Path | None = None
    model: str | None = None
    quantize: str | None = None

    def options(self, input_format: str) -> dict[str, Any]:
        """The options that shape what is written, by their command-line names, with the input format as detected:
        a resumed run must share them, or it would append output of another kind or other settings to the file.
        `--batch-size` and `--device` are not among them: they move scores in their last digits at most."""
        return {
            "--model": self.model,
            "--quantize": self.quantize,
            "--format": input_format,
            "--output-format": self.output_format,
            "--min-score": self.min_score,
            "--num-beams": self.num_beams,
            "--skip-bad-lines": self.skip_bad_lines,
        }


def run_prediction(run: PredictionRun, pipeline, state=None) -> dict[str, int]:
    """Tag every document of `run.source` with `pipeline` and write them to `run.output` as they come.

    `state` is accelerate's `PartialState` when several processes share the work (None: this process alone). Returns
    counts of documents written, skipped and entities (of this invocation, a resumed one included).
    """
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    main = rank == 0
    if run.output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {run.output_format!r}; expected one of {tuple(OUTPUT_FORMATS)}")
    output_format = OUTPUT_FORMATS[run.output_format]
    source = open_input(run.source, run.input_format)
    if world > 1 and isinstance(source.opened, _Stream):
        raise ValueError(f"--input {run.source} is a stream, which several processes cannot each read; give a file")
    check_paths(run, source)
    resumable = not is_stream(run.output)
    if output_format.folder and not resumable:
        raise ValueError(f"--output-format {output_format.name} writes a folder, not to {run.output}")
    if output_format.finish and not resumable:
        raise ValueError(f"--output-format {output_format.name} writes a file it completes at the end; name a file")
    if run.resume and not resumable:
        raise ValueError(
            f"--resume: {run.output} is standard output, a pipe or a device, where an interrupted run cannot be "
            "continued; write to a file to be able to resume"
        )
    options = run.options(source.format)
    progress = Progress.read(run.output) if run.resume else Progress()
    fingerprint = InputFingerprint.of(source.files())
    documents = source.documents(run.skip_bad_lines)
    if progress.documents:
        skip_done(documents, progress, fingerprint, options, source.source)
    counts = {"documents": 0, "skipped": 0, "entities": 0}
    page: list[tuple[str, list]] = []  # --html only: the page shows every document, so it holds them
    chunk_size = run.batch_size * CHUNK_BATCHES * world
    output = open_output(run.output, output_format, progress) if main else None
    bar = _progress_bar(run, progress.documents) if main and run.show_progress else None
    try:
        while chunk := list(islice(documents, chunk_size)):
            for document in chunk:
                fingerprint.add(document)
            results = _tag_chunk(chunk, rank, world, pipeline, run)
            if world > 1:
                from accelerate.utils import gather_object

                results = _merge(gather_object([results]))
            if main:
                for index, document in enumerate(chunk):
                    entities = results.get(index)
                    if entities is None:  # a bad line, or a document the model cannot take (--skip-bad-lines)
                        counts["skipped"] += 1
                        continue
                    output.add(document, entities)
                    if run.html is not None:
                        page.append((document.as_text()[0], entities))
                    counts["documents"] += 1
                    counts["entities"] += len(entities)
                done, size = progress.documents + len(chunk), output.commit()
                progress = Progress(done, size, fingerprint.record(), options)
                if resumable:
                    progress.write(run.output)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if output is not None:
            output.close()
        if bar is not None:
            bar.close()
    if main:
        if resumable:
            Progress.path(run.output).unlink(missing_ok=True)
        if output_format.finish is not None:
            output_format.finish(run.output)
        if run.html is not None:
            from .render import render_html

            html = render_html([text for text, _ in page], [e for _, e in page])
            if is_stream(run.html):
                with _open_stream_output(run.html) as file:
                    file.write(html)
            else:
                _write_whole(run.html, html)
    return counts


def skip_done(
    documents: Iterator[Document],
    progress: Progress,
    fingerprint: InputFingerprint,
    options: Mapping[str, Any],
    source: str,
) -> None:
    """Read past the documents an interrupted run did (`progress.documents`), adding them to `fingerprint`, and refuse
    to resume, naming what changed, if the run's options differ or those documents are not the ones it tagged."""
    restart = "; run the command as it was, or start again without --resume"
    if progress.options is not None:
        changed = [
            f"{name} (then {progress.options.get(name)!r}, now {value!r})"
            for name, value in options.items()
            if progress.options.get(name) != value
        ]
        if changed:
            raise ValueError(f"--resume: options differ from the interrupted run's: {', '.join(changed)}{restart}")
    read = 0
    for document in islice(documents, progress.documents):
        fingerprint.add(document)
        read += 1
    if read < progress.documents:
        raise ValueError(
            f"--resume: {source} now holds {read} documents, fewer than the {progress.documents} the interrupted run "
            "had done; it was changed since, so start again without --resume"
        )
    if progress.input is None:
        logger.warning("--resume: the progress file, from an earlier lightner, records no fingerprint of the input")
        return
    now, then = fingerprint.record(), progress.input
    changes = [
        f"{name} {show(then.get(key))} -> {show(now[key])}"
        for key, name, show in (("size", "size", _bytes), ("mtime_ns", "modified", _time))
        if then.get(key) != now[key]
    ]
    if then.get("sha256") != now["sha256"]:
        raise ValueError(
            f"--resume: the first {read} documents of {source} are not those the interrupted run tagged "
            f"({', '.join(changes) or 'same size and modification time'}): the input was changed, so start again "
            "without --resume"
        )
    if changes:
        logger.warning(
            f"--resume: {source} changed since the interrupted run ({', '.join(changes)}), but its first {read} "
            "documents, which it had done, are the same: continuing with the rest as it is now"
        )


def _bytes(size: int | None) -> str:
    return "unknown" if size is None else f"{size} bytes"


def _time(nanoseconds: int | None) -> str:
    if nanoseconds is None:
        return "unknown"
    return datetime.fromtimestamp(nanoseconds / 1e9).isoformat(sep=" ", timespec="microseconds")


def check_paths(run: PredictionRun, source: Input) -> None:
    """Refuse, before anything is written, outputs that would overwrite what the run reads or one another:
    `--output`, its progress files and `--html` are compared with every input file and with each other, by resolved
    path and by inode (so that a link is caught too). A folder output may be the BRAT input's own folder, whose
    texts it keeps (`FolderOutput`)."""
    outputs = [("--output", "--output", run.output)]
    if not is_stream(run.output):
        outputs.append(("the progress file of --output", "--output", Progress.path(run.output)))
        outputs.append(("the temporary progress file of --output", "--output", Progress.temporary_path(run.output)))
    if run.html is not None:
        if run.html.is_dir():
            raise ValueError(f"--html {run.html} is a folder; name the HTML file to write")
        outputs.append(("--html", "--html", run.html))
    outputs = [(name, flag, Path(path)) for name, flag, path in outputs if not is_stream(path)]
    inputs: dict[Any, Path] = {}
    for file in source.files():
        inputs[file.resolve()] = inputs[_inode(file)] = file
    for index, (name, flag, path) in enumerate(outputs):
        file = inputs.get(path.resolve()) or inputs.get(_inode(path))
        if file is not None:
            raise ValueError(
                f"{name} ({path}) is the input file {file}: writing it would destroy the documents being read; "
                f"choose another {flag}"
            )
        inode = _inode(path)
        for other, other_flag, other_path in outputs[index + 1 :]:
            if path.resolve() == other_path.resolve() or (inode is not None and inode == _inode(other_path)):
                raise ValueError(f"{name} and {other} are one file, {path}; choose another {other_flag}")


def _inode(path: Path) -> tuple[int, int] | None:
    """The file's device and inode, which two names of one file share; None if it does not exist."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _merge(parts: list[dict[int, list | None]]) -> dict[int, list | None]:
    return {index: entities for part in parts for index, entities in part.items()}


def _tag_chunk(chunk: list[Document], rank: int, world: int, pipeline, run: PredictionRun) -> dict[int, list | None]:
    """Entities of this process's share of `chunk`, by their index in the chunk (None: a document left out).

    The chunk is cut into units of `batch_size` documents, each tagged by one pipeline call, and the units are dealt
    to the processes in turn. A unit's results depend on the unit alone (padding within a batch moves scores in the
    last digits), never on how many processes there are, so N processes write the bytes one process writes.
    """
    kwargs = {"batch_size": run.batch_size, "threshold": run.min_score}
    if run.num_beams is not None:
        kwargs["num_beams"] = run.num_beams
    results = {}
    for unit_start in range(rank * run.batch_size, len(chunk), world * run.batch_size):
        unit = [i for i in range(unit_start, min(unit_start + run.batch_size, len(chunk))) if not chunk[i].skipped]
        results.update(_tag(chunk, [index for index in unit if chunk[index].words is None], pipeline, run, kwargs))
        results.update(_tag(chunk, [index for index in unit if chunk[index].words is not None], pipeline, run, kwargs))
    return results


def _tag(chunk: list[Document], indices: list[int], pipeline, run: PredictionRun, kwargs) -> dict[int, list | None]:
    """One pipeline call over the documents `indices` of `chunk` (all text, or all words). A call that bad input
    fails is made again a document at a time, to name the document at fault by its file and line rather than by its
    place in the batch, or, with `--skip-bad-lines`, to leave it out (None) and tag the others."""
    if not indices:
        return {}
    words = chunk[indices[0]].words is not None
    inputs = [chunk[index].words if words else chunk[index].text for index in indices]
    try:
        return dict(zip(indices, pipeline(inputs, is_split_into_words=words, **kwargs)))
    except (TypeError, ValueError) as error:
        if len(indices) == 1:
            return {indices[0]: _leave_out(chunk[indices[0]], error, run)}
    results = {}
    for index in indices:  # slow path, only on failure: to find the documents at fault
        results.update(_tag(chunk, [index], pipeline, run, kwargs))
    return results


def _leave_out(document: Document, error: Exception, run: PredictionRun) -> None:
    """A document the pipeline refuses: an error naming its file and line, or with `--skip-bad-lines` a warning."""
    source = STDIN_NAME if run.source == STANDARD_STREAM else run.source
    problem = _IN_THE_BATCH.sub("the document", str(error))
    if not run.skip_bad_lines:
        raise DataFormatError(source, document.line, f"{problem} (--skip-bad-lines leaves such documents out)")
    logger.warning(f"{source}:{document.line}: {problem}; document left out (--skip-bad-lines)")


class StreamOutput:
    """One output file, a document after another. `commit` makes what was added durable and returns the file's
    size, which `--resume` truncates the file back to (dropping the part of an unfinished chunk).

    The file is opened without truncation and locked (`_lock`) before anything in it is cut, so that a run refused
    because another is writing it changes nothing. Standard output (`-`), a pipe or a device is written as it comes:
    no lock, no fsync, no size to resume from.
    """

    def __init__(self, path: Path, output_format: OutputFormat, progress: Progress):
        self.write = output_format.write
        self.durable = not is_stream(path)
        if not self.durable:
            self.file = _open_stream_output(path)
            return
        if path.is_dir():
            raise ValueError(f"{path} is a folder; --output-format {output_format.name} writes a file")
        if progress.documents and not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist; start again without --resume")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+", encoding="utf-8", newline="")
        try:
            _lock(self.file.fileno(), path)
            if os.fstat(self.file.fileno()).st_size < progress.output_bytes:
                raise ValueError(
                    f"--resume: {path} is shorter than the {progress.output_bytes} bytes its progress file records; "
                    "it was changed since the run stopped, so start again without --resume"
                )
        except BaseException:
            self.file.close()
            raise
        self.file.truncate(progress.output_bytes)
        self.file.seek(progress.output_bytes)

    def add(self, document: Document, entities: Sequence[Mapping]) -> None:
        self.file.write(self.write(document, entities))

    def commit(self) -> int:
        self.file.flush()
        if not self.durable:
            return 0
        os.fsync(self.file.fileno())
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


def _open_stream_output(path: Path) -> TextIO:
    """Standard output (`-`; what was printed before is flushed first, and it stays open) or a named pipe or device."""
    if str(path) != STANDARD_STREAM:
        return open(path, "w", encoding="utf-8", newline="")
    sys.stdout.flush()
    return open(sys.stdout.fileno(), "w", encoding="utf-8", newline="", closefd=False)


def _lock(descriptor: int, path: Path) -> None:
    """An exclusive lock on an open output, held until it is closed (or the process ends, however it ends): a second
    run writing the same output is refused by name instead of interleaving its writes with the first's. It also
    guards the progress file, which only the run holding the lock writes. (Without `fcntl`, on Windows, there is no
    lock.)"""
    if fcntl is None:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(
            f"{path} is being written by another lightner predict run, which holds its lock; let that run finish, "
            "or choose another --output"
        ) from None


class FolderOutput:
    """A folder of files per document (BRAT's `NAME.txt` and `NAME.ann`). Each file is written whole under a
    temporary name and then renamed, so a killed run leaves every file whole or absent, and `--resume` rewrites the
    documents of the unfinished chunk under the same names.

    Nothing already there is lost: the folder is locked (`_lock`) while the run writes; a new run refuses a folder
    that holds `.ann` files, and a `.txt` that exists (predicting into the BRAT corpus's own folder) is left as it is
    when it holds the document's text and refused otherwise.
    """

    def __init__(self, folder: Path, output_format: OutputFormat, progress: Progress):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; --output-format {output_format.name} writes a folder")
        folder.mkdir(parents=True, exist_ok=True)  # a folder a new run refuses below existed already
        self.descriptor = os.open(folder, os.O_RDONLY) if fcntl is not None else None  # Windows opens no folder
        try:
            if self.descriptor is not None:
                _lock(self.descriptor, folder)
            existing = next(folder.rglob(f"*{ANN_SUFFIX}"), None)
            if progress.documents == 0 and existing is not None:
                raise ValueError(
                    f"{folder} already holds annotations ({existing}) that predictions could overwrite: choose a new "
                    "or empty folder, or pass --resume to continue the run that wrote them"
                )
        except BaseException:
            self.close()
            raise
        self.folder, self.write = folder, output_format.write
        self.lines: dict[str, int] = {}  # name -> input line, to refuse two documents of one name

    def add(self, document: Document, entities: Sequence[Mapping]) -> None:
        name = document_name(document)
        if name in self.lines:
            raise ValueError(
                f"line {document.line}: its document name {name!r} is also that of line {self.lines[name]}, so its "
                "files would replace theirs; give the documents distinct ids"
            )
        self.lines[name] = document.line
        for suffix, content in self.write(document, entities).items():
            path = self.folder / f"{name}{suffix}"
            if suffix == TEXT_SUFFIX and path.is_file():
                if read_utf8(path, keep_bom=True) == content:
                    continue
                raise ValueError(f"{path} exists and holds another text than line {document.line}'s; not replaced")
            _write_whole(path, content)

    def commit(self) -> int:
        return 0

    def close(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


def _write_whole(path: Path, content: str) -> None:
    """Write a file under a temporary name, then rename it: a kill leaves the file whole or as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(content, encoding="utf-8", newline="")
    os.replace(temporary, path)


def open_output(path: Path, output_format: OutputFormat, progress: Progress) -> StreamOutput | FolderOutput:
    """Where a run writes: a file, or a folder for a folder format, continued from `progress`. A new run drops the
    progress file of an earlier one once its output is open and locked (an output refused keeps it)."""
    output = (FolderOutput if output_format.folder else StreamOutput)(path, output_format, progress)
    if progress.documents == 0 and not is_stream(path):
        Progress.path(path).unlink(missing_ok=True)
    return output


def document_name(document: Document) -> str:
    """A document's file name in a folder output: its BRAT input name, else its JSON Lines `id` when that is a plain
    file name, else `doc-` and its input line (a row for `datasets` input)."""
    identifier = document.fields.get("id")
    if document.name is not None:
        return document.name
    if isinstance(identifier, (str, int)) and not isinstance(identifier, bool) and _SAFE_NAME.match(str(identifier)):
        return str(identifier)
    return f"doc-{document.line:08d}"


def _progress_bar(run: PredictionRun, done: int):
    from tqdm.auto import tqdm

    return tqdm(initial=done, unit="doc", desc="Predicting", dynamic_ncols=True)


__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "Document",
    "FolderOutput",
    "InputFormat",
    "OutputFormat",
    "PredictionRun",
    "Progress",
    "StreamOutput",
    "InputFingerprint",
    "Input",
    "STANDARD_STREAM",
    "check_paths",
    "detect_input_format",
    "is_stream",
    "document_name",
    "open_input",
    "open_output",
    "skip_done",
    "read_documents",
    "run_prediction",
    "word_entities",
]
