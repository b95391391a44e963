"""The BRAT standoff reader and writer (`lightner.formats.brat`), on a small corpus written here."""

from __future__ import annotations

import logging

import pytest

from lightner.data import DataFormatError, DiscontinuousSpan, Sentence, Span
from lightner.formats import ReadOptions, detect_format, read_jsonl, read_sentences, write_jsonl, write_sentences
from lightner.formats.brat import read_brat, write_brat
from lightner.formats.jsonl import _span_from_json

# Two lines, then a line that one entity continues onto the next ("skin\nrash" is one mention).
TEXT = "I had muscle and joint pain after Lipitor.\nMy legs were weak and sore.\nDry skin\nrash appeared.\n"
# Offsets: "muscle" 6-12, "joint" 17-22, "pain" 23-27, "Lipitor" 34-41; "legs" 46-50, "weak" 56-60, "sore" 65-69;
# "skin" 75-79, "rash" 80-84; 95 characters in all.
ANN = (
    "T1\tADR 6 12;23 27\tmuscle pain\n"  # discontinuous: muscle ... pain
    "T2\tADR 17 27\tjoint pain\n"  # shares its head word with T1
    "T3\tBODY 6 12\tmuscle\n"  # nested in T1
    "T4\tDRUG 34 41\tLipitor\n"  # the period after it is its own word
    "#1\tAnnotatorNotes T4\tbrand name\n"
    "R1\tCauses Arg1:T4 Arg2:T1\n"
    "E1\tReaction:T1 Cause:T4\n"
    "A1\tSeverity T1 Mild\n"
    "\n"
    "T5\tADR 46 50;56 60\tlegs weak\n"
    "T6\tADR 46 50;65 69\tlegs sore\n"
    "T7\tADR 75 84\tskin rash\n"  # a mention across a line break
)


def write_document(folder, name="doc", text=TEXT, ann=ANN):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8", newline="")
    (folder / f"{name}.ann").write_text(ann, encoding="utf-8", newline="")
    return folder / f"{name}.ann"


def test_reads_fragments_nesting_and_lines_with_exact_word_offsets(tmp_path):
    write_document(tmp_path)
    first, second, third = read_brat(tmp_path)
    assert first == Sentence(
        ["I", "had", "muscle", "and", "joint", "pain", "after", "Lipitor", "."],
        [
            DiscontinuousSpan(2, 6, "ADR", ((2, 3), (5, 6))),
            Span(2, 3, "BODY"),
            Span(4, 6, "ADR"),
            Span(7, 8, "DRUG"),
        ],
    )
    assert second == Sentence(
        ["My", "legs", "were", "weak", "and", "sore", "."],
        [DiscontinuousSpan(1, 4, "ADR", ((1, 2), (3, 4))), DiscontinuousSpan(1, 6, "ADR", ((1, 2), (5, 6)))],
    )
    # The entity across the line break keeps its two lines in one sentence.
    assert third == Sentence(["Dry", "skin", "rash", "appeared", "."], [Span(1, 3, "ADR")])
    assert [s.line for s in (first, second, third)] == [1, 2, 3]
    assert {s.source for s in (first, second, third)} == {str(tmp_path / "doc.txt")}


def test_the_format_table_detects_and_reads_brat(tmp_path):
    ann = write_document(tmp_path / "corpus" / "part", name="a")
    write_document(tmp_path / "corpus", name="b", text="Lipitor .\n", ann="T1\tDRUG 0 7\tLipitor\n")
    assert detect_format(tmp_path / "corpus") == "brat" and detect_format(ann) == "brat"
    assert detect_format(tmp_path / "new.ann") == "brat"
    sentences = read_sentences(tmp_path / "corpus")
    assert len(sentences) == 4 and sentences[0].words == ["Lipitor", "."]  # documents in path order
    assert read_sentences(ann) == sentences[1:]
    assert read_brat(ann)[0].words[:3] == ["I", "had", "muscle"]


def test_writer_round_trips_and_refuses_words_that_would_not_read_back(tmp_path):
    sentences = read_brat(write_document(tmp_path / "in"))
    path = write_brat(sentences, tmp_path / "out" / "copy.ann")
    assert read_brat(path) == sentences
    assert (tmp_path / "out" / "copy.ann").read_text().splitlines()[:2] == [
        "T1\tBODY 6 12\tmuscle",
        "T2\tADR 6 12;23 27\tmuscle pain",
    ]
    write_sentences(sentences, tmp_path / "folder", "brat")
    assert read_sentences(tmp_path / "folder" / "folder.ann") == sentences
    with pytest.raises(ValueError, match=r"sentence 2: its words \['Paris\.'\] would not read back"):
        write_brat([Sentence(["a"]), Sentence(["Paris."])], tmp_path / "bad.ann")
    assert not (tmp_path / "bad.ann").exists()


def test_scored_entities_are_written_as_brat_and_read_back(tmp_path):
    words = [["I", "had", "muscle", "and", "joint", "pain"], ["Lipitor"]]
    predictions = [
        [
            {"type": "ADR", "start": 2, "end": 6, "text": "muscle pain", "score": 0.91, "fragments": [[2, 3], [5, 6]]},
            {"type": "ADR", "start": 4, "end": 6, "text": "joint pain", "score": 0.8},
        ],
        [{"type": "DRUG", "start": 0, "end": 1, "text": "Lipitor", "score": 0.5}],
    ]
    labelled = [Sentence(w, [_span_from_json(e) for e in p]) for w, p in zip(words, predictions)]
    scores = [{_span_from_json(e): e["score"] for e in p} for p in predictions]
    write_brat(labelled, tmp_path / "out" / "pred.ann", scores)
    assert (tmp_path / "out" / "pred.txt").read_text() == "I had muscle and joint pain\nLipitor\n"
    assert (tmp_path / "out" / "pred.ann").read_text() == (
        "T1\tADR 6 12;23 27\tmuscle pain\n#1\tAnnotatorNotes T1\tscore 0.9100\n"
        "T2\tADR 17 27\tjoint pain\n#2\tAnnotatorNotes T2\tscore 0.8000\n"
        "T3\tDRUG 28 35\tLipitor\n#3\tAnnotatorNotes T3\tscore 0.5000\n"
    )
    read = read_brat(tmp_path / "out" / "pred.ann")
    assert [s.entities for s in read] == [
        [DiscontinuousSpan(2, 6, "ADR", ((2, 3), (5, 6))), Span(4, 6, "ADR")],
        [Span(0, 1, "DRUG")],
    ]
    write_jsonl(labelled, tmp_path / "pred.jsonl")
    assert [s.entities for s in read_jsonl(tmp_path / "pred.jsonl")] == [s.entities for s in read]


@pytest.mark.parametrize(
    "ann,line,problem",
    [
        ("T1\tADR 0 1\tI\nT2\tADR 6 9\tmus\n", 2, r"entity T2 \(ADR 6 9\): 'mus' does not start and end on word"),
        ("T1\tADR 6 12;23 28\tmuscle pain \n", 1, r"entity T1 \(ADR 6 12;23 28\): 'pain ' does not start and end"),
        ("T1\tADR 6 12\tjoint\n", 1, r"entity T1 \(ADR 6 12\): quotes 'joint', but its offsets hold 'muscle'"),
        (
            "T1\tADR 6 12;100 104\tx\n",
            1,
            r"entity T1 \(ADR 6 12;100 104\): offsets past the end of the text \(95 chars",
        ),
        ("T1\tADR 23 27;6 12\tpain muscle\n", 1, r"entity T1 .*: .*fragments \[\[5, 6\], \[2, 3\]\] are out of order"),
        ("T1\tADR 6 22;17 27\tmuscle and joint joint pain\n", 1, "entity T1 .*: .*overlap each other"),
        ("T1\tADR 12 6\tx\n", 1, r"entity T1 \(ADR\): offsets '12 6' are not 'START END' with START < END"),
        ("T1\tADR 6 x\tx\n", 1, r"entity T1 \(ADR\): offsets '6 x' are not 'START END'"),
        (
            "T1\tADR 6 1\u00b2\tx\n",
            1,
            r"entity T1 \(ADR\): offsets '6 1\u00b2' are not 'START END'",
        ),  # a superscript 2
        ("T1\tADR\tx\n", 1, r"entity T1: expected 'ID<TAB>TYPE START END\[;START END...\]'"),
        ("T1\tADR 6 12\tmuscle\nX1\twhat\n", 2, "not a BRAT annotation line: 'X1\\\\twhat'"),
    ],
)
def test_every_error_names_the_ann_file_its_line_and_the_entity(tmp_path, ann, line, problem):
    path = write_document(tmp_path, ann=ann)
    with pytest.raises(DataFormatError, match=rf"doc\.ann:{line}: {problem}"):
        read_brat(path)


def one_character_on(line: str) -> str:
    """A `T` line with every offset one character further on (other lines as they are)."""
    if not line.startswith("T"):
        return line
    identifier, annotation, quote = line.split("\t")
    entity_type, offsets = annotation.split(" ", 1)
    moved = ";".join(" ".join(str(int(n) + 1) for n in fragment.split()) for fragment in offsets.split(";"))
    return f"{identifier}\t{entity_type} {moved}\t{quote}"


def test_a_byte_order_mark_counts_in_the_offsets_as_brat_counts_it(tmp_path):
    """BRAT reads a text's byte-order mark as its first character, so the offsets of a text saved with one count it:
    the same annotations, one character further on, give the same sentences."""
    with_bom = write_document(
        tmp_path / "bom", text="\ufeff" + TEXT, ann="\n".join(map(one_character_on, ANN.split("\n")))
    )
    assert read_brat(with_bom) == read_brat(write_document(tmp_path / "plain"))


def test_skip_misaligned_leaves_out_and_counts_what_does_not_fit_the_words(tmp_path, caplog):
    ann = "T1\tADR 6 9\tmus\nT2\tDRUG 34 41\tLipitor\nT3\tADR 6 12\tjoint\n"
    path = write_document(tmp_path, ann=ann)
    with caplog.at_level(logging.WARNING, logger="lightner.formats.brat"):
        sentences = read_brat(path, skip_misaligned=True)
    assert sentences[0].entities == [Span(7, 8, "DRUG")]
    assert (
        "skipped 2 misaligned BRAT annotations; the first: " in caplog.text and "doc.ann:1: entity T1" in caplog.text
    )
    assert read_sentences(path, options=ReadOptions(skip_misaligned=True)) == sentences
    # Offsets past the text are not a misalignment: they stop the reading even so.
    write_document(tmp_path, ann="T1\tADR 6 200\tx\n")
    with pytest.raises(DataFormatError, match="offsets past the end of the text"):
        read_brat(path, skip_misaligned=True)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "lonely.ann").write_text("T1\tADR 0 1\tI\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"lonely\.ann: its text lonely\.txt is missing"):
        read_brat(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"empty: no \.ann files in this folder"):
        read_brat(tmp_path / "empty")
    with pytest.raises(DataFormatError, match=r"nothing\.ann: no such annotation file"):
        read_brat(tmp_path / "nothing.ann")
