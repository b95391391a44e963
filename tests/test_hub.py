"""Adapters as Hub repositories: remote code, several adapters on one backbone, push_to_hub, half precision."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BartModel

from conftest import run_without_project, save_tiny_backbone
from lightner.configuration_lightner import ADAPTER_FORMAT_VERSION, ATTENTION_KINDS
from lightner.modeling_lightner import LightNerModel
from lightner.tokenization_utils import collate, encode_sentences, encode_target

SENTENCES = [
    ["John", "Smith", "flew", "from", "Boston", "to", "Denver", "on", "Monday", "."],
    ["EU", "rejects", "German", "call"],
    ["Hi"],
    ["The", "movie", "Titanic", "by", "James", "Cameron", "won", "awards"],
]


def assert_same_entities(got, expected):
    """The same spans and types, and the same scores within float32 summation error (never compared rounded)."""
    assert [[(e["start"], e["end"], e["type"]) for e in s] for s in got] == [
        [(e["start"], e["end"], e["type"]) for e in s] for s in expected
    ]
    got_scores, expected_scores = ([e["score"] for s in p for e in s] for p in (got, expected))
    assert got_scores == pytest.approx(expected_scores, rel=1e-5, abs=1e-7)


@pytest.fixture()
def news(tiny_backbone) -> LightNerModel:
    torch.manual_seed(1)
    model = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC", "ORG"], prompt_hidden_size=16).eval()
    _perturb(model)
    return model


def _perturb(model: LightNerModel) -> None:
    """Random prompts of a realistic size, so that different adapters really predict differently."""
    model.prompt_encoder.fold()
    with torch.no_grad():
        for tensor in model.prompt_encoder.prompts.values():
            tensor.normal_(0, 2.0)


@pytest.fixture()
def saved_adapters(tiny_backbone, tmp_path) -> dict[str, Path]:
    """Three adapters on the tiny backbone, two label sets, all with prompt length 10."""
    folders = {}
    for seed, (name, types) in enumerate(
        {
            "news": ["PER", "LOC", "ORG"],
            "flights": ["fromloc.city_name", "toloc.city_name", "depart_date.day_name", "airline_name"],
            "movies": ["TITLE", "DIRECTOR"],
        }.items()
    ):
        torch.manual_seed(seed)
        model = LightNerModel.from_backbone(tiny_backbone, types, prompt_hidden_size=16)
        _perturb(model)
        model.save_pretrained(tmp_path / name)
        folders[name] = tmp_path / name
    return folders


def test_saved_folder_is_a_complete_hub_repository(news, tmp_path):
    news.config.training_data = "conll2003"
    news.config.evaluation = {"test f1": 0.5}
    news.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    for needed in [
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_lightner.py",
        "modeling_lightner.py",
    ]:
        assert needed in files
    assert "tokenization_utils.py" in files  # imported by modeling_lightner.py, so remote code needs it too
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_lightner.LightNerConfig",
        "AutoModel": "modeling_lightner.LightNerModel",
    }
    assert config["model_type"] == "lightner" and config["adapter_format_version"] == ADAPTER_FORMAT_VERSION
    assert config["entity_types"] == ["PER", "LOC", "ORG"] and config["label_words"][0] == "person"
    assert not any(name.startswith("backbone") for name in load_file(tmp_path / "model.safetensors"))
    card = (tmp_path / "README.md").read_text()
    for fragment in ["library_name: transformers", "pipeline_tag: token-classification", "base_model:", "license:"]:
        assert fragment in card
    for fragment in ["| PER | person |", "prompts (length 10)", "conll2003", "| test f1 | 0.5 |"]:
        assert fragment in card
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    assert tokenizer("Hi").input_ids == news.tokenizer("Hi").input_ids


def test_automodel_loads_in_a_fresh_process_without_the_project(news, tmp_path):
    """Remote code alone: the project is off sys.path, the Hub offline, the backbone a local folder."""
    news.save_pretrained(tmp_path / "adapter")
    expected = news.predict(SENTENCES)
    assert any(expected), "random prompts should find something, or the comparison is vacuous"
    script = textwrap.dedent(
        f"""
        import json
        from transformers import AutoConfig, AutoModel
        config = AutoConfig.from_pretrained({str(tmp_path / "adapter")!r}, trust_remote_code=True)
        model = AutoModel.from_pretrained({str(tmp_path / "adapter")!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        predictions = model.predict(json.loads(sys.argv[1]))
        print(json.dumps(predictions))
        """
    )
    assert_same_entities(run_without_project(script, [json.dumps(SENTENCES)], tmp_path), expected)


def test_adapters_loaded_one_by_one_share_the_backbone(saved_adapters):
    first = LightNerModel.from_pretrained(saved_adapters["news"])
    second = LightNerModel.from_pretrained(saved_adapters["flights"])
    assert first.backbone is second.backbone
    first_tensors = {name: t.data_ptr() for name, t in first.backbone.state_dict().items()}
    assert first_tensors == {name: t.data_ptr() for name, t in second.backbone.state_dict().items()}


def test_load_set_list_delete_adapters(saved_adapters):
    model = LightNerModel.from_pretrained(saved_adapters["news"])
    backbone_pointer = model.backbone.shared.weight.data_ptr()
    model.load_adapter(saved_adapters["flights"], adapter_name="flights")
    model.load_adapter(saved_adapters["movies"], adapter_name="movies")
    assert model.list_adapters() == ["default", "flights", "movies"]
    assert model.backbone.shared.weight.data_ptr() == backbone_pointer

    alone = LightNerModel.from_pretrained(saved_adapters["flights"])
    expected = alone.predict(SENTENCES)
    assert any(expected), "random adapters should find something, or the comparison is vacuous"
    assert_same_entities(model.predict(SENTENCES, adapter="flights"), expected)
    model.set_adapter("flights")
    assert model.config.entity_types == alone.config.entity_types
    assert_same_entities(model.predict(SENTENCES), expected)

    with pytest.raises(ValueError, match="an adapter named 'movies' is already loaded"):
        model.load_adapter(saved_adapters["movies"], adapter_name="movies")
    with pytest.raises(ValueError, match=r"no adapter named \['sports'\]"):
        model.set_adapter("sports")
    with pytest.raises(ValueError, match=r"no adapter named \['sports'\]"):
        model.predict(SENTENCES, adapter="sports")
    with pytest.raises(ValueError, match="adapter 'flights' is active"):
        model.delete_adapter("flights")
    model.delete_adapter("movies")
    assert model.list_adapters() == ["default", "flights"]


def test_a_batch_may_mix_adapters_with_different_label_sets(saved_adapters):
    model = LightNerModel.from_pretrained(saved_adapters["news"])
    model.load_adapter(saved_adapters["flights"], adapter_name="flights")
    model.load_adapter(saved_adapters["movies"], adapter_name="movies")
    names = ["flights", "default", "movies", "flights"]
    for num_beams in (1, 2):
        mixed = model.predict(SENTENCES, adapter=names, num_beams=num_beams, batch_size=4)
        for sentence, name, result in zip(SENTENCES, names, mixed):
            alone = model.predict([sentence], adapter=name, num_beams=num_beams)[0]
            assert_same_entities([result], [alone])
    assert any(mixed), "random adapters should find something, or the comparison is vacuous"


def test_a_batch_mixing_prompt_lengths_is_split_and_equals_each_adapter_alone(saved_adapters, tiny_backbone, tmp_path):
    torch.manual_seed(5)
    short = LightNerModel.from_backbone(tiny_backbone, ["CITY", "DATE"], prompt_length=4, prompt_hidden_size=16)
    _perturb(short)
    short.save_pretrained(tmp_path / "short")
    model = LightNerModel.from_pretrained(saved_adapters["news"])
    model.load_adapter(tmp_path / "short", adapter_name="short")
    model.load_adapter(saved_adapters["flights"], adapter_name="flights")
    names = ["short", "default", "flights", "short"]
    for num_beams in (1, 2):
        mixed = model.predict(SENTENCES, adapter=names, num_beams=num_beams, batch_size=4)
        assert any(mixed[0] + mixed[3]) and any(mixed[1] + mixed[2]), "both prompt lengths must predict something"
        for sentence, name, result in zip(SENTENCES, names, mixed):
            assert_same_entities([result], model.predict([sentence], adapter=name, num_beams=num_beams))


@pytest.fixture()
def hub_uploads(monkeypatch) -> dict:
    """No network: what huggingface_hub would be asked to create and upload, with the uploaded files' sizes."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    sent = {}

    def create_repo(self, repo_id, **kwargs):
        sent["repo"], sent["private"] = repo_id, kwargs.get("private")
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        root = Path(folder_path)
        sent["files"] = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
        sent.update(upload_repo=repo_id, **kwargs)
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return sent


def test_push_to_hub_sends_only_the_adapter_folder(news, hub_uploads):
    assert news.push_to_hub("someone/lightner-news", private=True) == "commit"
    assert hub_uploads["repo"] == hub_uploads["upload_repo"] == "someone/lightner-news" and hub_uploads["private"]
    assert hub_uploads["commit_message"] == "Upload LightNER adapter"
    assert {"config.json", "model.safetensors", "modeling_lightner.py", "README.md"} <= set(hub_uploads["files"])
    assert {"generation_lightner.py", "hub_lightner.py", "quantization_lightner.py", "pipeline_lightner.py"} <= set(
        hub_uploads["files"]
    )
    assert not any(name.endswith((".bin", ".pt", ".pth")) or "backbone" in name for name in hub_uploads["files"])
    adapter_bytes = sum(t.numel() * 4 for t in news.adapter_state_dict().values())
    assert adapter_bytes <= hub_uploads["files"]["model.safetensors"] <= adapter_bytes + 2048


def test_push_to_hub_of_a_fully_fine_tuned_model_uploads_its_backbone_folder(tiny_backbone, hub_uploads):
    full = LightNerModel.from_backbone(tiny_backbone, ["PER"], prompt_hidden_size=16, freeze_backbone=False)
    full.push_to_hub("someone/lightner-full", commit_message="full fine-tuning")
    assert {"backbone/config.json", "backbone/model.safetensors", "model.safetensors"} <= set(hub_uploads["files"])
    assert hub_uploads["commit_message"] == "full fine-tuning"


def test_upload_adapter_folder_refuses_a_folder_that_is_no_adapter(tmp_path, hub_uploads):
    from lightner.hub_lightner import upload_adapter_folder

    with pytest.raises(FileNotFoundError, match="the folder does not exist"):
        upload_adapter_folder(tmp_path / "nothing", "someone/x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no model.safetensors"):
        upload_adapter_folder(tmp_path, "someone/x")
    assert "files" not in hub_uploads


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_adapter_halves_the_file_and_loads_back(news, tmp_path, dtype):
    news.save_pretrained(tmp_path / "full")
    news.save_pretrained(tmp_path / "half", adapter_dtype=dtype)
    full_size = os.path.getsize(tmp_path / "full" / "model.safetensors")
    half_size = os.path.getsize(tmp_path / "half" / "model.safetensors")
    assert half_size < 0.52 * full_size
    assert {t.dtype for t in load_file(tmp_path / "half" / "model.safetensors").values()} == {dtype}
    loaded = LightNerModel.from_pretrained(tmp_path / "half")
    assert {p.dtype for p in loaded.adapters.parameters()} == {torch.float32}
    for name, tensor in loaded.adapter_state_dict().items():
        # The stated tolerance: the adapter round-trips within the half format's rounding (2^-8 relative for bf16).
        torch.testing.assert_close(tensor, news.adapter_state_dict()[name], rtol=2**-7, atol=1e-3)
    assert [[(e["start"], e["end"], e["type"]) for e in s] for s in loaded.predict(SENTENCES)] == [
        [(e["start"], e["end"], e["type"]) for e in s] for s in news.predict(SENTENCES)
    ]


def test_format_version_is_recorded_and_a_newer_one_is_refused(news, tmp_path):
    news.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    assert config["adapter_format_version"] == 1
    config["adapter_format_version"] = ADAPTER_FORMAT_VERSION + 1
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 2, newer than the 1 this code reads"):
        LightNerModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(encoder_layers=3), "encoder_layers: adapter 2, backbone 3"),
        (dict(d_model=48), "d_model: adapter 32, backbone 48"),
        (dict(decoder_attention_heads=4), "decoder_attention_heads: adapter 2, backbone 4"),
        (dict(vocab_size=400), "vocab_size: adapter"),
    ],
)
def test_an_adapter_refuses_a_backbone_of_another_shape(news, tmp_path, change, message):
    news.save_pretrained(tmp_path / "adapter")
    other = BartModel.from_pretrained(save_tiny_backbone(tmp_path / "other", **change))
    with pytest.raises(ValueError, match=message):
        LightNerModel.from_pretrained(tmp_path / "adapter", backbone=other)


def test_damaged_adapters_are_refused_with_their_file_named(news, tmp_path):
    news.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    original = weights.read_bytes()

    weights.write_bytes(original[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors adapter file"):
        LightNerModel.from_pretrained(tmp_path)
    weights.write_bytes(b"\x00" * len(original))
    with pytest.raises(ValueError, match="not a readable safetensors adapter file"):
        LightNerModel.from_pretrained(tmp_path)

    save_file({k: v for k, v in state.items() if "decoder_cross" not in k}, weights)
    with pytest.raises(ValueError, match=r"missing tensors \['prompt_encoder.prompts.decoder_cross'\]"):
        LightNerModel.from_pretrained(tmp_path)
    save_file({**state, "backbone.shared.weight": torch.zeros(2, 2)}, weights)
    with pytest.raises(ValueError, match=r"unexpected \['backbone.shared.weight'\]"):
        LightNerModel.from_pretrained(tmp_path)


def test_a_folder_of_another_model_type_is_refused(news, tmp_path):
    news.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "bert"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'bert', not 'lightner'"):
        LightNerModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'bert', not 'lightner'"):
        news.load_adapter(tmp_path, adapter_name="other")
    assert news.list_adapters() == ["default"]


def test_prompt_tensors_per_kind_are_what_the_file_holds(news, tmp_path):
    news.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    for kind in ATTENTION_KINDS:
        assert torch.equal(state[f"prompt_encoder.prompts.{kind}"], news.prompt_encoder.prompts[kind].detach())


def test_full_fine_tuning_saves_its_backbone_and_never_touches_a_shared_one(tiny_backbone, tmp_path):
    frozen = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=16)
    full = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=16, freeze_backbone=False)
    assert full.backbone is not frozen.backbone
    frozen_before = {name: t.clone() for name, t in frozen.backbone.state_dict().items()}
    encoded = encode_sentences(full.tokenizer, SENTENCES[:2])
    targets = [encode_target(e, spans, {"PER": 0, "LOC": 1}) for e, spans in zip(encoded, [[(0, 2, "PER")], []])]
    batch = collate(encoded, full.tokenizer.pad_token_id, targets)
    optimizer = torch.optim.AdamW([p for p in full.parameters() if p.requires_grad], lr=1e-2)
    full.train()
    full(**batch).loss.backward()
    optimizer.step()
    full.eval()
    assert all(torch.equal(t, frozen_before[name]) for name, t in frozen.backbone.state_dict().items())
    full.save_pretrained(tmp_path)
    assert (tmp_path / "backbone" / "model.safetensors").exists()
    loaded = LightNerModel.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, full(**batch).logits)


def _model_state(model: LightNerModel) -> dict:
    """Everything saving could change: the active adapter, every config (the backbone's too) and every tensor."""
    return {
        "active": model.active_adapter,
        "config": model.config.to_json_string(),
        "adapters": {name: adapter.config.to_json_string() for name, adapter in model.adapters.items()},
        "backbone": model.backbone.config.to_json_string(),
        "tensors": {name: tensor.clone() for name, tensor in model.state_dict().items()},
    }


def _assert_same_state(before: dict, after: dict) -> None:
    assert {k: v for k, v in after.items() if k != "tensors"} == {k: v for k, v in before.items() if k != "tensors"}
    assert after["tensors"].keys() == before["tensors"].keys()
    assert all(torch.equal(after["tensors"][name], tensor) for name, tensor in before["tensors"].items())


@pytest.mark.parametrize("freeze_backbone", [True, False])
def test_saving_leaves_the_model_and_its_configs_as_they_were(tiny_backbone, tmp_path, freeze_backbone):
    """Saving the active adapter, or another one by name, writes files and changes nothing in the model: not which
    adapter is active, not a config (not even the fields the saved config.json gains), not a tensor."""
    torch.manual_seed(3)
    model = LightNerModel.from_backbone(
        tiny_backbone, ["PER", "LOC"], prompt_hidden_size=16, freeze_backbone=freeze_backbone
    )
    model.add_adapter("flights", ["fromloc.city_name"], prompt_hidden_size=16)
    before = _model_state(model)
    model.save_pretrained(tmp_path / "active", adapter_dtype="bfloat16")
    model.save_pretrained(tmp_path / "other", adapter="flights")
    _assert_same_state(before, _model_state(model))
    saved = json.loads((tmp_path / "other" / "config.json").read_text())
    assert saved["entity_types"] == ["fromloc.city_name"] and saved["custom_pipelines"]["ner"]
    assert "architectures" not in json.loads(before["config"]) and saved["architectures"] == ["LightNerModel"]
    assert (tmp_path / "active" / "backbone").is_dir() != freeze_backbone
    loaded = LightNerModel.from_pretrained(tmp_path / "other")
    assert loaded.config.entity_types == ["fromloc.city_name"]
    assert torch.equal(
        loaded.pointer_head.label_word_weights, model.adapters["flights"].pointer_head.label_word_weights
    )


FIXTURE = Path(__file__).parent / "fixtures" / "adapter_v1"


def test_an_adapter_saved_by_the_first_release_loads_bit_identically():
    """`fixtures/adapter_v1` was written by the first release (format version 1): the same tensors bit for bit, the
    same predictions, and the same logits to float32 rounding (float kernels differ in the last bits between CPUs:
    an AMD EPYC gives logits 5e-7 off the Intel machine that recorded them, with the same -inf mask)."""
    backbone = BartModel.from_pretrained(FIXTURE / "backbone")
    model = LightNerModel.from_pretrained(FIXTURE / "adapter", backbone=backbone)
    stored = load_file(FIXTURE / "adapter" / "model.safetensors")
    state = model.adapter_state_dict()
    assert sorted(state) == sorted(stored)
    assert all(torch.equal(state[name], stored[name]) for name in stored)
    expected = load_file(FIXTURE / "expected.safetensors")
    batch = {name: expected[name] for name in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, expected["logits"], rtol=1e-5, atol=1e-5)
    recorded = json.loads((FIXTURE / "expected_predictions.json").read_text())
    for num_beams, predictions in recorded["beams"].items():
        got = model.predict(recorded["sentences"], num_beams=int(num_beams))
        assert [[(e["type"], e["start"], e["end"]) for e in s] for s in got] == [
            [(e["type"], e["start"], e["end"]) for e in s] for s in predictions
        ]
        got_scores = [e["score"] for s in got for e in s]
        assert got_scores == pytest.approx([e["score"] for s in predictions for e in s], rel=1e-5, abs=1e-6)


def card_metadata(folder: Path) -> dict:
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md").data.to_dict()


def test_card_scores_are_model_index_results_and_datasets_only_a_hub_id(news, tmp_path):
    news.config.training_data, news.config.training_dataset_id = "few-shot.txt", None
    news.config.evaluation, news.config.evaluation_data = {"test f1": 0.5, "test precision": 0.25}, "test.txt"
    news.save_pretrained(tmp_path / "local")
    metadata = card_metadata(tmp_path / "local")
    assert "datasets" not in metadata
    (index,) = metadata["model-index"]
    (result,) = index["results"]  # one task on one dataset split, with its metrics
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"f1": 0.5, "precision": 0.25}
    assert result["dataset"] == {"type": "test.txt", "name": "test.txt", "split": "test"}
    assert result["task"]["type"] == "token-classification"

    news.config.training_data = news.config.training_dataset_id = "eriktks/conll2003"
    news.save_pretrained(tmp_path / "hub")
    assert card_metadata(tmp_path / "hub")["datasets"] == ["eriktks/conll2003"]


def test_card_snippet_names_the_repository_it_was_pushed_to(news, hub_uploads, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from lightner.hub_lightner import upload_adapter_folder

    cards = []
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, *, folder_path, **kw: cards.append((Path(folder_path) / "README.md").read_text()),
    )
    news.save_pretrained(tmp_path / "saved")
    assert '"<this repository>"' in (tmp_path / "saved" / "README.md").read_text()
    news.push_to_hub("someone/lightner-news")
    upload_adapter_folder(tmp_path / "saved", "someone/lightner-saved")
    assert 'AutoModel.from_pretrained("someone/lightner-news"' in cards[0]
    assert 'pipeline("ner", model="someone/lightner-saved"' in cards[1]
    assert "<this repository>" not in cards[0] + cards[1]


def _dtypes(module) -> set:
    return {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}


def test_adapters_follow_the_backbone_device_and_trainable_ones_stay_float32(tiny_backbone, news, tmp_path):
    """Adapters, new (trainable) or loaded, keep float32 on a bfloat16 backbone; `.to()` moves all."""
    news.save_pretrained(tmp_path / "news")
    model = LightNerModel.from_backbone(tiny_backbone, ["PER"], prompt_hidden_size=16, dtype=torch.bfloat16)
    model.add_adapter("new", ["LOC"], prompt_hidden_size=16)
    model.load_adapter(tmp_path / "news", adapter_name="news")
    assert _dtypes(model.backbone) == {torch.bfloat16}
    assert _dtypes(model.adapters["default"]) == _dtypes(model.adapters["new"]) == {torch.float32}
    assert _dtypes(model.adapters["news"]) == {torch.float32}
    loaded = LightNerModel.from_pretrained(tmp_path / "news", dtype=torch.bfloat16)
    assert _dtypes(loaded.backbone) == {torch.bfloat16} and _dtypes(loaded.adapters) == {torch.float32}
    encoded = encode_sentences(model.tokenizer, SENTENCES[:2])
    targets = [encode_target(e, [], {"PER": 0}) for e in encoded]
    model.train()
    model(**collate(encoded, model.tokenizer.pad_token_id, targets)).loss.backward()
    assert model.pointer_head.label_word_weights.grad.dtype == torch.float32
    model.to(torch.float64)
    assert _dtypes(model) == {torch.float64}
    assert {t.device for t in model.buffers()} == {torch.device("cpu")}


def test_adapters_are_built_on_the_backbone_device():
    """The meta device stands in for an accelerator: nothing of the adapter may stay behind on the CPU."""
    from conftest import byte_level_tokenizer, tiny_bart_config
    from lightner.configuration_lightner import LightNerConfig

    tokenizer = byte_level_tokenizer()
    with torch.device("meta"):
        backbone = BartModel(tiny_bart_config(len(tokenizer)))
    for reparameterize in (True, False):
        config = LightNerConfig(backbone="meta", entity_types=["PER", "LOC"], prompt_hidden_size=16)
        model = LightNerModel(config, backbone=backbone, tokenizer=tokenizer, reparameterize=reparameterize)
        model.add_adapter("other", ["ORG"], prompt_hidden_size=16)
        assert {t.device.type for t in [*model.adapters.parameters(), *model.adapters.buffers()]} == {"meta"}


def test_moving_a_model_never_moves_the_backbone_under_another_adapter(saved_adapters):
    """Rule: a model moved while others share its backbone takes its own copy; the others stay as they were."""
    first = LightNerModel.from_pretrained(saved_adapters["news"])
    second = LightNerModel.from_pretrained(saved_adapters["flights"])
    assert first.backbone is second.backbone
    expected = second.predict(SENTENCES)
    first.to(torch.float64)
    assert first.backbone is not second.backbone
    assert _dtypes(first) == {torch.float64}
    assert _dtypes(second) == {torch.float32}
    assert second.predict(SENTENCES) == expected
    third = LightNerModel.from_pretrained(saved_adapters["movies"])
    assert third.backbone is second.backbone  # the registry still hands out the float32 backbone
    second.to(torch.float64)
    third.to(torch.float64)  # the last user moves the backbone itself, which then leaves the registry
    assert third.backbone is not second.backbone and _dtypes(third) == {torch.float64}
    fourth = LightNerModel.from_pretrained(saved_adapters["news"])
    assert _dtypes(fourth) == {torch.float32} and fourth.backbone is not third.backbone


def test_missing_folders_and_files_are_named(news, tiny_backbone, tmp_path):
    missing = tmp_path / "no-such-adapter"
    with pytest.raises(FileNotFoundError, match=f"{missing}: the folder does not exist"):
        LightNerModel.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="the folder does not exist"):
        LightNerModel.from_backbone(tmp_path / "no-such-backbone", ["PER"])
    news.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'adapter'} has no model.safetensors"):
        LightNerModel.from_pretrained(tmp_path / "adapter")


def test_a_config_that_is_no_json_object_is_named(news, tiny_backbone, tmp_path):
    news.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"adapter/config.json holds an array, not a JSON object.*LightNER adapter"):
        LightNerModel.from_pretrained(tmp_path / "adapter")
    backbone = save_tiny_backbone(tmp_path / "backbone")
    (backbone / "config.json").write_text('"bart"')
    with pytest.raises(ValueError, match=r"backbone/config.json holds a string, not a JSON object.*BART backbone"):
        LightNerModel.from_backbone(backbone, ["PER"])


def test_backbone_may_be_a_folder_to_load_instead_of_the_one_the_config_names(news, tiny_backbone, tmp_path):
    """A local copy of the backbone (a machine without the Hub) loads by `backbone=` its folder; the config keeps the
    name it records; a backbone of another shape is refused as ever, and anything but a model, a name or a path too."""
    news.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    config["backbone"] = "org/not-on-this-machine"
    (tmp_path / "adapter" / "config.json").write_text(json.dumps(config))
    copy = save_tiny_backbone(tmp_path / "copy")
    for backbone in (copy, str(copy)):
        loaded = LightNerModel.from_pretrained(tmp_path / "adapter", backbone=backbone)
        assert loaded.config.backbone == "org/not-on-this-machine"
        assert_same_entities(loaded.predict(SENTENCES), news.predict(SENTENCES))
    with pytest.raises(ValueError, match="d_model: adapter 32, backbone 16"):
        LightNerModel.from_pretrained(
            tmp_path / "adapter", backbone=save_tiny_backbone(tmp_path / "narrow", d_model=16)
        )
    with pytest.raises(TypeError, match="backbone= must be a loaded BartModel, or the Hub id or folder.*not int"):
        LightNerModel.from_pretrained(tmp_path / "adapter", backbone=3)


def test_a_backbone_folder_that_is_not_a_complete_bart_is_refused(news, tiny_backbone, tmp_path):
    news.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match="holds a 'lightner' model, not a BART backbone"):
        LightNerModel.from_backbone(tmp_path / "adapter", ["PER"])
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((tiny_backbone / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=f"{partial} has no model.safetensors"):
        LightNerModel.from_backbone(partial, ["PER"])
    weights = load_file(tiny_backbone / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layers.1." not in k}, partial / "model.safetensors")
    with pytest.raises(ValueError, match=r"partial is not a complete BART backbone: \d+ of its weights are missing"):
        LightNerModel.from_backbone(partial, ["PER"])


def test_a_half_precision_adapter_loads_into_a_half_precision_model(news, tmp_path):
    news.save_pretrained(tmp_path, adapter_dtype=torch.bfloat16)
    loaded = LightNerModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert _dtypes(loaded.backbone) == {torch.bfloat16}
    file = load_file(tmp_path / "model.safetensors")
    for name, tensor in loaded.adapter_state_dict().items():
        assert file[name].dtype == torch.bfloat16 and torch.equal(tensor, file[name].float())
    predictions = loaded.predict(SENTENCES)
    assert any(predictions)
    assert all(0.0 < e["score"] <= 1.0 for sentence in predictions for e in sentence)


def test_prompts_only_loading_keeps_the_label_words_and_checks_the_prompts(news, tiny_backbone):
    """Cross-domain initialisation: another label set's prompts, this adapter's own label-word weights."""
    torch.manual_seed(3)
    target = LightNerModel.from_backbone(tiny_backbone, ["TITLE", "DIRECTOR", "YEAR", "GENRE"], prompt_hidden_size=16)
    label_words = target.pointer_head.label_word_weights.detach().clone()
    source = news.adapter_state_dict()
    assert source["pointer_head.label_word_weights"].shape != label_words.shape
    with pytest.raises(ValueError, match="label_word_weights has shape"):
        target.load_adapter_state_dict(source, source="news")
    target.load_adapter_state_dict(source, source="news", prompts_only=True)
    assert torch.equal(target.pointer_head.label_word_weights, label_words)
    for kind in ATTENTION_KINDS:
        assert torch.equal(target.prompt_encoder.prompts[kind], source[f"prompt_encoder.prompts.{kind}"])
    without = {name: t for name, t in source.items() if "decoder_self" not in name}
    with pytest.raises(ValueError, match=r"news does not match this model: missing tensors \['prompt_encoder.prompts"):
        target.load_adapter_state_dict(without, source="news", prompts_only=True)
    shorter = {
        **source,
        "prompt_encoder.prompts.encoder_self": source["prompt_encoder.prompts.encoder_self"][:, :, :3],
    }
    with pytest.raises(ValueError, match="news: tensor prompt_encoder.prompts.encoder_self has shape"):
        target.load_adapter_state_dict(shorter, source="news", prompts_only=True)
