#!/usr/bin/env python
"""One decoding step against what this machine could do at best, and two ways to speed it up (issue 25, 2).

On random bart-large-shaped weights (`run.build_model`) and one batch of CoNLL-2003 test sentences (`--batch`-th of
the first 256, longest first, as `run.py` batches them), greedy decoding forced to `--steps` steps:

1. **Step time per precision** (fp32, int8; bf16 with `--bf16`): a step's time is the difference between `--steps`
   and 2 forced steps, over `--steps - 2`, best of `--repeats`.
2. **Floors**: the step's bytes (the decoder's linear weights, both attention caches) over this machine's measured
   read bandwidth, and its multiply-adds (the decoder's linear layers at the batch's rows) over the measured rate of a
   large float32 product (and twice it for int8: AVX2's `vpmaddubsw` multiplies twice as many int8 pairs per
   instruction; but where the decoder's int8 inputs go in two halves, twice the rows). The larger floor is what a
   step cannot beat; the ratio says how far the step is from it.
3. **Where the step goes** (`torch.profiler`, self CPU time per operator, per step).
4. `--compile`: the same float32 generation with the backbone's decoder under `torch.compile(dynamic=True)`: the
   first run (compilation included), the step time after it, and whether the outputs are identical; or the error.
5. `--cross-cache`: one layer's one-query cross-attention over a float32 cache against a bfloat16 cache read by a
   compiled kernel that converts as it reads (eager bfloat16 products have no native code without AVX-512 bf16).

    python benchmarks/decode_step.py --json                        # fp32 and int8: about 3 minutes on 2 cores
    python benchmarks/decode_step.py --compile --cross-cache --json

A table goes to stderr; with `--json`, one JSON object goes to stdout. Run it on otherwise quiet cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from run import cpu_model, forced_generate, forced_workload, longest_first, low_precision_model

from shared_assets import REPO_ROOT, log

sys.path.insert(0, str(REPO_ROOT))

from lightner.threads import make_products_reproducible  # noqa: E402

BYTES = {"fp32": 4, "bf16": 2, "int8": 1}


def chosen_batch(args):
    """The model (random bart-large weights, `</s>` forced away), its backbone, and the `--batch`-th batch of 32."""
    model, bart, tokenizer, _, encoded = forced_workload(256, seed=0)
    _, batch = longest_first(encoded, 32, tokenizer.pad_token_id)[args.batch]
    return model, bart, tokenizer, batch


def step_ms(torch, model, batch, steps: int, repeats: int) -> float:
    """Milliseconds per decoding step: (time of `steps` forced steps - time of 2) / (steps - 2), best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        forced_generate(torch, model, batch, steps)
        middle = time.perf_counter()
        forced_generate(torch, model, batch, 2)
        best = min(best, ((middle - started) - (time.perf_counter() - middle)) / (steps - 2))
    return 1e3 * best


def machine_rates(torch) -> dict:
    """Read bandwidth (summing a 512 MiB tensor) and a large float32 product's rate (2048 x 2048 x 2048), best of 5."""
    big, a = torch.ones(128 * 2**20), torch.randn(2048, 2048)
    seconds = {"read": float("inf"), "product": float("inf")}
    for _ in range(5):
        started = time.perf_counter()
        big.sum()
        middle = time.perf_counter()
        a @ a
        seconds = {
            "read": min(seconds["read"], middle - started),
            "product": min(seconds["product"], time.perf_counter() - middle),
        }
    return {
        "read_gb_per_s": big.numel() * 4 / seconds["read"] / 1e9,
        "fp32_gflops": 2 * 2048**3 / seconds["product"] / 1e9,
    }


def floors(bart, batch, steps: int, precision: str, rates: dict, row_factor: int = 1) -> dict:
    """A mid-run step's floors in ms: bytes it must read over the bandwidth, multiply-adds over the product rate.
    `row_factor` 2 is int8 in halves (`Int8Linear._onednn_product` on AVX2): every product runs twice the rows."""
    c = bart.config
    rows, source = batch["input_ids"].shape
    per_layer = 6 * c.d_model**2 + 2 * c.d_model * c.decoder_ffn_dim  # self q,k,v,o; cross q,o; fc1, fc2
    weights = c.decoder_layers * per_layer
    cache_bytes = BYTES["bf16" if precision == "bf16" else "fp32"]
    caches = c.decoder_layers * 2 * rows * (source + steps // 2) * c.d_model * cache_bytes  # cross + self (mid-run)
    traffic = weights * BYTES[precision] + caches
    rate = rates["fp32_gflops"] * (2 if precision == "int8" else 1)
    return {
        "bytes_mb": traffic / 1e6,
        "memory_floor_ms": 1e3 * traffic / (rates["read_gb_per_s"] * 1e9),
        "compute_floor_ms": 1e3 * 2 * rows * row_factor * weights / (rate * 1e9),
        "row_factor": row_factor,
    }


def decoder_row_factor(model) -> int:
    """2 where the decoder's int8 layers multiply their inputs in two halves (oneDNN with 8-bit inputs), else 1."""
    from lightner.quantization_lightner import Int8Linear

    layers = [m for m in model.backbone.decoder.modules() if isinstance(m, Int8Linear)]
    return 2 if layers and layers[0].kernel == "onednn" and layers[0].input_levels > 127 else 1


def profile(torch, model, batch, steps: int, top: int = 8) -> dict:
    """Self CPU milliseconds per decoding step of the `top` costliest operators: a `steps`-step generation's profile
    minus a 2-step one's, over `steps - 2` (so that the encoder pass and the first step do not count)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    totals = {}
    for run_steps, sign in ((steps, 1), (2, -1)):
        with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
            forced_generate(torch, model, batch, run_steps)
        for event in profiler.key_averages():
            totals[event.key] = totals.get(event.key, 0.0) + sign * event.self_cpu_time_total
    costliest = sorted(totals, key=lambda key: -totals[key])[:top]
    return {key: round(totals[key] / 1e3 / (steps - 2), 2) for key in costliest}


def compiled(torch, model, batch, steps: int, repeats: int) -> dict:
    """The decoder under `torch.compile(dynamic=True)`: first run, step time after it, identical outputs; or, where
    compiling fails, the error and how long it took to fail (a user would wait that long too)."""
    eager = forced_generate(torch, model, batch, steps)
    decoder = model.backbone.decoder
    model.backbone.decoder = torch.compile(decoder, dynamic=True)
    started = time.perf_counter()
    try:
        outputs = forced_generate(torch, model, batch, steps)
    except Exception as error:  # noqa: BLE001 - any compiler failure is the figure
        message = str(error).strip().splitlines()
        return {
            "error": f"{type(error).__name__}: {message[-1] if message else ''}",
            "seconds_to_failure": time.perf_counter() - started,
        }
    else:
        first = time.perf_counter() - started
        return {
            "first_run_s": first,
            "step_ms": step_ms(torch, model, batch, steps, repeats),
            "identical_outputs": bool(torch.equal(eager, outputs)),
        }
    finally:
        model.backbone.decoder = decoder


def cross_cache(torch, heads: int = 16, head_dim: int = 64, rows: int = 32, repeats: int = 200) -> dict:
    """One layer's one-query cross-attention (scores, softmax, weighted values) over `source` cached pieces, in ms:
    float32 cache (eager, as decoding runs now) against a bfloat16 cache in eager and in a compiled kernel."""

    def attention(query, key, value):  # [rows, heads, 1, d], [rows, heads, source, d] x2
        return ((query @ key.transpose(-1, -2)).softmax(-1) @ value.to(query.dtype)).float()

    def converting(query, key, value):  # the products as sums, so the compiler fuses the conversion into the reads
        weights = (query * key.float()).sum(-1).softmax(-1)  # [rows, heads, source]
        return (weights.unsqueeze(-1) * value.float()).sum(2)  # [rows, heads, d]

    converting_compiled = torch.compile(converting, dynamic=True)
    figures = {}
    for source in (20, 40, 80, 150):
        query = torch.randn(rows, heads, 1, head_dim)
        key, value = torch.randn(rows, heads, source, head_dim), torch.randn(rows, heads, source, head_dim)
        key16, value16 = key.bfloat16(), value.bfloat16()
        cases = {
            "fp32": (attention, (query, key, value)),
            "bf16_eager": (attention, (query.bfloat16(), key16, value16)),
            "bf16_compiled": (converting_compiled, (query, key16, value16)),
        }
        expected = attention(query, key, value).squeeze(2)
        error = (converting_compiled(query, key16, value16) - expected).abs().max().item()
        times = {}
        for name, (kernel, inputs) in cases.items():
            for _ in range(10):
                kernel(*inputs)
            started = time.perf_counter()
            for _ in range(repeats):
                kernel(*inputs)
            times[name] = 1e3 * (time.perf_counter() - started) / repeats
        figures[source] = {**times, "fp32_cache_mb": 2 * key.numel() * 4 / 1e6, "bf16_max_abs_error": error}
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch", type=int, default=0, help="which batch of 32 of the first 256 sentences (0: longest)"
    )
    parser.add_argument("--steps", type=int, default=30, help="forced decoding steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also bfloat16 (slow without native bf16)")
    parser.add_argument("--compile", action="store_true", help="also the decoder under torch.compile")
    parser.add_argument("--cross-cache", action="store_true", help="also the cross-attention cache kernels")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    make_products_reproducible()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, bart, tokenizer, batch = chosen_batch(args)
    report = {"machine": {"cpu": cpu_model(), "threads": torch.get_num_threads()}}
    report["batch"] = {"rows": batch["input_ids"].shape[0], "source_pieces": batch["input_ids"].shape[1]}
    report["steps"] = args.steps
    precisions = ["fp32", "int8"] + (["bf16"] if args.bf16 else [])
    for precision in precisions:
        which = model if precision == "fp32" else low_precision_model(model, bart, tokenizer, precision)
        forced_generate(torch, which, batch, 3)  # warm-up
        # The machine's rates right before the step is timed: on a shared host they drift by 2x over minutes.
        rates = machine_rates(torch)
        figures = {"machine": rates, "step_ms": step_ms(torch, which, batch, args.steps, args.repeats)}
        figures |= floors(bart, batch, args.steps, precision, rates, decoder_row_factor(which))
        figures["over_floor"] = figures["step_ms"] / max(figures["memory_floor_ms"], figures["compute_floor_ms"])
        figures["profile_ms_per_step"] = profile(torch, which, batch, args.steps)
        if args.compile and precision == "fp32":
            figures["compiled"] = compiled(torch, which, batch, args.steps, args.repeats)
        report[precision] = figures
        log(f"{precision}: {json.dumps(figures)}")
        del which
    if args.cross_cache:
        report["cross_cache"] = cross_cache(torch)
        log(f"cross-attention cache: {json.dumps(report['cross_cache'])}")
    print_table(report, precisions)
    if args.json:
        print(json.dumps(report))


def print_table(report: dict, precisions: list[str]) -> None:
    batch = report["batch"]
    lines = [
        f"batch of {batch['rows']}, {batch['source_pieces']} source pieces, {report['steps']} forced steps",
        "| precision | GB/s, GFLOPS fp32 | step ms | memory floor ms (MB read) | compute floor ms | over the larger "
        "floor | compiled step ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for precision in precisions:
        f = report[precision]
        compiled_ms = f.get("compiled", {}).get("step_ms")
        compiled_ms = f"{compiled_ms:.1f}" if compiled_ms else ("failed" if "compiled" in f else "")
        lines.append(
            f"| {precision} | {f['machine']['read_gb_per_s']:.1f}, {f['machine']['fp32_gflops']:.0f} | "
            f"{f['step_ms']:.1f} | {f['memory_floor_ms']:.1f} ({f['bytes_mb']:.0f}) | "
            f"{f['compute_floor_ms']:.1f}{' (halves)' if f['row_factor'] == 2 else ''} | {f['over_floor']:.2f} | "
            f"{compiled_ms} |"
        )
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
