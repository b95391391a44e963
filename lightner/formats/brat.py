"""BRAT standoff annotations: a `.txt` document beside an `.ann` file of character-offset annotations.

The format CADEC, ShARe and most clinical corpora ship in, and the one that can write discontinuous mentions:

    T1<TAB>ADR 10 16;27 31<TAB>muscle pain

is an `ADR` entity of two fragments, characters `[10, 16)` and `[27, 31)` of the `.txt`. Only text-bound (`T`)
lines are entities; notes (`#`), relations (`R`), events (`E`), attributes (`A`, `M`), normalisations (`N`) and
equivalences (`*`) are skipped. Event triggers are `T` lines too and so read as entities (leave them out with
`--types`).

Reading turns a document into `Sentence`s: words as the pipeline splits raw text (`text_utils.split_words`), one
sentence per line (brat's own convention), except that lines an entity spans are one sentence. Every fragment must
start where a word starts and end where a word ends; one that does not (`pain` annotated inside `pains`) is an error
naming the `.ann` file, its line and the entity, or with `skip_misaligned` is left out and counted, since a corpus
tokenised differently from the model would otherwise stop at its first such annotation.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from ..data import DataFormatError, Entity, Sentence, make_span
from .base import Document, Format, FoundEntities, ReadOptions, WriteOptions, read_utf8

logger = logging.getLogger(__name__)

ANN_SUFFIX = ".ann"
TEXT_SUFFIX = ".txt"
# First characters of the standoff lines that are not entities (BRAT's annotation kinds), skipped when reading.
SKIPPED_KINDS = "#RAEMN*"
# An annotation is one line: line breaks and tabs in its quoted text become spaces.
_ONE_LINE = str.maketrans("\r\n\t", "   ")


@dataclass(frozen=True)
class TextBound:
    """One `T` line: its id, type, character fragments `[start, end)` in order, the text it quotes, its line."""

    id: str
    type: str
    fragments: tuple[tuple[int, int], ...]
    text: str | None
    line: int


def parse_ann(path: Path, content: str) -> list[TextBound]:
    """The `T` lines of an `.ann` file's `content`; other annotation kinds and blank lines are skipped, anything
    else raises `DataFormatError` naming the file and line."""
    entities = []
    for number, line in enumerate(content.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line[0] in SKIPPED_KINDS:
            continue
        if line[0] != "T":
            raise DataFormatError(path, number, f"not a BRAT annotation line: {line[:60]!r}")
        entities.append(_parse_text_bound(path, number, line))
    return entities


def _parse_text_bound(path: Path, number: int, line: str) -> TextBound:
    columns = line.split("\t")
    identifier = columns[0]
    if len(columns) < 2 or " " not in columns[1].strip():
        raise DataFormatError(path, number, f"entity {identifier}: expected 'ID<TAB>TYPE START END[;START END...]'")
    entity_type, offsets = columns[1].strip().split(" ", 1)
    fragments = []
    for fragment in offsets.split(";"):
        bounds = fragment.split()
        # ASCII digits only: `str.isdigit` also accepts superscripts ("²"), which `int` refuses.
        digits = all(bound.isascii() and bound.isdigit() for bound in bounds)
        if len(bounds) != 2 or not digits or int(bounds[0]) >= int(bounds[1]):
            raise DataFormatError(
                path, number, f"entity {identifier} ({entity_type}): offsets {fragment.strip()!r} are not 'START END' "
                "with START < END",
            )  # fmt: skip
        fragments.append((int(bounds[0]), int(bounds[1])))
    text = columns[2] if len(columns) > 2 else None
    return TextBound(identifier, entity_type, tuple(fragments), text, number)


def read_brat(path: str | PathLike, *, skip_misaligned: bool = False) -> list[Sentence]:
    """Sentences of a BRAT corpus: a folder (searched recursively) of `.ann` files each with its `.txt` beside it, or
    one `.ann` file. Documents are read in path order; a `.txt` without an `.ann` is not read.

    Raises `DataFormatError` naming the file, line and entity for: an `.ann` without its `.txt`, a line that is not
    BRAT, offsets past the end of the text, fragments out of order or overlapping, and (unless `skip_misaligned`) a
    fragment that does not start and end on word boundaries or whose quoted text is not the text at its offsets.
    Skipped annotations are logged with their count and the first of them.
    """
    path = Path(path)
    if path.is_dir():
        annotation_files = sorted(path.rglob(f"*{ANN_SUFFIX}"))
        if not annotation_files:
            raise DataFormatError(path, None, f"no {ANN_SUFFIX} files in this folder")
    else:
        annotation_files = [path]
    sentences: list[Sentence] = []
    skipped: list[DataFormatError] = []
    for ann_path in annotation_files:
        sentences.extend(read_brat_document(ann_path, skip_misaligned=skip_misaligned, skipped=skipped))
    if skipped:
        logger.warning("skipped %d misaligned BRAT annotations; the first: %s", len(skipped), skipped[0])
    return sentences


def read_brat_document(
    ann_path: Path, *, skip_misaligned: bool = False, skipped: list[DataFormatError] | None = None
) -> list[Sentence]:
    """The sentences of one document (see `read_brat`); each misaligned annotation skipped is appended to
    `skipped`."""
    from ..text_utils import split_words  # lazily: the format table imports no torch

    text_path = ann_path.with_suffix(TEXT_SUFFIX)
    if not ann_path.is_file():
        raise DataFormatError(ann_path, None, "no such annotation file")
    if not text_path.is_file():
        raise DataFormatError(ann_path, None, f"its text {text_path.name} is missing (BRAT keeps it beside the .ann)")
    text = read_utf8(text_path, keep_bom=True)  # BRAT counts a byte-order mark in its offsets
    spans = split_words(text)
    entities = []  # (first word, last word, entity with document word offsets)
    for bound in parse_ann(ann_path, read_utf8(ann_path)):
        try:
            entities.append(_word_entity(ann_path, bound, text, spans))
        except _Misaligned as error:
            if not skip_misaligned:
                raise error.error from None
            if skipped is not None:
                skipped.append(error.error)
    return _sentences(text, spans, entities, str(text_path))


class _Misaligned(Exception):
    """An annotation that does not fit the words: an error, or skipped with `skip_misaligned`."""

    def __init__(self, error: DataFormatError):
        super().__init__(str(error))
        self.error = error


def _word_entity(ann_path: Path, bound: TextBound, text: str, spans: Sequence[tuple[int, int]]) -> Entity:
    """`bound` in document word offsets; offsets past the text and bad fragment lists always raise."""
    from ..tokenization_utils import FRAGMENT_SEPARATOR  # lazily: the format table imports no torch

    where = f"entity {bound.id} ({bound.type} {';'.join(f'{s} {e}' for s, e in bound.fragments)})"
    if any(end > len(text) for _, end in bound.fragments):
        raise DataFormatError(ann_path, bound.line, f"{where}: offsets past the end of the text ({len(text)} chars)")
    quoted = FRAGMENT_SEPARATOR.join(text[start:end] for start, end in bound.fragments)
    if bound.text is not None and bound.text.split() != quoted.split():
        raise _Misaligned(
            DataFormatError(ann_path, bound.line, f"{where}: quotes {bound.text!r}, but its offsets hold {quoted!r}")
        )
    starts, ends = [start for start, _ in spans], [end for _, end in spans]
    fragments = []
    for start, end in bound.fragments:
        first, last = bisect.bisect_left(starts, start), bisect.bisect_left(ends, end)
        if first == len(starts) or starts[first] != start or last == len(ends) or ends[last] != end:
            words = [text[s:e] for s, e in spans if s < end and e > start]
            raise _Misaligned(
                DataFormatError(
                    ann_path,
                    bound.line,
                    f"{where}: {text[start:end]!r} does not start and end on word boundaries "
                    f"(the words there are {words}); fix the offsets or pass --skip-misaligned",
                )  # fmt: skip
            )
        fragments.append((first, last + 1))
    try:
        return make_span(fragments, bound.type)
    except ValueError as error:
        raise DataFormatError(ann_path, bound.line, f"{where}: {error}") from None


def _sentences(text: str, spans: Sequence[tuple[int, int]], entities: Sequence[Entity], source: str) -> list[Sentence]:
    """One sentence per line, lines an entity spans joined; entities move to sentence word offsets."""
    starts = {0} | {i for i in range(1, len(spans)) if "\n" in text[spans[i - 1][1] : spans[i][0]]}
    for entity in entities:
        starts -= set(range(entity.start + 1, entity.end))
    bounds = sorted(starts) + [len(spans)]
    sentences = []
    by_start = sorted(entities, key=lambda entity: entity.start)
    cursor = 0
    for first, end in zip(bounds, bounds[1:]):
        own = []
        while cursor < len(by_start) and by_start[cursor].start < end:
            entity = by_start[cursor]
            own.append(make_span([(s - first, e - first) for s, e in entity.fragments], entity.type))
            cursor += 1
        words = [text[s:e] for s, e in spans[first:end]]
        sentences.append(Sentence(words, own, line=text.count("\n", 0, spans[first][0]) + 1, source=source))
    return sentences


def annotation_file(entities: Iterable[tuple[str, Sequence[tuple[int, int]], float | None]], text: str) -> str:
    """The content of an `.ann` file for `text`: per entity `(type, character fragments, score or None)` a line
    `T{n}<TAB>TYPE 10 16;27 31<TAB>quoted text`, and for a scored one an `AnnotatorNotes` line `score 0.9731` (which
    `read_brat` skips). The quote is the fragments' texts joined by `FRAGMENT_SEPARATOR`, as BRAT joins them, with
    line breaks and tabs as spaces, since an annotation is one line of three tab-separated fields (`read_brat`
    compares quotes word by word)."""
    from ..tokenization_utils import FRAGMENT_SEPARATOR  # lazily: the format table imports no torch

    lines = []
    for number, (entity_type, fragments, score) in enumerate(entities, start=1):
        offsets = ";".join(f"{start} {end}" for start, end in fragments)
        quoted = FRAGMENT_SEPARATOR.join(text[start:end] for start, end in fragments)
        lines.append(f"T{number}\t{entity_type} {offsets}\t{quoted.translate(_ONE_LINE)}\n")
        if score is not None:
            lines.append(f"#{number}\tAnnotatorNotes T{number}\tscore {score:.4f}\n")
    return "".join(lines)


def write_brat(
    sentences: Sequence[Sentence], path: str | PathLike, scores: Sequence[Mapping[Entity, float]] | None = None
) -> Path:
    """Write `sentences` as one BRAT document: `path` (an `.ann` file, its `.txt` beside it) or, for a path without
    that suffix, the folder `path` holding `<folder name>.txt` and `.ann`. Returns the `.ann` path.

    The text has one sentence per line, words joined by single spaces, so `read_brat` reads the same sentences back;
    a sentence whose words would not read back as they are (a word holding a space, or one `split_words` cuts in two,
    like `Paris.`) raises `ValueError` naming it, before anything is written. With `scores` (per sentence, a score
    for each of its entities), each entity gets an `AnnotatorNotes` line `score 0.9731`, which `read_brat` skips.
    """
    from ..text_utils import join_words, split_words  # lazily: the format table imports no torch

    path = Path(path)
    if path.suffix != ANN_SUFFIX:
        path = path / f"{path.name}{ANN_SUFFIX}"
    lines, placed, offset = [], [], 0  # placed: (sentence index, entity, its character fragments)
    for index, sentence in enumerate(sentences):
        line, spans = join_words(sentence.words)
        if split_words(line) != spans:
            raise ValueError(
                f"sentence {index + 1}: its words {sentence.words} would not read back from BRAT text as the same "
                "words (BRAT text is split into words as raw text is)"
            )
        for entity in sentence.entities:
            placed.append(
                (index, entity, [(offset + spans[s][0], offset + spans[e - 1][1]) for s, e in entity.fragments])
            )
        lines.append(line + "\n")
        offset += len(line) + 1
    text = "".join(lines)
    annotations = annotation_file(
        (
            (entity.type, fragments, None if scores is None else scores[index][entity])
            for index, entity, fragments in placed
        ),
        text,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(TEXT_SUFFIX).write_text(text, encoding="utf-8", newline="")
    path.write_text(annotations, encoding="utf-8", newline="")
    return path


def read_documents(path: Path, skip_bad_lines: bool) -> Iterator[Document]:
    """A document per `.txt` file of a BRAT folder (searched recursively, in path order; `.ann` files there are not
    read), named by its path in the folder, so that `--output-format brat` writes each `.ann` under the same name. A
    single `.txt` file is one document. A byte-order mark stays in the text, since BRAT counts it in offsets."""
    for file in text_files(path):
        name = file.relative_to(path).with_suffix("").as_posix() if path.is_dir() else file.stem
        yield Document(1, text=read_utf8(file, keep_bom=True), name=name)


def text_files(path: Path) -> list[Path]:
    return sorted(path.rglob(f"*{TEXT_SUFFIX}")) if path.is_dir() else [path]


def write_document(document: Document, found: FoundEntities) -> dict[str, str]:
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
        for entity in found.characters()
    )
    return {TEXT_SUFFIX: text, ANN_SUFFIX: annotation_file(annotated, text)}


def matches(path: Path) -> bool:
    """An `.ann` file, or a folder holding one."""
    return path.suffix.lower() == ANN_SUFFIX or (
        path.is_dir() and next(path.rglob(f"*{ANN_SUFFIX}"), None) is not None
    )


def is_text_folder(path: Path) -> bool:
    """A folder of `.txt` documents that is not a `datasets` folder: `lightner predict`'s BRAT input."""
    from .hf import is_datasets_folder

    return path.is_dir() and not is_datasets_folder(path) and next(path.rglob(f"*{TEXT_SUFFIX}"), None) is not None


def _read(path: Path, options: ReadOptions) -> list[Sentence]:
    return read_brat(path, skip_misaligned=options.skip_misaligned)


def _write(sentences: Sequence[Sentence], path: Path, options: WriteOptions) -> None:
    write_brat(sentences, path)


FORMAT = Format(
    "brat",
    "BRAT standoff: a folder of .ann files with their .txt beside them, or one .ann file (detected by that)",
    matches=matches,
    matches_input=lambda opened: isinstance(opened, Path) and is_text_folder(opened),
    read=_read,
    write=_write,
    read_documents=read_documents,
    input_description="a folder of BRAT .txt documents, each a document of any length",
    streamable=False,
    write_document=write_document,
    output_description="BRAT standoff, --output a folder: NAME.txt and NAME.ann per document (NAME: a BRAT input's "
    "file name, a JSON Lines `id`, else doc-LINE), discontinuous entities with all their fragments",
    folder_output=True,
)
