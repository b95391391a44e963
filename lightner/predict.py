"""Prediction over a corpus (`lightner predict`): documents are read one at a time, tagged by the pipeline a chunk at
a time, and written as they come, so that a corpus of any size needs the memory of one chunk.

Input (`INPUT_FORMATS`): plain text (a document per line, of any length: the pipeline reads long ones in windows),
JSON Lines (a `text` field, or the labelled `tokens` form; other fields are passed through), or words (a CoNLL column
file or a `datasets` source; tags are ignored). Output (`OUTPUT_FORMATS`, one table so that another format is one
more entry): JSON Lines (character offsets for text, word offsets for words), CoNLL BIO, or spaCy's
`{"text", "ents": [{"start", "end", "label"}]}` (what displaCy's manual mode draws).

Resuming: after every chunk the output is flushed and `<output>.progress` records how many input documents are done
and how many output bytes they produced; `--resume` truncates the output to that size and skips that many
documents, so that a killed run, resumed, writes each input exactly once.

Several processes (`accelerate launch --num_processes N -m lightner predict ...`): every process reads the input,
tags its share of each chunk (documents `rank::N`), and the main process gathers the results and writes the chunk in
input order, so the output is the one a single process writes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from .data import DataFormatError, Span, detect_format, load_hf_dataset, split_source, tags_from_spans
from .text_utils import join_words, split_words

logger = logging.getLogger(__name__)

PROGRESS_SUFFIX = ".progress"
# Documents per process and chunk, in batches: enough to keep batches full, little enough to lose on a kill.
CHUNK_BATCHES = 4
_TAG = re.compile(r"^(O|[BIES]-\S+)$")


@dataclass
class Document:
    """One input document: raw `text`, or `words` (word input), with the fields passed through from JSON Lines.

    `line` is where it starts in the input (1-based); `skipped` marks a bad line that `--skip-bad-lines` left out,
    which counts as done for `--resume` but writes nothing.
    """

    line: int
    text: str | None = None
    words: list[str] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def as_text(self) -> tuple[str, list[tuple[int, int]]]:
        """The text the entities' character offsets refer to, and its words' character spans."""
        if self.words is not None:
            return join_words(self.words)
        return self.text, split_words(self.text)


# ---------------------------------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """`(line number, line without its end)` of a UTF-8 file, read lazily; a bad byte is named by its line."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(path, number, f"not valid UTF-8 (byte 0x{raw[error.start]:02x})") from None
            yield number, line.removeprefix("\ufeff" if number == 1 else "").rstrip("\r\n")


def read_text_documents(path: Path, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per line; a blank line is an empty document, so that outputs line up with inputs."""
    for number, line in _lines(path):
        yield Document(number, text=line)


def read_jsonl_documents(path: Path, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per line: `{"text": ...}` (raw text) or `{"tokens": [...]}` (words); other fields pass through."""
    for number, line in _lines(path):
        try:
            yield _jsonl_document(number, line)
        except ValueError as error:
            if not skip_bad_lines:
                raise DataFormatError(path, number, f"{error} (--skip-bad-lines leaves such lines out)") from None
            logger.warning(f"{path}:{number}: {error}; line left out (--skip-bad-lines)")
            yield Document(number, skipped=True)


def _jsonl_document(number: int, line: str) -> Document:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a JSON object ({error.msg})") from None
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


def read_word_documents(path: Path, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per sentence of a CoNLL column file (the word in the first column; tags ignored)."""
    words, first = [], None
    for number, line in _lines(path):
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
    )
}


def detect_input_format(path: str | os.PathLike) -> str:
    """`hf` for a `datasets` source, `jsonl` for .jsonl/.json, else `conll` if its first lines are `word ... TAG`
    columns, else `text`. Only the first 50 non-blank lines are read, so detection costs nothing on a large corpus."""
    name = detect_format(split_source(path)[0])
    if name in ("hf", "jsonl"):
        return name
    sample = list(islice((line for _, line in _lines(Path(path)) if line.strip()), 50))
    tagged = [line for line in sample if line.split()[0] == "-DOCSTART-" or _is_tagged(line)]
    return "conll" if sample and len(tagged) == len(sample) else "text"


def _is_tagged(line: str) -> bool:
    columns = line.split()
    return len(columns) >= 2 and bool(_TAG.match(columns[-1]))


def read_documents(source: str, data_format: str = "auto", skip_bad_lines: bool = False) -> Iterator[Document]:
    """The documents of `source` in `data_format` ("auto": `detect_input_format`), lazily."""
    name = detect_input_format(source) if data_format == "auto" else data_format
    if name not in INPUT_FORMATS:
        raise ValueError(f"unknown input format {name!r}; expected one of {tuple(INPUT_FORMATS)}")
    if name != "hf" and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such file")
    return INPUT_FORMATS[name].read(source if name == "hf" else Path(source), skip_bad_lines)


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------


def word_entities(document: Document, entities: Sequence[Mapping]) -> list[dict]:
    """The pipeline's character-offset entities as `predict`'s word-offset ones (`type`, `start`, `end`, `text`,
    `score`), over the document's words; the inverse of `text_utils.character_entity`."""
    text, spans = document.as_text()
    starts, ends = [start for start, _ in spans], [end for _, end in spans]
    words = document.words if document.words is not None else [text[start:end] for start, end in spans]
    converted = []
    for entity in entities:
        first, last = bisect_right(starts, entity["start"]) - 1, bisect_left(ends, entity["end"])
        converted.append(
            {
                "type": entity["entity_group"],
                "start": first,
                "end": last + 1,
                "text": " ".join(words[first : last + 1]),
                "score": entity["score"],
            }
        )
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
    Overlapping entities cannot be tagged, so the higher-scoring one of an overlap is kept."""
    text, spans = document.as_text()
    words = document.words if document.words is not None else [text[start:end] for start, end in spans]
    kept: list[Span] = []
    for entity in sorted(word_entities(document, entities), key=lambda e: -e["score"]):
        if all(entity["end"] <= span.start or span.end <= entity["start"] for span in kept):
            kept.append(Span(entity["start"], entity["end"], entity["type"]))
    tags = tags_from_spans(kept, len(words), scheme="IOB2")
    return "".join(f"{word}\t{tag}\n" for word, tag in zip(words, tags)) + "\n"


def write_spacy(document: Document, entities: Sequence[Mapping]) -> str:
    """spaCy's `{"text", "ents": [{"start", "end", "label"}]}` with character offsets (word input: the words joined
    by spaces), one per line: each line is what `displacy.render(..., style="ent", manual=True)` takes."""
    text, _ = document.as_text()
    ents = [{"start": e["start"], "end": e["end"], "label": e["entity_group"]} for e in entities]
    return json.dumps({"text": text, "ents": ents}, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class OutputFormat:
    """An output format: `write(document, entities)` is the text of one document (the pipeline's entities)."""

    name: str
    description: str
    write: Callable[[Document, Sequence[Mapping]], str]


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    spec.name: spec
    for spec in (
        OutputFormat("jsonl", "JSON Lines: character offsets for text, word offsets for words", write_jsonl),
        OutputFormat("conll", "CoNLL: word<TAB>IOB2 tag, a blank line after each document", write_conll),
        OutputFormat("spacy", 'spaCy/displaCy JSON Lines: {"text", "ents": [{"start", "end", "label"}]}', write_spacy),
    )
}


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """How far a run got: input documents done, and the output bytes they produced (`<output>.progress`)."""

    documents: int = 0
    output_bytes: int = 0

    @staticmethod
    def path(output: Path) -> Path:
        return output.with_name(output.name + PROGRESS_SUFFIX)

    @classmethod
    def read(cls, output: Path) -> Progress:
        path = cls.path(output)
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist, so there is no interrupted run to continue")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def write(self, output: Path) -> None:
        """Replace the progress file at once (a kill never leaves half of it)."""
        temporary = self.path(output).with_suffix(".tmp")
        temporary.write_text(json.dumps(vars(self)), encoding="utf-8")
        os.replace(temporary, self.path(output))


@dataclass
class PredictionRun:
    """One `lightner predict`: what to read, how to tag, what to write."""

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


def run_prediction(run: PredictionRun, pipeline, state=None) -> dict[str, int]:
    """Tag every document of `run.source` with `pipeline` and write them to `run.output` as they come.

    `state` is accelerate's `PartialState` when several processes share the work (None: this process alone). Returns
    counts of documents written, skipped and entities (of this invocation, a resumed one included).
    """
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    main = rank == 0
    if run.output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {run.output_format!r}; expected one of {tuple(OUTPUT_FORMATS)}")
    progress = Progress.read(run.output) if run.resume else Progress()
    documents = islice(read_documents(run.source, run.input_format, run.skip_bad_lines), progress.documents, None)
    write = OUTPUT_FORMATS[run.output_format].write
    counts = {"documents": 0, "skipped": 0, "entities": 0}
    page: list[tuple[str, list]] = []  # --html only: the page shows every document, so it holds them
    chunk_size = run.batch_size * CHUNK_BATCHES * world
    output = _open_output(run.output, progress) if main else None
    bar = _progress_bar(run, progress.documents) if main and run.show_progress else None
    try:
        while chunk := list(islice(documents, chunk_size)):
            results = _tag_chunk(chunk, rank, world, pipeline, run)
            if world > 1:
                from accelerate.utils import gather_object

                results = _merge(gather_object([results]))
            if main:
                for index, document in enumerate(chunk):
                    if document.skipped:
                        counts["skipped"] += 1
                        continue
                    output.write(write(document, results[index]))
                    if run.html is not None:
                        page.append((document.as_text()[0], results[index]))
                    counts["documents"] += 1
                    counts["entities"] += len(results[index])
                output.flush()
                os.fsync(output.fileno())
                progress = Progress(progress.documents + len(chunk), output.tell())
                progress.write(run.output)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if output is not None:
            output.close()
        if bar is not None:
            bar.close()
    if main:
        Progress.path(run.output).unlink(missing_ok=True)
        if run.html is not None:
            from .render import render_html

            run.html.write_text(render_html([text for text, _ in page], [e for _, e in page]), encoding="utf-8")
    return counts


def _merge(parts: list[dict[int, list]]) -> dict[int, list]:
    return {index: entities for part in parts for index, entities in part.items()}


def _tag_chunk(chunk: list[Document], rank: int, world: int, pipeline, run: PredictionRun) -> dict[int, list]:
    """Entities of this process's share of `chunk`, by their index in the chunk.

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
        texts = [index for index in unit if chunk[index].words is None]
        words = [index for index in unit if chunk[index].words is not None]
        if texts:
            results.update(zip(texts, pipeline([chunk[index].text for index in texts], **kwargs)))
        if words:
            predicted = pipeline([chunk[index].words for index in words], is_split_into_words=True, **kwargs)
            results.update(zip(words, predicted))
    return results


def _open_output(output: Path, progress: Progress) -> TextIO:
    """The output file, truncated to what `progress` records (a resumed run drops the part of an unfinished chunk)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if progress.documents == 0:
        Progress.path(output).unlink(missing_ok=True)
        return output.open("w", encoding="utf-8", newline="")
    if not output.is_file() or output.stat().st_size < progress.output_bytes:
        raise ValueError(
            f"--resume: {output} is shorter than the {progress.output_bytes} bytes its progress file records; it was "
            "changed since the run stopped, so start again without --resume"
        )
    file = output.open("r+", encoding="utf-8", newline="")
    file.truncate(progress.output_bytes)
    file.seek(progress.output_bytes)
    return file


def _progress_bar(run: PredictionRun, done: int):
    from tqdm.auto import tqdm

    return tqdm(initial=done, unit="doc", desc="Predicting", dynamic_ncols=True)


__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "Document",
    "InputFormat",
    "OutputFormat",
    "PredictionRun",
    "Progress",
    "detect_input_format",
    "read_documents",
    "run_prediction",
    "word_entities",
]
