"""int8 inference for the frozen backbone: `Int8Linear` and `quantize_backbone` (`quantize="int8"` when loading).

A Hub file of its own, beside `modeling_lightner.py` and `hub_lightner.py`: it travels with a saved adapter's remote
code like them (`hub_lightner.py` imports it relatively), and it imports nothing else of the project, so that the
model file can ask `is_quantized` without importing the loading and saving code.
"""

from __future__ import annotations

import copy
import functools

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
    """A frozen `nn.Linear` with int8 weights (one scale per output feature) and 8-bit inputs quantized row by row at
    every call (dynamic quantization), multiplied into int32 by one of `INT8_KERNELS` (`int8_kernel` picks it).

    Why rows rather than one scale per tensor (as `torch.ao`'s dynamic linear does): each row's result then depends
    on that row alone, so a sentence gets the same output alone, in a batch, or after others left the batch; and one
    outlier row cannot coarsen every other row's quantization.

    `asymmetric` inputs map each row's [min, max] onto the levels (a zero point per row) instead of
    [-max|x|, max|x|]: for a layer fed by GELU, whose outputs are at least -0.17, the symmetric range leaves about half
    of the levels unused. With `x = scale * (q - zero)`, `x @ W.T = scale * (q @ W.T - zero * W.sum(1))`, so a zero
    point costs one more product with the weight rows' sums, kept as a buffer.

    Example:
        >>> layer = Int8Linear(torch.nn.Linear(64, 32))
        >>> layer(torch.randn(3, 64)).shape
        torch.Size([3, 32])
    """

    def __init__(
        self, linear: torch.nn.Linear, asymmetric: bool = False, kernel: str | None = None, input_bits: int = 8
    ):
        super().__init__()
        self.kernel = kernel or int8_kernel()
        if input_bits not in (7, 8) or (input_bits == 7 and self.kernel != "onednn"):
            raise ValueError(f"input_bits={input_bits}: 8, or 7 with the onednn kernel (it then needs no halves)")
        self.asymmetric = asymmetric
        self.input_levels = 2**input_bits - 1  # 255 or 127
        weight = linear.weight.detach().float()  # [out, in]
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # [out]
        weight_int8 = (weight / scale[:, None]).round().to(torch.int8)  # [out, in]
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_scale", scale)  # [out]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())  # [out]
        row_sums = weight_int8.sum(dim=1, dtype=torch.int32).float()  # [out]
        if self.kernel == "onednn":
            # oneDNN's packed layout is opaque: not a buffer (nothing to save or move; the weights are frozen), and
            # copies of the layer share it (`__deepcopy__`). Its products come out scaled by `weight_scale`, and its
            # inputs always carry a zero point (the levels are unsigned), so the row sums are kept scaled likewise.
            self.packed_weight = torch.ops.onednn.qlinear_prepack(weight_int8, None)
            self.register_buffer("weight_row_sums", row_sums * scale)  # [out]
            zero_points = torch.zeros(self.out_features, dtype=torch.long)  # the weights are symmetric: [out]
            self.register_buffer("weight_zero_points", zero_points, persistent=False)
        else:
            self.register_buffer("weight_int8", weight_int8)
            self.register_buffer("weight_row_sums", row_sums if asymmetric else None)  # [out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # [rows, in]
        quantized, scale, zero = _quantize_rows(rows, self.asymmetric, self.input_levels)  # [rows, in], [rows, 1] x2
        if self.kernel == "onednn":
            out = self._onednn_product(quantized)  # [rows, out]
            out.addr_(zero.squeeze(1), self.weight_row_sums, alpha=-1).mul_(scale)
        else:
            quantized, zero = (quantized.to(torch.int16) - 128).to(torch.int8), zero - 128  # levels 0..255 -> int8
            out = torch._int_mm(quantized, self.weight_int8.t()).float()  # [rows, out]
            if self.asymmetric:
                out.addr_(zero.squeeze(1), self.weight_row_sums, alpha=-1)  # - zero [rows] x row sums [out]
            out.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def _onednn_product(self, quantized: torch.Tensor) -> torch.Tensor:
        """`quantized @ (weight_int8 * weight_scale).T` for inputs on the levels 0..255, exactly.

        Why in two halves: without VNNI, oneDNN adds pairs of uint8 x int8 products in int16 (AVX2's `vpmaddubsw`),
        which saturates for inputs above 127 (1.7% error measured at 32 x 1024 x 4096). Each input is split into
        min(q, 127) and the rest (at most 128), whose pairs fit in int16, and both halves go through one product as
        twice the rows. The weights are read once either way, but the multiply-adds double: per layer, against
        float32, 1.0-1.7x as fast at 8 rows, 0.8-1.4x at 32 (bound by arithmetic), 0.4-0.8x at one row (oneDNN's fixed
        cost per call), measured on an AVX2 EPYC (`benchmarks/decode_step.py` times whole steps). 7-bit inputs
        (`input_bits=7`: the encoder's, `_input_bits`) need no split; on every layer they would cost 0.5-0.65 F1 on
        MIT Restaurant (bart-mini) against 0.01-0.10 for 8 bits, over the 0.5-point gate."""
        rows, halves = quantized.shape[0], self.input_levels > 127
        if halves:
            high = quantized.clamp(max=127)  # [rows, in]
            quantized = torch.cat([high, quantized - high])  # [2 * rows, in]
        # Inputs (scale 1, zero point 0), packed int8 weights with their scales and zero points, no bias, float32 out.
        out = torch.ops.onednn.qlinear_pointwise(
            quantized, 1.0, 0, self.packed_weight, self.weight_scale, self.weight_zero_points, None,
            1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip
        # [2 * rows or rows, out]
        return out[:rows].add_(out[rows:]) if halves else out

    def __deepcopy__(self, memo: dict) -> Int8Linear:
        """A copy with its own buffers that shares the packed weights, which oneDNN cannot copy and nobody changes."""
        copied = self.__class__.__new__(self.__class__)
        memo[id(self)] = copied
        packed = self.__dict__.get("packed_weight")
        state = {key: value for key, value in self.__dict__.items() if key != "packed_weight"}
        copied.__dict__.update(copy.deepcopy(state, memo))
        if packed is not None:
            copied.packed_weight = packed
        return copied

    def extra_repr(self) -> str:
        shape = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        bits = self.input_levels.bit_length()
        return f"{shape}, asymmetric={self.asymmetric}, kernel={self.kernel!r}, input_bits={bits}"


INT8_KERNELS = ("int_mm", "onednn")  # see `int8_kernel`


def _quantize_rows(rows: torch.Tensor, asymmetric: bool, levels: int = 255) -> tuple[torch.Tensor, ...]:
    """Rows on the levels 0..`levels` (uint8): `rows ~ scale * (quantized - zero)`, one scale and zero per row.
    Symmetric: zero in the middle, scale from the row's largest magnitude; asymmetric: the row's [min, max] (widened to
    hold 0) over all the levels."""
    tiny = torch.finfo(torch.float32).tiny
    if asymmetric:
        low, high = torch.aminmax(rows, dim=1, keepdim=True)  # [rows, 1] each
        low, high = low.clamp(max=0), high.clamp(min=0)
        scale = (high - low).clamp(min=tiny) / levels  # [rows, 1]
        zero = (-low / scale).round_()  # [rows, 1]
    else:
        half = levels // 2  # levels either side of the zero point
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=tiny) / half  # [rows, 1]
        zero = torch.full_like(scale, half + 1)  # [rows, 1]
    quantized = (rows / scale).add_(zero).round_().clamp_(0, levels).to(torch.uint8)  # [rows, in]
    return quantized, scale, zero


@functools.cache
def int8_kernel() -> str:
    """The int8 product for this machine: `torch._int_mm` where the CPU multiplies int8 natively (VNNI or AMX: int8
    generation 1.9x float32's on an AVX-512 machine), oneDNN's (`torch.ops.onednn`) elsewhere when this torch build
    has it. Why: on a CPU with AVX2 alone `_int_mm` has no fast code (17x slower than float32 at 32 x 1024 x 4096 on an
    AVX2 EPYC), where oneDNN's uint8 x int8 product (`Int8Linear._onednn_product`) is exact; with its halves it is
    0.4-1.7x float32's speed per layer, depending on the rows (see there), and int8 prediction 1.2-1.3x float32's."""
    native = (
        getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )
    if native or not _onednn_runs():
        return "int_mm"
    return "onednn"


def _onednn_runs() -> bool:
    """Whether oneDNN's int8 product runs in this torch build (x86 builds with oneDNN; not every other platform)."""
    try:
        probe = Int8Linear(torch.nn.Linear(4, 2), kernel="onednn")
        return bool(torch.isfinite(probe(torch.ones(1, 4))).all())
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


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
        layer = Int8Linear(linear, asymmetric=child in ACTIVATION_FED_LINEARS, input_bits=_input_bits(name))
        setattr(backbone.get_submodule(parent), child, layer)
    del linears, linear
    _return_freed_memory()
    return backbone


def _input_bits(name: str) -> int:
    """8, except the encoder's layers under oneDNN: 7. The encoder runs once per batch over every source piece, where
    the product is bound by arithmetic and the halves of 8-bit inputs would cost twice float32's rows (int8 prediction
    0.88x float32 at gold lengths); with 7 bits it needs no halves and is twice as fast as float32. The decoder runs
    every step over at most a batch of rows and keeps 8 bits: 7 bits there, in inputs or weights, left the F1 gate
    (0.5) at -0.50 to -0.65. F1 (bart-mini MIT Restaurant, float32
    7.60 and 14.75): 7.22 and 14.91 so, against 7.57 and 14.74 with 8 bits everywhere; both within the gate."""
    return 7 if name.startswith("encoder.") and int8_kernel() == "onednn" else 8


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
    """Where the int8 product is `torch._int_mm` (`int8_kernel`), run it once on two tiny matrices, so that a torch
    build without it fails here, by name."""
    if int8_kernel() != "int_mm":
        return
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
    "INT8_KERNELS",
    "QUANTIZATIONS",
    "Int8Linear",
    "check_quantize",
    "int8_kernel",
    "is_quantized",
    "quantize_backbone",
]
