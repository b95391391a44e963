"""Tests of `lightner.data`: readers and writers, tag decoding against seqeval, HF datasets, k-shot sampling."""

from __future__ import annotations

import functools
import json
import pickle
import random
from collections import Counter

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from conftest import shared_path
from lightner.data import (
    DataFormatError,
    Sentence,
    Span,
    entity_types,
    sample_k_shot,
    spans_from_tags,
    tags_from_spans,
)
from lightner.formats import (
    FORMATS,
    LABELLED_FORMATS,
    ReadOptions,
    data_name,
    detect_format,
    from_hf_dataset,
    is_hub_dataset,
    load_sentences,
    read_conll,
    read_jsonl,
    read_sentences,
    read_text,
    split_source,
    to_hf_dataset,
    write_conll,
    write_jsonl,
    write_sentences,
)

# Sentence counts: the README's for the full splits; the k-shot files' counted with a plain split on blank lines.
SHARED_FILES = {
    "conll2003/train.txt": 14_041,
    "conll2003/dev.txt": 3_250,
    "conll2003/test.txt": 3_453,
    "conll2003/indomain-train.txt": 4_001,
    "mit-movie/test.txt": 2_443,
    "mit-restaurant/test.txt": 1_521,
    "atis/test.txt": 893,
    "mit-movie/10-shot-train.txt": 51,
    "mit-movie/20-shot-train.txt": 143,
    "mit-movie/50-shot-train.txt": 286,
    "mit-movie/100-shot-train.txt": 658,
    "mit-movie/200-shot-train.txt": 1_194,
    "mit-movie/500-shot-train.txt": 2_280,
    "mit-restaurant/10-shot-train.txt": 40,
    "mit-restaurant/20-shot-train.txt": 81,
    "mit-restaurant/50-shot-train.txt": 182,
    "mit-restaurant/100-shot-train.txt": 356,
    "mit-restaurant/200-shot-train.txt": 788,
    "mit-restaurant/500-shot-train.txt": 1_837,
    "atis/10-shot-train.txt": 340,
    "atis/20-shot-train.txt": 709,
    "atis/50-shot-train.txt": 1_327,
}


@functools.cache
def load_shared(name: str) -> list[Sentence]:
    """Each shared file is parsed once per session; `shared_path` skips the test when the folder is absent."""
    return read_conll(shared_path("data", "lightner", *name.split("/")))


def naive_tag_columns(name: str) -> list[list[str]]:
    """The tag column of a shared file, split into sentences by the simplest possible parser, as an oracle."""
    text = shared_path("data", "lightner", *name.split("/")).read_text(encoding="utf-8").replace("\r", "")
    blocks = [block for block in text.split("\n\n") if block.strip() and not block.startswith("-DOCSTART-")]
    return [[line.split()[-1] for line in block.split("\n") if line.strip()] for block in blocks]


def write_bytes(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------------------------------
# The shared LightNER splits
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_shared_file_loads_with_its_sentence_count(name):
    sentences = load_shared(name)
    assert len(sentences) == SHARED_FILES[name]
    assert all(sentence.words for sentence in sentences)
    assert not any("\r" in word or not word.strip() for sentence in sentences for word in sentence.words)
    assert "-DOCSTART-" not in {sentence.words[0] for sentence in sentences}


def test_shared_entity_types():
    assert set(entity_types(load_shared("conll2003/test.txt"))) == {"LOC", "PER", "ORG", "MISC"}
    assert len(entity_types(load_shared("mit-movie/test.txt"))) == 12
    assert len(entity_types(load_shared("mit-restaurant/test.txt"))) == 8
    # The ATIS k-shot files share 79 types; four of the test set's 69 never occur in them.
    atis_train = [set(entity_types(load_shared(f"atis/{k}-shot-train.txt"))) for k in (10, 20, 50)]
    assert atis_train[0] == atis_train[1] == atis_train[2] and len(atis_train[0]) == 79
    unseen = set(entity_types(load_shared("atis/test.txt"))) - atis_train[0]
    assert unseen == {"booking_class", "compartment", "flight", "stoploc.airport_code"}


def test_indomain_train_mention_counts():
    sentences = load_shared("conll2003/indomain-train.txt")
    counts = Counter(span.type for sentence in sentences for span in sentence.entities)
    assert counts == {"PER": 2_496, "ORG": 3_763, "LOC": 100, "MISC": 100}


@pytest.mark.parametrize("name", ["conll2003/test.txt", "mit-movie/test.txt", "atis/test.txt"])
def test_shared_spans_equal_seqeval(name):
    sentences = load_shared(name)
    tag_columns = naive_tag_columns(name)
    assert len(tag_columns) == len(sentences)
    for sentence, tags in zip(sentences, tag_columns):
        expected = [Span(start, end + 1, entity_type) for entity_type, start, end in get_entities(tags)]
        assert sentence.entities == expected


# --------------------------------------------------------------------------------------------------------------------
# Tag schemes
# --------------------------------------------------------------------------------------------------------------------

WORDS = ["John", "Smith", "Mary", "visited", "New", "York", ",", "Paris"]
SPANS = [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(4, 6, "LOC"), Span(7, 8, "LOC")]
TAGS = {
    "IOB2": ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "O", "B-LOC"],
    "IOB1": ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-LOC", "O", "I-LOC"],
    "BIOES": ["B-PER", "E-PER", "S-PER", "O", "B-LOC", "E-LOC", "O", "S-LOC"],
}


@pytest.mark.parametrize("scheme", sorted(TAGS))
@pytest.mark.parametrize("read_as", ["auto", "given"])
def test_every_scheme_decodes_to_the_same_spans(tmp_path, scheme, read_as):
    lines = [f"{word}\t{tag}" for word, tag in zip(WORDS, TAGS[scheme])]
    path = write_bytes(tmp_path, "scheme.txt", "\r\n".join(["-DOCSTART-\tO", "", *lines, ""]))
    sentences = read_conll(path, scheme=scheme if read_as == "given" else "auto")
    assert sentences == [Sentence(WORDS, SPANS)]


@pytest.mark.parametrize("scheme", sorted(TAGS))
def test_tags_from_spans_writes_each_scheme(scheme):
    assert tags_from_spans(SPANS, len(WORDS), scheme=scheme) == TAGS[scheme]


def test_scheme_round_trip_on_conll_dev_matches_seqeval():
    sentences = load_shared("conll2003/dev.txt")
    for scheme in ("IOB1", "BIOES"):
        for sentence in sentences:
            tags = tags_from_spans(sentence.entities, len(sentence.words), scheme=scheme)
            assert spans_from_tags(tags, scheme=scheme) == sentence.entities
            assert [Span(s, e + 1, t) for t, s, e in get_entities(tags)] == sentence.entities


def test_orphan_inside_tags_start_entities_as_in_seqeval():
    assert spans_from_tags(["O", "I-PER", "I-PER", "O"]) == [Span(1, 3, "PER")]
    assert spans_from_tags(["I-PER", "I-LOC", "B-LOC", "I-LOC"]) == [
        Span(0, 1, "PER"),
        Span(1, 2, "LOC"),
        (2, 4, "LOC"),
    ]
    assert spans_from_tags(["S-PER", "I-PER", "E-PER", "E-PER"]) == [(0, 1, "PER"), (1, 3, "PER"), (3, 4, "PER")]

    rng = random.Random(0)
    vocabulary = ["O"] + [f"{prefix}-{name}" for prefix in "BIES" for name in ("PER", "LOC")]
    for _ in range(3_000):
        tags = rng.choices(vocabulary, k=rng.randint(1, 8))
        expected = [Span(start, end + 1, entity_type) for entity_type, start, end in get_entities(tags)]
        assert spans_from_tags(tags) == expected, tags


def test_an_explicit_scheme_rejects_foreign_prefixes():
    with pytest.raises(ValueError, match=r"tag 1: invalid tag 'E-PER'"):
        spans_from_tags(["B-PER", "E-PER"], scheme="BIO")
    assert spans_from_tags(["B-PER", "E-PER"], scheme="IOBES") == [Span(0, 2, "PER")]
    with pytest.raises(ValueError, match="unknown tag scheme"):
        spans_from_tags(["O"], scheme="BILOU")


def test_tags_from_spans_rejects_overlaps_and_out_of_range():
    with pytest.raises(ValueError, match="overlap"):
        tags_from_spans([(0, 2, "PER"), (1, 3, "LOC")], 4)
    with pytest.raises(ValueError, match="0 <= start < end <= 4"):
        tags_from_spans([(3, 5, "PER")], 4)
    with pytest.raises(ValueError, match="cannot write tags"):
        tags_from_spans([], 4, scheme="auto")


# --------------------------------------------------------------------------------------------------------------------
# CoNLL files
# --------------------------------------------------------------------------------------------------------------------


def test_crlf_stray_cr_bom_and_sentence_boundaries(tmp_path):
    content = (
        "\ufeff-DOCSTART-\tO\r\n\r\n"
        "EU\tB-ORG\r\r\n"  # a stray CR before the line ending
        "rejects\r\tO\r\n"  # and one inside the line
        "\r\n"
        "\r\n"  # two blank lines are one boundary
        "Nothing\tO\r\n"  # a sentence without entities is kept
        "-DOCSTART-\tO\r\n"  # and a DOCSTART line ends a sentence too
        "German\tB-MISC"  # no final newline
    )
    sentences = read_conll(write_bytes(tmp_path, "crlf.txt", content))
    assert sentences == [
        Sentence(["EU", "rejects"], [Span(0, 1, "ORG")]),
        Sentence(["Nothing"], []),
        Sentence(["German"], [Span(0, 1, "MISC")]),
    ]


def test_columns(tmp_path):
    content = (
        "EU NNP B-NP B-ORG\n"  # the original CoNLL-2003 layout: word first, tag last
        "rejects   VBZ B-VP O\n\n"
        "New York\tNNP\tB-LOC\n"  # tab-separated words may hold spaces
        "is\tVBZ\tO\n"
    )
    assert read_conll(write_bytes(tmp_path, "columns.txt", content)) == [
        Sentence(["EU", "rejects"], [Span(0, 1, "ORG")]),
        Sentence(["New York", "is"], [Span(0, 1, "LOC")]),
    ]


MALFORMED = {
    "single column": ("EU\tB-ORG\nrejects\n", 2, "single column 'rejects'"),
    "unknown prefix": ("\n-DOCSTART- O\n\nEU X-ORG\n", 4, "invalid tag 'X-ORG'"),
    "missing type": ("EU\tO\r\n\r\nrejects\tB-\r\n", 3, "invalid tag 'B-'"),
    "missing prefix": ("EU\tO\nrejects\tO\nGerman\tMISC\n", 3, "invalid tag 'MISC'"),
    "lower case": ("EU\tb-org\n", 1, "invalid tag 'b-org'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_conll_names_file_and_line(tmp_path, case):
    content, line, problem = MALFORMED[case]
    path = write_bytes(tmp_path, "broken-file.txt", content)
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert caught.value.line == line
    assert f"broken-file.txt:{line}: " in str(caught.value)
    assert problem in str(caught.value)


def test_explicit_scheme_rejects_tags_of_another_scheme(tmp_path):
    path = write_bytes(tmp_path, "bioes.txt", "EU\tS-ORG\nrejects\tO\n\nGerman\tB-MISC\ncall\tE-MISC\n")
    with pytest.raises(DataFormatError, match=r"bioes\.txt:1: invalid tag 'S-ORG'"):
        read_conll(path, scheme="IOB2")
    assert read_conll(path, scheme="BIOES")[1].entities == [Span(0, 2, "MISC")]


@pytest.mark.parametrize("content", ["", "\r\n\r\n", "-DOCSTART- -X- O O\n\n"])
def test_file_without_sentences_is_an_error(tmp_path, content):
    with pytest.raises(DataFormatError, match=r"empty\.txt: no sentences"):
        read_conll(write_bytes(tmp_path, "empty.txt", content))


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = write_bytes(tmp_path, "latin1.txt", "EU\tB-ORG\r\n\r\nMüller\tB-PER\r\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.txt:3: not valid UTF-8 \(byte 0xfc\)") as caught:
        read_conll(path)
    assert caught.value.line == 3


def test_data_format_error_is_a_value_error_that_pickles():
    error = pickle.loads(pickle.dumps(DataFormatError("data.txt", 7, "invalid tag 'X'")))
    assert isinstance(error, ValueError)
    assert (error.source, error.line, str(error)) == ("data.txt", 7, "data.txt:7: invalid tag 'X'")


def test_conll_round_trip(tmp_path):
    sentences = [
        Sentence(WORDS, SPANS),
        Sentence(["Zürich", "rains"], []),
        Sentence(["a", "b", "c"], [Span(0, 1, "X"), Span(1, 3, "X")]),
        *load_shared("conll2003/dev.txt")[:200],
    ]
    for scheme in ("IOB2", "IOB1", "BIOES"):
        write_conll(sentences, tmp_path / f"{scheme}.txt", scheme=scheme)
        assert read_conll(tmp_path / f"{scheme}.txt", scheme=scheme) == sentences
    assert (tmp_path / "IOB2.txt").read_text(encoding="utf-8").startswith("John\tB-PER\nSmith\tI-PER\n")


@pytest.mark.parametrize(
    "sentence", [Sentence([]), Sentence(["a\tb"]), Sentence([" "]), Sentence(["a", "b"], [(0, 2, "X"), (1, 2, "Y")])]
)
def test_write_conll_refuses_what_it_cannot_write(tmp_path, sentence):
    with pytest.raises(ValueError):
        write_conll([sentence], tmp_path / "out.txt")


def test_sentence_sorts_and_checks_entities():
    sentence = Sentence(["a", "b", "c"], [(1, 3, "Y"), (0, 1, "X"), (0, 3, "Z")])
    assert sentence.entities == [Span(0, 1, "X"), Span(0, 3, "Z"), Span(1, 3, "Y")]
    assert all(isinstance(span, Span) for span in sentence.entities)
    for bad in [(2, 4, "X"), (1, 1, "X"), (-1, 1, "X")]:
        with pytest.raises(ValueError, match="0 <= start < end <= 3"):
            Sentence(["a", "b", "c"], [bad])


# --------------------------------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    sentences = [
        Sentence(WORDS, SPANS),
        Sentence(["Zürich", "“quoted”"], []),
        Sentence(["a", "b", "c"], [(0, 3, "outer"), (1, 2, "inner")]),  # JSON can hold nested entities
    ]
    write_jsonl(sentences, tmp_path / "data.jsonl")
    assert read_jsonl(tmp_path / "data.jsonl") == sentences
    first_line = (tmp_path / "data.jsonl").read_text(encoding="utf-8").split("\n")[0]
    assert json.loads(first_line) == {
        "tokens": WORDS,
        "entities": [{"start": s, "end": e, "type": t} for s, e, t in SPANS],
    }
    assert "Zürich" in (tmp_path / "data.jsonl").read_text(encoding="utf-8")


def test_jsonl_tolerates_blank_lines_crlf_and_extra_keys(tmp_path):
    content = '\r\n{"id": 7, "tokens": ["EU"], "entities": [{"start": 0, "end": 1, "type": "ORG"}]}\r\n\r\n'
    assert read_jsonl(write_bytes(tmp_path, "data.jsonl", content)) == [Sentence(["EU"], [Span(0, 1, "ORG")])]


GOOD_LINE = '{"tokens": ["a", "b"], "entities": []}'
BAD_JSONL = {
    "bad json": ('{"tokens": ["a"], "entities": [}', "invalid JSON"),
    "not an object": ('["a", "b"]', "expected a JSON object"),
    "missing entities": ('{"tokens": ["a"]}', "missing key 'entities'"),
    "missing tokens": ('{"entities": []}', "missing key 'tokens'"),
    "non-string token": ('{"tokens": ["a", 3], "entities": []}', "token 1 must be a string"),
    "entity without type": ('{"tokens": ["a"], "entities": [{"start": 0, "end": 1}]}', '"start", "end" and "type"'),
    "float offset": ('{"tokens": ["a"], "entities": [{"start": 0, "end": 1.0, "type": "X"}]}', "must be integers"),
    "bool offset": ('{"tokens": ["a"], "entities": [{"start": false, "end": 1, "type": "X"}]}', "must be integers"),
    "empty type": ('{"tokens": ["a"], "entities": [{"start": 0, "end": 1, "type": ""}]}', "non-empty string"),
    "end out of range": ('{"tokens": ["a"], "entities": [{"start": 0, "end": 2, "type": "X"}]}', "end <= 1"),
    "start == end": ('{"tokens": ["a"], "entities": [{"start": 1, "end": 1, "type": "X"}]}', "start < end"),
    "negative start": ('{"tokens": ["a"], "entities": [{"start": -1, "end": 1, "type": "X"}]}', "0 <= start"),
    "nested too deeply": ('{"tokens": ["a"], "entities": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_malformed_jsonl_names_file_and_line(tmp_path, case):
    line, problem = BAD_JSONL[case]
    path = write_bytes(tmp_path, "broken.jsonl", f"{GOOD_LINE}\n\n{line}\n{GOOD_LINE}\n")
    with pytest.raises(DataFormatError) as caught:
        read_jsonl(path)
    assert caught.value.line == 3
    assert "broken.jsonl:3: " in str(caught.value)
    assert problem in str(caught.value)


def test_empty_jsonl_is_an_error(tmp_path):
    with pytest.raises(DataFormatError, match=r"empty\.jsonl: no sentences"):
        read_jsonl(write_bytes(tmp_path, "empty.jsonl", "\n\n"))


def test_load_sentences_dispatches_on_the_extension(tmp_path):
    sentences = [Sentence(WORDS, SPANS)]
    for name in ("data.jsonl", "data.JSON"):
        write_jsonl(sentences, tmp_path / name)
        assert load_sentences(tmp_path / name) == sentences
    for name in ("data.txt", "data.conll", "data"):
        write_conll(sentences, tmp_path / name)
        assert load_sentences(str(tmp_path / name)) == sentences
    to_hf_dataset(sentences).save_to_disk(str(tmp_path / "folder"))
    assert load_sentences(tmp_path / "folder") == sentences


def test_one_format_table_detects_reads_and_writes(tmp_path):
    # Detection from the path alone: a folder or a new suffix-less path is a datasets folder, .jsonl/.json JSON Lines.
    (tmp_path / "plain").write_text("x O\n")
    expected = {"folder": "hf", "new-folder": "hf", "a.jsonl": "jsonl", "a.JSON": "jsonl", "a.txt": "conll"}
    expected["a.ann"] = "brat"
    (tmp_path / "folder").mkdir()
    assert {name: detect_format(tmp_path / name) for name in expected} == expected
    assert detect_format(tmp_path / "plain") == "conll"  # an existing file without suffix
    assert set(LABELLED_FORMATS) == {"brat", "hf", "label-studio", "jsonl", "conll"} and FORMATS["text"].write is None

    sentences = [Sentence(WORDS, SPANS), Sentence(["Hello"])]
    for name in ("out.jsonl", "out.txt", "out-hf", "out.ann"):
        write_sentences(sentences, tmp_path / name)
        assert read_sentences(tmp_path / name) == sentences, name
    with pytest.raises(ValueError, match="unknown data format 'text'"):
        read_sentences(tmp_path / "out.txt", "text")


def test_plain_text_and_conll_keep_line_numbers(tmp_path):
    text = write_bytes(tmp_path, "raw.txt", "EU rejects German call.\n\nPeter Blackburn\n")
    assert [s.words for s in read_text(text)] == [["EU", "rejects", "German", "call", "."], [], ["Peter", "Blackburn"]]
    assert [s.line for s in read_text(text)] == [1, 2, 3]
    with pytest.raises(DataFormatError, match=r"raw\.txt:1: invalid tag"):
        read_conll(text)
    conll = write_bytes(tmp_path, "two.conll", "-DOCSTART- O\n\nEU B-ORG\n\nPeter B-PER\nBlackburn I-PER\n")
    assert [s.line for s in read_conll(conll)] == [3, 5]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nnot \xff utf-8\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: not valid UTF-8"):
        read_text(bad)


def test_plain_text_lines_end_where_pythons_universal_newlines_end_them(tmp_path):
    """A lone carriage return (old Mac line ends) ends a line, as in `open()`; it is not dropped from the words."""
    text = write_bytes(tmp_path, "mac.txt", "EU rejects\rGerman call\r\nPeter\n")
    assert [s.words for s in read_text(text)] == [["EU", "rejects"], ["German", "call"], ["Peter"]]
    assert [s.line for s in read_text(text)] == [1, 2, 3]


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------------------------------


def test_hf_dataset_round_trip():
    from datasets import ClassLabel

    sentences = [Sentence(WORDS, SPANS), Sentence(["nothing", "here"]), Sentence(["Acme"], [(0, 1, "ORG")])]
    dataset = to_hf_dataset(sentences)
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert dataset.features["ner_tags"].feature == ClassLabel(names=names)
    assert dataset[0]["ner_tags"] == [names.index(tag) for tag in TAGS["IOB2"]]
    assert from_hf_dataset(dataset) == sentences

    fixed = to_hf_dataset(sentences, types=["ORG", "LOC", "PER", "MISC"])
    assert fixed.features["ner_tags"].feature.names[1:3] == ["B-ORG", "I-ORG"]
    assert from_hf_dataset(fixed) == sentences
    with pytest.raises(ValueError, match=r"missing from `types`: \['PER'\]"):
        to_hf_dataset(sentences, types=["LOC", "ORG"])


def hf_dataset(tags: list[list[int]], names: list[str], tokens_column: str = "tokens"):
    from datasets import ClassLabel, Dataset, Features, List, Value

    features = Features({tokens_column: List(Value("string")), "labels": List(ClassLabel(names=names))})
    tokens = [[f"w{index}" for index in range(len(row))] for row in tags]
    return Dataset.from_dict({tokens_column: tokens, "labels": tags}, features=features)


def test_from_hf_dataset_decodes_like_the_conll_reader():
    # conll2003 on the Hub numbers its IOB2 labels like this; the second row holds an orphan I-LOC.
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    dataset = hf_dataset([[1, 2, 0, 5], [0, 6, 6, 3], []], names, tokens_column="words")
    sentences = from_hf_dataset(dataset, tokens_column="words", tags_column="labels")
    assert [sentence.entities for sentence in sentences] == [
        [Span(0, 2, "PER"), Span(3, 4, "LOC")],
        [Span(1, 3, "LOC"), Span(3, 4, "ORG")],
        [],
    ]
    assert sentences[0].words == ["w0", "w1", "w2", "w3"]


def test_from_hf_dataset_errors():
    from datasets import Dataset

    with pytest.raises(DataFormatError, match=r"dataset row 1: tag id -1"):
        from_hf_dataset(hf_dataset([[0, 1], [1, -1]], ["O", "B-X", "I-X"]), tags_column="labels")
    with pytest.raises(DataFormatError, match=r"ClassLabel names of column 'labels': invalid tag 'PER'"):
        from_hf_dataset(hf_dataset([[0]], ["O", "PER"]), tags_column="labels")
    with pytest.raises(ValueError, match=r"no column 'ner_tags'"):
        from_hf_dataset(hf_dataset([[0]], ["O", "B-X"]))
    ids = Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[1]]})
    with pytest.raises(TypeError, match="column 'ner_tags' must be a sequence of ClassLabel or of strings"):
        from_hf_dataset(ids)
    text = Dataset.from_dict({"tokens": ["a b"], "ner_tags": [["O", "O"]]})
    with pytest.raises(TypeError, match="column 'tokens' must be a sequence of strings"):
        from_hf_dataset(text)
    with pytest.raises(DataFormatError, match=r"dataset row 0: column 'ner_tags': .*--tag-scheme io"):
        from_hf_dataset(Dataset.from_dict({"tokens": [["a"]], "ner_tags": [["PER"]]}))


def test_from_hf_dataset_reads_string_tags_and_the_iob1_and_io_schemes():
    from datasets import Dataset

    words = ["Mr", "Jon", "Smith", "met", "Ann", "Lee", "in", "New", "York"]
    iob2 = ["O", "B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    iob1 = ["O", "I-PER", "I-PER", "O", "I-PER", "I-PER", "O", "I-LOC", "I-LOC"]
    expected = [Span(1, 3, "PER"), Span(4, 6, "PER"), Span(7, 9, "LOC")]
    for tags, scheme in ((iob2, "iob2"), (iob1, "iob1"), (iob2, "auto")):
        dataset = Dataset.from_dict({"tokens": [words], "ner_tags": [tags]})
        assert from_hf_dataset(dataset, scheme=scheme)[0].entities == expected
    # Few-NERD: bare types with dashes, one entity per run of equal tags (adjacent entities of one type merge in IO).
    io = [
        "O",
        "person-actor",
        "person-actor",
        "O",
        "person-other",
        "person-other",
        "O",
        "location-GPE",
        "location-GPE",
    ]
    names = ["O", "person-actor", "person-other", "location-GPE"]
    few_nerd = hf_dataset([[names.index(tag) for tag in io]], names)
    (sentence,) = from_hf_dataset(few_nerd, tags_column="labels", scheme="io")
    assert sentence.entities == [Span(1, 3, "person-actor"), Span(4, 6, "person-other"), Span(7, 9, "location-GPE")]
    with pytest.raises(DataFormatError, match="--tag-scheme io"):
        from_hf_dataset(few_nerd, tags_column="labels")


def test_datasets_folder_and_hub_id_sources_by_split(tmp_path, monkeypatch):
    import datasets
    from datasets import DatasetDict

    train, test = [Sentence(["Ann", "runs"], [(0, 1, "PER")])], [Sentence(["in", "Rome"], [(1, 2, "LOC")])]
    folder = tmp_path / "saved"
    DatasetDict({"train": to_hf_dataset(train, types=["PER", "LOC"]), "test": to_hf_dataset(test)}).save_to_disk(
        str(folder)
    )
    assert load_sentences(f"{folder}:train") == train and load_sentences(f"{folder}:test") == test
    with pytest.raises(
        ValueError, match=r"holds the splits \['train', 'test'\]; choose one with --split or as .*:SPLIT"
    ):
        load_sentences(folder)
    assert not is_hub_dataset(f"{folder}:train") and data_name(folder) == "saved"

    calls = []
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name, config, split: calls.append((name, config, split)) or to_hf_dataset(test),
    )
    options = ReadOptions(config_name="supervised")
    assert load_sentences("DFKI-SLT/few-nerd:test", options) == [Sentence(["in", "Rome"], [(1, 2, "LOC")])]
    assert calls == [("DFKI-SLT/few-nerd", "supervised", "test")]
    assert is_hub_dataset("DFKI-SLT/few-nerd:test") and data_name("DFKI-SLT/few-nerd:test") == "DFKI-SLT/few-nerd:test"
    assert not is_hub_dataset("train.txt") and split_source("a/b:c") == ("a/b", "c")


# --------------------------------------------------------------------------------------------------------------------
# Entity types, label words and k-shot sampling
# --------------------------------------------------------------------------------------------------------------------


def test_entity_types_in_order_of_first_appearance():
    sentences = [Sentence(["a", "b"], [(1, 2, "B"), (0, 1, "C")]), Sentence(["a"]), Sentence(["a"], [(0, 1, "A")])]
    assert entity_types(sentences) == ["C", "B", "A"]


def mention_counts(sentences: list[Sentence]) -> Counter:
    return Counter(span.type for sentence in sentences for span in sentence.entities)


def assert_minimal_k_shot(sample: list[Sentence], k: int, available: Counter):
    """Every type reaches min(k, available), and no sentence could be dropped without losing that."""
    counts = mention_counts(sample)
    assert set(counts) == set(available)
    assert all(counts[name] >= min(k, available[name]) for name in available)
    for sentence in sample:
        remaining = counts - mention_counts([sentence])
        assert any(remaining[name] < min(k, available[name]) for name in mention_counts([sentence]))


@pytest.mark.parametrize("name, k", [("conll2003/train.txt", 5), ("mit-movie/test.txt", 10), ("atis/test.txt", 1)])
def test_k_shot_on_shared_data(name, k):
    sentences = load_shared(name)
    sample = sample_k_shot(sentences, k, seed=13)
    assert_minimal_k_shot(sample, k, mention_counts(sentences))
    assert sample == sample_k_shot(sentences, k, seed=13)


def synthetic_corpus(size: int = 300) -> list[Sentence]:
    rng = random.Random(1)
    corpus = []
    for index in range(size):
        length = rng.randint(1, 6)
        spans = [(start, start + 1, rng.choice("ABCD")) for start in range(length) if rng.random() < 0.3]
        corpus.append(Sentence([f"w{index}"] * length, spans))
    corpus.append(Sentence(["rare", "rarer"], [(0, 1, "RARE")]))  # a type with fewer than k mentions
    return corpus


def test_k_shot_is_deterministic_per_seed_and_varies_across_seeds():
    corpus = synthetic_corpus()
    samples = [sample_k_shot(corpus, 3, seed) for seed in range(5)]
    for sample in samples:
        assert_minimal_k_shot(sample, 3, mention_counts(corpus))
        assert all(sentence.entities for sentence in sample)
        assert sorted(map(corpus.index, sample)) == list(map(corpus.index, sample))  # corpus order
    assert samples[0] == sample_k_shot(corpus, 3, 0)
    assert len({tuple(map(corpus.index, sample)) for sample in samples}) == 5


def test_k_shot_needs_positive_k():
    with pytest.raises(ValueError, match="k must be at least 1"):
        sample_k_shot(synthetic_corpus(), 0, seed=0)
