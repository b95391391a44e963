"""Loading as transformers users do it: device_map, dtype, Hub arguments for the backbone, refusals, labels."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import pipeline

from lightner import hub_lightner
from lightner.hub_lightner import loading_options, resolve_device, resolve_dtype
from lightner.modeling_lightner import LightNerModel

TYPES = ["PER", "LOC"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORDS = [["Angela", "Merkel", "visited", "Paris"], ["nothing", "here"]]


@pytest.fixture(scope="module")
def saved(tiny_backbone, tmp_path_factory):
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(tiny_backbone, TYPES, prompt_hidden_size=16)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder


def dtypes_of(model: LightNerModel) -> tuple[set, set]:
    return {p.dtype for p in model.backbone.parameters()}, {p.dtype for p in model.adapters.parameters()}


@pytest.mark.parametrize("device_map", ["cpu", "auto", {"": "cpu"}, torch.device("cpu")])
def test_device_map_places_backbone_and_adapter(saved, device_map):
    model = LightNerModel.from_pretrained(saved, device_map=device_map)
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    assert devices == {"cpu"}  # "auto" is the CPU on a machine without a GPU


@pytest.mark.parametrize(
    ("device_map", "message"),
    [
        ("gpu0", "not a device"),
        ({"encoder": "cpu", "decoder": "cpu"}, "several devices"),
        *([("cuda", "no cuda device")] if not torch.cuda.is_available() else []),
    ],
)
def test_bad_device_map_is_refused_before_loading(saved, device_map, message, monkeypatch):
    monkeypatch.setattr(hub_lightner, "load_backbone", lambda *a, **k: pytest.fail("loaded before refusing"))
    with pytest.raises(ValueError, match=message):
        LightNerModel.from_pretrained(saved, device_map=device_map)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"dtype": "bfloat16"}, torch.bfloat16),
        ({"torch_dtype": torch.float16}, torch.float16),
        ({"dtype": torch.bfloat16, "torch_dtype": "bf16"}, torch.bfloat16),
        ({"dtype": "auto"}, torch.float32),  # as saved
    ],
)
def test_dtype_applies_to_backbone_and_loaded_adapter(saved, kwargs, expected):
    """The backbone computes in the dtype asked for; the adapter keeps its float32 tensors (cast as they are used), so
    that saving it again never rounds them."""
    model = LightNerModel.from_pretrained(saved, **kwargs)
    assert dtypes_of(model) == ({expected}, {torch.float32})


def test_bfloat16_model_predicts(saved):
    model = LightNerModel.from_pretrained(saved, dtype=torch.bfloat16)
    assert len(model.predict(WORDS)) == 2


@pytest.mark.parametrize("dtype", ["float64", "int8", torch.int8, "fp8"])
def test_unknown_dtype_is_refused(saved, dtype):
    with pytest.raises(ValueError, match="unknown dtype"):
        LightNerModel.from_pretrained(saved, dtype=dtype)


def test_conflicting_dtype_and_torch_dtype_are_refused():
    with pytest.raises(ValueError, match="give one"):
        loading_options({"dtype": "float16", "torch_dtype": "bfloat16"})


def test_new_adapter_stays_float32_on_a_half_backbone(tiny_backbone):
    model = LightNerModel.from_backbone(tiny_backbone, TYPES, prompt_hidden_size=16, dtype="bfloat16")
    assert dtypes_of(model) == ({torch.bfloat16}, {torch.float32})


def test_to_moves_backbone_adapters_and_buffers(saved):
    model = LightNerModel.from_pretrained(saved)
    model.load_adapter(saved, adapter_name="second")
    model.to(torch.bfloat16)
    assert dtypes_of(model) == ({torch.bfloat16}, {torch.bfloat16})


# What transformers 5.25's `AutoModel.from_pretrained` (and so `pipeline()`) hands a remote-code model's
# `from_pretrained`: every download argument, set or not (5.24 passed only those set, and no `proxies`).
AUTOMODEL_KWARGS = {
    "_from_auto": True,
    "adapter_kwargs": None,
    "cache_dir": None,
    "force_download": False,
    "local_files_only": False,
    "proxies": None,
    "revision": None,
    "subfolder": "",
    "trust_remote_code": True,
}


def test_the_arguments_automodel_passes_are_accepted_and_proxies_reach_the_backbone(saved, monkeypatch):
    assert LightNerModel.from_pretrained(saved, **AUTOMODEL_KWARGS).predict(WORDS) == (
        LightNerModel.from_pretrained(saved).predict(WORDS)
    )
    calls = []
    real_load = hub_lightner.load_backbone
    monkeypatch.setattr(hub_lightner, "load_backbone", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    proxies = {"https": "http://127.0.0.1:9"}  # a local folder is never downloaded: the proxy is only passed on
    LightNerModel.from_pretrained(saved, proxies=proxies)
    assert calls[-1]["proxies"] == proxies
    assert loading_options({"proxies": proxies}).adapter_hub == {"proxies": proxies}


@pytest.mark.parametrize("kwargs", [{"low_cpu_mem_usage": True}, {"attn_implementation": "eager"}])
def test_unsupported_argument_is_refused_by_name(saved, tiny_backbone, kwargs):
    (name,) = kwargs
    with pytest.raises(TypeError, match=f"from_pretrained got argument.*{name}"):
        LightNerModel.from_pretrained(saved, **kwargs)
    model = LightNerModel.from_pretrained(saved)
    with pytest.raises(TypeError, match=f"load_adapter got argument.*{name}"):
        model.load_adapter(saved, adapter_name="other", **kwargs)


def test_load_adapter_refuses_its_own_dtype(saved):
    model = LightNerModel.from_pretrained(saved)
    with pytest.raises(ValueError, match="model's device and in its dtype"):
        model.load_adapter(saved, adapter_name="other", dtype="float16")


@pytest.mark.parametrize("device", ["cpu", -1])
def test_pipeline_with_device(saved, device):
    ner = pipeline("ner", model=str(saved), trust_remote_code=True, device=device)
    assert isinstance(ner("Angela Merkel visited Paris."), list)
    assert ner.device.type == "cpu"


def test_id2label_names_the_entity_types(saved):
    model = LightNerModel.from_pretrained(saved)
    assert model.config.id2label == {0: "PER", 1: "LOC"}
    assert model.config.label2id == {"PER": 0, "LOC": 1}
    assert model.config.num_labels == 2


def fake_hub_cache(cache_dir, repo_id: str, folder) -> None:
    """`folder`'s files laid out as the Hub client caches `repo_id` at commit `COMMIT` (its `main` branch)."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def test_hub_arguments_reach_the_backbone_and_its_revision_is_recorded(tiny_backbone, tmp_path):
    """A backbone only in a Hub cache loads offline only if `cache_dir` and `local_files_only` reach its loader."""
    fake_hub_cache(tmp_path / "cache", "org/tiny-bart", tiny_backbone)
    hub = {"cache_dir": str(tmp_path / "cache"), "local_files_only": True}
    model = LightNerModel.from_backbone("org/tiny-bart", TYPES, prompt_hidden_size=16, **hub)
    assert model.config.backbone_revision == COMMIT
    model.save_pretrained(tmp_path / "adapter")
    loaded = LightNerModel.from_pretrained(tmp_path / "adapter", **hub)
    assert loaded.config.backbone_revision == COMMIT
    assert loaded.predict(WORDS) == model.eval().predict(WORDS)


def test_loading_uses_the_recorded_backbone_revision_unless_told(saved, monkeypatch):
    calls = []
    real_load = hub_lightner.load_backbone
    monkeypatch.setattr(hub_lightner, "load_backbone", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    config = hub_lightner.load_adapter_config(str(saved))
    config.backbone_revision = COMMIT
    LightNerModel.from_pretrained(saved, config=config, token="secret")
    LightNerModel.from_pretrained(saved, config=config, backbone_revision="v2")
    assert (calls[0]["revision"], calls[0]["token"]) == (COMMIT, "secret")
    assert calls[1]["revision"] == "v2"


def test_resolvers_accept_the_usual_spellings():
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(None) is None
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert loading_options({"revision": "r", "cache_dir": "c"}).backbone_hub == {"cache_dir": "c"}
