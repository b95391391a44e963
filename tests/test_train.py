"""The training module's parts: protocols, entity types, cross-domain prompt transfer, checkpoints, a short run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BartModel

from conftest import save_tiny_backbone, shared_path
from lightner.arguments import LightNerTrainingArguments
from lightner.checkpointing import RUN_STATE_NAME, latest_checkpoint
from lightner.data import Sentence, read_conll, write_conll
from lightner.modeling_lightner import LightNerModel
from lightner.protocols import protocol_runs, protocol_settings
from lightner.train import (
    init_prompts_from,
    resolve_entity_types,
    restrict_to_types,
    single_process_launch_hint,
    train,
)


def test_protocols_name_the_shared_splits_and_the_reference_settings():
    data = shared_path("data", "lightner")
    indomain = protocol_settings("indomain", data)
    assert Path(indomain["train_file"]) == data / "conll2003" / "indomain-train.txt"
    assert Path(indomain["dev_file"]) == data / "conll2003" / "dev.txt"
    assert Path(indomain["test_file"]) == data / "conll2003" / "test.txt"
    assert (indomain["learning_rate"], indomain["batch_size"], indomain["epochs"]) == (2e-5, 16, 30)
    assert Path(protocol_settings("supervised", data)["train_file"]).name == "train.txt"

    movie = protocol_settings("crossdomain", data, target="mit-movie", shots=10)
    assert Path(movie["train_file"]) == data / "mit-movie" / "10-shot-train.txt"
    assert movie["dev_file"] is None  # the target corpora have no dev set; the test set is never used to select
    assert (movie["learning_rate"], movie["batch_size"], movie["max_length_a"]) == (5e-5, 3, 0.8)
    with pytest.raises(ValueError, match="k-shot files"):
        protocol_settings("crossdomain", data, target="atis", shots=100)
    with pytest.raises(ValueError, match="target"):
        protocol_settings("crossdomain", data, target="wnut", shots=10)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        protocol_settings("indomain", data / "nowhere")


def test_crossdomain_protocol_trains_a_source_adapter_first(tmp_path):
    data = shared_path("data", "lightner")
    options = {"output_dir": str(tmp_path / "movie"), "epochs": 1, "entity_types": ["ACTOR"]}
    source, target = protocol_runs("crossdomain", data, options, target="mit-movie", shots=10)
    assert Path(source.train_file).name == "train.txt" and Path(source.output_dir) == tmp_path / "movie" / "source"
    assert (
        source.entity_types is None and source.epochs == 1
    )  # explicit options reach both runs, types only the target
    assert target.init_prompts_from == source.output_dir and target.entity_types == ["ACTOR"]
    assert Path(target.train_file).name == "10-shot-train.txt" and target.epochs == 1

    given = protocol_runs("crossdomain", data, {**options, "init_prompts_from": "src"}, target="mit-movie", shots=10)
    assert [run.init_prompts_from for run in given] == ["src"]


def test_entity_types_follow_first_appearance_and_restriction_drops_the_others():
    train = [Sentence(["a", "b"], [(0, 1, "PER")]), Sentence(["c"], [(0, 1, "LOC")])]
    dev = [Sentence(["d", "e"], [(0, 1, "MISC"), (1, 2, "PER")])]
    splits = {"train": train, "dev": dev, "test": []}
    assert resolve_entity_types(None, splits) == ["PER", "LOC", "MISC"]
    assert resolve_entity_types(["LOC"], splits) == ["LOC"]
    assert restrict_to_types(dev, ["PER"])[0].entities == [(1, 2, "PER")]
    with pytest.raises(ValueError, match="--types"):
        resolve_entity_types(None, {"train": [Sentence(["x"])], "dev": [], "test": []})


def test_source_prompts_initialise_a_target_that_keeps_its_own_label_words(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    source = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=16)
    source.save_pretrained(tmp_path / "source")
    target = LightNerModel.from_backbone(tiny_backbone, ["ACTOR", "TITLE", "YEAR"], prompt_hidden_size=16)
    label_words = target.pointer_head.label_word_weights.detach().clone()

    init_prompts_from(target, tmp_path / "source")
    transferred, original = target.adapter_state_dict(), source.adapter_state_dict()
    prompts = [name for name in original if name.startswith("prompt_encoder.")]
    assert prompts and all(torch.equal(transferred[name], original[name]) for name in prompts)
    assert torch.equal(target.pointer_head.label_word_weights, label_words)
    # The folded prompts and the label words train; the backbone does not.
    trainable = {id(p) for p in target.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in [*target.prompt_encoder.parameters(), *target.pointer_head.parameters()]}
    assert target.prompt_encoder.is_folded

    longer = LightNerModel.from_backbone(tiny_backbone, ["ACTOR"], prompt_length=4, prompt_hidden_size=16)
    with pytest.raises(ValueError, match="--prompt-length 10"):
        init_prompts_from(longer, tmp_path / "source")


def test_latest_checkpoint_skips_one_a_kill_left_incomplete(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for number in (1, 3):
        (tmp_path / "checkpoints" / f"checkpoint_{number}").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint_1" / RUN_STATE_NAME).write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint_1"


def test_a_multi_process_launch_that_started_one_process_says_how_to_start_several():
    # What `accelerate launch --num_processes 2` leaves on a machine without GPUs: a rendezvous, one process.
    hint = single_process_launch_hint(1, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    assert "--multi_gpu --num_processes N" in hint
    assert single_process_launch_hint(1, {}) is None
    assert single_process_launch_hint(2, {"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"}) is None


def test_training_arguments_are_checked():
    with pytest.raises(ValueError, match="train file"):
        LightNerTrainingArguments(output_dir="out")
    with pytest.raises(ValueError, match="epochs"):
        LightNerTrainingArguments(train_file="t", output_dir="out", epochs=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        LightNerTrainingArguments(train_file="t", output_dir="out", mixed_precision="fp8")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, real_tokenizer) -> dict[str, str]:
    """A tiny backbone with the real tokenizer and 32 short CoNLL-2003 training sentences, as training arguments."""
    root = tmp_path_factory.mktemp("train")
    backbone = save_tiny_backbone(root / "backbone", tokenizer=real_tokenizer, max_position_embeddings=256)
    sentences = [
        s for s in read_conll(shared_path("data", "lightner", "conll2003", "train.txt")) if len(s.words) <= 40
    ]
    write_conll(sentences[:32], root / "train.txt")
    return {"backbone": str(backbone), "train_file": str(root / "train.txt"), "prompt_hidden_size": 16}


def epoch_losses(output_dir: Path) -> list[float]:
    records = map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines())
    return [record["epoch/train_loss"] for record in records if "epoch/train_loss" in record]


def test_prompt_only_training_lowers_the_loss_and_leaves_the_backbone_alone(tiny_run, tmp_path):
    args = LightNerTrainingArguments(
        **tiny_run, output_dir=str(tmp_path), epochs=4, batch_size=8, learning_rate=3e-2, dropout=0.0
    )
    results = train(args)
    assert results["best_epoch"] == 4 and "f1" not in results  # no dev set: the last epoch is kept, nothing scored
    losses = epoch_losses(tmp_path)
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
    assert not (tmp_path / "backbone").exists()
    trained = LightNerModel.from_pretrained(tmp_path).backbone.state_dict()
    for name, tensor in BartModel.from_pretrained(tiny_run["backbone"]).state_dict().items():
        assert torch.equal(tensor, trained[name]), name


def test_full_finetuning_saves_the_trained_backbone_with_the_adapter(tiny_run, tmp_path):
    # The training file doubles as dev and test here: only the plumbing is under test.
    files = {"dev_file": tiny_run["train_file"], "test_file": tiny_run["train_file"]}
    args = LightNerTrainingArguments(
        **tiny_run, **files, output_dir=str(tmp_path), epochs=2, batch_size=8, learning_rate=1e-3, full_finetune=True
    )
    results = train(args)
    assert results["split"] == "test" and results["best_epoch"] in (1, 2)
    card_scores = json.loads((tmp_path / "config.json").read_text())["evaluation"]
    assert card_scores["test f1"] == round(results["f1"], 4)
    losses = epoch_losses(tmp_path)
    assert losses[-1] < losses[0], losses
    original = BartModel.from_pretrained(tiny_run["backbone"]).state_dict()
    trained = LightNerModel.from_pretrained(tmp_path).backbone.state_dict()
    assert not all(torch.equal(tensor, original[name]) for name, tensor in trained.items())
