"""Low-precision inference: a bfloat16 backbone, int8 linear layers shared by every adapter, the same entities as
float32 on a trained model, the saved adapter untouched, and clear errors where neither can run."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from conftest import model_with_strong_prompts, save_tiny_backbone
from lightner import quantization_lightner
from lightner.modeling_lightner import LightNerModel
from lightner.quantization_lightner import INT8_KERNELS, Int8Linear, is_quantized, quantize_backbone
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
    monkeypatch.setattr(quantization_lightner, "int8_kernel", lambda: "int_mm")  # as on a CPU with VNNI
    with pytest.raises(RuntimeError, match=r"needs torch._int_mm, the int8 x int8 -> int32 matrix product"):
        LightNerModel.from_backbone(save_tiny_backbone(saved.parent / "other", seed=1), TYPES, quantize="int8")


def _batch(model, sentences, entities):
    encoded = encode_sentences(model.tokenizer, sentences)
    type_ids = {name: i for i, name in enumerate(model.config.entity_types)}
    targets = [encode_target(e, spans, type_ids) for e, spans in zip(encoded, entities)]
    return encoded, collate(encoded, model.tokenizer.pad_token_id, targets)


@pytest.mark.parametrize("kernel", INT8_KERNELS)
@pytest.mark.parametrize("asymmetric", [False, True])
def test_int8_linear_rows_are_independent_and_close_to_float(asymmetric, kernel):
    """A row's int8 result is the same alone or in any batch (bit for bit), and close to the float layer's."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64)
    layer = Int8Linear(linear, asymmetric=asymmetric, kernel=kernel)
    x = torch.nn.functional.gelu(torch.randn(2, 5, 256) * 2)  # what fc2 reads
    batched = layer(x)
    alone = torch.cat([layer(x[:, i : i + 1]) for i in range(5)], dim=1)
    assert torch.equal(batched, alone) and torch.equal(layer(x[1:]), batched[1:])
    reference = linear(x)
    error = (batched - reference).abs().max() / reference.abs().max()
    assert error < 0.02, error


@pytest.mark.parametrize("kernel", INT8_KERNELS)
def test_asymmetric_inputs_halve_the_error_on_activation_outputs(kernel):
    """GELU outputs are at least -0.17: a zero point uses all the levels where the symmetric range wastes half."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(1024, 256)
    x = torch.nn.functional.gelu(torch.randn(64, 1024))
    reference = linear(x)
    errors = {
        asym: (Int8Linear(linear, asymmetric=asym, kernel=kernel)(x) - reference).pow(2).mean()
        for asym in (False, True)
    }
    assert errors[True] < 0.6 * errors[False], errors


def test_both_int8_kernels_compute_the_same_quantized_product():
    """The kernels multiply the same quantized rows and weights exactly (int32 sums; oneDNN's in two halves, so that
    AVX2's int16 pair sums cannot saturate): each equals the float64 product of the dequantized inputs and weights up
    to float32 rounding, so a kernel adds no error of its own and predictions do not depend on the CPU's int8 kind."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 128)
    rows = torch.randn(16, 512) * torch.linspace(0.1, 8, 512)  # wide rows: most inputs land above level 127
    outputs = {}
    for kernel in INT8_KERNELS:
        for asymmetric in (False, True):
            layer = Int8Linear(linear, asymmetric=asymmetric, kernel=kernel)
            quantized, scale, zero = quantization_lightner._quantize_rows(rows, asymmetric)
            weight = (linear.weight.detach() / layer.weight_scale[:, None]).round().double()
            weight = weight * layer.weight_scale.double()[:, None]
            expected = (scale.double() * (quantized.double() - zero.double())) @ weight.T + linear.bias.double()
            outputs[kernel, asymmetric] = layer(rows)
            assert torch.allclose(outputs[kernel, asymmetric].double(), expected, rtol=1e-5, atol=1e-4), kernel
    for asymmetric in (False, True):
        assert torch.allclose(outputs["int_mm", asymmetric], outputs["onednn", asymmetric], rtol=1e-5, atol=1e-4)


def test_seven_bit_inputs_need_no_halves_and_stay_exact():
    """oneDNN with 7-bit inputs (the encoder's) multiplies them in one product, exactly, rows independent."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 128)
    rows = torch.randn(16, 512) * torch.linspace(0.1, 8, 512)
    layer = Int8Linear(linear, asymmetric=True, kernel="onednn", input_bits=7)
    quantized, scale, zero = quantization_lightner._quantize_rows(rows, True, levels=127)
    weight = (linear.weight.detach() / layer.weight_scale[:, None]).round().double() * layer.weight_scale.double()[
        :, None
    ]
    expected = (scale.double() * (quantized.double() - zero.double())) @ weight.T + linear.bias.double()
    out = layer(rows)
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(torch.cat([layer(rows[i : i + 1]) for i in range(16)]), out)
    with pytest.raises(ValueError, match="7 with the onednn kernel"):
        Int8Linear(linear, kernel="int_mm", input_bits=7)


def test_under_onednn_the_encoder_takes_seven_bit_inputs_and_the_decoder_eight(saved, monkeypatch):
    """The encoder runs once over every source piece (bound by arithmetic: 7 bits, no halves); the decoder every step
    over a few rows (bound by reading weights: 8 bits in two halves)."""
    import copy

    monkeypatch.setattr(quantization_lightner, "int8_kernel", lambda: "onednn")
    quantized = quantize_backbone(copy.deepcopy(LightNerModel.from_pretrained(saved).backbone))
    bits = {name: module.input_levels for name, module in quantized.named_modules() if isinstance(module, Int8Linear)}
    assert {level for name, level in bits.items() if name.startswith("encoder.")} == {127}
    assert {level for name, level in bits.items() if name.startswith("decoder.")} == {255}


def test_the_int8_kernel_is_chosen_by_what_the_cpu_multiplies_natively(monkeypatch):
    """`_int_mm` where the CPU has VNNI or AMX, oneDNN's AVX2 product elsewhere (if the build has it)."""
    chosen = {}
    for vnni in (True, False):
        quantization_lightner.int8_kernel.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda vnni=vnni: vnni, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        chosen[vnni] = quantization_lightner.int8_kernel()
    quantization_lightner.int8_kernel.cache_clear()
    assert chosen[True] == "int_mm"
    assert chosen[False] == ("onednn" if quantization_lightner._onednn_runs() else "int_mm")


@pytest.mark.parametrize("kernel", INT8_KERNELS)
def test_a_copied_int8_layer_computes_the_same(kernel):
    """A shared backbone is copied before a move (`BackboneSharing._apply`): oneDNN's packed weights, which it cannot
    copy, are shared by the copy, and its buffers are its own."""
    import copy

    layer = Int8Linear(torch.nn.Linear(64, 32), asymmetric=True, kernel=kernel)
    copied = copy.deepcopy(layer)
    x = torch.randn(3, 64)
    assert torch.equal(copied(x), layer(x))
    assert copied.weight_scale is not layer.weight_scale and copied.kernel == kernel
