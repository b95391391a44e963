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
from typing import Any

from .brat import ANN_SUFFIX, TEXT_SUFFIX, annotation_file
from .data import DataFormatError, Span, detect_format, load_hf_dataset, read_utf8, split_source, tags_from_spans
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


def read_brat_documents(path: Path, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per `.txt` file of a BRAT folder (searched recursively, in path order; `.ann` files there are not
    read), named by its path in the folder, so that `--output-format brat` writes each `.ann` under the same name. A
    single `.txt` file is one document."""
    files = sorted(path.rglob(f"*{TEXT_SUFFIX}")) if path.is_dir() else [path]
    for file in files:
        name = file.relative_to(path).with_suffix("").as_posix() if path.is_dir() else file.stem
        yield Document(1, text=read_utf8(file), name=name)


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
    )
}


def detect_input_format(path: str | os.PathLike) -> str:
    """`brat` for a folder of `.txt` files that is not a `datasets` folder, `hf` for a `datasets` source, `jsonl` for
    .jsonl/.json, else `conll` if its first lines are `word ... TAG` columns, else `text`. Only the first 50 non-blank
    lines are read, so detection costs nothing on a large corpus."""
    if _is_text_folder(Path(path)):
        return "brat"
    name = detect_format(split_source(path)[0])
    if name in ("hf", "jsonl"):
        return name
    sample = list(islice((line for _, line in _lines(Path(path)) if line.strip()), 50))
    tagged = [line for line in sample if line.split()[0] == "-DOCSTART-" or _is_tagged(line)]
    return "conll" if sample and len(tagged) == len(sample) else "text"


def _is_text_folder(path: Path) -> bool:
    datasets_folder = any((path / marker).is_file() for marker in _DATASETS_MARKERS)
    return path.is_dir() and not datasets_folder and next(path.rglob(f"*{TEXT_SUFFIX}"), None) is not None


def _is_tagged(line: str) -> bool:
    columns = line.split()
    return len(columns) >= 2 and bool(_TAG.match(columns[-1]))


def read_documents(source: str, data_format: str = "auto", skip_bad_lines: bool = False) -> Iterator[Document]:
    """The documents of `source` in `data_format` ("auto": `detect_input_format`), lazily."""
    name = detect_input_format(source) if data_format == "auto" else data_format
    if name not in INPUT_FORMATS:
        raise ValueError(f"unknown input format {name!r}; expected one of {tuple(INPUT_FORMATS)}")
    found = Path(source).exists() if name == "brat" else Path(source).is_file()  # brat: a folder or one .txt
    if name != "hf" and not found:
        raise FileNotFoundError(f"{source}: no such file")
    return INPUT_FORMATS[name].read(source if name == "hf" else Path(source), skip_bad_lines)


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
    counts = {"documents": 0, "skipped": 0, "entities": 0}
    page: list[tuple[str, list]] = []  # --html only: the page shows every document, so it holds them
    chunk_size = run.batch_size * CHUNK_BATCHES * world
    output = open_output(run.output, OUTPUT_FORMATS[run.output_format], progress) if main else None
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
                    output.add(document, results[index])
                    if run.html is not None:
                        page.append((document.as_text()[0], results[index]))
                    counts["documents"] += 1
                    counts["entities"] += len(results[index])
                progress = Progress(progress.documents + len(chunk), output.commit())
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


class StreamOutput:
    """One output file, a document after another. `commit` makes what was added durable and returns the file's
    size, which `--resume` truncates the file back to (dropping the part of an unfinished chunk)."""

    def __init__(self, path: Path, output_format: OutputFormat, progress: Progress):
        self.write = output_format.write
        path.parent.mkdir(parents=True, exist_ok=True)
        if progress.documents == 0:
            self.file = path.open("w", encoding="utf-8", newline="")
            return
        if not path.is_file() or path.stat().st_size < progress.output_bytes:
            raise ValueError(
                f"--resume: {path} is shorter than the {progress.output_bytes} bytes its progress file records; it "
                "was changed since the run stopped, so start again without --resume"
            )
        self.file = path.open("r+", encoding="utf-8", newline="")
        self.file.truncate(progress.output_bytes)
        self.file.seek(progress.output_bytes)

    def add(self, document: Document, entities: Sequence[Mapping]) -> None:
        self.file.write(self.write(document, entities))

    def commit(self) -> int:
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


class FolderOutput:
    """A folder of files per document (BRAT's `NAME.txt` and `NAME.ann`). Each file is written whole under a
    temporary name and then renamed, so a killed run leaves every file whole or absent, and `--resume` rewrites the
    documents of the unfinished chunk under the same names.

    Nothing already there is lost: a new run refuses a folder that holds `.ann` files, and a `.txt` that exists
    (predicting into the BRAT corpus's own folder) is left as it is when it holds the document's text and refused
    otherwise.
    """

    def __init__(self, folder: Path, output_format: OutputFormat, progress: Progress):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; --output-format {output_format.name} writes a folder")
        existing = next(folder.rglob(f"*{ANN_SUFFIX}"), None) if folder.is_dir() else None
        if progress.documents == 0 and existing is not None:
            raise ValueError(
                f"{folder} already holds annotations ({existing}) that predictions could overwrite: choose a new or "
                "empty folder, or pass --resume to continue the run that wrote them"
            )
        folder.mkdir(parents=True, exist_ok=True)
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
                if read_utf8(path) == content:
                    continue
                raise ValueError(f"{path} exists and holds another text than line {document.line}'s; not replaced")
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(content, encoding="utf-8", newline="")
            os.replace(temporary, path)

    def commit(self) -> int:
        return 0

    def close(self) -> None:
        pass


def open_output(path: Path, output_format: OutputFormat, progress: Progress) -> StreamOutput | FolderOutput:
    """Where a run writes: a file, or a folder for a folder format, continued from `progress`. A new run drops the
    progress file of an earlier one once its output is open (an output refused keeps it)."""
    output = (FolderOutput if output_format.folder else StreamOutput)(path, output_format, progress)
    if progress.documents == 0:
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
    "detect_input_format",
    "document_name",
    "open_output",
    "read_documents",
    "run_prediction",
    "word_entities",
]
