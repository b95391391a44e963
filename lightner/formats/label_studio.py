"""Label Studio's JSON, both ways: an export of annotated tasks read as training sentences, and predictions written as
tasks Label Studio imports with pre-annotations.

A Label Studio NER project labels a text with `<Labels>` over a `<Text>`; its JSON export is a list of tasks:

    [{"id": 7, "data": {"text": "cheap sushi near downtown"},
      "annotations": [{"id": 3, "was_cancelled": false, "result": [
          {"from_name": "label", "to_name": "text", "type": "labels",
           "value": {"start": 6, "end": 11, "text": "sushi", "labels": ["Cuisine"]}}]}]}]

Offsets are characters of the task's text, end exclusive. Reading turns a task into one `Sentence`: its text split
into words as the pipeline splits raw text (`text_utils.split_words`), each region onto the words it covers. Strict,
as the other readers are, since a silently moved entity shows up later as an unexplained F1 drop: a region that
starts or ends inside a word, whose quoted `text` is not the text at its offsets, or that overlaps another is a
`DataFormatError` naming the file and the task id. Whitespace at a region's edges (a selection that took the space
after a word) is trimmed, not refused. Which annotation counts: the last one not cancelled (Label Studio keeps every
annotator's); a task without one is unlabelled and left out (counted in a warning), since reading it as a sentence
without entities would teach the model that its entities are none.

Any `from_name`/`to_name` is read: the text is the task's `data` field named by the region's `to_name` (Label
Studio's default config names both `text`), else its field `text`, else its only string field. Results of other
kinds (choices, relations, ratings) are skipped.

Discontinuous entities: a Label Studio `labels` region is one contiguous character span, so Label Studio cannot show
one entity in several pieces. Written as pre-annotations, each fragment of a discontinuous prediction becomes its own
region with the same label and score (and `meta.fragment` "2 of 3"), so that an annotator sees every piece; read
back, they are separate entities. Keep discontinuous corpora in BRAT or JSON Lines.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ..data import DataFormatError, Sentence, Span
from .base import Document, Format, FoundEntities, read_utf8

logger = logging.getLogger(__name__)

# Label Studio's names in its default NER config (`<Labels name="label" toName="text">`, `<Text name="text"
# value="$text">`), used when writing tasks unless told otherwise.
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "text"
REGION_TYPE = "labels"
MODEL_VERSION = "lightner"


# ---------------------------------------------------------------------------------------------------------------------
# Reading an export
# ---------------------------------------------------------------------------------------------------------------------


def is_label_studio_export(path: Path) -> bool:
    """Whether `path` is a Label Studio JSON export: a `.json` file whose first non-blank character opens a list
    (JSON Lines, the other `.json` data, holds one object per line)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as file:
        start = file.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith(b"[")


def read_label_studio(path: str | PathLike) -> list[Sentence]:
    """The annotated tasks of a Label Studio JSON export as sentences (see the module docstring); `Sentence.line` is
    the task's position in the export (1-based) and its `source` names the task id, so that later errors find it."""
    path = Path(path)
    try:
        tasks = json.loads(read_utf8(path))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"invalid JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise DataFormatError(path, None, "invalid JSON: nested too deeply for the parser") from None
    if not isinstance(tasks, list):
        raise DataFormatError(path, None, f"expected a list of tasks (Label Studio's JSON export), got {_kind(tasks)}")
    sentences, unlabelled = [], []
    for number, task in enumerate(tasks, start=1):
        where = _task_name(task, number)
        sentence = task_sentence(task, f"{path}: {where}")
        if sentence is None:
            unlabelled.append(where)
            continue
        sentence.line, sentence.source = number, f"{path} ({where})"
        sentences.append(sentence)
    if unlabelled:
        logger.warning(
            f"{path}: left out {len(unlabelled)} tasks without an annotation (unlabelled or cancelled), the first "
            f"{unlabelled[0]}"
        )
    if not sentences:
        raise DataFormatError(path, None, f"no annotated tasks among its {len(tasks)} tasks")
    return sentences


def _kind(value: Any) -> str:
    return type(value).__name__.replace("dict", "an object").replace("list", "a list")


def _task_name(task: Any, number: int) -> str:
    identifier = task.get("id") if isinstance(task, dict) else None
    return f"task {identifier}" if identifier is not None else f"task #{number} (no id)"


def task_sentence(task: Any, where: str) -> Sentence | None:
    """One task's last annotation that was not cancelled, as a sentence; None when it has none. `where` names the
    task in errors (`export.json: task 7`)."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise DataFormatError(where, None, 'expected a task object with a "data" object')
    annotations = task.get("annotations") or task.get("completions") or []  # completions: Label Studio before 1.0
    if not isinstance(annotations, list):
        raise DataFormatError(where, None, f'"annotations" must be a list, got {_kind(annotations)}')
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    annotation = kept[-1]
    results = annotation.get("result")
    if not isinstance(results, list):
        raise DataFormatError(where, None, f'annotation {annotation.get("id")}: "result" must be a list')
    return sentence_from_regions(task["data"], results, f"{where}, annotation {annotation.get('id')}")


def task_text(data: Mapping[str, Any], to_name: str | None, where: str) -> str:
    """The text a region labels: `data[to_name]`, else `data["text"]`, else the task's only string field."""
    for key in (to_name, DEFAULT_TO_NAME):
        if key is not None and isinstance(data.get(key), str):
            return data[key]
    strings = [key for key, value in data.items() if isinstance(value, str)]
    if len(strings) == 1:
        return data[strings[0]]
    raise DataFormatError(
        where,
        None,
        f"cannot tell which data field is the text: no field named {to_name!r} or 'text', and "
        f"{len(strings)} string fields ({strings})",
    )


def sentence_from_regions(data: Mapping[str, Any], results: Sequence[Any], where: str) -> Sentence:
    """The task's text as words, with its `labels` regions as word spans; see the module docstring for the checks."""
    regions = [r for r in results if isinstance(r, dict) and str(r.get("type", "")).lower() == REGION_TYPE]
    to_names = {r.get("to_name") for r in regions} or {None}
    if len(to_names) > 1:
        raise DataFormatError(where, None, f"regions label several texts ({sorted(map(str, to_names))}); use one")
    text = task_text(data, next(iter(to_names)), where)
    from ..text_utils import split_words  # lazily: the format table imports no torch

    spans = split_words(text)
    starts = {start: index for index, (start, _) in enumerate(spans)}
    ends = {end: index for index, (_, end) in enumerate(spans)}
    entities: list[tuple[Span, tuple[int, int]]] = []
    for region in regions:
        start, end, labels = _region_value(region, text, where)
        if start not in starts or end not in ends:
            words = [text[s:e] for s, e in spans if s < end and e > start]
            raise DataFormatError(
                where,
                None,
                f"region {region.get('id')} [{start}, {end}) {text[start:end]!r} does not start and end on word "
                f"boundaries (the words there are {words}); fix the region in Label Studio",
            )
        for label in labels:
            entities.append((Span(starts[start], ends[end] + 1, label), (start, end)))
    entities.sort()
    for (first, first_chars), (second, second_chars) in zip(entities, entities[1:]):
        if second.start < first.end:
            raise DataFormatError(
                where,
                None,
                f"regions {first.type} {list(first_chars)} {text[slice(*first_chars)]!r} and {second.type} "
                f"{list(second_chars)} {text[slice(*second_chars)]!r} overlap; LightNER reads one entity per word "
                "from Label Studio: remove one of them",
            )
    return Sentence([text[s:e] for s, e in spans], [span for span, _ in entities])


def _region_value(region: Mapping[str, Any], text: str, where: str) -> tuple[int, int, list[str]]:
    """A region's character offsets, whitespace at its edges trimmed, and its labels; anything else is an error."""
    value = region.get("value")
    name = f"region {region.get('id')}"
    if not isinstance(value, dict):
        raise DataFormatError(where, None, f'{name}: expected a "value" object')
    start, end, labels = value.get("start"), value.get("end"), value.get("labels")
    if type(start) is not int or type(end) is not int or not 0 <= start < end <= len(text):
        raise DataFormatError(
            where,
            None,
            f"{name}: offsets {start!r}, {end!r} are not 0 <= start < end <= {len(text)} (the text's length)",
        )
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise DataFormatError(where, None, f'{name}: "labels" must be a non-empty list of label names, got {labels!r}')
    quoted = value.get("text")
    if quoted is not None and quoted != text[start:end]:
        raise DataFormatError(
            where,
            None,
            f"{name}: quotes {quoted!r}, but its offsets [{start}, {end}) hold {text[start:end]!r} (was the task's "
            "text changed after labelling?)",
        )
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        raise DataFormatError(where, None, f"{name}: covers only whitespace")
    return start, end, labels


# ---------------------------------------------------------------------------------------------------------------------
# Writing tasks with predictions
# ---------------------------------------------------------------------------------------------------------------------


def prediction_regions(
    entities: Sequence[Mapping[str, Any]],
    text: str,
    from_name: str = DEFAULT_FROM_NAME,
    to_name: str = DEFAULT_TO_NAME,
) -> list[dict[str, Any]]:
    """The pipeline's entities (`entity_group`, character `start`/`end`, `score`, optional `fragments`) as Label
    Studio `labels` regions with a score each; a discontinuous entity gives a region per fragment (see the module
    docstring)."""
    regions = []
    for entity in entities:
        fragments = entity.get("fragments") or [entity]
        for number, fragment in enumerate(fragments, start=1):
            start, end = int(fragment["start"]), int(fragment["end"])
            region = {
                "id": uuid.uuid4().hex[:10],
                "from_name": from_name,
                "to_name": to_name,
                "type": REGION_TYPE,
                "origin": "prediction",
                "score": float(entity["score"]),
                "value": {"start": start, "end": end, "text": text[start:end], "labels": [entity["entity_group"]]},
            }
            if len(fragments) > 1:
                region["meta"] = {"fragment": f"{number} of {len(fragments)}"}
            regions.append(region)
    return regions


def prediction(
    entities: Sequence[Mapping[str, Any]],
    text: str,
    model_version: str = MODEL_VERSION,
    from_name: str = DEFAULT_FROM_NAME,
    to_name: str = DEFAULT_TO_NAME,
) -> dict[str, Any]:
    """One Label Studio prediction: the regions and a task score, the lowest entity score (how sure the model is of
    its least sure entity; 1 for a text without entities), so that Label Studio's prediction-score column sorts the
    tasks that most need a look first."""
    scores = [float(entity["score"]) for entity in entities]
    return {
        "model_version": model_version,
        "score": min(scores, default=1.0),
        "result": prediction_regions(entities, text, from_name, to_name),
    }


def task_with_prediction(
    text: str, entities: Sequence[Mapping[str, Any]], fields: Mapping[str, Any] | None = None, **names: str
) -> dict[str, Any]:
    """An importable task: `data` holds the text (as `data.text`, or the `to_name` given) and any other fields,
    `predictions` the pre-annotation."""
    to_name = names.get("to_name", DEFAULT_TO_NAME)
    return {"data": {**(fields or {}), to_name: text}, "predictions": [prediction(entities, text, **names)]}


def write_label_studio(sentences: Sequence[Sentence], path: str | PathLike) -> None:
    """Labelled sentences as a Label Studio JSON export (one task each, its entities as an annotation), which
    `read_label_studio` reads back: the words joined by spaces (`text_utils.join_words`) are the text."""
    from ..text_utils import join_words

    tasks = []
    for number, sentence in enumerate(sentences, start=1):
        text, spans = join_words(sentence.words)
        entities = [
            {"entity_group": e.type, "start": spans[s][0], "end": spans[t - 1][1], "score": 1.0}
            for e in sentence.entities
            for s, t in e.fragments
        ]
        regions = prediction_regions(entities, text)
        for region in regions:
            region["origin"] = "manual"
            del region["score"]
        tasks.append(
            {"id": number, "data": {DEFAULT_TO_NAME: text}, "annotations": [{"id": number, "result": regions}]}
        )
    Path(path).write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def labelling_config(labels: Sequence[str]) -> str:
    """A Label Studio labelling config for NER over `labels` with the names the writer and backend use."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Label value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Labels name="{DEFAULT_FROM_NAME}" toName="{DEFAULT_TO_NAME}">\n{choices}\n  </Labels>\n'
        f'  <Text name="{DEFAULT_TO_NAME}" value="${DEFAULT_TO_NAME}"/>\n'
        "</View>\n"
    )


__all__ = [
    "is_label_studio_export",
    "labelling_config",
    "prediction",
    "prediction_regions",
    "read_label_studio",
    "task_sentence",
    "task_with_prediction",
    "write_label_studio",
]


# ---------------------------------------------------------------------------------------------------------------------
# `lightner predict`: tasks in, tasks with predictions out
# ---------------------------------------------------------------------------------------------------------------------


def read_task_documents(path: Path, skip_bad_lines: bool = False):
    """A `predict.Document` per task of a Label Studio JSON export or task list (`[{"data": {"text": ...}}]`, or
    plain `[{"text": ...}]` as Label Studio also imports): its text, the task's other data fields passed through."""

    try:
        tasks = json.loads(read_utf8(Path(path)))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"invalid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(tasks, list):
        raise DataFormatError(path, None, f"expected a list of tasks, got {_kind(tasks)}")
    for number, task in enumerate(tasks, start=1):
        where = f"{path}: {_task_name(task, number)}"
        data = task.get("data", task) if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise DataFormatError(where, None, 'expected a task object (with a "data" object)')
        try:
            text = task_text(data, None, where)
        except DataFormatError:
            if not skip_bad_lines:
                raise
            logger.warning(f"{where}: no text field; left out (--skip-bad-lines)")
            yield Document(number, skipped=True)
            continue
        key = (
            DEFAULT_TO_NAME
            if isinstance(data.get(DEFAULT_TO_NAME), str)
            else next(k for k, v in data.items() if isinstance(v, str))
        )
        yield Document(number, text=text, fields={k: v for k, v in data.items() if k != key})


def task_line(document: Document, found: FoundEntities) -> str:
    """One task with its prediction on one line: the output is a list of lines while it is written (so that
    `--resume` works as for JSON Lines), which `finish_task_file` makes into the JSON list Label Studio imports."""
    text, _ = document.as_text()
    return json.dumps(task_with_prediction(text, found.characters(), document.fields), ensure_ascii=False) + "\n"


def finish_task_file(path: Path) -> None:
    """Turn the finished file of task lines into a JSON list, replaced at once (a kill never leaves half of it)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    os.replace(temporary, path)


FORMAT = Format(
    "label-studio",
    "a Label Studio JSON export (a .json file holding a list of tasks; character-offset labels regions)",
    matches=is_label_studio_export,
    matches_input=lambda opened: isinstance(opened, Path) and is_label_studio_export(opened),
    read=lambda path, o: read_label_studio(path),
    write=lambda sentences, path, o: write_label_studio(sentences, path),
    read_documents=read_task_documents,
    input_description="a Label Studio JSON export or task list (.json), a document per task's text, other data "
    "fields kept",
    streamable=False,
    write_document=task_line,
    output_description="Label Studio tasks with predictions (a JSON list to import; a region per entity with its "
    "score, a task score)",
    finish_output=finish_task_file,
)
