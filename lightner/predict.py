"""Prediction over a corpus (`lightner predict`): documents are read one at a time, tagged by the pipeline a chunk at
a time (`LightNerPipeline.predict_words`: entities at the word level, characters computed only where an output format
asks for them), and written as they come, so that a corpus of any size needs the memory of one chunk.

Input and output formats are `lightner.formats`' rows (`INPUT_FORMATS`: a row's `read_documents`; `OUTPUT_FORMATS`:
its `write_document`): plain text (a document per line, of any length: the pipeline reads long ones in windows), JSON
Lines, words (a CoNLL column file or a `datasets` source; tags are ignored) or BRAT texts in; JSON Lines, CoNLL BIO,
spaCy's `{"text", "ents": [...]}` or BRAT out. This module reads, tags and writes; it knows no format.

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
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked
    fcntl = None

from .data import DataFormatError
from .formats import OUTPUT_FORMATS, Document, Format, FoundEntities, Input, open_input
from .formats.base import STANDARD_STREAM, STDIN_NAME, Stream, is_stream, read_utf8
from .formats.brat import ANN_SUFFIX, TEXT_SUFFIX

logger = logging.getLogger(__name__)

PROGRESS_SUFFIX = ".progress"
# Documents per process and chunk, in batches: enough to keep batches full, little enough to lose on a kill.
CHUNK_BATCHES = 4
# A JSON Lines `id` used as a BRAT output name: a plain file name, never a path.
_SAFE_NAME = re.compile(r"^\w[\w.-]*$")
# How the pipeline names a document by its place in the batch, which `_tag` replaces by the file and line.
_IN_THE_BATCH = re.compile(r"\b(sentence|input) 0\b")


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
    if world > 1 and isinstance(source.opened, Stream):
        raise ValueError(f"--input {run.source} is a stream, which several processes cannot each read; give a file")
    check_paths(run, source)
    resumable = not is_stream(run.output)
    if output_format.folder_output and not resumable:
        raise ValueError(f"--output-format {output_format.name} writes a folder, not to {run.output}")
    if output_format.finish_output and not resumable:
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
                    found = results.get(index)
                    if found is None:  # a bad line, or a document the model cannot take (--skip-bad-lines)
                        counts["skipped"] += 1
                        continue
                    output.add(document, found)
                    if run.html is not None:
                        page.append((document.as_text()[0], found.characters()))
                    counts["documents"] += 1
                    counts["entities"] += len(found.entities)
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
        if output_format.finish_output is not None:
            output_format.finish_output(run.output)
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


def _merge(parts: list[dict[int, FoundEntities | None]]) -> dict[int, FoundEntities | None]:
    return {index: entities for part in parts for index, entities in part.items()}


def _tag_chunk(
    chunk: list[Document], rank: int, world: int, pipeline, run: PredictionRun
) -> dict[int, FoundEntities | None]:
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


def _tag(
    chunk: list[Document], indices: list[int], pipeline, run: PredictionRun, kwargs
) -> dict[int, FoundEntities | None]:
    """One pipeline call over the documents `indices` of `chunk` (all text, or all words). A call that bad input
    fails is made again a document at a time, to name the document at fault by its file and line rather than by its
    place in the batch, or, with `--skip-bad-lines`, to leave it out (None) and tag the others."""
    if not indices:
        return {}
    words = chunk[indices[0]].words is not None
    inputs = [chunk[index].words if words else chunk[index].text for index in indices]
    try:
        return dict(zip(indices, pipeline.predict_words(inputs, is_split_into_words=words, **kwargs)))
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

    def __init__(self, path: Path, output_format: Format, progress: Progress):
        self.write = output_format.write_document
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

    def add(self, document: Document, found: FoundEntities) -> None:
        self.file.write(self.write(document, found))

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

    def __init__(self, folder: Path, output_format: Format, progress: Progress):
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
        self.folder, self.write = folder, output_format.write_document
        self.lines: dict[str, int] = {}  # name -> input line, to refuse two documents of one name

    def add(self, document: Document, found: FoundEntities) -> None:
        name = document_name(document)
        if name in self.lines:
            raise ValueError(
                f"line {document.line}: its document name {name!r} is also that of line {self.lines[name]}, so its "
                "files would replace theirs; give the documents distinct ids"
            )
        self.lines[name] = document.line
        for suffix, content in self.write(document, found).items():
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


def open_output(path: Path, output_format: Format, progress: Progress) -> StreamOutput | FolderOutput:
    """Where a run writes: a file, or a folder for a folder format, continued from `progress`. A new run drops the
    progress file of an earlier one once its output is open and locked (an output refused keeps it)."""
    output = (FolderOutput if output_format.folder_output else StreamOutput)(path, output_format, progress)
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
    "OUTPUT_FORMATS",
    "FolderOutput",
    "PredictionRun",
    "Progress",
    "StreamOutput",
    "InputFingerprint",
    "STANDARD_STREAM",
    "check_paths",
    "document_name",
    "open_output",
    "skip_done",
    "run_prediction",
]
