"""`lightner predict` over a corpus: formats in and out, windows for long lines, bad lines, resuming, processes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from lightner.cli import main
from lightner.data import DataFormatError
from lightner.formats import OUTPUT_FORMATS, detect_input_format, read_conll
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline
from lightner.predict import PredictionRun, Progress, run_prediction

TYPES = ["PER", "LOC", "ORG"]
LINES = [
    "Angela Merkel visited Paris on Monday.",
    "",
    "The talks in Brussels covered trade, said J. Smith of Acme Corp.",
    "nothing to see here",
]


@pytest.fixture(scope="module")
def adapter(tiny_backbone, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(tiny_backbone, TYPES, prompt_hidden_size=16)
    folder = tmp_path_factory.mktemp("predict-adapter")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ner(adapter) -> LightNerPipeline:
    return LightNerPipeline(model=LightNerModel.from_pretrained(adapter))


def corpus(tmp_path: Path, lines: list[str], name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def predict(tmp_path: Path, ner, source: Path, **options) -> Path:
    output = options.pop("output", tmp_path / "out")
    run_prediction(PredictionRun(str(source), output, show_progress=False, **options), ner)
    return output


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_text_in_character_offsets_out_one_line_per_document(tmp_path, ner):
    lines = LINES * 3
    output = predict(tmp_path, ner, corpus(tmp_path, lines), batch_size=2)
    written = records(output)
    assert [r["text"] for r in written] == lines
    assert sum(len(r["entities"]) for r in written) > 0
    for record in written:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["word"]
    # What the pipeline gives, batch by batch (padding moves scores in the last digits).
    assert [r["entities"] for r in written] == ner(lines[:2]) + ner(lines[2:4]) + ner(lines[4:6]) + ner(
        lines[6:8]
    ) + ner(lines[8:10]) + ner(lines[10:])
    assert not Progress.path(output).exists()  # a finished run leaves no progress file


def test_a_line_longer_than_the_backbone_goes_through_windows(tmp_path, ner):
    long_line = " ".join(["Angela Merkel visited Paris ."] * 200)  # 1000 words; the tiny backbone reads 128 pieces
    (record,) = records(predict(tmp_path, ner, corpus(tmp_path, [long_line])))
    assert record["text"] == long_line
    assert all(long_line[e["start"] : e["end"]] == e["word"] for e in record["entities"])
    assert max(e["end"] for e in record["entities"]) > len(long_line) // 2  # windows past the first were read


def test_jsonl_fields_pass_through_and_min_score_filters(tmp_path, ner):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(LINES)))
    everything = records(predict(tmp_path, ner, source, output=tmp_path / "all.jsonl"))
    assert [(r["id"], r["text"]) for r in everything] == list(enumerate(LINES))
    scores = sorted(e["score"] for r in everything for e in r["entities"])
    cut = scores[len(scores) // 2]
    kept = records(predict(tmp_path, ner, source, output=tmp_path / "kept.jsonl", min_score=cut))
    expected = [[e for e in r["entities"] if e["score"] >= cut] for r in everything]
    assert [r["entities"] for r in kept] == expected and 0 < sum(map(len, expected)) < len(scores)


def test_jsonl_line_without_text_is_named_and_skip_bad_lines_continues(tmp_path, ner, caplog):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "Angela Merkel"}\n{"id": 2}\n[1]\n{"text": 5}\n{"text": "Paris"}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: no 'text' field .*--skip-bad-lines"):
        predict(tmp_path, ner, source)
    written = records(predict(tmp_path, ner, source, skip_bad_lines=True))
    assert [r["text"] for r in written] == ["Angela Merkel", "Paris"]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("bad.jsonl:3: expected a JSON object, got list" in w for w in warnings)
    assert any("bad.jsonl:4: field 'text' is int" in w for w in warnings)


def test_conll_words_in_bio_out(tmp_path, ner, tiny_backbone):
    source = tmp_path / "in.conll"
    source.write_text("-DOCSTART- O\n\nAngela B-PER\nMerkel I-PER\nvisited O\nParis B-LOC\n\nHi O\n")
    assert detect_input_format(source) == "conll"
    output = predict(tmp_path, ner, source, output_format="conll", output=tmp_path / "out.conll")
    tagged = read_conll(output)
    assert [s.words for s in tagged] == [["Angela", "Merkel", "visited", "Paris"], ["Hi"]]
    words = records(predict(tmp_path, ner, source, output=tmp_path / "words.jsonl"))
    expected = []
    for record in words:  # BIO cannot hold overlaps: the best-scoring entity of an overlap is kept
        kept = []
        for e in sorted(record["entities"], key=lambda e: -e["score"]):
            if all(e["end"] <= start or end <= e["start"] for start, end, _ in kept):
                kept.append((e["start"], e["end"], e["type"]))
        expected.append(set(kept))
    assert [{tuple(span) for span in s.entities} for s in tagged] == expected and expected[0]


def test_spacy_output_is_displacy_manual_input(tmp_path, ner):
    written = records(predict(tmp_path, ner, corpus(tmp_path, LINES), output_format="spacy"))
    assert [r["text"] for r in written] == LINES
    for record in written:
        assert all(set(ent) == {"start", "end", "label"} for ent in record["ents"])
    from spacy import displacy

    html = displacy.render(written, style="ent", manual=True, page=True)
    assert all(record["text"][ent["start"] : ent["end"]] in html for record in written for ent in record["ents"])


def test_interrupted_run_resumed_writes_each_document_once(tmp_path, ner, monkeypatch):
    """Killed in the middle of a chunk, after part of it reached the file: resuming drops that part and goes on."""
    lines = [f"{text} ({i})" for i in range(12) for text in LINES[:1]]
    source = corpus(tmp_path, lines)
    complete = predict(tmp_path, ner, source, batch_size=1, output=tmp_path / "complete.jsonl").read_bytes()

    real, written = OUTPUT_FORMATS["jsonl"], []

    def dying_write(document, entities):
        if len(written) == 6:  # chunks are 4 documents: the second chunk is half written
            raise KeyboardInterrupt
        written.append(document.line)
        return real.write_document(document, entities)

    monkeypatch.setitem(OUTPUT_FORMATS, "jsonl", dataclasses.replace(real, write_document=dying_write))
    output = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict(tmp_path, ner, source, batch_size=1, output=output)
    first_chunk = b"".join(complete.splitlines(keepends=True)[:4])
    progress = Progress.read(output)
    assert len(records(output)) == 6 and (progress.documents, progress.output_bytes) == (4, len(first_chunk))
    monkeypatch.setitem(OUTPUT_FORMATS, "jsonl", real)
    predict(tmp_path, ner, source, batch_size=1, output=output, resume=True)
    assert output.read_bytes() == complete


def test_resume_without_an_interrupted_run_says_so(tmp_path, ner):
    with pytest.raises(FileNotFoundError, match=r"out.progress does not exist"):
        predict(tmp_path, ner, corpus(tmp_path, LINES), resume=True)


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_killed_process_resumed_writes_each_input_exactly_once(tmp_path, adapter):
    lines = [f"Angela Merkel met Jacques Chirac in Paris, line {i}." for i in range(400)]
    source = corpus(tmp_path, lines)
    output = tmp_path / "killed.jsonl"
    argv = ["lightner", "predict", "--model", str(adapter), "--input", str(source), "--output", str(output)]
    process = run_cli([*argv, "--batch-size", "2"])
    progress = Progress.path(output)
    while process.poll() is None and not (progress.exists() and Progress.read(output).documents >= 16):
        pass
    process.kill()
    process.wait()
    assert process.returncode == -9, "the run finished before it could be killed"
    done = Progress.read(output).documents
    assert 16 <= done < len(lines)
    completed = run_cli([*argv, "--batch-size", "2", "--resume"])
    assert completed.wait(timeout=600) == 0, completed.stderr.read().decode()[-2000:]
    assert [r["text"] for r in records(output)] == lines


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_write_the_output_of_one(tmp_path, adapter):
    lines = [line or "empty" for line in LINES] * 10 + [" ".join(["Angela Merkel visited Paris ."] * 60)]
    source = corpus(tmp_path, lines)
    argv = ["lightner", "predict", "--model", str(adapter), "--input", str(source), "--batch-size", "3"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    single = run_cli([*argv, "--output", str(one)])
    assert single.wait(timeout=300) == 0, single.stderr.read().decode()[-2000:]
    launch = [
        "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    double = run_cli([*launch, "-m", *argv, "--output", str(two)])
    stdout, stderr = double.communicate(timeout=300)
    assert double.returncode == 0, stderr.decode()[-3000:]
    # One group of two, not two independent runs each writing everything: only the main process reports.
    assert stdout.decode().count("written to") == 1 and f"written to {two} by 2 processes" in stdout.decode()
    assert two.read_bytes() == one.read_bytes() and len(records(one)) == len(lines)


def test_cli_predict_rejects_bad_options(adapter, tmp_path, capsys):
    source = corpus(tmp_path, LINES)
    argv = ["predict", "--model", str(adapter), "--input", str(source), "--output", str(tmp_path / "o.jsonl")]
    with pytest.raises(SystemExit):
        main([*argv, "--device", "tpu9"])
    assert "tpu9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--min-score", "2"])
    assert "--min-score must be between 0 and 1" in capsys.readouterr().err
    assert main([*argv, "--output-format", "spacy"]) == 0


# ---------------------------------------------------------------------------------------------------------------------
# BRAT output: one .txt and .ann per document, discontinuous entities with all their fragments
# ---------------------------------------------------------------------------------------------------------------------

ADR_TEXT = "She had muscle and joint pain after the first dose."


def adr_entity(text: str, fragments: list[str], entity_type: str = "ADR", score: float = 0.9) -> dict:
    """A word-level entity (`model.predict`'s) over the words of `text` made of the given fragment texts, each a run
    of whole words, found in order (test data)."""
    words, spans, cursor = split_words_of(text), [], 0
    for fragment in fragments:
        size = len(fragment.split())
        start = next(i for i in range(cursor, len(words)) if " ".join(words[i : i + size]) == fragment)
        spans.append([start, start + size])
        cursor = start + size
    entity = {"type": entity_type, "start": spans[0][0], "end": spans[-1][1], "text": " ".join(fragments)}
    entity["score"] = score
    if len(spans) > 1:
        entity["fragments"] = spans
    return entity


def split_words_of(text: str) -> list[str]:
    from lightner.text_utils import split_words

    return [text[start:end] for start, end in split_words(text)]


ADR_ENTITIES = [
    adr_entity(ADR_TEXT, ["muscle", "pain"]),
    adr_entity(ADR_TEXT, ["joint pain"], score=0.75),
    adr_entity(ADR_TEXT, ["first dose"], "Drug", 0.5),
]


class FixedPipeline:
    """Stands in for the pipeline in file-format tests: the given word-level entities for every text (the words of
    a word list joined by spaces), the call recorded."""

    def __init__(self, entities_of):
        self.entities_of, self.calls = entities_of, []

    def predict_words(self, inputs, is_split_into_words=False, **kwargs):
        from lightner.pipeline_lightner import Document, WordEntities
        from lightner.text_utils import join_words, split_words

        self.calls.append(list(inputs))
        found = []
        for item in inputs:
            text, spans = join_words(item) if is_split_into_words else (item, split_words(item))
            document = Document(text, spans, [text[start:end] for start, end in spans], [], spans)
            found.append(WordEntities(document, self.entities_of(item if isinstance(item, str) else " ".join(item))))
        return found


def test_brat_output_reads_back_with_every_fragment(tmp_path):
    from lightner.formats.brat import parse_ann, read_brat

    source = corpus(tmp_path, [ADR_TEXT, "nothing here"])
    pipeline = FixedPipeline(lambda text: ADR_ENTITIES if text == ADR_TEXT else [])
    output = predict(tmp_path, pipeline, source, output_format="brat", output=tmp_path / "brat")
    assert sorted(p.name for p in output.iterdir()) == [
        "doc-00000001.ann", "doc-00000001.txt", "doc-00000002.ann", "doc-00000002.txt",
    ]  # fmt: skip
    assert (output / "doc-00000001.txt").read_text(encoding="utf-8") == ADR_TEXT
    ann = (output / "doc-00000001.ann").read_text(encoding="utf-8")
    assert ann.splitlines()[:2] == ["T1\tADR 8 14;25 29\tmuscle pain", "#1\tAnnotatorNotes T1\tscore 0.9000"]
    bounds = parse_ann(output / "doc-00000001.ann", ann)
    assert [(b.type, b.fragments, b.text) for b in bounds] == [
        ("ADR", ((8, 14), (25, 29)), "muscle pain"),
        ("ADR", ((19, 29),), "joint pain"),
        ("Drug", ((40, 50),), "first dose"),
    ]
    (sentence, empty) = read_brat(output)  # read back as training data: word offsets, both ADRs sharing "pain"
    assert {(e.type, e.fragments) for e in sentence.entities} == {
        ("ADR", ((2, 3), (5, 6))), ("ADR", ((4, 6),)), ("Drug", ((8, 10),)),
    }  # fmt: skip
    assert empty.words == ["nothing", "here"] and not empty.entities
    # The same run in JSON Lines holds the same entities, character for character.
    (record, _) = records(predict(tmp_path, pipeline, source, output=tmp_path / "same.jsonl"))
    muscle, pain = {"start": 8, "end": 14, "word": "muscle"}, {"start": 25, "end": 29, "word": "pain"}
    assert record["entities"] == [
        {
            "entity_group": "ADR",
            "score": 0.9,
            "word": "muscle pain",
            "start": 8,
            "end": 29,
            "fragments": [muscle, pain],
        },
        {"entity_group": "ADR", "score": 0.75, "word": "joint pain", "start": 19, "end": 29},
        {"entity_group": "Drug", "score": 0.5, "word": "first dose", "start": 40, "end": 50},
    ]


def test_brat_folder_in_brat_out_beside_the_texts(tmp_path):
    """A folder of BRAT texts (any length, several lines) is read a file at a time and its .ann files are written
    under the same names, into the corpus's own folder too: its texts are left as they are."""
    corpus_dir = tmp_path / "corpus"
    (corpus_dir / "part").mkdir(parents=True)
    texts = {"a": ADR_TEXT + "\nSecond line, no entity.\n", "part/b": "nothing here\n"}
    for name, text in texts.items():
        (corpus_dir / f"{name}.txt").write_text(text, encoding="utf-8")
    assert detect_input_format(corpus_dir) == "brat"
    pipeline = FixedPipeline(lambda text: ADR_ENTITIES if text.startswith(ADR_TEXT) else [])
    predict(tmp_path, pipeline, corpus_dir, output_format="brat", output=corpus_dir)
    assert pipeline.calls == [list(texts.values())]  # whole documents, in path order
    assert {p.relative_to(corpus_dir).as_posix() for p in corpus_dir.rglob("*.ann")} == {"a.ann", "part/b.ann"}
    assert all((corpus_dir / f"{name}.txt").read_text(encoding="utf-8") == text for name, text in texts.items())
    assert (corpus_dir / "a.ann").read_text(encoding="utf-8").startswith("T1\tADR 8 14;25 29\tmuscle pain\n")
    assert (corpus_dir / "part" / "b.ann").read_text(encoding="utf-8") == ""


def test_brat_output_loses_nothing_already_written(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps(r) + "\n" for r in ({"id": "x1", "text": ADR_TEXT}, {"id": "../up", "text": "hi"}))
    )
    pipeline = FixedPipeline(lambda text: [])
    output = predict(tmp_path, pipeline, source, output_format="brat", output=tmp_path / "out")
    # A JSON Lines id names the files when it is a plain file name; a path-like one is not used as a path.
    assert sorted(p.name for p in output.iterdir()) == ["doc-00000002.ann", "doc-00000002.txt", "x1.ann", "x1.txt"]
    with pytest.raises(ValueError, match=r"out already holds annotations .*x1.ann.* --resume"):
        predict(tmp_path, pipeline, source, output_format="brat", output=output)
    clashing = tmp_path / "clash.jsonl"
    clashing.write_text(json.dumps({"id": "x1", "text": "a"}) + "\n" + json.dumps({"id": "x1", "text": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"line 2: its document name 'x1' is also that of line 1"):
        predict(tmp_path, pipeline, clashing, output_format="brat", output=tmp_path / "clash")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "x1.txt").write_text("another text", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x1.txt exists and holds another text than line 1's; not replaced"):
        predict(tmp_path, pipeline, source, output_format="brat", output=texts)
    assert (texts / "x1.txt").read_text(encoding="utf-8") == "another text"
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"a-file is a file; --output-format brat writes a folder"):
        predict(tmp_path, pipeline, source, output_format="brat", output=tmp_path / "a-file")


def test_brat_output_interrupted_and_resumed_gives_the_files_of_one_run(tmp_path, monkeypatch):
    lines = [f"{ADR_TEXT} ({i})" for i in range(12)]
    source = corpus(tmp_path, lines)
    pipeline = FixedPipeline(lambda text: ADR_ENTITIES)
    complete = predict(tmp_path, pipeline, source, batch_size=1, output_format="brat", output=tmp_path / "complete")
    real, written = OUTPUT_FORMATS["brat"], []

    def dying_write(document, entities):
        if len(written) == 6:  # chunks are 4 documents: the second chunk is half written
            raise KeyboardInterrupt
        written.append(document.line)
        return real.write_document(document, entities)

    monkeypatch.setitem(OUTPUT_FORMATS, "brat", dataclasses.replace(real, write_document=dying_write))
    output = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        predict(tmp_path, pipeline, source, batch_size=1, output_format="brat", output=output)
    assert len(list(output.glob("*.ann"))) == 6 and Progress.read(output).documents == 4
    monkeypatch.setitem(OUTPUT_FORMATS, "brat", real)
    predict(tmp_path, pipeline, source, batch_size=1, output_format="brat", output=output, resume=True)
    files = sorted(p.name for p in complete.iterdir())
    assert sorted(p.name for p in output.iterdir()) == files and len(files) == 24
    assert all((output / name).read_bytes() == (complete / name).read_bytes() for name in files)
    assert not Progress.path(output).exists()


def test_word_input_keeps_fragments_and_conll_says_what_it_leaves_out(tmp_path, caplog):
    source = tmp_path / "in.conll"
    words = ADR_TEXT.rstrip(".").split() + ["."]
    source.write_text("".join(f"{word} O\n" for word in words))
    joined = " ".join(words)
    pipeline = FixedPipeline(lambda text: [adr_entity(joined, ["muscle", "pain"]), adr_entity(joined, ["first dose"])])
    (record,) = records(predict(tmp_path, pipeline, source, output=tmp_path / "words.jsonl"))
    assert record["entities"][0] == {
        "type": "ADR", "start": 2, "end": 6, "text": "muscle pain", "score": 0.9, "fragments": [[2, 3], [5, 6]],
    }  # fmt: skip
    from lightner.formats import read_jsonl

    (sentence,) = read_jsonl(tmp_path / "words.jsonl")  # readable back as data, fragments and all
    assert [(e.type, e.fragments) for e in sentence.entities] == [("ADR", ((2, 3), (5, 6))), ("ADR", ((8, 10),))]
    tagged = predict(tmp_path, pipeline, source, output_format="conll", output=tmp_path / "out.conll")
    assert [tuple(span) for span in read_conll(tagged)[0].entities] == [(8, 10, "ADR")]
    assert any("line 1: 1 overlapping or discontinuous entities cannot be written as CoNLL" in r.getMessage()
               for r in caplog.records)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Nothing already written is lost: outputs that are inputs, resumes that do not match, two runs on one output
# ---------------------------------------------------------------------------------------------------------------------


def test_an_output_that_is_an_input_or_another_output_is_refused_before_anything_is_written(tmp_path):
    pipeline = FixedPipeline(lambda text: [])
    text = corpus(tmp_path, LINES)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": line}) + "\n" for line in LINES))
    os.link(text, tmp_path / "hard-link.txt")
    (tmp_path / "soft-link.jsonl").symlink_to(jsonl)
    refused = [
        (
            text,
            {"output": text},
            r"--output \(.*corpus.txt\) is the input file .*corpus.txt: writing it would destroy",
        ),
        (jsonl, {"output": jsonl}, r"--output \(.*in.jsonl\) is the input file"),
        (text, {"output": tmp_path / "hard-link.txt"}, r"--output \(.*hard-link.txt\) is the input file .*corpus.txt"),
        (jsonl, {"output": tmp_path / "soft-link.jsonl"}, r"--output \(.*soft-link.jsonl\) is the input file"),
        (text, {"html": text}, r"--html \(.*corpus.txt\) is the input file .*; choose another --html"),
        (text, {"output": tmp_path / "o.jsonl", "html": tmp_path / "o.jsonl"}, r"--output and --html are one file"),
        (text, {"html": tmp_path / "out.progress"}, r"the progress file of --output and --html are one file"),
        (text, {"html": tmp_path}, r"--html .* is a folder"),
        (text, {"output": tmp_path}, r"is a folder; --output-format jsonl writes a file"),
    ]
    before = {path: path.read_bytes() for path in (text, jsonl)}
    for source, options, message in refused:
        with pytest.raises(ValueError, match=message):
            predict(tmp_path, pipeline, source, **options)
        assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "out").exists()
    # A folder output may be the BRAT input's own folder (its texts are kept): not an output over an input.
    folder = tmp_path / "brat"
    folder.mkdir()
    (folder / "a.txt").write_text(ADR_TEXT, encoding="utf-8")
    predict(tmp_path, pipeline, folder, output_format="brat", output=folder)
    assert (folder / "a.txt").read_text(encoding="utf-8") == ADR_TEXT and (folder / "a.ann").is_file()


def interrupt_after(monkeypatch, output_format: str, documents: int) -> None:
    """Make `output_format`'s writer raise KeyboardInterrupt once `documents` documents are written, as Ctrl-C
    would; `monkeypatch.undo()` ends it."""
    real, written = OUTPUT_FORMATS[output_format], []

    def dying_write(document, entities):
        if len(written) == documents:
            raise KeyboardInterrupt
        written.append(document.line)
        return real.write_document(document, entities)

    monkeypatch.setitem(OUTPUT_FORMATS, output_format, dataclasses.replace(real, write_document=dying_write))


def test_resume_refuses_a_changed_input_or_other_options_naming_what_changed(tmp_path, monkeypatch, caplog):
    lines = [f"{ADR_TEXT} ({i})" for i in range(12)]
    source = corpus(tmp_path, lines)
    pipeline = FixedPipeline(lambda text: ADR_ENTITIES if text.startswith(ADR_TEXT) else [])  # word offsets of it
    output = tmp_path / "out.jsonl"
    interrupt_after(monkeypatch, "jsonl", 6)
    with pytest.raises(KeyboardInterrupt):
        predict(tmp_path, pipeline, source, batch_size=1, output=output)
    monkeypatch.undo()
    assert Progress.read(output).documents == 4
    written, progress = output.read_bytes(), Progress.path(output).read_bytes()

    def refused(message: str, **options) -> None:
        with pytest.raises(ValueError, match=message):
            predict(
                tmp_path, pipeline, options.pop("source", source), batch_size=1, output=output, resume=True, **options
            )
        assert output.read_bytes() == written and Progress.path(output).read_bytes() == progress

    refused(r"--resume: options differ .*: --output-format \(then 'jsonl', now 'conll'\)", output_format="conll")
    refused(r"--min-score \(then 0.0, now 0.5\)", min_score=0.5)
    refused(r"--format \(then 'text', now 'jsonl'\)", input_format="jsonl")
    source.write_text("".join(line + "\n" for line in lines[:2] + ["another line"] + lines[3:]), encoding="utf-8")
    refused(
        r"the first 4 documents of .*corpus.txt are not those the interrupted run tagged \(size \d+ bytes -> \d+ b"
    )
    source.write_text("".join(line + "\n" for line in lines[:3]), encoding="utf-8")
    refused(r"corpus.txt now holds 3 documents, fewer than the 4 the interrupted run had done")

    # Lines added after those done: the run goes on with the input as it is now, and says so.
    longer = lines + ["Angela Merkel"]
    source.write_text("".join(line + "\n" for line in longer), encoding="utf-8")
    predict(tmp_path, pipeline, source, batch_size=1, output=output, resume=True)
    assert [r["text"] for r in records(output)] == longer
    assert "but its first 4 documents, which it had done, are the same" in caplog.text


@pytest.mark.parametrize("output_format", ["jsonl", "brat"])
def test_a_second_run_into_an_output_being_written_is_refused_by_name(tmp_path, output_format):
    """The second run starts while the first is tagging its first chunk: it is refused, and the first run's output
    is what it would have been alone."""
    source = corpus(tmp_path, [f"{ADR_TEXT} ({i})" for i in range(6)])
    output = tmp_path / "out"
    alone = predict(tmp_path, FixedPipeline(lambda text: ADR_ENTITIES), source, output_format=output_format,
                    output=tmp_path / "alone")  # fmt: skip
    refusals = []

    class RacingPipeline(FixedPipeline):
        def predict_words(self, inputs, **kwargs):
            if not self.calls:
                with pytest.raises(ValueError) as refused:
                    predict(
                        tmp_path, FixedPipeline(lambda text: []), source, output_format=output_format, output=output
                    )
                refusals.append(str(refused.value))
            return super().predict_words(inputs, **kwargs)

    predict(tmp_path, RacingPipeline(lambda text: ADR_ENTITIES), source, output_format=output_format, output=output)
    assert refusals == [
        f"{output} is being written by another lightner predict run, which holds its lock; let that run finish, or "
        "choose another --output"
    ]
    if output_format == "jsonl":
        assert output.read_bytes() == alone.read_bytes()
    else:
        assert {p.name: p.read_bytes() for p in output.iterdir()} == {p.name: p.read_bytes() for p in alone.iterdir()}


def test_ctrl_c_is_one_line_saying_how_to_resume(adapter, tmp_path, monkeypatch, capsys):
    lines = [f"Angela Merkel visited Paris ({i})." for i in range(12)]
    source, output = corpus(tmp_path, lines), tmp_path / "out.jsonl"
    argv = ["predict", "--model", str(adapter), "--input", str(source), "--output", str(output), "--batch-size", "1"]
    interrupt_after(monkeypatch, "jsonl", 6)
    try:
        assert main(argv) == 130
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C reached the top as KeyboardInterrupt (a traceback at the command line)")
    monkeypatch.undo()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lightner predict: interrupted; 4 documents are written to {output}; the same command with --resume "
        "continues from there"
    )
    assert main([*argv, "--resume"]) == 0
    assert [r["text"] for r in records(output)] == lines


# ---------------------------------------------------------------------------------------------------------------------
# Inputs: line ends, blank lines, nesting, streams, folders, documents the model refuses
# ---------------------------------------------------------------------------------------------------------------------


def test_lone_carriage_returns_end_lines_as_pythons_universal_newlines_do(tmp_path):
    pipeline = FixedPipeline(lambda text: [])
    text = tmp_path / "mac.txt"
    text.write_bytes(b"Angela Merkel\rvisited Paris\r\r\nnothing to see here\nlast")
    assert [(r["text"]) for r in records(predict(tmp_path, pipeline, text))] == [
        "Angela Merkel", "visited Paris", "", "nothing to see here", "last",
    ]  # fmt: skip
    jsonl = tmp_path / "mac.jsonl"
    jsonl.write_bytes(b'{"text": "a"}\r{"text": "b"}\r')
    assert [r["text"] for r in records(predict(tmp_path, pipeline, jsonl))] == ["a", "b"]
    # A "\r\n" that falls between two blocks of the file is one line end, not two.
    from lightner.formats.base import ANY_LINE_BREAK, split_lines

    assert list(split_lines([b"a\r", b"\nb\r", b"c\r\n", b"d\r"], ANY_LINE_BREAK)) == [b"a", b"b", b"c", b"d"]


def test_blank_json_lines_lines_are_skipped_as_in_training_data(tmp_path):
    source = tmp_path / "blank.jsonl"
    source.write_text('{"text": "Angela Merkel"}\n\n  \n{"text": "Paris"}\n\n', encoding="utf-8")
    written = records(predict(tmp_path, FixedPipeline(lambda text: []), source))
    assert [r["text"] for r in written] == ["Angela Merkel", "Paris"]


def test_deeply_nested_json_is_named_by_file_and_line(tmp_path):
    source = tmp_path / "deep.jsonl"
    source.write_text('{"text": "a"}\n{"text": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataFormatError, match=r"deep.jsonl:2: invalid JSON: nested too deeply for the parser"):
        predict(tmp_path, FixedPipeline(lambda text: []), source)


def test_documents_the_model_refuses_are_named_by_file_and_line(tmp_path, ner, caplog):
    source = tmp_path / "words.jsonl"
    documents = [{"tokens": ["Angela", "Merkel"]}, {"tokens": ["Paris", " ", "France"]}, {"tokens": ["Berlin"]}]
    source.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"words.jsonl:2: word 1 of the document is empty or whitespace \(' '\)"):
        predict(tmp_path, ner, source)
    source.write_text("".join(json.dumps(d) + "\n" for d in [*documents, {"text": "Paris \ud800"}]), encoding="utf-8")
    counts = run_prediction(
        PredictionRun(str(source), tmp_path / "out", skip_bad_lines=True, show_progress=False), ner
    )
    assert counts["documents"] == 2 and counts["skipped"] == 2
    assert [r.get("tokens") for r in records(tmp_path / "out")] == [["Angela", "Merkel"], ["Berlin"]]
    assert "words.jsonl:2: word 1 of the document is empty or whitespace (' '); document left out" in caplog.text
    assert "words.jsonl:4: the document has an unpaired surrogate" in caplog.text


def test_a_folder_without_texts_and_dev_null_say_what_they_are(tmp_path):
    pipeline = FixedPipeline(lambda text: [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is a folder without .txt documents .*, nor a datasets folder"):
        predict(tmp_path, pipeline, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"empty is a folder without .txt documents"):
        predict(tmp_path, pipeline, tmp_path / "empty", input_format="brat", output_format="brat")
    assert predict(tmp_path, pipeline, Path(os.devnull)).read_text() == ""  # a device: read as an empty stream


def test_standard_input_and_output_and_pipes_can_be_read_and_written(tmp_path, adapter):
    text = "".join(line + "\n" for line in LINES)
    argv = ["lightner", "predict", "--model", str(adapter)]
    expected = tmp_path / "file.jsonl"
    assert main([*argv[1:], "--input", str(corpus(tmp_path, LINES)), "--output", str(expected)]) == 0
    for streams in (["--input", "-", "--output", "-"], ["--input", "/dev/stdin", "--output", "/dev/stdout"]):
        process = run_cli([*argv, *streams], stdin=subprocess.PIPE)
        stdout, stderr = process.communicate(text.encode(), timeout=300)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert stdout == expected.read_bytes()
        assert "documents written to" in stderr.decode()  # the summary is not among the predictions
    assert main([*argv[1:], "--input", str(expected), "--output", "-", "--resume"]) == 1


def test_a_brat_text_with_a_byte_order_mark_gets_offsets_that_count_it(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("\ufeff" + ADR_TEXT, encoding="utf-8")
    pipeline = FixedPipeline(lambda text: [adr_entity(text, ["muscle", "pain"])])
    predict(tmp_path, pipeline, folder, output_format="brat", output=folder)
    from lightner.formats.brat import parse_ann

    (bound,) = parse_ann(folder / "a.ann", (folder / "a.ann").read_text(encoding="utf-8"))
    as_brat_reads_it = (folder / "a.txt").read_text(encoding="utf-8")  # "utf-8" keeps the mark, as BRAT does
    assert [as_brat_reads_it[start:end] for start, end in bound.fragments] == ["muscle", "pain"]
