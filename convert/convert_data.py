"""Convert NER data between CoNLL/BIO column files, JSON Lines, BRAT standoff and Hugging Face `datasets` folders.

    python convert/convert_data.py train.txt train.jsonl
    python convert/convert_data.py train.jsonl train-hf            # a `datasets` folder (`save_to_disk`)
    python convert/convert_data.py train-hf train.txt --scheme BIOES

The format follows the path as `lightner.formats.detect_format` says (a folder, or a new path without suffix, is a
`datasets` folder; `.jsonl`/`.json` JSON Lines; `.ann`, or a folder of them, BRAT; anything else CoNLL) unless
`--from`/`--to` say otherwise. Formats,
reading and writing are `lightner.formats`' table (`FORMATS`), the one training and the CLI use, so malformed
input stops the conversion with its file and line. Every sentence is kept, those without entities too; what the
target format cannot hold is left out and reported rather than guessed at: tags cannot express overlapping entities
(of each overlapping group the outermost, earliest entity stays) or discontinuous ones (left out), a CoNLL file cannot
hold a sentence without words or a word with a tab or line break, and BRAT text cannot hold words that would not read
back as the same words.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightner.data import Entity, Sentence, Span, entity_types, is_discontinuous
from lightner.formats import (
    LABELLED_FORMATS,
    ReadOptions,
    WriteOptions,
    detect_format,
    read_sentences,
    write_sentences,
)

MAX_LISTED_PROBLEMS = 20


@dataclass
class DataReport:
    """What was read, what was written, and each thing the target format could not hold."""

    source: str
    target: str
    read: list[Sentence]
    written: int = 0
    problems: list[str] = field(default_factory=list)

    def format(self) -> str:
        with_entities = sum(1 for sentence in self.read if sentence.entities)
        mentions = sum(len(sentence.entities) for sentence in self.read)
        lines = [
            f"Read {len(self.read)} sentences from {self.source}: {with_entities} with entities, "
            f"{len(self.read) - with_entities} without; {mentions} entities of {len(entity_types(self.read))} types",
            f"Wrote {self.written} sentences to {self.target}",
        ]
        if self.problems:
            lines.append(f"Could not convert {len(self.problems)}:")
            lines.extend(f"  {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS])
            if len(self.problems) > MAX_LISTED_PROBLEMS:
                lines.append(f"  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        return "\n".join(lines)


def _conll_problem(sentence: Sentence) -> str | None:
    """Why a sentence cannot be CoNLL lines (the rule `write_conll` enforces), or None."""
    if not sentence.words:
        return "it has no words"
    for index, word in enumerate(sentence.words):
        if not word.strip(" ") or any(char in word for char in "\t\r\n"):
            return f"word {index} ({word!r}) cannot be a CoNLL column"
    return None


def _brat_problem(sentence: Sentence) -> str | None:
    """Why a sentence cannot be a line of BRAT text that reads back as the same words, or None."""
    from lightner.text_utils import join_words, split_words

    line, spans = join_words(sentence.words)
    return None if split_words(line) == spans else "its words would not read back from BRAT text as the same words"


def _without_overlaps(entities: Sequence[Span]) -> tuple[list[Span], list[tuple[Span, Span]]]:
    """The entities tags can express, outermost first, and each dropped one with the kept entity it overlaps."""
    kept: list[Span] = []
    dropped = []
    for span in sorted(entities, key=lambda span: (span.start, -span.end)):
        if kept and span.start < kept[-1].end:
            dropped.append((span, kept[-1]))
        else:
            kept.append(span)
    return kept, dropped


def _fragment_text(span: Entity) -> str:
    return " + ".join(f"[{start}, {end})" for start, end in span.fragments)


def expressible(sentences: Sequence[Sentence], target_format: str) -> tuple[list[Sentence], list[str]]:
    """The sentences as the target format can hold them, and a line for each thing left out."""
    if target_format == "jsonl":
        return list(sentences), []
    kept, problems = [], []
    for number, sentence in enumerate(sentences, start=1):
        reason = {"conll": _conll_problem, "brat": _brat_problem}.get(target_format, lambda _: None)(sentence)
        if reason is not None:
            problems.append(f"sentence {number} left out: {reason}")
            continue
        if target_format == "brat":
            kept.append(sentence)
            continue
        problems.extend(
            f"sentence {number}: entity {_fragment_text(span)} {span.type} dropped, it is discontinuous and tags "
            "cannot hold it"
            for span in sentence.entities
            if is_discontinuous(span)
        )
        entities, dropped = _without_overlaps([span for span in sentence.entities if not is_discontinuous(span)])
        problems.extend(
            f"sentence {number}: entity [{span.start}, {span.end}) {span.type} dropped, it overlaps "
            f"[{other.start}, {other.end}) {other.type} and tags cannot nest"
            for span, other in dropped
        )
        kept.append(Sentence(sentence.words, entities))
    return kept, problems


def convert_data(
    source: str | Path,
    target: str | Path,
    *,
    source_format: str | None = None,
    target_format: str | None = None,
    scheme: str = "IOB2",
    types: Sequence[str] | None = None,
    split: str | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
) -> DataReport:
    """Read `source`, write what `target`'s format can hold, and report the rest."""
    source, target = Path(source), Path(target)
    source_format = source_format or detect_format(source)
    target_format = target_format or detect_format(target)
    sentences = read_sentences(source, source_format, ReadOptions(split, tokens_column, tags_column))
    report = DataReport(f"{source} ({source_format})", f"{target} ({target_format})", sentences)
    writable, report.problems = expressible(sentences, target_format)
    write_sentences(writable, target, target_format, WriteOptions(scheme, types))
    report.written = len(writable)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert_data",
        description="Convert NER data between CoNLL/BIO files, JSON Lines and Hugging Face datasets folders.",
    )
    parser.add_argument("source", type=Path, help="CoNLL file, .jsonl file, or datasets folder (save_to_disk)")
    parser.add_argument("target", type=Path, help="where to write; its format follows the path unless --to says")
    parser.add_argument("--from", dest="source_format", choices=LABELLED_FORMATS, help="format of the source")
    parser.add_argument("--to", dest="target_format", choices=LABELLED_FORMATS, help="format of the target")
    parser.add_argument("--scheme", default="IOB2", help="tag scheme of a CoNLL target: IOB1, IOB2 or BIOES")
    parser.add_argument(
        "--types", help="comma-separated entity types fixing a datasets target's label ids (share them across splits)"
    )
    parser.add_argument("--split", help="split to read when the datasets folder holds several")
    parser.add_argument("--tokens-column", default="tokens", help="words column of a datasets source")
    parser.add_argument("--tags-column", default="ner_tags", help="ClassLabel tags column of a datasets source")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = convert_data(
            args.source,
            args.target,
            source_format=args.source_format,
            target_format=args.target_format,
            scheme=args.scheme,
            types=args.types.split(",") if args.types else None,
            split=args.split,
            tokens_column=args.tokens_column,
            tags_column=args.tags_column,
        )
    except (ValueError, TypeError, OSError) as error:  # DataFormatError is a ValueError naming file and line
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
