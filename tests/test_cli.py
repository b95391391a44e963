"""The `lightner` command end to end on a tiny backbone and a slice of the shared CoNLL-2003 data.

One uninterrupted training run (module fixture) is shared: the adapter it leaves is evaluated, used for prediction,
pushed, and compared bit for bit with a run that is killed mid-epoch and resumed. A 2-process run goes through
`accelerate launch`. Everything runs with one torch thread: on a shared 2-core machine small ops are many times faster
that way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT, save_tiny_backbone, shared_path
from lightner.arguments import LightNerTrainingArguments
from lightner.checkpointing import latest_checkpoint
from lightner.cli import _training_runs, build_parser, evaluation_output, main
from lightner.evaluation import evaluate_sentences
from lightner.formats import read_conll, write_conll
from lightner.modeling_lightner import LightNerModel
from lightner.train import INTERRUPTED_EXIT_CODE

TRAIN_OPTIONS = [
    "--epochs", "2", "--batch-size", "8", "--lr", "5e-3", "--prompt-hidden-size", "16",
    "--logging-steps", "1", "--checkpoint-steps", "2",
]  # fmt: skip


def _slice(name: str, count: int, path: Path) -> Path:
    """The first `count` sentences of a CoNLL-2003 file with at most 40 words (the tiny backbone has 256 positions)."""
    sentences = [s for s in read_conll(shared_path("data", "lightner", "conll2003", name)) if len(s.words) <= 40]
    write_conll(sentences[:count], path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, real_tokenizer) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("cli")
    backbone = save_tiny_backbone(root / "backbone", tokenizer=real_tokenizer, max_position_embeddings=256)
    return SimpleNamespace(
        root=root,
        backbone=backbone,
        train=_slice("train.txt", 32, root / "train.txt"),
        dev=_slice("dev.txt", 16, root / "dev.txt"),
    )


def train_argv(workspace: SimpleNamespace, output: Path, *extra: str) -> list[str]:
    data = ["--backbone", str(workspace.backbone), "--train", str(workspace.train), "--dev", str(workspace.dev)]
    return ["train", *data, "--output", str(output), *TRAIN_OPTIONS, *extra]


@pytest.fixture(scope="module")
def trained(workspace) -> Path:
    output = workspace.root / "adapter"
    assert main(train_argv(workspace, output)) == 0
    return output


def run_cli(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m <args>` in a fresh process, importable from the checkout, with one thread per process."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_option_is_documented():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == {
        "train",
        "evaluate",
        "predict",
        "push",
        "convert-deepke",
        "demo",
        "label-studio",
        "select",
    }
    for name, subparser in subcommands.items():
        for action in subparser._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings} has no help"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0


def test_train_options_come_from_the_training_arguments_under_their_established_names():
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    names = {option: action.dest for action in train._actions for option in action.option_strings}
    established = {
        "--train": "train_file", "--dev": "dev_file", "--test": "test_file", "--types": "entity_types",
        "--label-words": "label_words", "--backbone": "backbone", "--init-prompts-from": "init_prompts_from",
        "--prompt-length": "prompt_length", "--prompt-hidden-size": "prompt_hidden_size", "--dropout": "dropout",
        "--full-finetune": "full_finetune", "--max-length-a": "max_length_a", "--num-beams": "num_beams",
        "--epochs": "epochs", "--batch-size": "batch_size", "--eval-batch-size": "eval_batch_size",
        "--lr": "learning_rate", "--weight-decay": "weight_decay", "--warmup-ratio": "warmup_ratio",
        "--max-grad-norm": "max_grad_norm", "--gradient-accumulation-steps": "gradient_accumulation_steps",
        "--mixed-precision": "mixed_precision", "--seed": "seed", "--output": "output_dir",
        "--checkpoint-steps": "checkpoint_steps", "--checkpoints-limit": "checkpoints_limit",
        "--logging-steps": "logging_steps", "--resume": "resume", "--report-to": "report_to",
        "--stop-after-steps": "stop_after_steps", "--overwrite": "overwrite",
    }  # fmt: skip
    assert {option: names.get(option) for option in established} == established
    # Every field is an option: nothing of the dataclass is left to a hand-written block.
    assert {field.name for field in dataclasses.fields(LightNerTrainingArguments)} <= set(names.values())


def test_select_refuses_beams_it_would_not_use(capsys):
    """Its uncertainty measures are read off one greedy pass: an accepted --num-beams would be silently ignored."""
    with pytest.raises(SystemExit):
        main(["select", "--model", "m", "--input", "pool.txt", "--k", "1", "--output", "o.txt", "--num-beams", "4"])
    assert "unrecognized arguments: --num-beams 4" in capsys.readouterr().err


def test_train_needs_data_and_output(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--output", str(tmp_path)])
    assert "--train" in capsys.readouterr().err


def test_train_leaves_a_loadable_adapter_and_its_run_files(trained, workspace):
    for name in ("config.json", "model.safetensors", "results.json", "metrics.jsonl", "training_args.json"):
        assert (trained / name).is_file(), name
    assert (trained / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    adapter = load_file(trained / "model.safetensors")
    assert all(name.startswith(("prompt_encoder.prompts.", "pointer_head.")) for name in adapter)

    model = LightNerModel.from_pretrained(trained)
    assert model.config.entity_types == ["ORG", "MISC", "PER", "LOC"]  # order of first appearance in train.txt
    epochs = [record for record in read_jsonl(trained / "metrics.jsonl") if "epoch/epoch" in record]
    assert [record["epoch/epoch"] for record in epochs] == [1, 2]
    assert all(0.0 <= record["epoch/dev_f1"] <= 1.0 for record in epochs)

    results = json.loads((trained / "results.json").read_text())
    assert results["split"] == "dev" and results["num_processes"] == 1
    assert results["best_dev_f1"] == max(record["epoch/dev_f1"] for record in epochs)
    assert results["f1"] == results["best_dev_f1"]  # the kept adapter, scored again after loading it
    assert set(results["per_type"]) <= {"ORG", "MISC", "PER", "LOC"} and results["num_sentences"] == 16


def test_a_saved_run_replays_from_its_training_args(trained, tmp_path):
    saved = json.loads((trained / "training_args.json").read_text())
    assert saved["learning_rate"] == 5e-3 and "resume" not in saved  # the run's settings, not the invocation's
    replay = tmp_path / "replay"
    assert main(["train", "--config", str(trained / "training_args.json"), "--output", str(replay)]) == 0
    assert (replay / "model.safetensors").read_bytes() == (trained / "model.safetensors").read_bytes()
    assert json.loads((replay / "training_args.json").read_text()) == {**saved, "output_dir": str(replay)}


def test_command_line_options_override_a_saved_configuration(trained, tmp_path):
    argv = ["train", "--config", str(trained / "training_args.json"), "--output", str(tmp_path), "--lr", "1e-3"]
    args = build_parser().parse_args([*argv, "--types", "PER", "--full-finetune"])
    (run,) = _training_runs(args, build_parser())
    saved = json.loads((trained / "training_args.json").read_text())
    changed = {"output_dir": str(tmp_path), "learning_rate": 1e-3, "entity_types": ["PER"], "full_finetune": True}
    assert run == LightNerTrainingArguments(**{**saved, **changed})


def test_evaluate_writes_its_own_file_and_leaves_the_run_results_alone(trained, workspace, tmp_path, capsys):
    assert main(["evaluate", "--model", str(trained), "--data", str(workspace.dev), "--output", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "precision" in table and "micro" in table and "macro" in table
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert {"precision", "recall", "f1", "per_type", "micro", "macro"} <= results.keys()
    assert results["f1"] == json.loads((trained / "results.json").read_text())["f1"]

    # By default the scores go next to a local adapter, under a name training never writes.
    adapter = tmp_path / "adapter"
    shutil.copytree(trained, adapter)
    run_results = (adapter / "results.json").read_bytes()
    assert main(["evaluate", "--model", str(adapter), "--data", str(workspace.dev), "--batch-size", "4"]) == 0
    assert (adapter / "results.json").read_bytes() == run_results
    assert json.loads((adapter / "eval_results.json").read_text())["f1"] == results["f1"]


def test_evaluation_of_a_hub_model_writes_into_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluation_output("org/name", None) == tmp_path / "eval_results.json"  # no ./org/name/ folder
    assert evaluation_output("org/name", tmp_path / "scores.json") == tmp_path / "scores.json"
    assert evaluation_output("org/name", tmp_path) == tmp_path / "eval_results.json"


def test_predict_reads_conll_jsonl_and_plain_text(trained, workspace, tmp_path):
    text = tmp_path / "raw.txt"
    text.write_text("EU rejects German call to boycott British lamb.\n\nPeter Blackburn, (Brussels)\n")
    output = tmp_path / "dev.jsonl"
    assert main(["predict", "--model", str(trained), "--input", str(workspace.dev), "--output", str(output)]) == 0
    records = read_jsonl(output)
    assert len(records) == 16
    for record in records:  # words in, word offsets out
        for entity in record["entities"]:
            assert {"type", "start", "end", "text", "score"} <= entity.keys()
            assert entity["text"] == " ".join(record["tokens"][entity["start"] : entity["end"]])
    raw_output = tmp_path / "raw.jsonl"
    assert main(["predict", "--model", str(trained), "--input", str(text), "--output", str(raw_output)]) == 0
    raw = read_jsonl(raw_output)
    assert [r["text"] for r in raw] == text.read_text().splitlines()  # a document per line, blank ones kept
    assert raw[1] == {"text": "", "entities": []}
    for record in raw:  # text in, character offsets out
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["word"]
    # Its own output is JSON Lines input: the same sentences come back, and an HTML page on request.
    again, html = tmp_path / "again.jsonl", tmp_path / "again.html"
    argv = ["predict", "--model", str(trained), "--input", str(output), "--output", str(again)]
    assert main([*argv, "--html", str(html)]) == 0
    assert [r["tokens"] for r in read_jsonl(again)] == [r["tokens"] for r in records]
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_run_killed_mid_epoch_resumes_to_the_same_adapter(trained, workspace, tmp_path, capsys):
    output = tmp_path / "interrupted"
    # Checkpoints after steps 2 and 4 (end of epoch 1); killed after step 3, so the resume skips 2 seen batches.
    killed = run_cli(["lightner", *train_argv(workspace, output, "--stop-after-steps", "3")], timeout=300)
    assert killed.returncode == INTERRUPTED_EXIT_CODE, killed.stderr[-2000:]
    assert not (output / "results.json").exists()
    assert main(train_argv(workspace, output)) == 1  # no silent restart over an earlier run's checkpoints
    assert "--resume" in capsys.readouterr().err

    assert main(train_argv(workspace, output, "--resume")) == 0
    # Same seed, same data order, restored random states: bit-identical, dropout included.
    assert (output / "model.safetensors").read_bytes() == (trained / "model.safetensors").read_bytes()
    without_speed = [
        {k: v for k, v in r.items() if "per_second" not in k} for r in read_jsonl(output / "metrics.jsonl")
    ]
    expected = [{k: v for k, v in r.items() if "per_second" not in k} for r in read_jsonl(trained / "metrics.jsonl")]
    assert without_speed == expected

    saved_arguments = (output / "training_args.json").read_bytes()
    assert main(train_argv(workspace, output, "--resume", "--lr", "1e-3")) == 1
    assert "learning_rate" in capsys.readouterr().err
    assert (output / "training_args.json").read_bytes() == saved_arguments  # refused before writing anything


def error_line(captured: str) -> str:
    """The one line a failing command prints last; nothing of a traceback before it."""
    assert "Traceback" not in captured
    return captured.strip().splitlines()[-1]


def epoch_records(output: Path) -> list[dict]:
    return [record for record in read_jsonl(output / "metrics.jsonl") if "epoch/epoch" in record]


def test_the_kept_adapter_is_the_best_dev_epochs(workspace, tmp_path):
    output = tmp_path / "best"
    # The training file as dev set, so that dev F1 moves between epochs on a tiny random backbone.
    options = ["--dev", str(workspace.train), "--epochs", "3", "--dropout", "0", "--checkpoint-steps", "1000"]
    assert main(train_argv(workspace, output, *options, "--checkpoints-limit", "10")) == 0
    f1 = [record["epoch/dev_f1"] for record in epoch_records(output)]
    best = f1.index(max(f1)) + 1
    # The first best epoch is kept; the run must peak before its last epoch for the test to tell selection apart.
    assert len(set(f1)) > 1 and best != 3, f1
    assert json.loads((output / "results.json").read_text())["best_epoch"] == best

    # Each epoch's adapter, rebuilt from its end-of-epoch checkpoint (only those: --checkpoint-steps 1000).
    checkpoints = sorted((output / "checkpoints").iterdir(), key=lambda path: int(path.name.rsplit("_", 1)[1]))
    model = LightNerModel.from_backbone(workspace.backbone, ["ORG", "MISC", "PER", "LOC"], prompt_hidden_size=16)
    epochs = []
    for checkpoint in checkpoints:
        model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
        epochs.append({name: tensor.clone() for name, tensor in model.adapter_state_dict().items()})
    kept = load_file(output / "model.safetensors")
    assert len(epochs) == 3 and kept.keys() == epochs[0].keys()
    for name, tensor in kept.items():
        torch.testing.assert_close(tensor, epochs[best - 1][name], rtol=0, atol=1e-6)
    assert not all(torch.allclose(tensor, epochs[-1][name]) for name, tensor in kept.items())


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(
    "option, value",
    [
        ("--batch-size", "0"),
        ("--batch-size", "-2"),
        ("--batch-size", "2.5"),
        ("--num-beams", "0"),
        ("--num-beams", "1.5"),
    ],
)
def test_batch_sizes_and_beams_are_checked_by_the_parser(trained, workspace, tmp_path, capsys, command, option, value):
    data = ["--input", str(workspace.dev), "--output", str(tmp_path / "out.jsonl")]
    argv = [command, "--model", str(trained), *(data if command == "predict" else ["--data", str(workspace.dev)])]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, option, value])
    assert exit_info.value.code == 2
    assert error_line(capsys.readouterr().err).startswith(f"lightner {command}: error: argument {option}:")


@pytest.mark.parametrize(
    "option, value, field",
    [
        ("--warmup-ratio", "1.5", "warmup_ratio"),
        ("--num-beams", "0", "num_beams"),
        ("--max-length-a", "-1", "max_length_a"),
        ("--prompt-hidden-size", "0", "prompt_hidden_size"),
        ("--weight-decay", "inf", "weight_decay"),
        ("--max-grad-norm", "nan", "max_grad_norm"),
    ],
)
def test_train_refuses_bad_values_naming_the_field(workspace, tmp_path, capsys, option, value, field):
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(workspace, tmp_path / "out", option, value))
    assert exit_info.value.code == 2
    assert error_line(capsys.readouterr().err).startswith(f"lightner train: error: {field} must")
    assert not (tmp_path / "out").exists()


def test_an_output_folder_holding_an_adapter_or_a_readme_is_refused_unless_overwrite(
    trained, workspace, tmp_path, capsys
):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    assert main(train_argv(workspace, mine)) == 1
    line = error_line(capsys.readouterr().err)
    assert "README.md" in line and "--overwrite" in line
    assert [path.name for path in mine.iterdir()] == ["README.md"] and (mine / "README.md").read_text() == "my notes"

    earlier = tmp_path / "earlier"
    shutil.copytree(trained, earlier)
    assert main(train_argv(workspace, earlier)) == 1
    assert "model.safetensors" in error_line(capsys.readouterr().err)
    assert main(train_argv(workspace, earlier, "--overwrite")) == 0
    # The earlier run's files were cleared, not appended to: the same settings give the same run again.
    assert (earlier / "model.safetensors").read_bytes() == (trained / "model.safetensors").read_bytes()
    assert [r["epoch/epoch"] for r in epoch_records(earlier)] == [1, 2]


def test_an_output_that_is_a_file_is_refused_in_one_line(workspace, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(train_argv(workspace, notes)) == 1
    assert error_line(capsys.readouterr().err) == (
        f"lightner train: error: --output {notes} is a file, and a run writes a folder; choose another --output"
    )
    assert notes.read_text() == "mine"


def test_ctrl_c_during_training_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    def interrupted(arguments):
        raise KeyboardInterrupt

    monkeypatch.setattr("lightner.train.train", interrupted)
    try:
        assert main(["train", "--train", str(tmp_path / "train.txt"), "--output", str(tmp_path / "run")]) == 130
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C reached the top as KeyboardInterrupt (a traceback at the command line)")
    assert error_line(capsys.readouterr().err) == (
        "lightner train: interrupted; the same command with --resume continues from the last checkpoint"
    )


def test_evaluate_says_why_data_of_other_types_cannot_score(trained, tmp_path, capsys, caplog):
    foreign = tmp_path / "adr.txt"
    foreign.write_text("muscle\tB-ADR\npain\tI-ADR\nafter\tO\nLipitor\tB-DRUG\n")
    assert main(["evaluate", "--model", str(trained), "--data", str(foreign), "--output", str(tmp_path)]) == 1
    assert error_line(capsys.readouterr().err) == (
        f"lightner evaluate: error: {foreign}: its entity types, ADR (1), DRUG (1), share none with the adapter's "
        "(ORG, MISC, PER, LOC), so every score would be 0; evaluate it on data labelled with its types"
    )
    assert not (tmp_path / "eval_results.json").exists()
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("EU\tB-ORG\nrejects\tO\nLipitor\tB-DRUG\n")
    with caplog.at_level(logging.WARNING, logger="lightner"):
        assert main(["evaluate", "--model", str(trained), "--data", str(mixed), "--output", str(tmp_path)]) == 0
    assert "the adapter does not predict these types, whose entities all count as missed: DRUG (1)" in caplog.text


def test_a_backbone_folder_that_holds_no_bart_is_refused(workspace, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(bert)
    output = tmp_path / "out"
    assert main(train_argv(workspace, output, "--backbone", str(bert))) == 1
    # The model side's refusal, as one line; nothing trained on random weights, nothing written.
    assert (
        error_line(capsys.readouterr().err)
        == f"lightner train: error: {bert} holds a 'bert' model, not a BART backbone"
    )
    assert not output.exists()


def test_types_must_occur_in_the_training_data_and_left_out_types_are_reported(workspace, tmp_path, capsys, caplog):
    assert main(train_argv(workspace, tmp_path / "foo", "--types", "FOO", "PER")) == 1
    line = error_line(capsys.readouterr().err)
    assert "--types FOO: not in the training data" in line and re.search(r"PER \(\d+\)", line)
    assert not (tmp_path / "foo").exists()

    with caplog.at_level(logging.WARNING, logger="lightner"):
        assert main(train_argv(workspace, tmp_path / "per", "--types", "PER", "--epochs", "1")) == 0
    warning = next(record.getMessage() for record in caplog.records if "--types" in record.getMessage())
    assert re.search(r"leaving out entities of types not in --types: train: .*ORG \(\d+\).*; dev: ", warning)


def test_bad_dev_and_test_sentences_stop_the_run_before_training(workspace, tmp_path, capsys):
    too_long = tmp_path / "long-dev.txt"
    too_long.write_text("EU\tB-ORG\n\n" + "".join(f"word{i}\tO\n" for i in range(300)))
    output = tmp_path / "out"
    assert main(train_argv(workspace, output, "--dev", str(too_long))) == 1
    line = error_line(capsys.readouterr().err)
    assert f"{too_long}:3: sentence 2 encodes to" in line and "positions" in line
    assert not output.exists()  # found before the first step, not after an epoch

    bad_tag = tmp_path / "bad-test.txt"
    bad_tag.write_text("EU\tB-ORG\nrejects\tX\n")
    assert main(train_argv(workspace, output, "--test", str(bad_tag))) == 1
    assert f"{bad_tag}:2: invalid tag 'X'" in error_line(capsys.readouterr().err)


def test_command_line_errors_are_one_line(trained, workspace, tmp_path, capsys):
    predict = [
        "predict",
        "--model",
        str(trained),
        "--input",
        str(workspace.dev),
        "--output",
        str(tmp_path / "o.jsonl"),
    ]
    usage_errors = [("banana", "--device='banana' is not a device")]
    if not torch.cuda.is_available():
        usage_errors.append(("cuda", "--device='cuda': this machine (or this torch build) has no cuda device"))
    for device, message in usage_errors:
        with pytest.raises(SystemExit) as exit_info:
            main([*predict, "--device", device])
        assert exit_info.value.code == 2 and message in error_line(capsys.readouterr().err)

    missing = tmp_path / "nowhere"
    assert main(["evaluate", "--model", str(missing), "--data", str(workspace.dev)]) == 1
    assert error_line(capsys.readouterr().err) == f"lightner evaluate: error: folder {missing} does not exist"

    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("EU rejects German call\nCaf\xe9 Paris\n".encode("latin-1"))
    predict_text = [
        "predict",
        "--model",
        str(trained),
        "--input",
        str(not_utf8),
        "--output",
        str(tmp_path / "t.jsonl"),
    ]
    assert main(predict_text) == 1
    assert f"{not_utf8}:2: not valid UTF-8" in error_line(capsys.readouterr().err)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    state_file = latest_checkpoint(corrupt) / "trainer_state.json"
    state_file.write_text('{"epoch": 2, "glob')
    assert main(train_argv(workspace, corrupt, "--resume")) == 1
    assert f"{state_file} is corrupt" in error_line(capsys.readouterr().err)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_a_loadable_adapter(workspace, tmp_path):
    output = tmp_path / "two-processes"
    launch = [
        "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    argv = train_argv(workspace, output, "--batch-size", "4")
    completed = run_cli([*launch, "-m", "lightner", *argv], timeout=400)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((output / "results.json").read_text())
    assert results["num_processes"] == 2
    assert results["steps"] == 8  # 32 sentences / (4 per batch x 2 processes) x 2 epochs
    epochs = [r for r in read_jsonl(output / "metrics.jsonl") if "epoch/epoch" in r]
    assert [r["epoch/epoch"] for r in epochs] == [1, 2] and all("epoch/dev_f1" in r for r in epochs)
    # Dev sentences are split between the processes and gathered back: one process scores the adapter the same.
    model = LightNerModel.from_pretrained(output)
    single = evaluate_sentences(model, read_conll(workspace.dev))
    assert single["f1"] == results["f1"] == results["best_dev_f1"]
    assert single["num_pred"] == results["num_pred"]


def test_missing_backbone_offline_fails_fast_with_a_clear_message(workspace, tmp_path):
    output = tmp_path / "offline"
    argv = ["train", "--backbone", "facebook/bart-large", "--train", str(workspace.train), "--output", str(output)]
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    completed = run_cli(["lightner", *argv], timeout=120, env=offline)
    assert completed.returncode == 1
    assert "could not load the backbone 'facebook/bart-large'" in completed.stderr
    assert "--backbone DIR" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (output / "checkpoints").exists()


def test_push_uploads_the_adapter_and_not_the_backbone(trained, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    sent: dict[str, int] = {}
    calls: dict[str, dict] = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        calls["create_commit"] = {"repo_id": repo_id, **kwargs}
        for operation in operations:
            sent[operation.path_in_repo] = Path(operation.path_or_fileobj).stat().st_size
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    def upload_folder(self, repo_id, folder_path, **kwargs):
        calls["upload_folder"] = {"repo_id": repo_id, **kwargs}
        sent.update({p.relative_to(folder_path).as_posix(): p.stat().st_size for p in Path(folder_path).rglob("*")})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    def no_card(*args, **kwargs):
        raise EntryNotFoundError("no model card yet")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub.ModelCard, "load", no_card)

    def no_backbone(*args, **kwargs):
        raise AssertionError("push loaded a backbone")

    monkeypatch.setattr("lightner.hub_lightner.load_backbone", no_backbone)
    assert main(["push", "--model", str(trained), "--repo-id", "me/lightner-test", "--private"]) == 0
    assert calls["create_repo"]["repo_id"] == "me/lightner-test" and calls["create_repo"]["private"] is True
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_lightner.py", "handler.py"} <= sent.keys()
    assert sent["model.safetensors"] == (trained / "model.safetensors").stat().st_size  # the adapter, no backbone
    assert "me/lightner-test" in capsys.readouterr().out


def test_a_broken_or_foreign_config_file_is_named(workspace, tmp_path, capsys):
    broken, foreign = tmp_path / "broken.json", tmp_path / "foreign.json"
    broken.write_text('{"lr": 1e-3,', encoding="utf-8")
    foreign.write_text(json.dumps({"learning_rate": 1e-3, "lora_rank": 8}), encoding="utf-8")
    assert main(["train", "--config", str(broken), "--output", str(tmp_path / "a")]) == 1
    assert f"{broken}: not valid JSON" in error_line(capsys.readouterr().err)
    assert main(["train", "--config", str(foreign), "--output", str(tmp_path / "b")]) == 1
    assert f"{foreign}: unknown training arguments ['lora_rank']" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_predict_quantize_loads_an_int8_backbone(trained, workspace, tmp_path, monkeypatch):
    from lightner.modeling_lightner import LightNerModel
    from lightner.quantization_lightner import is_quantized

    loaded = []
    original = LightNerModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        loaded.append(original(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(LightNerModel, "from_pretrained", classmethod(recording))
    outputs = {}
    for extra in ([], ["--quantize", "int8"]):
        outputs[bool(extra)] = tmp_path / f"out-{bool(extra)}.jsonl"
        argv = [
            "predict",
            "--model",
            str(trained),
            "--input",
            str(workspace.dev),
            "--output",
            str(outputs[bool(extra)]),
        ]
        assert main([*argv, *extra]) == 0
    assert [is_quantized(model.backbone) for model in loaded] == [False, True]
    assert len(read_jsonl(outputs[True])) == len(read_jsonl(outputs[False])) == 16


def test_threads_sets_torchs_intra_op_threads_for_the_command(trained, workspace, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        argv = [
            "predict",
            "--model",
            str(trained),
            "--input",
            str(workspace.dev),
            "--output",
            str(tmp_path / "o.jsonl"),
        ]
        assert main([*argv, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert len(read_jsonl(tmp_path / "o.jsonl")) == 16
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main([*argv, "--threads", "0"])


def test_threads_default_to_auto_on_the_command_line(trained, workspace, tmp_path, monkeypatch):
    """Without `--threads`, the command runs in `AdaptiveThreads` (active: products agree at every count here), and
    leaves torch's thread count as it found it; a number turns it off."""
    import torch

    from lightner.threads import AdaptiveThreads

    active = []  # whether each block entered adapts threads
    enter = AdaptiveThreads.__enter__
    monkeypatch.setattr(AdaptiveThreads, "__enter__", lambda self: active.append(enter(self).active) or self)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    output = tmp_path / "o.jsonl"
    argv = ["predict", "--model", str(trained), "--input", str(workspace.dev), "--output", str(output)]
    try:
        assert main(argv) == 0
        assert torch.get_num_threads() == 2
        assert active == [True]
        assert main([*argv, "--threads", "2"]) == 0
        assert active == [True]
    finally:
        torch.set_num_threads(before)
    assert len(read_jsonl(output)) == 16
    with pytest.raises(SystemExit):
        main([*argv, "--threads", "many"])


def test_dtype_auto_is_bfloat16_only_on_a_cpu_with_amx(trained, workspace, tmp_path, monkeypatch):
    """`--dtype auto` (the default) loads the backbone in bfloat16 on a CPU with AMX and as saved elsewhere; int8 and
    an explicit `--dtype` override it. The CPU's answer is patched: both branches run here."""
    import lightner.cli

    loaded = []  # the backbone dtype and whether it is quantized, per command run
    load = LightNerModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        model = load(cls, *args, **kwargs)
        linear = model.backbone.encoder.layers[0].fc1
        loaded.append("int8" if not isinstance(linear, torch.nn.Linear) else str(linear.weight.dtype))
        return model

    monkeypatch.setattr(LightNerModel, "from_pretrained", classmethod(recording))
    output = tmp_path / "o.jsonl"
    argv = ["predict", "--model", str(trained), "--input", str(workspace.dev), "--output", str(output)]
    for native, extra in ((False, []), (True, []), (True, ["--dtype", "float32"]), (True, ["--quantize", "int8"])):
        monkeypatch.setattr(lightner.cli, "amx_present", lambda native=native: native)
        assert main([*argv, "--device", "cpu", *extra]) == 0
        assert len(read_jsonl(output)) == 16
    assert loaded == ["torch.float32", "torch.bfloat16", "torch.float32", "int8"]
    assert lightner.cli.inference_dtype("auto", torch.device("cuda"), None) is None  # a GPU: as saved
    with pytest.raises(SystemExit):
        main([*argv, "--dtype", "float64"])
