"""Golden outputs: `lightner predict` and `convert_data` write the same bytes as the code that recorded them.

The adapter is `fixtures/adapter_v1` (a tiny random BART with large random prompts, so that it predicts plenty of
entities, overlapping ones included); the inputs are `fixtures/golden/inputs` in every input format, predicted into
every output format, and converted between the labelled formats. What was written, and what the command printed,
is compared with `fixtures/golden/expected`.

Scores are floats computed on the CPU: another CPU (or MKL's default mode against the reproducible mode the command
sets) can differ in their last bits (see `test_hub`'s adapter_v1 test). A file that differs only there passes when its
text is the same but for numbers within a relative 1e-5 of the recorded ones (rounding both to 6 digits failed on
0.03890944 against 0.03890945), unless LIGHTNER_GOLDEN_EXACT=1 asks for the bytes (as a refactoring checks them on the
machine that recorded them).
LIGHTNER_UPDATE_GOLDEN=1 records the files anew from the code as it is: do that only for a change meant to change
outputs, and say so in the commit.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pytest

from lightner.cli import main as lightner_main
from lightner.convert.convert_data import main as convert_main

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
INPUTS = GOLDEN / "inputs"
EXPECTED = GOLDEN / "expected"
ADAPTER_V1 = Path(__file__).parent / "fixtures" / "adapter_v1"
UPDATE = os.environ.get("LIGHTNER_UPDATE_GOLDEN", "") not in ("", "0")
EXACT = os.environ.get("LIGHTNER_GOLDEN_EXACT", "") not in ("", "0")

PREDICT_INPUTS = {"text": "corpus.txt", "jsonl": "corpus.jsonl", "conll": "corpus.conll", "brat": "brat"}
OUTPUT_SUFFIXES = {"jsonl": ".jsonl", "conll": ".conll", "spacy": ".jsonl", "brat": ""}
# Extra runs: the options that change what is written.
PREDICT_VARIANTS = {
    "text-explicit-format": ["--input", "corpus.txt", "--format", "text", "--output-format", "jsonl"],
    "conll-as-text": ["--input", "corpus.conll", "--format", "text", "--output-format", "conll"],
    "min-score": ["--input", "corpus.jsonl", "--output-format", "jsonl", "--min-score", "0.15"],
    "beams": ["--input", "corpus.txt", "--output-format", "jsonl", "--num-beams", "3"],
    "html": ["--input", "corpus.jsonl", "--output-format", "spacy", "--html", "{out}/page.html"],
}
CONVERSIONS = {
    "conll-to-jsonl": ("corpus.conll", "out.jsonl", []),
    "conll-to-bioes": ("corpus.conll", "out.txt", ["--scheme", "BIOES"]),
    "conll-to-iob1": ("corpus.conll", "out.txt", ["--scheme", "IOB1"]),
    "conll-to-brat": ("corpus.conll", "out.ann", []),
    "jsonl-to-conll": ("labelled.jsonl", "out.txt", []),
    "jsonl-to-jsonl": ("labelled.jsonl", "out.jsonl", []),
    "jsonl-to-brat": ("labelled.jsonl", "brat-out", ["--to", "brat"]),
    "brat-to-jsonl": ("labelled_brat", "out.jsonl", []),
    "brat-to-conll": ("labelled_brat", "out.conll", ["--to", "conll"]),
    "brat-file-to-jsonl": ("labelled_brat/doc.ann", "out.jsonl", []),
}


# A float as the writers print scores: 7 or more decimals, perhaps an exponent.
SCORE = re.compile(r"\d+\.\d{7,}(?:e-?\d+)?")


def _same_but_float_noise(got: bytes, expected: bytes) -> bool:
    """Whether the texts are equal once every score is compared within a relative 1e-5 rather than bit for bit."""
    got_text, expected_text = got.decode("utf-8"), expected.decode("utf-8")
    if SCORE.split(got_text) != SCORE.split(expected_text):
        return False
    pairs = zip(SCORE.findall(got_text), SCORE.findall(expected_text), strict=True)
    return all(math.isclose(float(a), float(b), rel_tol=1e-5) for a, b in pairs)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def check_golden(case: str, written: Path, printed: str) -> None:
    """Compare the folder `written` and the command's output `printed` with `expected/<case>`."""
    (written / "stdout.txt").write_text(printed.replace(str(written), "<out>"), encoding="utf-8")
    expected_folder = EXPECTED / case
    if UPDATE:
        shutil.rmtree(expected_folder, ignore_errors=True)
        shutil.copytree(written, expected_folder)
        return
    got, expected = _files(written), _files(expected_folder)
    assert sorted(got) == sorted(expected), f"{case}: files differ"
    for name, data in expected.items():
        if got[name] == data:
            continue
        assert not EXACT, f"{case}/{name} differs from the golden bytes"
        assert _same_but_float_noise(got[name], data), f"{case}/{name} differs from the golden file beyond float noise"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """adapter_v1 with its backbone beside it, as the config's relative `backbone` names it from the working folder."""
    folder = tmp_path_factory.mktemp("golden-adapter")
    shutil.copytree(ADAPTER_V1 / "adapter", folder / "adapter")
    shutil.copytree(ADAPTER_V1 / "backbone", folder / "backbone")
    return folder


def run_predict(adapter: Path, tmp_path: Path, monkeypatch, capsys, arguments: list[str]) -> str:
    monkeypatch.chdir(adapter)
    for name in os.listdir(INPUTS):
        source = INPUTS / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    arguments = [argument.replace("{out}", str(tmp_path / "written")) for argument in arguments]
    where = arguments.index("--input") + 1
    arguments[where] = str(tmp_path / arguments[where])
    (tmp_path / "written").mkdir()
    capsys.readouterr()
    assert lightner_main(["predict", "--model", "adapter", "--device", "cpu", *arguments]) == 0
    return capsys.readouterr().out.replace(str(tmp_path), "<tmp>")


@pytest.mark.parametrize("output_format", list(OUTPUT_SUFFIXES))
@pytest.mark.parametrize("input_format", list(PREDICT_INPUTS))
def test_predict_writes_the_golden_bytes(adapter, tmp_path, monkeypatch, capsys, input_format, output_format):
    output = f"{{out}}/predictions{OUTPUT_SUFFIXES[output_format]}"
    printed = run_predict(
        adapter,
        tmp_path,
        monkeypatch,
        capsys,
        ["--input", PREDICT_INPUTS[input_format], "--output", output, "--output-format", output_format],
    )
    check_golden(f"predict-{input_format}-to-{output_format}", tmp_path / "written", printed)


@pytest.mark.parametrize("variant", list(PREDICT_VARIANTS))
def test_predict_options_write_the_golden_bytes(adapter, tmp_path, monkeypatch, capsys, variant):
    arguments = [*PREDICT_VARIANTS[variant], "--output", "{out}/predictions"]
    printed = run_predict(adapter, tmp_path, monkeypatch, capsys, arguments)
    check_golden(f"predict-{variant}", tmp_path / "written", printed)


@pytest.mark.parametrize("case", list(CONVERSIONS))
def test_convert_data_writes_the_golden_bytes(tmp_path, capsys, case):
    source, target, options = CONVERSIONS[case]
    written = tmp_path / "written"
    written.mkdir()
    capsys.readouterr()
    assert convert_main([str(INPUTS / source), str(written / target), *options]) == 0
    printed = capsys.readouterr().out.replace(str(written), "<out>").replace(str(INPUTS), "<inputs>")
    check_golden(f"convert-{case}", written, printed)
