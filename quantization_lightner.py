"""int8 inference for the frozen backbone: `Int8Linear` and `quantize_backbone` (`quantize="int8"` when loading).

A Hub file of its own, beside `modeling_lightner.py` and `hub_lightner.py`: it travels with a saved adapter's remote
code like them (`hub_lightner.py` imports it relatively), and it imports nothing else of the project, so that the
model file can ask `is_quantized` without importing the loading and saving code.
"""

from __future__ import annotations

import torch
from transformers import BartModel

QUANTIZATIONS = ("int8",)


def check_quantize(quantize: str | None, dtype: torch.dtype | None = None) -> None:
    """Refuse, by name, a quantization other than `QUANTIZATIONS` and int8 combined with a non-float32 dtype."""
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not supported; choose one of {list(QUANTIZATIONS)} or None")
    if dtype not in (None, torch.float32):
        raise ValueError(
            f"quantize={quantize!r} keeps the backbone's other weights in float32 and cannot be combined with "
            f"dtype={dtype}; use one or the other"
        )


class Int8Linear(torch.nn.Module):
    """A frozen `nn.Linear` with int8 weights (one scale per output feature) and int8 inputs quantized row by row at
    every call (dynamic quantization), multiplied into int32 by `torch._int_mm`.

    Why rows rather than one scale per tensor (as `torch.ao`'s dynamic linear does): each row's result then depends
    on that row alone, so a sentence gets the same output alone, in a batch, or after others left the batch; and one
    outlier row cannot coarsen every other row's quantization.

    `asymmetric` inputs map each row's [min, max] onto the 256 int8 levels (a zero point per row) instead of
    [-max|x|, max|x|]: for a layer fed by GELU, whose outputs are at least -0.17, the symmetric range leaves about half
    of the levels unused. With `x = scale * (q - zero)`, `x @ W.T = scale * (q @ W.T - zero * W.sum(1))`, so it costs
    one more product with the weight rows' sums, kept as a buffer.
    """

    def __init__(self, linear: torch.nn.Linear, asymmetric: bool = False):
        super().__init__()
        weight = linear.weight.detach().float()  # [out, in]
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # [out]
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", (weight / scale[:, None]).round().to(torch.int8))  # [out, in]
        self.register_buffer("weight_scale", scale)  # [out]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())  # [out]
        row_sums = self.weight_int8.sum(dim=1, dtype=torch.int32).float() if asymmetric else None  # [out]
        self.register_buffer("weight_row_sums", row_sums)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # [rows, in]
        if self.weight_row_sums is None:
            (quantized, scale), zero = _quantize_rows(rows), None
        else:
            quantized, scale, zero = _quantize_rows_asymmetric(rows)
        out = torch._int_mm(quantized, self.weight_int8.t()).float()  # [rows, out]
        if zero is not None:
            out.addr_(zero.squeeze(1), self.weight_row_sums, alpha=-1)  # - zero [rows] x row sums [out]
        out.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        shape = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return f"{shape}, asymmetric={self.weight_row_sums is not None}"


def _quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 rows: `rows ~ scale * quantized`, scale [rows, 1] from each row's largest magnitude."""
    scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127  # [rows, 1]
    return (rows / scale).round_().to(torch.int8), scale


def _quantize_rows_asymmetric(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Int8 rows with a zero point: `rows ~ scale * (quantized - zero)`, each row's [min, max] (widened to hold 0)
    over the levels -128..127."""
    low, high = torch.aminmax(rows, dim=1, keepdim=True)  # [rows, 1] each
    low, high = low.clamp(max=0), high.clamp(min=0)
    scale = (high - low).clamp(min=torch.finfo(torch.float32).tiny) / 255  # [rows, 1]
    zero = (-128 - low / scale).round_()  # [rows, 1]
    quantized = (rows / scale).add_(zero).round_().clamp_(-128, 127).to(torch.int8)  # [rows, in]
    return quantized, scale, zero


# Linear layers whose inputs come out of the feed-forward activation (GELU), quantized asymmetrically.
ACTIVATION_FED_LINEARS = ("fc2",)


def quantize_backbone(backbone: BartModel, quantize: str = "int8") -> BartModel:
    """Replace the backbone's linear layers, in place, by `Int8Linear` (asymmetric inputs for those fed by the
    activation, `ACTIVATION_FED_LINEARS`); embeddings, layer norms and attention stay in float32. Returns the backbone.

    Why: a decoding step on CPU is mostly linear layers at a few dozen rows, where int8 products (VNNI/AMX) are
    several times faster than float32 and the weights take a quarter of the memory. Every adapter on the backbone uses
    it; an adapter itself is never quantized. For inference only: no gradients flow through the int8 layers.
    Refuses, naming what is missing: a backbone not in float32 on the CPU, or a torch build without the int8 kernel.
    """
    check_quantize(quantize)
    if is_quantized(backbone):
        return backbone
    reference = next(backbone.parameters())
    if reference.device.type != "cpu" or reference.dtype != torch.float32:
        raise ValueError(
            f"quantize={quantize!r} needs a float32 backbone on the CPU (the int8 layers are written for it); this "
            f"one is {reference.dtype} on {reference.device} (on a GPU use dtype=torch.bfloat16 instead)"
        )
    _check_int8_kernel()
    linears = [(name, module) for name, module in backbone.named_modules() if isinstance(module, torch.nn.Linear)]
    for name, linear in linears:
        parent, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent), child, Int8Linear(linear, asymmetric=child in ACTIVATION_FED_LINEARS))
    del linears, linear
    _return_freed_memory()
    return backbone


def _return_freed_memory() -> None:
    """Hand the freed float32 weights back to the operating system (glibc's `malloc_trim`), which the C allocator
    would otherwise keep, so that the quantized model's resident memory is what it holds; a no-op elsewhere."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def is_quantized(backbone: torch.nn.Module) -> bool:
    """Whether `quantize_backbone` quantized this backbone's linear layers."""
    return any(isinstance(module, Int8Linear) for module in backbone.modules())


def _check_int8_kernel() -> None:
    """Run the int8 product once on two tiny matrices, so that a torch build without it fails here, by name."""
    probe = torch.ones(2, 4, dtype=torch.int8)
    try:
        torch._int_mm(probe, probe.t())
    except (RuntimeError, NotImplementedError, AttributeError) as error:
        raise RuntimeError(
            "quantize='int8' needs torch._int_mm, the int8 x int8 -> int32 matrix product, on the CPU, and this "
            f"torch build ({torch.__version__}) lacks it: {error}. Use dtype=torch.bfloat16 instead."
        ) from error


__all__ = [
    "ACTIVATION_FED_LINEARS",
    "QUANTIZATIONS",
    "Int8Linear",
    "check_quantize",
    "is_quantized",
    "quantize_backbone",
]
