"""Plain text, a sentence (or `lightner predict` document) per line; unlabelled, so prediction input only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

from ..data import Sentence
from .base import LINE_BREAK, Document, Format, Stream, is_file_input, lines, read_utf8


def read_text(path: str | PathLike) -> list[Sentence]:
    """Unlabelled sentences of a plain-text file, one per line (lines end as `LINE_BREAK` says), split into words as
    the pipeline splits raw text (`text_utils.split_words`: punctuation apart, as in CoNLL data), so that a model
    trained on CoNLL words sees `Paris .` rather than `Paris.`. A blank line is an empty sentence, kept so that
    outputs line up with inputs."""
    from ..text_utils import split_words  # lazily: the format table imports no torch

    path = Path(path)
    lines = re.split(LINE_BREAK, read_utf8(path))
    if lines and lines[-1] == "":
        lines.pop()
    return [
        Sentence([text[start:end] for start, end in split_words(text)], line=number)
        for number, text in enumerate(lines, start=1)
    ]


def read_documents(path: Path | Stream, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per line; a blank line is an empty document, so that outputs line up with inputs."""
    for number, line in lines(path):
        yield Document(number, text=line)


FORMAT = Format(
    "text",
    "plain text, one sentence per line (prediction input only; chosen when a file is not a CoNLL file)",
    labelled=False,
    matches_input=is_file_input,
    read=lambda path, o: read_text(path),
    read_documents=read_documents,
    input_description="plain text, a document per line (any length)",
)
