"""Low-precision inference: a bfloat16 backbone, int8 linear layers shared by every adapter, the same entities as
float32 on a trained model, the saved adapter untouched, and clear errors where neither can run."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from conftest import model_with_strong_prompts, save_tiny_backbone
from lightner.modeling_lightner import LightNerModel
from lightner.quantization_lightner import is_quantized, quantize_backbone
from lightner.tokenization_utils import collate, encode_sentences, encode_target

TYPES = ["PER", "LOC", "ORG"]
SENTENCES = [
    ["John", "Smith", "lives", "in", "New", "York", "."],
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Hi"],
]


@pytest.fixture()
def saved(tiny_backbone, tmp_path):
    """An adapter with random prompts of a realistic size, saved in float32."""
    model_with_strong_prompts(tiny_backbone, TYPES).save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def _digests(folder) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir() if path.is_file()}


@pytest.mark.parametrize("precision", [{"dtype": torch.bfloat16}, {"dtype": "bfloat16"}, {"quantize": "int8"}])
def test_low_precision_runs_end_to_end_and_never_changes_the_saved_adapter(saved, tmp_path, precision):
    files_before = _digests(saved)
    model = LightNerModel.from_pretrained(saved, **precision)
    if "quantize" in precision:
        assert is_quantized(model.backbone)
        assert model.backbone.get_input_embeddings().weight.dtype == torch.float32
    else:
        assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.adapters.parameters()} == {torch.float32}
    predictions = model.predict(SENTENCES, num_beams=2)
    assert len(predictions) == len(SENTENCES)
    assert all(0.0 < e["score"] <= 1.0 for sentence in predictions for e in sentence)
    model.save_pretrained(tmp_path / "again")
    assert _digests(saved) == files_before
    original, again = load_file(saved / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert original.keys() == again.keys()
    for name, tensor in original.items():
        assert again[name].dtype == tensor.dtype == torch.float32 and torch.equal(again[name], tensor), name


def test_one_int8_backbone_serves_every_adapter(saved, tiny_backbone):
    first = LightNerModel.from_pretrained(saved, quantize="int8")
    second = LightNerModel.from_pretrained(saved, quantize="int8")
    plain = LightNerModel.from_pretrained(saved)
    fresh = LightNerModel.from_backbone(tiny_backbone, ["MISC"], quantize="int8")
    assert first.backbone is second.backbone is fresh.backbone
    assert plain.backbone is not first.backbone and not is_quantized(plain.backbone)
    first.load_adapter(saved, adapter_name="again")
    assert first.predict(SENTENCES, adapter="again") == first.predict(SENTENCES)


def test_bad_precision_requests_are_refused_by_name(saved, tiny_backbone, monkeypatch):
    for dtype in (torch.int8, "int64", "float8", torch.bool):
        with pytest.raises(ValueError, match=r"cannot be cast to it; use one of float32, bfloat16"):
            LightNerModel.from_pretrained(saved, dtype=dtype)
    with pytest.raises(ValueError, match=r"pass quantize='int8'"):
        LightNerModel.from_backbone(tiny_backbone, TYPES, dtype=torch.int8)
    with pytest.raises(ValueError, match="quantize='int4' is not supported"):
        LightNerModel.from_pretrained(saved, quantize="int4")
    with pytest.raises(ValueError, match="cannot be combined with dtype=torch.bfloat16"):
        LightNerModel.from_pretrained(saved, quantize="int8", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="full fine-tuning needs float weights"):
        LightNerModel.from_backbone(tiny_backbone, TYPES, quantize="int8", freeze_backbone=False)
    with pytest.raises(ValueError, match="quantize_backbone"):
        LightNerModel.from_pretrained(saved, quantize="int8", backbone=LightNerModel.from_pretrained(saved).backbone)
    with pytest.raises(ValueError, match="needs a float32 backbone on the CPU"):
        quantize_backbone(LightNerModel.from_pretrained(saved, dtype=torch.bfloat16).backbone)
    model = LightNerModel.from_pretrained(saved, quantize="int8").train()
    _, batch = _batch(model, SENTENCES[:1], [[(0, 2, "PER")]])
    with pytest.raises(RuntimeError, match="quantized to int8, which is for inference"):
        model(**batch)

    def no_int8_kernel(*args):
        raise RuntimeError("_int_mm not implemented for this build")

    monkeypatch.setattr(torch, "_int_mm", no_int8_kernel)
    with pytest.raises(RuntimeError, match=r"needs torch._int_mm, the int8 x int8 -> int32 matrix product"):
        LightNerModel.from_backbone(save_tiny_backbone(saved.parent / "other", seed=1), TYPES, quantize="int8")


def _batch(model, sentences, entities):
    encoded = encode_sentences(model.tokenizer, sentences)
    type_ids = {name: i for i, name in enumerate(model.config.entity_types)}
    targets = [encode_target(e, spans, type_ids) for e, spans in zip(encoded, entities)]
    return encoded, collate(encoded, model.tokenizer.pad_token_id, targets)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_int8_linear_rows_are_independent_and_close_to_float(asymmetric):
    """A row's int8 result is the same alone or in any batch (bit for bit), and close to the float layer's."""
    from lightner.quantization_lightner import Int8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64)
    layer = Int8Linear(linear, asymmetric=asymmetric)
    x = torch.nn.functional.gelu(torch.randn(2, 5, 256) * 2)  # what fc2 reads
    batched = layer(x)
    alone = torch.cat([layer(x[:, i : i + 1]) for i in range(5)], dim=1)
    assert torch.equal(batched, alone) and torch.equal(layer(x[1:]), batched[1:])
    reference = linear(x)
    error = (batched - reference).abs().max() / reference.abs().max()
    assert error < 0.02, error


def test_asymmetric_inputs_halve_the_error_on_activation_outputs():
    """GELU outputs are at least -0.17: a zero point uses all 256 levels where the symmetric range wastes half."""
    from lightner.quantization_lightner import Int8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(1024, 256)
    x = torch.nn.functional.gelu(torch.randn(64, 1024))
    reference = linear(x)
    errors = {asym: (Int8Linear(linear, asymmetric=asym)(x) - reference).pow(2).mean() for asym in (False, True)}
    assert errors[True] < 0.6 * errors[False], errors
