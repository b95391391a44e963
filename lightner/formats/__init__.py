"""The format wing: every data format as one module holding its readers and writers side by side, and one table.

Each module (`conll`, `jsonl`, `text`, `brat`, `hf`, `spacy`, `label_studio`) ends in a `FORMAT` row (`base.Format`):
how a path is recognised, how labelled sentences are read and written (training, evaluation, `convert_data`), how
`lightner predict` reads documents and writes one document's predictions. `FORMATS` lists the rows in detection
order; the CLI, the converter and training take their choices and help from it. Adding a format is one module plus
one row here.

`detect_format` is the one detector: the first row that accepts a path, by its `matches` for labelled data or by
its `matches_input` for a prediction input (`open_input`), where a folder of `.txt` files is BRAT text and a file
that is neither `.jsonl` nor a `datasets` source is told by its first lines (CoNLL columns, else plain text).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import Sentence
from . import brat, conll, hf, jsonl, label_studio, spacy, text
from .base import (
    LINE_BREAK,
    STANDARD_STREAM,
    STDIN_NAME,
    Document,
    Format,
    FoundEntities,
    ReadOptions,
    Stream,
    WriteOptions,
    is_stream,
    open_source,
    read_utf8,
)
from .brat import read_brat, write_brat
from .conll import read_conll, write_conll
from .hf import (
    data_name,
    from_hf_dataset,
    is_hub_dataset,
    load_hf_dataset,
    read_hf_folder,
    split_source,
    to_hf_dataset,
)
from .jsonl import is_blank, parse_json_line, read_jsonl, write_jsonl
from .text import read_text

# In detection order: the first format whose `matches` accepts a path is that path's format.
FORMATS: dict[str, Format] = {
    row.name: row
    for row in (brat.FORMAT, hf.FORMAT, label_studio.FORMAT, jsonl.FORMAT, conll.FORMAT, text.FORMAT, spacy.FORMAT)
}
LABELLED_FORMATS = tuple(name for name, row in FORMATS.items() if row.labelled and row.read)
INPUT_FORMATS = {name: row for name, row in FORMATS.items() if row.read_documents}
OUTPUT_FORMATS = {name: row for name, row in FORMATS.items() if row.write_document}
DEFAULT_READ_OPTIONS, DEFAULT_WRITE_OPTIONS = ReadOptions(), WriteOptions()


# ---------------------------------------------------------------------------------------------------------------------
# Sentences: training, evaluation, conversion
# ---------------------------------------------------------------------------------------------------------------------


def detect_format(source: str | os.PathLike | Stream, prediction_input: bool = False) -> str:
    """The name of the first format in `FORMATS` that accepts `source`: labelled data (read or written) by the rows'
    `matches`, which the CoNLL row ends by accepting any path; with `prediction_input`, an opened input (a path or a
    `Stream`, which only rows that can read one are asked about) by their `matches_input`, where a folder no row
    accepts is refused."""
    opened = source if isinstance(source, Stream) else Path(source)
    for name, row in FORMATS.items():
        matches = row.matches_input if prediction_input else row.matches
        if matches is not None and (row.streamable or not isinstance(opened, Stream)) and matches(opened):
            return name
    raise FileNotFoundError(_not_an_input_folder(opened))


def _format(name: str) -> Format:
    if name not in LABELLED_FORMATS:
        raise ValueError(f"unknown data format {name!r}; expected one of {LABELLED_FORMATS}")
    return FORMATS[name]


def read_sentences(
    path: str | os.PathLike, data_format: str = "auto", options: ReadOptions = DEFAULT_READ_OPTIONS
) -> list[Sentence]:
    """Labelled sentences of `path` in `data_format` ("auto": `detect_format`)."""
    name = detect_format(path) if data_format == "auto" else data_format
    return _format(name).read(Path(path), options)


def load_sentences(path: str | os.PathLike, options: ReadOptions = DEFAULT_READ_OPTIONS) -> list[Sentence]:
    """Labelled sentences in the format detected from the path (what training and evaluation read)."""
    return read_sentences(path, options=options)


def write_sentences(
    sentences: Sequence[Sentence],
    path: str | os.PathLike,
    data_format: str = "auto",
    options: WriteOptions = DEFAULT_WRITE_OPTIONS,
) -> None:
    """Write `sentences` to `path` in `data_format` ("auto": `detect_format`)."""
    name = detect_format(path) if data_format == "auto" else data_format
    _format(name).write(sentences, Path(path), options)


# ---------------------------------------------------------------------------------------------------------------------
# Documents: `lightner predict`'s input
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Input:
    """What a run reads: `source` as given, its `format` (detected for "auto") and what it is opened as (a path, a
    `Stream`, or the `datasets` source as a string)."""

    source: str
    format: str
    opened: Path | Stream | str

    def documents(self, skip_bad_lines: bool = False) -> Iterator[Document]:
        """The documents, lazily (a stream can be read once)."""
        return INPUT_FORMATS[self.format].read_documents(self.opened, skip_bad_lines)

    def files(self) -> list[Path]:
        """The local files the documents come from: none for a stream or a Hub dataset."""
        if isinstance(self.opened, Stream) or (self.format == "hf" and not Path(self.source).exists()):
            return []
        if self.format == "brat":
            return brat.text_files(self.opened)
        if self.format == "hf":
            return sorted(path for path in Path(self.source).rglob("*") if path.is_file())
        return [self.opened]


def open_input(source: str | os.PathLike, data_format: str = "auto") -> Input:
    """`source` in `data_format` ("auto": detected, see `detect_input_format`), checked to exist."""
    source = str(source)
    opened = open_source(source)
    name = detect_format(opened, prediction_input=True) if data_format == "auto" else data_format
    if name not in INPUT_FORMATS:
        raise ValueError(f"unknown input format {name!r}; expected one of {tuple(INPUT_FORMATS)}")
    if isinstance(opened, Stream):
        if not INPUT_FORMATS[name].streamable:
            raise ValueError(f"--input {source} is a stream, which can hold text, jsonl or conll, not --format {name}")
        return Input(source, name, opened)
    if name == "brat" and opened.is_dir() and not brat.text_files(opened):
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


def _not_an_input_folder(path: Path) -> str:
    return (
        f"{path} is a folder without {brat.TEXT_SUFFIX} documents (BRAT texts), nor a datasets folder (one holding "
        f"{' or '.join(hf.DATASETS_MARKERS)}); give a text, JSON Lines or CoNLL file, a folder of {brat.TEXT_SUFFIX} "
        "files, a datasets folder, or - for standard input"
    )


def read_documents(source: str, data_format: str = "auto", skip_bad_lines: bool = False) -> Iterator[Document]:
    """The documents of `source` in `data_format` ("auto": `detect_input_format`), lazily."""
    return open_input(source, data_format).documents(skip_bad_lines)


__all__ = [
    "FORMATS",
    "INPUT_FORMATS",
    "LABELLED_FORMATS",
    "LINE_BREAK",
    "OUTPUT_FORMATS",
    "STANDARD_STREAM",
    "STDIN_NAME",
    "Document",
    "FoundEntities",
    "Format",
    "Input",
    "ReadOptions",
    "WriteOptions",
    "data_name",
    "detect_format",
    "detect_input_format",
    "from_hf_dataset",
    "is_blank",
    "is_hub_dataset",
    "is_stream",
    "load_hf_dataset",
    "load_sentences",
    "open_input",
    "parse_json_line",
    "read_brat",
    "read_conll",
    "read_documents",
    "read_hf_folder",
    "read_jsonl",
    "read_sentences",
    "read_text",
    "read_utf8",
    "split_source",
    "to_hf_dataset",
    "write_brat",
    "write_conll",
    "write_jsonl",
    "write_sentences",
]
