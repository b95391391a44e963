"""The training module's parts: protocols, entity types, cross-domain prompt transfer, checkpoints, a short run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import DataLoaderShard
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

import lightner.train
from conftest import save_tiny_backbone, shared_path
from lightner.arguments import LightNerTrainingArguments
from lightner.checkpointing import RUN_STATE_NAME, latest_checkpoint
from lightner.data import Sentence, entity_types
from lightner.formats import read_conll, write_conll
from lightner.modeling_lightner import LightNerModel
from lightner.protocols import BART_MINI, protocol_runs, protocol_settings
from lightner.train import (
    encode_examples,
    init_prompts_from,
    make_accelerator,
    prepare_training,
    resolve_entity_types,
    resolve_mixed_precision,
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


def test_quickstart_protocol_is_one_restaurant_run_from_the_backbone(tmp_path):
    data = shared_path("data", "lightner")
    (run,) = protocol_runs("quickstart", data, {"output_dir": str(tmp_path / "quick")})
    assert Path(run.train_file) == data / "mit-restaurant" / "10-shot-train.txt" and run.dev_file is None
    assert Path(run.test_file) == data / "mit-restaurant" / "test.txt" and run.init_prompts_from is None
    assert (run.batch_size, run.max_length_a) == (3, 0.8)
    # Offline by default: the bundled bart-mini at its own settings; a named backbone gets the paper's.
    assert Path(run.backbone) == BART_MINI.resolve() and (BART_MINI / "model.safetensors").is_file()
    assert (run.learning_rate, run.epochs, run.dropout) == (3e-3, 60, 0.0)
    (large,) = protocol_runs(
        "quickstart", data, {"output_dir": str(tmp_path / "q"), "backbone": "facebook/bart-large"}
    )
    assert (large.learning_rate, large.epochs, large.dropout) == (5e-5, 30, 0.3)
    assert large.backbone == "facebook/bart-large"


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


@pytest.mark.parametrize(
    "values, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"num_beams": 0}, "num_beams"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"warmup_ratio": -0.1}, "warmup_ratio"),
        ({"max_length_a": -1.0}, "max_length_a"),
        ({"prompt_hidden_size": 0}, "prompt_hidden_size"),
        ({"dropout": 1.0}, "dropout"),
        # Infinity and NaN pass every range check, then train an adapter of NaNs.
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"max_length_a": float("nan")}, "max_length_a"),
        ({"warmup_ratio": "0.1"}, "warmup_ratio"),  # a replayed --config file can hold any JSON value
        ({"epochs": 2.5}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"stop_after_steps": 0}, "stop_after_steps"),
    ],
)
def test_training_arguments_are_checked_naming_the_field(values, field):
    with pytest.raises(ValueError, match=f"^{field} must"):
        LightNerTrainingArguments(train_file="t", output_dir="out", **values)


def test_training_arguments_need_a_train_file_and_an_output_and_cannot_both_resume_and_overwrite():
    with pytest.raises(ValueError, match="train file"):
        LightNerTrainingArguments(output_dir="out")
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        LightNerTrainingArguments(train_file="t", output_dir="out", resume=True, overwrite=True)


@pytest.mark.parametrize(
    "backend, native_bf16, expected",
    [(None, True, "no"), ("xpu", True, "bf16"), ("npu", True, "bf16"), ("mps", False, "fp16")],
)
def test_auto_mixed_precision_asks_accelerate_about_the_accelerator(monkeypatch, backend, native_bf16, expected):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(lightner.train, "get_torch_accelerator_backend", lambda: (backend, None))
    monkeypatch.setattr(lightner.train, "is_bf16_available", lambda ignore_tpu=False: native_bf16)
    assert resolve_mixed_precision("auto") == expected


def test_auto_mixed_precision_takes_fp16_on_a_gpu_that_only_emulates_bf16(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(lightner.train, "get_torch_accelerator_backend", lambda: ("cuda", torch.cuda))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_mixed_precision("auto") == "fp16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision("auto") is None  # `accelerate launch` decided


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


def capture_models(monkeypatch) -> list[tuple[LightNerModel, dict[str, torch.Tensor]]]:
    """Each model `train` builds, kept in memory as it trains, with a copy of its backbone tensors as built."""
    built = []
    build_model = lightner.train.build_model

    def build_and_keep(*args, **kwargs):
        model = build_model(*args, **kwargs)
        built.append((model, {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}))
        return model

    monkeypatch.setattr(lightner.train, "build_model", build_and_keep)
    return built


def test_prompt_only_training_lowers_the_loss_and_leaves_the_backbone_alone(tiny_run, tmp_path, monkeypatch):
    built = capture_models(monkeypatch)
    args = LightNerTrainingArguments(
        **tiny_run, output_dir=str(tmp_path), epochs=4, batch_size=8, learning_rate=3e-2, dropout=0.0
    )
    results = train(args)
    assert results["best_epoch"] == 4 and "f1" not in results  # no dev set: the last epoch is kept, nothing scored
    losses = epoch_losses(tmp_path)
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
    assert not (tmp_path / "backbone").exists()
    # The very tensors that were in the training graph, not a reload of the backbone folder.
    ((model, as_built),) = built
    after = model.backbone.state_dict()
    assert as_built.keys() == after.keys()
    for name, tensor in as_built.items():
        assert torch.equal(tensor, after[name]), name


def test_full_finetuning_trains_the_backbone_and_saves_it_with_the_adapter(tiny_run, tmp_path, monkeypatch):
    built = capture_models(monkeypatch)
    gradient_norms: list[float] = []
    original_step = lightner.train.training_step

    def step_and_record(accelerator, model, *args, **kwargs):
        # Gradients of the backbone as the optimizer sees them, before they are zeroed.
        backbone = accelerator.unwrap_model(model).backbone
        hooks = [
            p.register_hook(lambda g: gradient_norms.append(float(g.norm())))
            for p in backbone.parameters()
            if p.requires_grad
        ]
        try:
            return original_step(accelerator, model, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(lightner.train, "training_step", step_and_record)
    # The training file doubles as dev and test here: only the plumbing is under test.
    files = {"dev_file": tiny_run["train_file"], "test_file": tiny_run["train_file"]}
    args = LightNerTrainingArguments(
        **tiny_run, **files, output_dir=str(tmp_path), epochs=2, batch_size=8, learning_rate=1e-3, full_finetune=True
    )
    results = train(args)
    assert gradient_norms and max(gradient_norms) > 0
    ((model, original),) = built
    trained_in_memory = model.backbone.state_dict()
    assert any(not torch.equal(tensor, trained_in_memory[name]) for name, tensor in original.items())
    assert results["split"] == "test" and results["best_epoch"] in (1, 2)
    card_scores = json.loads((tmp_path / "config.json").read_text())["evaluation"]
    assert card_scores["test f1"] == round(results["f1"], 4)
    losses = epoch_losses(tmp_path)
    assert losses[-1] < losses[0], losses
    saved = LightNerModel.from_pretrained(tmp_path).backbone.state_dict()
    assert not all(torch.equal(tensor, saved[name]) for name, tensor in original.items())


def tiny_examples(tiny_run, model: LightNerModel) -> list:
    sentences = read_conll(tiny_run["train_file"])
    return encode_examples(model.tokenizer, sentences, entity_types(sentences), 256)


def test_the_data_loader_is_prepared_so_batches_follow_the_device(tiny_run, tmp_path):
    args = LightNerTrainingArguments(**tiny_run, output_dir=str(tmp_path), batch_size=8, mixed_precision="no")
    accelerator = make_accelerator(args, tmp_path)
    model = LightNerModel.from_backbone(tiny_run["backbone"], ["ORG", "MISC", "PER", "LOC"], prompt_hidden_size=16)
    _, _, loader, _ = prepare_training(accelerator, model, tiny_examples(tiny_run, model), args)
    assert isinstance(loader, DataLoaderShard) and loader.device == accelerator.device
    assert next(iter(loader))["input_ids"].device == accelerator.device


@pytest.fixture
def fresh_accelerate_state():
    """accelerate fixes the mixed precision of a process at its first `Accelerator`; a test that needs another one
    starts and leaves a fresh state, as accelerate's own test cases do."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_dev_evaluation_runs_under_the_runs_mixed_precision(tiny_run, tmp_path, monkeypatch, fresh_accelerate_state):
    autocast: list[bool] = []

    def evaluate_and_record(model, sentences, accelerator, *args):
        autocast.append(torch.is_autocast_enabled(accelerator.device.type))
        return {"f1": 0.5, "precision": 0.5, "recall": 0.5}

    monkeypatch.setattr(lightner.train, "evaluate_sentences", evaluate_and_record)
    args = LightNerTrainingArguments(
        **tiny_run, dev_file=tiny_run["train_file"], output_dir=str(tmp_path), epochs=1, batch_size=16
    )
    train(replace(args, mixed_precision="bf16"))
    assert autocast == [True, True]  # the epoch's dev score and the kept adapter's final score


def test_the_loss_is_synchronised_when_logged_not_every_batch(tiny_run, tmp_path, monkeypatch):
    synchronisations: list[str] = []
    for name in ("gather", "reduce"):
        original = getattr(Accelerator, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            synchronisations.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Accelerator, name, counted)
    args = LightNerTrainingArguments(
        **tiny_run, output_dir=str(tmp_path), epochs=1, batch_size=4, logging_steps=4, checkpoint_steps=100
    )
    train(args)
    # 8 batches: a sync at steps 4 and 8 (logging) and one at the end of the epoch, none per batch.
    assert len(synchronisations) == 3, synchronisations
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "train/loss" in r] == [4, 8]


def test_learning_rate_warms_up_then_decays_linearly(tiny_run, tmp_path):
    args = LightNerTrainingArguments(
        **tiny_run, output_dir=str(tmp_path), epochs=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.25,
        logging_steps=1,
    )  # fmt: skip
    train(args)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rates = [r["train/learning_rate"] for r in logged if "train/learning_rate" in r]
    # 8 optimizer steps, 2 of warm-up: the rate after each step.
    expected = [1e-2 * factor for factor in (0.5, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0)]
    assert rates == pytest.approx(expected, abs=1e-12)


def test_gradients_are_clipped_to_the_maximum_norm(tiny_run, tmp_path, monkeypatch):
    norms: list[float] = []
    original_step = torch.optim.AdamW.step

    def step_and_record(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_and_record)
    args = LightNerTrainingArguments(**tiny_run, output_dir=str(tmp_path), epochs=1, batch_size=8, max_grad_norm=1e-3)
    train(args)
    assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-5), norms


def equal_length_sentences(path: Path, count: int) -> Path:
    """Sentences with the same number of target tokens each, so that a mean over 8 equals the mean of two means
    over 4 (the loss is a mean over target tokens)."""
    names = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon"]
    sentences = [
        Sentence([names[i % 8], "visited", names[(i + 3) % 8], "and", names[(i + 5) % 8]], [(2, 3, "LOC")])
        for i in range(count)
    ]
    write_conll(sentences, path)
    return path


def test_two_accumulated_batches_of_4_equal_one_batch_of_8(tiny_run, tmp_path, real_tokenizer):
    # No dropout anywhere (the frozen backbone's own too): the two runs must see the same function.
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
    backbone = save_tiny_backbone(tmp_path / "backbone", real_tokenizer, max_position_embeddings=256, **no_dropout)
    train_file = str(equal_length_sentences(tmp_path / "train.txt", 8))
    common = {**tiny_run, "backbone": str(backbone), "train_file": train_file, "epochs": 1, "dropout": 0.0}
    common["warmup_ratio"] = 0.0  # else the one optimizer step has a learning rate of 0
    train(LightNerTrainingArguments(**common, output_dir=str(tmp_path / "one"), batch_size=8))
    train(
        LightNerTrainingArguments(
            **common, output_dir=str(tmp_path / "two"), batch_size=4, gradient_accumulation_steps=2
        )
    )
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    torch.manual_seed(42)  # the runs' seed: the adapter they start from
    start = LightNerModel.from_backbone(backbone, ["LOC"], prompt_hidden_size=16).adapter_state_dict()
    for name, tensor in one.items():
        assert not torch.equal(tensor, start[name]), name  # the optimizer step happened
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-6)


class Killed(Exception):
    """Stands for a kill in the middle of a run."""


def test_a_run_killed_mid_accumulation_resumes_to_the_uninterrupted_adapter(tiny_run, tmp_path, monkeypatch):
    common = {**tiny_run, "epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2, "checkpoint_steps": 1}
    train(LightNerTrainingArguments(**common, output_dir=str(tmp_path / "whole")))

    original_step, micro_batches = lightner.train.training_step, []

    def killed_after_five(*args, **kwargs):
        if len(micro_batches) == 5:  # step 3 is half accumulated
            raise Killed
        micro_batches.append(1)
        return original_step(*args, **kwargs)

    monkeypatch.setattr(lightner.train, "training_step", killed_after_five)
    interrupted = LightNerTrainingArguments(**common, output_dir=str(tmp_path / "interrupted"))
    with pytest.raises(Killed):
        train(interrupted)
    monkeypatch.setattr(lightner.train, "training_step", original_step)
    train(replace(interrupted, resume=True))
    whole, resumed = (tmp_path / name / "model.safetensors" for name in ("whole", "interrupted"))
    assert resumed.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("poisoned_step", [3, 6])
def test_a_run_gone_non_finite_stops_before_saving_and_keeps_what_was_good(
    tiny_run, tmp_path, monkeypatch, poisoned_step
):
    """A parameter turned NaN after step 3 (first epoch) poisons the loss of step 4, which ends the epoch; one turned
    NaN after step 6 (second epoch) is found before the checkpoint of step 6. Either way nothing is saved after it:
    the checkpoint before, and the first epoch's adapter, stay as they were."""
    original_step, steps = lightner.train.training_step, []

    def poisoning_step(accelerator, model, *args, **kwargs):
        loss = original_step(accelerator, model, *args, **kwargs)
        steps.append(1)
        if len(steps) == poisoned_step:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
        return loss

    monkeypatch.setattr(lightner.train, "training_step", poisoning_step)
    args = LightNerTrainingArguments(**tiny_run, output_dir=str(tmp_path), epochs=2, batch_size=8, checkpoint_steps=2)
    detected = {
        3: r"step 4 \(epoch 1\): the training loss became nan",
        6: r"step 6 \(epoch 2\): trainable parameters became NaN or infinite \(.*\)",
    }
    with pytest.raises(FloatingPointError, match=detected[poisoned_step] + ", so nothing more is saved"):
        train(args)
    checkpoint = latest_checkpoint(tmp_path)
    assert json.loads((checkpoint / RUN_STATE_NAME).read_text())["global_step"] == (2 if poisoned_step == 3 else 4)
    assert all(torch.isfinite(tensor).all() for tensor in load_file(checkpoint / "model.safetensors").values())
    adapter = tmp_path / "model.safetensors"
    assert adapter.exists() == (poisoned_step == 6)
    if adapter.exists():
        assert all(torch.isfinite(tensor).all() for tensor in load_file(adapter).values())


def test_an_output_that_is_a_file_is_refused_by_name(tmp_path):
    from lightner.checkpointing import check_output_dir

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"--output .*notes.txt is a file, and a run writes a folder; choose another"):
        check_output_dir(tmp_path / "notes.txt", {}, resume=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
