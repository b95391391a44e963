"""Hugging Face `datasets`: a folder written by `save_to_disk`, or a Hub dataset id, as `NAME[:SPLIT]`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import DataFormatError, Sentence, decode_tags, entity_types, tag_parser, tags_from_spans
from .base import Document, Format

if TYPE_CHECKING:
    from datasets import Dataset

# Files `datasets.save_to_disk` writes, which tell a datasets folder from a folder of BRAT texts.
DATASETS_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def matches(path: Path) -> bool:
    """A folder, or a path without suffix that is not a file (a Hub id)."""
    return path.is_dir() or (not path.suffix and not path.is_file())


def is_datasets_folder(path: Path) -> bool:
    return any((path / marker).is_file() for marker in DATASETS_MARKERS)


def matches_input(opened: Path) -> bool:
    """A `datasets` folder, or `NAME[:SPLIT]` where NAME is a path without suffix that is not a file (a Hub id)."""
    name = Path(split_source(opened)[0])
    return is_datasets_folder(name) if name.is_dir() else matches(name)


def from_hf_dataset(
    dataset: Dataset, tokens_column: str = "tokens", tags_column: str = "ner_tags", scheme: str = "auto"
) -> list[Sentence]:
    """Sentences of a `datasets.Dataset`: `tokens_column` a sequence of strings, `tags_column` a sequence of
    `ClassLabel` or of strings, in the tag `scheme` (IOB1/IOB2/BIOES under "auto", or "io")."""
    missing = [column for column in (tokens_column, tags_column) if column not in dataset.features]
    if missing:
        raise ValueError(f"the dataset has no column {missing[0]!r}; its columns are {list(dataset.features)}")
    _check_words_feature(dataset.features[tokens_column], tokens_column)
    names = _tag_names(dataset.features[tags_column], tags_column)
    parse = tag_parser(scheme)
    parsed_names = None
    if names is not None:
        try:
            parsed_names = [parse(name) for name in names]
        except ValueError as error:
            raise DataFormatError(f"ClassLabel names of column {tags_column!r}", None, _scheme_hint(error)) from None
    sentences = []
    for row, (words, tags) in enumerate(zip(dataset[tokens_column], dataset[tags_column])):
        if len(words) != len(tags):
            raise DataFormatError(f"dataset row {row}", None, f"{len(words)} tokens but {len(tags)} tags")
        sentences.append(Sentence(list(words), decode_tags(_row_tags(tags, parsed_names, parse, row, tags_column))))
    return sentences


def _check_words_feature(feature, column: str) -> None:
    """Refuse a words column that is not a sequence of strings (a text column, say, or token ids)."""
    from datasets import Value

    inner = getattr(feature, "feature", None)
    if not (isinstance(inner, Value) and inner.dtype in ("string", "large_string")):
        raise TypeError(f"column {column!r} must be a sequence of strings (the words), got {feature}")


def _tag_names(feature, column: str) -> list[str] | None:
    """The label names of a sequence-of-`ClassLabel` tags column, None for a sequence of strings; else a TypeError."""
    from datasets import ClassLabel, Value

    inner = getattr(feature, "feature", None)
    if isinstance(inner, ClassLabel):
        return inner.names
    if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        return None
    raise TypeError(
        f"column {column!r} must be a sequence of ClassLabel or of strings (the tags), got {feature}; integer ids "
        "need ClassLabel names to say which tag each is"
    )


def _row_tags(tags, parsed_names, parse, row: int, column: str) -> list[tuple[str, str]]:
    """One row's tags as `(prefix, type)`: ClassLabel ids through the parsed names, strings parsed one by one."""
    if parsed_names is None:
        try:
            return [parse(tag) for tag in tags]
        except ValueError as error:
            raise DataFormatError(f"dataset row {row}", None, f"column {column!r}: {_scheme_hint(error)}") from None
    for label_id in tags:
        # A negative id (ClassLabel's "no label" is -1) would silently index from the end of the names.
        if not 0 <= label_id < len(parsed_names):
            raise DataFormatError(f"dataset row {row}", None, f"tag id {label_id} is not a {column!r} label")
    return [parsed_names[label_id] for label_id in tags]


def _scheme_hint(error: ValueError) -> str:
    return f"{error} (tags without B-/I- prefixes, as in Few-NERD, are the IO scheme: pass --tag-scheme io)"


def to_hf_dataset(sentences: Sequence[Sentence], *, types: Sequence[str] | None = None) -> Dataset:
    """A `datasets.Dataset` with `tokens` and IOB2 `ner_tags` (a sequence of `ClassLabel`).

    The label names are `O` then `B-`/`I-` per type, in the order of `types` (default: `entity_types(sentences)`);
    pass `types` to give several splits the same label ids.
    """
    from datasets import ClassLabel, Dataset, Features, List, Value

    types = entity_types(sentences) if types is None else list(types)
    unknown = [name for name in entity_types(sentences) if name not in types]
    if unknown:
        raise ValueError(f"the sentences have entity types missing from `types`: {unknown}")
    names = ["O"] + [f"{prefix}-{name}" for name in types for prefix in ("B", "I")]
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
    columns = {
        "tokens": [sentence.words for sentence in sentences],
        "ner_tags": [tags_from_spans(sentence.entities, len(sentence.words)) for sentence in sentences],
    }
    return Dataset.from_dict(columns, features=features)


def split_source(source: str | PathLike) -> tuple[str, str | None]:
    """`NAME[:SPLIT]` (a `datasets` folder or Hub id, then optionally a split) as `(NAME, SPLIT)`; an existing path
    is a name whole, colon or not."""
    source = str(source)
    name, colon, split = source.rpartition(":")
    if Path(source).exists() or not colon or not name or not split or "/" in split:
        return source, None
    return name, split


def is_hub_dataset(source: str | PathLike) -> bool:
    """Whether `source` (`NAME[:SPLIT]`) names a Hub dataset: a `datasets` source that is not a local folder."""
    name, _ = split_source(source)
    return matches(Path(name)) and not Path(name).exists()


def data_name(source: str | PathLike) -> str:
    """How a model card names data: a Hub dataset by its id and split, a file or folder by its name."""
    return str(source) if is_hub_dataset(source) else Path(str(source)).name


def load_hf_dataset(source: str | PathLike, split: str | None = None, config_name: str | None = None) -> Dataset:
    """One split of a `datasets` folder (`save_to_disk`) or of a Hub dataset, as `NAME[:SPLIT]` or `split`; a
    source with several splits needs one named."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    name, named_split = split_source(source)
    split = named_split or split
    if Path(name).exists():
        dataset = load_from_disk(name)
    else:
        try:
            dataset = load_dataset(name, config_name, split=split)
        except Exception as error:  # datasets raises many types for a name it cannot resolve
            raise OSError(
                f"{name} is neither a local datasets folder nor a dataset the Hub could give "
                f"({type(error).__name__}: {' '.join(str(error).split())})"
            ) from error
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{name} holds the splits {list(dataset)}; choose one with --split or as {name}:SPLIT")
        dataset = dataset[split]
    return dataset


def read_hf_folder(
    path: str | PathLike,
    split: str | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    scheme: str = "auto",
    config_name: str | None = None,
) -> list[Sentence]:
    """Sentences of a `datasets` folder (`save_to_disk`) or Hub dataset (see `load_hf_dataset`)."""
    dataset = load_hf_dataset(path, split, config_name)
    return from_hf_dataset(dataset, tokens_column=tokens_column, tags_column=tags_column, scheme=scheme)


def read_documents(source: str, skip_bad_lines: bool, tokens_column: str = "tokens") -> Iterator[Document]:
    """A document per row of a `datasets` source (`NAME[:SPLIT]`), its words from `tokens_column`; rows are read
    from the memory-mapped table one at a time."""
    for row, record in enumerate(load_hf_dataset(source)):
        yield Document(row + 1, words=list(record[tokens_column]))


FORMAT = Format(
    "hf",
    "a Hugging Face datasets folder (save_to_disk) or Hub dataset id, NAME[:SPLIT], detected as a folder or a path "
    "without suffix",
    matches=matches,
    matches_input=lambda opened: isinstance(opened, Path) and matches_input(opened),
    read=lambda path, o: read_hf_folder(path, o.split, o.tokens_column, o.tags_column, o.scheme, o.config_name),
    write=lambda sentences, path, o: to_hf_dataset(sentences, types=o.types).save_to_disk(str(path)),
    read_documents=read_documents,
    input_description="a datasets folder or Hub dataset, NAME[:SPLIT], words in its tokens column",
    streamable=False,
)
