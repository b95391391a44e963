#!/usr/bin/env python
"""Speed and memory of LightNER on the bart-large shape, on this machine.

Measures, on random weights of the bart-large shape (nothing is downloaded or saved) with the real tokenizer, over the
first N sentences of CoNLL-2003 `test.txt`:

1. greedy generation at batch 32 with the decoder cache versus recomputing the whole prefix at every step;
2. cached generation against its floor: one encoder pass plus one teacher-forced decoder pass over the same outputs;
3. a LightNER training step (prompts reparameterised, backbone frozen, AdamW on the adapter) against a plain BART
   training step that updates every parameter (full fine-tuning), at batch 16;
4. peak resident memory while generating at batch 32, and while training;
5. low precision: the same generation with the backbone in bfloat16 and with int8 linear layers
   (`from_pretrained(dtype=torch.bfloat16)` / `quantize="int8"`), against float32 batch by batch, and the
   teacher-forced argmax agreement of each with float32; the resident memory of the loaded model, float32 and int8,
   each in a fresh process (full setting);
6. natural lengths: each sentence stops at its gold target length, sentences leaving the batch as they finish,
   against the same search with no sentence leaving before the batch's longest output ends (the code before);
7. with `--under-load`, every ratio again while one other process multiplies matrices on one thread (`COMPETITOR`),
   each beside its quiet value: a server shares its cores, and a speed-up that collapses under load is a bug.

Every generation method does the same work: decoding is forced to the reference's maximum length
(`config.max_output_length(longest source in the batch)`) by making `</s>` unreachable (see `force_full_length`).
Generation and training run in separate subprocesses so that each one's peak memory is its own.

    python benchmarks/run.py --json          # full setting: 12-15 minutes on 2 quiet cores before issue 13, more now
    python benchmarks/run.py --quick --json  # smoke setting (16 sentences, 8 steps): under a minute
    python benchmarks/run.py --under-load    # and every ratio again beside one competing process: twice as long

A table goes to stderr; with `--json`, one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from shared_assets import ENTITY_TYPES, TEST_FILE, TOKENIZER_DIR, log, shared_dir

# The project's stated targets: (figure, comparison, bound).
TARGETS = {
    "generation_speedup_vs_recompute": (">=", 3.0),
    "generation_over_plain_bart": ("<=", 1.05),
    "int8_speedup": (">=", 3.0),
    "bf16_speedup": (">=", 2.0),
    "int8_loaded_rss_over_fp32": ("<=", 0.4),
    "int8_argmax_agreement": (">=", 0.99),
    "bf16_argmax_agreement": (">=", 0.99),
    "natural_length_speedup": (">=", 1.3),
    "train_step_over_plain_bart": ("<=", 1.2),
    "peak_rss_mb": ("<", 3072.0),  # "under 3 GB", read as 3 GiB; the JSON carries the MiB figure for either reading
    "under_load_worst_change": ("<=", 0.25),  # --under-load: every ratio within 25% of its quiet value, either way
    "under_load_worst_loss": ("<=", 0.25),  # --under-load: no ratio more than 25% worse than quiet (gains not counted)
    "int8_speedup_under_load": (">=", 1.0),  # --under-load: int8 never slower than float32
    "corpus_sentences_per_s": (">=", 25.0),  # --include corpus: the whole CoNLL-2003 test set, fastest precision
    "f1_worst_drop": ("<=", 0.005),  # --include f1: no precision more than 0.5 F1 points below float32 (bart-mini)
}

FULL = {
    "sentences": 256,
    "batch_size": 32,
    "train_batch_size": 16,
    "train_steps": 3,
    "max_length_cap": None,
    "plain_bart": True,
    "memory": True,
    "recompute": True,
}
QUICK = {
    "sentences": 16,
    "batch_size": 32,
    "train_batch_size": 4,
    "train_steps": 1,
    "max_length_cap": 8,
    "plain_bart": False,
    "memory": False,
    "recompute": False,
}


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


def read_sentences(path: Path, limit: int):
    """The first `limit` sentences of a CoNLL file, read by `lightner.data.read_conll` (the reader training uses)."""
    from lightner.formats import read_conll

    sentences = read_conll(path)[:limit]
    if len(sentences) < limit:
        sys.exit(f"error: {path} holds only {len(sentences)} sentences, fewer than the {limit} asked for")
    return sentences


# ---------------------------------------------------------------------------------------------------------------------
# Measurement helpers (workers only: they import torch)
# ---------------------------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far: `ru_maxrss` (KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    """The kernel's high-water mark of this process's RSS (`VmHWM`); unlike `ru_maxrss` it can be reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def vm_rss_mb() -> float:
    """This process's resident memory now (`VmRSS`), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_vm_hwm() -> None:
    """Reset the kernel's RSS high-water mark of this process (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0).

    Where that is not allowed, `VmHWM` keeps counting from the start, which can only overstate a later peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# What a worker leaves open until it exits (its `AdaptiveThreads` block under `--threads auto`).
WORKER_EXIT = contextlib.ExitStack()


def setup_torch(threads: str | None, seed: int):
    """torch for a worker: `threads` a count, or "auto" (the `lightner` command's default: the worker's every
    measurement runs inside `AdaptiveThreads`, with MKL's reproducible mode set first, as the command sets it)."""
    from lightner.threads import AUTO_THREADS, AdaptiveThreads, make_products_reproducible

    make_products_reproducible()
    import torch

    if threads == AUTO_THREADS:
        WORKER_EXIT.enter_context(AdaptiveThreads())
    elif threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    return torch


def build_model(shared: Path, seed: int, fold: bool):
    """A random bart-large-shaped `BartModel` under a fresh LightNER adapter, and the real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BartConfig, BartModel

    from lightner.configuration_lightner import LightNerConfig
    from lightner.modeling_lightner import LightNerModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    bart = BartModel(BartConfig())  # BartConfig() defaults are bart-large's shape
    config = LightNerConfig(backbone="facebook/bart-large", entity_types=ENTITY_TYPES)
    model = LightNerModel(config, backbone=bart, tokenizer=tokenizer)
    if fold:
        model.prompt_encoder.fold()
    return model, bart, tokenizer


def shape_of(bart) -> dict:
    c = bart.config
    return {
        "encoder_layers": c.encoder_layers,
        "decoder_layers": c.decoder_layers,
        "d_model": c.d_model,
        "attention_heads": c.encoder_attention_heads,
        "ffn_dim": c.encoder_ffn_dim,
        "vocab_size": c.vocab_size,
        "backbone_parameters": sum(p.numel() for p in bart.parameters()),
    }


def force_full_length(model) -> None:
    """Make `</s>` unreachable so that every output runs to the length limit (benchmark only).

    Wraps this model instance's `decode` (which returns the pointer head's scores over the output indices, and which
    `generate` calls at every step) so that the score of index 1 (`</s>`) is the most negative finite number. With
    `constrained=False` the search allows every index but `<s>` until the last step, where the length rule allows
    only `</s>`; so `</s>` is never written early, `_BeamSearch.done()` turns true exactly when `max_length` indices
    are written, and the decoder runs exactly `max_length` steps (checked after every batch). A finite score rather
    than -inf keeps the last step's distribution well defined (all its mass on `</s>`). Setting one column costs
    nothing next to a decoder step.
    """
    import torch

    from lightner.tokenization_utils import END_INDEX

    original = model.decode

    def decode_without_end(*args, **kwargs):
        scores = original(*args, **kwargs)
        scores[..., END_INDEX] = torch.finfo(scores.dtype).min
        return scores

    model.decode = decode_without_end


def forced_workload(limit: int, seed: int):
    """The speed scripts' one workload: random bart-large weights with `</s>` forced away (`force_full_length`), the
    real tokenizer, and the first `limit` CoNLL-2003 test sentences, read and encoded."""
    from lightner.tokenization_utils import encode_sentences

    shared = shared_dir(TEST_FILE)
    sentences = read_sentences(shared.joinpath(*TEST_FILE), limit)
    model, bart, tokenizer = build_model(shared, seed, fold=True)
    model.eval()
    force_full_length(model)
    encoded = encode_sentences(tokenizer, [s.words for s in sentences], bart.config.max_position_embeddings)
    return model, bart, tokenizer, sentences, encoded


def longest_first(encoded, batch_size: int, pad_token_id: int) -> list[tuple[list[int], dict]]:
    """Batches of `batch_size` encoded sentences, longest first, as `LightNerModel.predict` makes them: each batch's
    rows (indices into `encoded`) and its collated tensors."""
    from lightner.tokenization_utils import collate

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    rows = [order[first : first + batch_size] for first in range(0, len(order), batch_size)]
    return [(each, collate([encoded[i] for i in each], pad_token_id)) for each in rows]


def forced_generate(torch, model, batch: dict, steps: int, use_cache: bool = True):
    """Greedy unconstrained generation of exactly `steps` indices under `force_full_length`, checked: the speed
    scripts compare methods on the same forced work, so a run that stopped early is an error, not a figure."""
    from lightner.tokenization_utils import END_INDEX

    with torch.inference_mode():
        sequences = model.generate(
            batch["input_ids"],
            batch["attention_mask"],
            num_beams=1,
            max_length=steps,
            constrained=False,
            use_cache=use_cache,
        ).sequences
    ended_early = (sequences[:, :-1] == END_INDEX).any() or not (sequences[:, -1] == END_INDEX).all()
    if sequences.shape[1] != steps or ended_early:
        raise RuntimeError(
            f"generation did not run the forced {steps} steps (got {sequences.shape[1]}, or an early </s>): "
            "the benchmark's comparison of methods would not be like for like"
        )
    return sequences


def adapter_on_backbone(model, backbone, tokenizer, precision: str):
    """`model`'s adapter on `backbone`, which is first converted in place to `precision` ("fp32" leaves it), as
    `from_pretrained(..., dtype=torch.bfloat16)` / `from_pretrained(..., quantize="int8")` build it: the adapter is
    loaded from its saved tensors and stays float32."""
    import torch

    from lightner.modeling_lightner import LightNerModel
    from lightner.quantization_lightner import quantize_backbone

    if precision == "bf16":
        backbone.to(torch.bfloat16)
    elif precision != "fp32":
        quantize_backbone(backbone, precision)
    loaded = LightNerModel(model.config, backbone=backbone, tokenizer=tokenizer, reparameterize=False)
    loaded.load_adapter_state_dict(model.adapter_state_dict())
    return loaded.eval()


def low_precision_model(model, bart, tokenizer, precision: str):
    """The float32 model's adapter on a copy of its backbone in `precision` ("bf16" or "int8"), with `</s>` forced to
    the length limit like the float32 one."""
    low = adapter_on_backbone(model, copy.deepcopy(bart), tokenizer, precision)
    force_full_length(low)
    return low


def teacher_forced_logits(torch, model, batch, index_ids):
    """Scores over the output index space at every step of `index_ids`, in float32 (one encoder, one decoder pass)."""
    with torch.inference_mode():
        adapters = model.adapter_batch()
        source = model.encode(batch["input_ids"], batch["attention_mask"], adapters)
        return model.decode(index_ids, source, adapters).float()


@contextlib.contextmanager
def no_row_leaves_early():
    """Generation as it was before sentences left the batch: nobody leaves until every sentence has finished, so
    each step decodes every row of the batch (benchmark only: patches `BeamSearch.retire_finished`)."""
    from lightner.generation_lightner import BeamSearch

    original = BeamSearch.retire_finished

    def retire_all_at_once(search):
        if search.steps < search.max_steps and not bool((search.finished | (search.max_length <= search.steps)).all()):
            return None
        return original(search)

    BeamSearch.retire_finished = retire_all_at_once
    try:
        yield
    finally:
        BeamSearch.retire_finished = original


def natural_length_figures(torch, model, tokenizer, sentences, encoded, batch_rows, log_prefix="natural") -> dict:
    """Each sentence stops at its gold target length (`</s>` forced there: unreachable before, the only choice at
    the limit), with sentences leaving the batch as they finish, against the code before on the same work; batch by
    batch back to back, alternating which goes first. Outputs must be identical."""
    from lightner.tokenization_utils import END_INDEX, collate, encode_target

    type_ids = {name: index for index, name in enumerate(model.config.entity_types)}
    gold_lengths = [
        len(encode_target(source, sentence.entities, type_ids)) - 1 for source, sentence in zip(encoded, sentences)
    ]
    leaving_seconds, before_seconds, identical = [], [], True
    original_limits = model._output_limits
    try:
        for number, rows in enumerate(batch_rows):
            batch = collate([encoded[i] for i in rows], tokenizer.pad_token_id)
            limits = [gold_lengths[i] for i in rows]
            model._output_limits = lambda *args, limits=limits: limits
            runs = {}
            for kind in ("leaving", "before") if number % 2 == 0 else ("before", "leaving"):
                with torch.inference_mode(), no_row_leaves_early() if kind == "before" else contextlib.nullcontext():
                    start = time.perf_counter()
                    output = model.generate(
                        batch["input_ids"], batch["attention_mask"], num_beams=1, constrained=False
                    )
                    runs[kind] = (time.perf_counter() - start, output.sequences)
            leaving_seconds.append(runs["leaving"][0])
            before_seconds.append(runs["before"][0])
            sequences = runs["leaving"][1]
            ends = (sequences == END_INDEX).int().argmax(-1) + 1  # [batch] length up to the first `</s>`
            if not torch.equal(sequences, runs["before"][1]) or ends.tolist() != limits:
                identical = False
            log(
                f"{log_prefix}: batch of {len(rows)}, lengths {min(limits)}-{max(limits)} (sum {sum(limits)}): "
                f"leaving {leaving_seconds[-1]:.2f} s, before {before_seconds[-1]:.2f} s"
            )
    finally:
        model._output_limits = original_limits
    return {
        "natural_gold_lengths_sum": sum(gold_lengths),
        "natural_batch_longest_sum": sum(max(gold_lengths[i] for i in rows) * len(rows) for rows in batch_rows),
        "natural_leaving_seconds": sum(leaving_seconds),
        "natural_before_seconds": sum(before_seconds),
        "natural_leaving_batch_seconds": leaving_seconds,
        "natural_before_batch_seconds": before_seconds,
        "natural_outputs_identical": identical,
    }


def precision_figures(torch, model, bart, tokenizer, batches, fp32_runs, generate) -> dict:
    """Cached generation in float32, bfloat16 and int8, batch by batch back to back (same forced lengths), and the
    teacher-forced argmax agreement of each low precision with float32 over float32's outputs.

    `fp32_runs` holds per batch float32's sequences and its teacher-forced argmax and top-two margin (from the floor
    pass). The agreement counts every step of every row; the margin tells whether random weights make the argmax flat.
    """
    models = {"fp32": model}
    for precision in ("bf16", "int8"):
        log(f"precision: building the {precision} model")
        models[precision] = low_precision_model(model, bart, tokenizer, precision)
        warm = {key: value[:2] for key, value in batches[-1][0].items()}
        generate(warm, 2, True, models[precision])
    seconds = {name: [] for name in models}
    agree = {name: 0 for name in models if name != "fp32"}
    total = 0
    for (batch, forced), (sequences, choices, _) in zip(batches, fp32_runs):
        for name, each in models.items():
            start = time.perf_counter()
            generate(batch, forced, True, each)
            seconds[name].append(time.perf_counter() - start)
        index_ids = torch.cat([torch.full_like(sequences[:, :1], 0), sequences[:, :-1]], dim=1)
        for name in agree:
            low_choices = teacher_forced_logits(torch, models[name], batch, index_ids)[:, :-1].argmax(-1)
            agree[name] += int((low_choices == choices).sum())
        total += choices.numel()
        log(
            f"precision: batch of {sequences.shape[0]}, {forced} steps: "
            + ", ".join(f"{name} {seconds[name][-1]:.1f} s" for name in models)
        )
    margins = torch.cat([margin.flatten() for _, _, margin in fp32_runs])
    return {
        "precision_seconds": {name: sum(values) for name, values in seconds.items()},
        "precision_batch_seconds": seconds,
        "argmax_agreement": {name: count / max(total, 1) for name, count in agree.items()},
        "argmax_steps": total,
        "fp32_top2_margin_median": float(margins.median()),
        "fp32_top2_margin_below_0.01_fraction": float((margins < 0.01).float().mean()),
        "model_weight_mb": {name: model_weight_mb(each) for name, each in models.items()},
    }


def model_weight_mb(model) -> float:
    """Bytes of the model's parameters and buffers (int8 weights included), in MiB: what it holds, without RSS's
    runtime and allocator."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


# ---------------------------------------------------------------------------------------------------------------------
# Worker: generation (cached, floor, recompute) in its own process
# ---------------------------------------------------------------------------------------------------------------------


def plain_bart_seconds(torch, bart, batch, decoder_input_ids) -> tuple[float, float]:
    """Plain BART on the same work: cached incremental decoding and its floor, in seconds.

    The backbone is called directly, without prompts (LightNER's attention function is then plain SDPA), with
    transformers' own `DynamicCache`, one decoder token per step; the floor is one encoder pass plus one decoder pass
    over all the tokens. This is what the backbone alone achieves on this machine, the reference for LightNER's own
    ratio.
    """
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    with torch.inference_mode():
        start = time.perf_counter()
        hidden = bart.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for step in range(decoder_input_ids.shape[1]):
            bart.decoder(
                input_ids=decoder_input_ids[:, step : step + 1],
                encoder_hidden_states=hidden,
                encoder_attention_mask=batch["attention_mask"],
                cache=cache,
                use_cache=True,
            )
        cached = time.perf_counter() - start
        del hidden, cache
        start = time.perf_counter()
        hidden = bart.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        bart.decoder(
            input_ids=decoder_input_ids, encoder_hidden_states=hidden, encoder_attention_mask=batch["attention_mask"]
        )
        floor = time.perf_counter() - start
    return cached, floor


def generation_worker(args) -> dict:
    torch = setup_torch(args.threads, args.seed)
    from lightner.tokenization_utils import START_INDEX

    log("generation: building the model (random bart-large weights)")
    model, bart, tokenizer, sentences, encoded = forced_workload(args.sentences, args.seed)
    rss_after_build = peak_rss_mb()

    batches, batch_rows = [], []
    for rows, batch in longest_first(encoded, args.batch_size, tokenizer.pad_token_id):
        forced = model.config.max_output_length(int(batch["attention_mask"].sum(-1).max()))
        if args.max_length_cap:
            forced = min(forced, args.max_length_cap)
        batch_rows.append(rows)
        batches.append((batch, forced))

    def generate(batch, forced, use_cache, which=model):
        return forced_generate(torch, which, batch, forced, use_cache)

    # Warm-up (thread pools, allocator, first-call dispatch), excluded from timing.
    warm = {key: value[:2] for key, value in batches[-1][0].items()}
    generate(warm, 2, True)
    generate(warm, 2, False)

    # Cached generation and its floor are measured batch by batch, each floor right after its cached run, so that
    # both sides of the ratio see the same machine (on a shared host the speed drifts by 10-20% over minutes).
    # Peak memory is the kernel's high-water mark during the cached runs: it is reset before each one (where Linux
    # allows) so that the floor's passes do not count.
    log(f"generation: cached and floor, {len(batches)} batches of up to {args.batch_size}")
    cached_seconds, cached_sequences, peaks = [], [], [peak_rss_mb()]
    encode_seconds, decode_seconds, agree, total, fp32_runs = [], [], 0, 0, []
    plain_cached_seconds, plain_floor_seconds = [], []
    for batch, forced in batches:
        reset_vm_hwm()
        start = time.perf_counter()
        sequences = generate(batch, forced, use_cache=True)
        cached_seconds.append(time.perf_counter() - start)
        cached_sequences.append(sequences)
        peaks.append(vm_hwm_mb() or peak_rss_mb())
        # Floor: one encoder pass and one teacher-forced decoder pass over exactly what the cached decoder read:
        # the start index then every generated index but the last (which no step reads).
        index_ids = torch.cat([torch.full_like(sequences[:, :1], START_INDEX), sequences[:, :-1]], dim=1)
        with torch.inference_mode():
            start = time.perf_counter()
            adapters = model.adapter_batch()
            source = model.encode(batch["input_ids"], batch["attention_mask"], adapters)
            middle = time.perf_counter()
            logits = model.decode(index_ids, source, adapters)
            end = time.perf_counter()
        encode_seconds.append(middle - start)
        decode_seconds.append(end - middle)
        # Teacher forcing reproduces the greedy choices (the last step is forced to `</s>`, so it is left out).
        top_two = logits[:, :-1].float().topk(2, dim=-1).values  # [batch, steps - 1, 2]
        choices = logits[:, :-1].argmax(-1)
        fp32_runs.append((sequences, choices, top_two[..., 0] - top_two[..., 1]))
        agree += int((choices == sequences[:, :-1]).sum())
        total += choices.numel()
        del source, logits
        message = f"cached {cached_seconds[-1]:.1f} s, floor {encode_seconds[-1] + decode_seconds[-1]:.1f} s"
        if args.plain_bart:
            decoder_input_ids = model.decoder_token_ids(index_ids, batch["input_ids"], model.adapter_batch())
            plain_cached, plain_floor = plain_bart_seconds(torch, bart, batch, decoder_input_ids)
            plain_cached_seconds.append(plain_cached)
            plain_floor_seconds.append(plain_floor)
            message += f"; plain BART cached {plain_cached:.1f} s, floor {plain_floor:.1f} s"
        log(f"generation: batch of {sequences.shape[0]}, {forced} steps: {message}")
    floor_seconds = sum(encode_seconds) + sum(decode_seconds)
    generation_peak = max(peaks)
    log(
        f"generation: cached took {sum(cached_seconds):.1f} s, floor {floor_seconds:.1f} s, "
        f"peak RSS {generation_peak:.0f} MiB"
    )

    log("precision: float32, bfloat16 and int8 cached generation, batch by batch")
    precision = precision_figures(torch, model, bart, tokenizer, batches, fp32_runs, generate)
    log("natural lengths: each sentence stops at its gold length; leaving the batch against the code before")
    natural = natural_length_figures(torch, model, tokenizer, sentences, encoded, batch_rows)

    reset_vm_hwm()
    recompute_seconds, same_rows, rows = [], 0, 0
    if args.recompute:
        log("generation: recompute (no cache); the slow one")
    for (batch, forced), reference in zip(batches, cached_sequences) if args.recompute else []:
        start = time.perf_counter()
        sequences = generate(batch, forced, use_cache=False)
        recompute_seconds.append(time.perf_counter() - start)
        same_rows += int((sequences == reference).all(-1).sum())
        rows += sequences.shape[0]
        log(f"generation: recompute batch of {sequences.shape[0]}, {forced} steps: {recompute_seconds[-1]:.1f} s")

    n = len(sentences)
    return {
        "sentences": n,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
        "shape": shape_of(bart),
        "forced_lengths": [forced for _, forced in batches],
        "source_lengths": [int(batch["attention_mask"].sum(-1).max()) for batch, _ in batches],
        "decoder_steps": sum(forced for _, forced in batches),
        "cached_seconds": sum(cached_seconds),
        "cached_batch_seconds": cached_seconds,
        "cached_sentences_per_s": n / sum(cached_seconds),
        "recompute_seconds": sum(recompute_seconds) if args.recompute else None,
        "recompute_batch_seconds": recompute_seconds,
        "recompute_sentences_per_s": n / sum(recompute_seconds) if args.recompute else None,
        "floor_seconds": floor_seconds,
        "floor_encode_seconds": sum(encode_seconds),
        "floor_decode_seconds": sum(decode_seconds),
        "floor_batch_seconds": [e + d for e, d in zip(encode_seconds, decode_seconds)],
        "plain_bart_cached_seconds": sum(plain_cached_seconds) if args.plain_bart else None,
        "plain_bart_floor_seconds": sum(plain_floor_seconds) if args.plain_bart else None,
        "plain_bart_cached_batch_seconds": plain_cached_seconds,
        "plain_bart_floor_batch_seconds": plain_floor_seconds,
        "recompute_matches_cached_fraction": same_rows / rows if args.recompute else None,
        "teacher_forced_matches_greedy_fraction": agree / max(total, 1),
        "rss_after_build_mb": rss_after_build,
        "peak_rss_mb": generation_peak,
        "recompute_peak_rss_mb": vm_hwm_mb() or peak_rss_mb(),
        **precision,
        **natural,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Worker: resident memory of the loaded model, float32 or int8, in a fresh process
# ---------------------------------------------------------------------------------------------------------------------


def memory_worker(args) -> dict:
    """RSS of the loaded model (after it is built, less before: torch, transformers and the tokenizer are not the
    model's), then the peak RSS of cached generation of the largest batch, the high-water mark reset after loading."""
    torch = setup_torch(args.threads, args.seed)
    from transformers import AutoTokenizer

    from lightner.quantization_lightner import quantize_backbone
    from lightner.tokenization_utils import encode_sentences

    shared = shared_dir(TEST_FILE)
    sentences = read_sentences(shared.joinpath(*TEST_FILE), args.sentences)
    AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    gc.collect()
    before = vm_rss_mb()
    model, bart, tokenizer = build_model(shared, args.seed, fold=True)
    if args.precision == "int8":
        quantize_backbone(bart)
    model.eval()
    force_full_length(model)
    gc.collect()
    loaded = vm_rss_mb() - before
    encoded = encode_sentences(tokenizer, [s.words for s in sentences], bart.config.max_position_embeddings)
    _, batch = longest_first(encoded, args.batch_size, tokenizer.pad_token_id)[0]
    forced = model.config.max_output_length(int(batch["attention_mask"].sum(-1).max()))
    reset_vm_hwm()
    forced_generate(torch, model, batch, forced)
    peak = vm_hwm_mb() or peak_rss_mb()
    log(f"memory ({args.precision}): loaded model {loaded:.0f} MiB, peak while generating {peak:.0f} MiB")
    return {"precision": args.precision, "loaded_model_rss_mb": loaded, "generation_peak_rss_mb": peak}


# ---------------------------------------------------------------------------------------------------------------------
# Worker: training steps (LightNER, then plain BART) in its own process
# ---------------------------------------------------------------------------------------------------------------------


def adamw(torch, parameters: list):
    """The reference's optimiser (AdamW, lr 2e-5, weight decay 0.01), fused: on this CPU the default (foreach)
    implementation takes about 2.8 s per step over BART's 406 M parameters against 0.45 s fused, which would make
    full fine-tuning look slower than it need be; both sides of the comparison use the same one."""
    return torch.optim.AdamW(parameters, lr=2e-5, weight_decay=0.01, fused=True)


def timed_steps(step, steps: int) -> list[float]:
    """One warm-up step (not timed: allocates optimiser state), then `steps` timed ones."""
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure_lightner_step(args, torch, shared: Path, sentences) -> tuple:
    """LightNER training steps; returns the backbone and the batch for the plain-BART comparison, and the figures."""
    from lightner.modeling_lightner import shift_labels_right
    from lightner.tokenization_utils import collate, encode_sentences, encode_target

    log("training: building the model (random bart-large weights, reparameterised prompts)")
    model, bart, tokenizer = build_model(shared, args.seed, fold=False)
    type_ids = {name: index for index, name in enumerate(model.config.entity_types)}
    encoded = encode_sentences(tokenizer, [s.words for s in sentences])
    targets = [
        encode_target(source, sentence.entities, type_ids, index)
        for index, (source, sentence) in enumerate(zip(encoded, sentences))
    ]
    batch = collate(encoded, tokenizer.pad_token_id, targets)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(torch, trainable)

    def lightner_step():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    log(f"training: LightNER step at batch {len(encoded)}, 1 warm-up + {args.train_steps} timed")
    times = timed_steps(lightner_step, args.train_steps)
    figures = {
        "lightner_step_seconds": statistics.median(times),
        "lightner_step_times": times,
        "lightner_trainable_parameters": sum(p.numel() for p in trainable),
        "train_peak_rss_mb": peak_rss_mb(),
        "train_vm_hwm_mb": vm_hwm_mb(),
    }
    with torch.no_grad():
        decoder_input_ids = model.decoder_token_ids(
            shift_labels_right(batch["labels"]), batch["input_ids"], model.adapter_batch()
        )
    return bart, batch, decoder_input_ids, figures


def train_worker(args) -> dict:
    torch = setup_torch(args.threads, args.seed)
    shared = shared_dir(TEST_FILE)
    sentences = read_sentences(shared.joinpath(*TEST_FILE), args.train_batch_size)
    bart, batch, decoder_input_ids, lightner = measure_lightner_step(args, torch, shared, sentences)
    gc.collect()

    # Plain BART, full fine-tuning: the same backbone and batch, its own SDPA attention, every parameter trained.
    # (The LightNER adapter and its optimiser are gone; only its peak memory above is LightNER's.)
    bart.config._attn_implementation = "sdpa"
    bart.requires_grad_(True)
    bart.train()
    bart_optimizer = adamw(torch, list(bart.parameters()))

    def bart_step():
        bart_optimizer.zero_grad(set_to_none=True)
        hidden = bart(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
        ).last_hidden_state
        hidden.float().pow(2).mean().backward()
        bart_optimizer.step()

    log(f"training: plain BART step at batch {len(sentences)}, 1 warm-up + {args.train_steps} timed")
    bart_times = timed_steps(bart_step, args.train_steps)
    return {
        **lightner,
        "train_batch_size": len(sentences),
        "train_source_length": int(batch["input_ids"].shape[1]),
        "train_target_length": int(batch["labels"].shape[1]),
        "train_steps_timed": args.train_steps,
        "torch_threads": torch.get_num_threads(),
        "plain_bart_step_seconds": statistics.median(bart_times),
        "plain_bart_step_times": bart_times,
        "plain_bart_trainable_parameters": sum(p.numel() for p in bart.parameters()),
        "plain_bart_train_peak_rss_mb": peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Driver (does not import torch, so that it adds nothing to the workers' memory)
# ---------------------------------------------------------------------------------------------------------------------


def run_worker(kind: str, args, precision: str = "fp32") -> dict:
    """Run one measurement in a fresh interpreter; its JSON is the last line of its stdout, its log goes to stderr."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--seed", str(args.seed)]
    command += ["--precision", precision]
    command += ["--sentences", str(args.sentences), "--batch-size", str(args.batch_size)]
    command += ["--train-batch-size", str(args.train_batch_size), "--train-steps", str(args.train_steps)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.max_length_cap:
        command += ["--max-length-cap", str(args.max_length_cap)]
    command += ["--plain-bart" if args.plain_bart else "--no-plain-bart"]
    command += ["--recompute" if args.recompute else "--no-recompute"]
    start, load_before = time.perf_counter(), os.getloadavg()
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        sys.exit(f"error: the {kind} worker failed with exit status {completed.returncode} (its log is above)")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["worker_wall_seconds"] = time.perf_counter() - start
    # Other processes on the machine share its cores: a 1-minute load well above the threads used means the
    # timings above are slowed by them.
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    return result


def plain_bart_figures(generation: dict) -> dict:
    """The backbone's own cached-over-floor ratio, and LightNER's cached time over the backbone's (full setting)."""
    if generation["plain_bart_cached_seconds"] is None:
        return {"plain_bart_generation_over_floor": None, "generation_over_plain_bart": None}
    return {
        "plain_bart_generation_over_floor": generation["plain_bart_cached_seconds"]
        / generation["plain_bart_floor_seconds"],
        "generation_over_plain_bart": generation["cached_seconds"] / generation["plain_bart_cached_seconds"],
    }


def low_precision_figures(generation: dict, memory: dict | None) -> dict:
    """Speed-ups of bf16 and int8 over float32 (same batches, back to back), their argmax agreement with float32, the
    int8 model's resident memory over float32's and int8's generation peak (full setting), natural-length speed-up."""
    seconds = generation["precision_seconds"]
    return {
        "int8_speedup": seconds["fp32"] / seconds["int8"],
        "bf16_speedup": seconds["fp32"] / seconds["bf16"],
        "int8_argmax_agreement": generation["argmax_agreement"]["int8"],
        "bf16_argmax_agreement": generation["argmax_agreement"]["bf16"],
        "int8_loaded_rss_over_fp32": memory["int8"]["loaded_model_rss_mb"] / memory["fp32"]["loaded_model_rss_mb"]
        if memory
        else None,
        "peak_rss_mb_int8": memory["int8"]["generation_peak_rss_mb"] if memory else None,
        "natural_length_speedup": generation["natural_before_seconds"] / generation["natural_leaving_seconds"],
    }


def target_status(figures: dict) -> dict:
    status = {}
    for name, (comparison, bound) in TARGETS.items():
        value = figures.get(name)
        if value is None:  # not measured in this setting (plain BART and memory: full setting; load: --under-load)
            status[name] = {"value": None, "target": f"{comparison} {bound:g}", "met": None}
            continue
        met = value >= bound if comparison == ">=" else value <= bound if comparison == "<=" else value < bound
        status[name] = {"value": value, "target": f"{comparison} {bound:g}", "met": bool(met)}
    return status


def print_table(report: dict) -> None:
    g, t = report["generation"], report["training"]
    rows = [
        (
            "setting",
            f"{'quick' if report['quick'] else 'full'}; {g['sentences']} sentences; {g['torch_threads']} threads",
        ),
        ("generation: cached", f"{g['cached_sentences_per_s']:.2f} sentences/s ({g['cached_seconds']:.1f} s)"),
        (
            "generation: recompute",
            f"{g['recompute_sentences_per_s']:.3f} sentences/s ({g['recompute_seconds']:.1f} s)"
            if g["recompute_seconds"] is not None
            else "not run (--no-recompute)",
        ),
        (
            "generation: floor",
            f"{g['floor_seconds']:.1f} s (encoder {g['floor_encode_seconds']:.1f} s, "
            f"decoder {g['floor_decode_seconds']:.1f} s)",
        ),
    ]
    if report["plain_bart_generation_over_floor"] is not None:
        rows.append(
            (
                "plain BART (no prompts)",
                f"cached {g['plain_bart_cached_seconds']:.1f} s, floor {g['plain_bart_floor_seconds']:.1f} s: "
                f"{report['plain_bart_generation_over_floor']:.3f} over its floor; "
                f"LightNER cached / plain BART cached {report['generation_over_plain_bart']:.3f}",
            )
        )
    rows += [
        ("forced lengths per batch", ", ".join(str(n) for n in g["forced_lengths"])),
        ("training: LightNER step", f"{t['lightner_step_seconds']:.2f} s at batch {t['train_batch_size']}"),
        ("training: plain BART step", f"{t['plain_bart_step_seconds']:.2f} s (all parameters, AdamW)"),
        (
            "training peak RSS",
            f"{t['train_peak_rss_mb']:.0f} MiB (plain BART: {t['plain_bart_train_peak_rss_mb']:.0f})",
        ),
    ]
    rows += [
        (
            "precision (cached, same batches)",
            ", ".join(f"{name} {value:.1f} s" for name, value in g["precision_seconds"].items())
            + f"; fp32 top-2 margin median {g['fp32_top2_margin_median']:.3f}",
        ),
        (
            "natural lengths",
            f"leaving {g['natural_leaving_seconds']:.1f} s, before {g['natural_before_seconds']:.1f} s; "
            f"identical outputs: {g['natural_outputs_identical']}",
        ),
    ]
    if report["memory"]:
        rows.append(
            (
                "loaded model RSS",
                ", ".join(f"{k} {v['loaded_model_rss_mb']:.0f} MiB" for k, v in report["memory"].items())
                + f"; int8 generation peak {report['peak_rss_mb_int8']:.0f} MiB",
            )
        )
    if report["loaded"]:
        rows.append(
            (
                "under load (one competitor)",
                ", ".join(
                    f"{name} {value:.2f} ({report['under_load_over_quiet'][name]:.2f}x quiet)"
                    for name, value in report["under_load"].items()
                ),
            )
        )
    for name, entry in report["targets"].items():
        if entry["value"] is None:
            rows.append((name, f"not measured  target {entry['target']}"))
            continue
        rows.append((name, f"{entry['value']:.3f}  target {entry['target']}: {'met' if entry['met'] else 'NOT met'}"))
    width = max(len(name) for name, _ in rows)
    print("", file=sys.stderr)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=sys.stderr)
    print(f"{'wall time':<{width}}  {report['wall_seconds']:.0f} s", file=sys.stderr)
    loads = [g["load_average_before"][0], g["load_average_after"][0], t["load_average_after"][0]]
    print(f"{'1-min load (start, mid, end)':<{width}}  " + ", ".join(f"{x:.1f}" for x in loads), file=sys.stderr)


def parse_args(argv=None):
    from lightner.cli import thread_count  # "auto" or a count of at least 1, as the command reads it

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke setting (16 sentences, forced length 8, training batch 4): under a minute",
    )
    parser.add_argument("--sentences", type=int, help="first N test sentences (256; quick 16)")
    parser.add_argument("--batch-size", type=int, help="generation batch size (32)")
    parser.add_argument("--train-batch-size", type=int, help="training batch size (16; quick 4)")
    parser.add_argument("--train-steps", type=int, help="timed training steps after one warm-up (3; quick 1)")
    parser.add_argument("--max-length-cap", type=int, help="cap on the forced output length (none; quick 8)")
    parser.add_argument(
        "--plain-bart",
        action=argparse.BooleanOptionalAction,
        help="also time the backbone alone, cached and floor, as a reference (full: on; quick: off)",
    )
    parser.add_argument(
        "--recompute",
        action=argparse.BooleanOptionalAction,
        help="also time generation without the cache, the slowest part (full: on; quick: off)",
    )
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        help="measure the loaded model's RSS, float32 and int8, each in a fresh process (full: on; quick: off)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        help="torch threads, or auto (the command's default) (default: torch's own, one per core)",
    )
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="measure every ratio again beside a competing process (matrix products on one thread) and report both",
    )
    parser.add_argument(
        "--include",
        type=lambda text: [part for part in text.split(",") if part],
        default=[],
        help=f"comma-separated figures other scripts measure, each in its own processes: {', '.join(INCLUDES)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["generation", "train", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.include) - set(INCLUDES))
    if unknown:
        parser.error(f"--include: unknown {unknown}; choose from {', '.join(INCLUDES)}")
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("sentences", "batch_size", "train_batch_size", "train_steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


# `--under-load`'s competitor: one other process, one thread, multiplying float32 matrices without pause, for the
# other job on a server's cores or the browser on a laptop. Every ratio is then measured again beside it.
COMPETITOR = (
    "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a)"
)
# The ratios that must hold under that load (TARGETS: within 25% of their quiet values; int8 never slower than fp32),
# each with the direction that is better: a speed-up should stay high, a time over a reference low.
LOADED_RATIOS = {
    "generation_speedup_vs_recompute": "higher",
    "generation_over_floor": "lower",
    "generation_over_plain_bart": "lower",
    "train_step_over_plain_bart": "lower",
    "int8_speedup": "higher",
    "bf16_speedup": "higher",
    "natural_length_speedup": "higher",
}


@contextlib.contextmanager
def competing_load(processes: int = 1):
    """`processes` competitors (`COMPETITOR`) run while the block runs; they are killed when it ends."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    competitors = [subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env) for _ in range(processes)]
    try:
        time.sleep(5)  # past importing torch: the load is on before the first timing
        yield
    finally:
        for competitor in competitors:
            competitor.kill()
            competitor.wait()


def measure(args, memory: bool) -> dict:
    """Every worker once, and the figures (ratios, peaks) computed from them."""
    generation = run_worker("generation", args)
    training = run_worker("train", args)
    memories = {precision: run_worker("memory", args, precision) for precision in ("fp32", "int8")} if memory else None
    figures = {
        "generation_speedup_vs_recompute": generation["cached_sentences_per_s"]
        / generation["recompute_sentences_per_s"]
        if generation["recompute_sentences_per_s"]
        else None,
        "generation_over_floor": generation["cached_seconds"] / generation["floor_seconds"],
        **plain_bart_figures(generation),
        "train_step_over_plain_bart": training["lightner_step_seconds"] / training["plain_bart_step_seconds"],
        "peak_rss_mb": generation["peak_rss_mb"],
        "train_peak_rss_mb": training["train_peak_rss_mb"],
        **low_precision_figures(generation, memories),
    }
    return {"figures": figures, "generation": generation, "training": training, "memory": memories}


def under_load_figures(quiet: dict, loaded: dict) -> dict:
    """Each ratio of `LOADED_RATIOS` under load, its quotient by its quiet value, the largest change either way, and
    the largest loss: how much worse the worst ratio got (a speed-up that grew under load, as int8's does beside a
    competitor, is a change but not a loss; the target's intent is that nothing collapses)."""
    ratios = {name: loaded[name] for name in LOADED_RATIOS if loaded[name] is not None}
    over_quiet = {name: value / quiet[name] for name, value in ratios.items()}
    losses = {
        name: 1 - change if LOADED_RATIOS[name] == "higher" else change - 1 for name, change in over_quiet.items()
    }
    return {
        "under_load": ratios,
        "under_load_over_quiet": over_quiet,
        "under_load_worst_change": max(abs(change - 1) for change in over_quiet.values()),
        "under_load_worst_loss": max(0.0, *losses.values()),
        "int8_speedup_under_load": ratios["int8_speedup"],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Figures measured by the other scripts (`--include`): each runs as its own command, and its JSON is summarised here
# ---------------------------------------------------------------------------------------------------------------------

BENCHMARKS = Path(__file__).resolve().parent
CORPUS_SENTENCES = 3453  # the whole CoNLL-2003 test set
LIGHTNER_PRECISIONS = "fp32,bf16,int8"


def run_script(command: list[str]) -> dict:
    """Run a benchmark script (its log goes to stderr as it runs) and return the JSON object it prints last."""
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed with exit status {completed.returncode} (its log is above)")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def peer_figures(report: dict) -> dict:
    """`peers.py`'s table and, per system and mode, sentences/s at its best batch size, peak memory, and what a new
    domain costs."""
    from peers import table

    keys = ("sentences_per_s", "best_batch_size", "peak_rss_mb", "loaded_rss_mb", "per_domain")
    systems = {
        system: {mode: {key: r.get(key) for key in keys} if "error" not in r else r for mode, r in modes.items()}
        for system, modes in report["systems"].items()
    }
    return {"peers": systems, "peers_table": table(report)}


def corpus_figures(report: dict) -> dict:
    """`lightner predict`'s sentences/s per precision over the whole test set, outputs at gold lengths (`peers.py`'s
    LightNER rows), and the fastest."""
    per_precision = {
        mode: r["sentences_per_s"] for mode, r in report["systems"]["lightner"].items() if "error" not in r
    }
    return {
        "corpus_sentences": report["sentences"],
        "corpus_sentences_per_s_by_precision": per_precision,
        "corpus_sentences_per_s": max(per_precision.values()),
    }


def f1_figures(report: dict) -> dict:
    """F1 of the same trained bart-mini adapters (MIT Restaurant, 10 and 50 shots) per precision (`quality.py`'s
    precision stage), and the largest drop below float32."""
    per_precision = {
        shots: {mode: figure["f1"] for mode, figure in figures.items()}
        for shots, figures in report["precision"].items()
    }
    drops = [f1["fp32"] - value for f1 in per_precision.values() for mode, value in f1.items() if mode != "fp32"]
    return {"f1_by_precision": per_precision, "f1_backbone": report["backbone"], "f1_worst_drop": max(drops)}


class Include(NamedTuple):
    """A figure another script measures: its command (full or `--quick`) and the summary of its JSON."""

    command: Callable[[bool], list[str]]
    figures: Callable[[dict], dict]


INCLUDES = {
    "peers": Include(
        lambda quick: [sys.executable, str(BENCHMARKS / "peers.py"), "--json", *(["--quick"] if quick else [])],
        peer_figures,
    ),
    "corpus": Include(
        lambda quick: [
            sys.executable,
            str(BENCHMARKS / "peers.py"),
            "--json",
            "--systems",
            "lightner",
            "--modes",
            LIGHTNER_PRECISIONS,
            "--batch-sizes",
            "8" if quick else "32",
            "--sentences",
            "16" if quick else str(CORPUS_SENTENCES),
        ],  # fmt: skip
        corpus_figures,
    ),
    "f1": Include(
        lambda quick: (
            [sys.executable, str(BENCHMARKS / "quality.py"), "--json", "--stages", "precision"]
            + (["--test-limit", "100"] if quick else [])
        ),
        f1_figures,
    ),
}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker = {"generation": generation_worker, "train": train_worker, "memory": memory_worker}[args.worker]
        print(json.dumps(worker(args)))
        return
    shared_dir(TEST_FILE)  # fail before starting any worker
    start = time.perf_counter()
    quiet = measure(args, memory=args.memory)
    figures = quiet["figures"]
    loaded = None
    if args.under_load:
        log("under load: every worker again beside one competing process (matrix products on one thread)")
        with competing_load():
            loaded = measure(args, memory=False)
        figures.update(under_load_figures(figures, loaded["figures"]))
    for name in args.include:
        command = INCLUDES[name].command(args.quick)
        log(f"--include {name}: {' '.join(command)}")
        figures.update(INCLUDES[name].figures(run_script(command)))
    generation, training = quiet["generation"], quiet["training"]
    report = {
        **figures,
        "targets": target_status(figures),
        "quick": args.quick,
        "sentences": generation["sentences"],
        "batch_size": generation["batch_size"],
        "train_batch_size": training["train_batch_size"],
        "torch_threads": generation["torch_threads"],
        "shape": generation["shape"],
        "generation": generation,
        "training": training,
        "memory": quiet["memory"],
        "loaded": loaded,
        "wall_seconds": time.perf_counter() - start,
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu": cpu_model(),
        },
    }
    print_table(report)
    if args.json:
        print(json.dumps(report))


def cpu_model() -> dict:
    """The CPU's name and the flags that decide the low-precision kernels (AVX-512, VNNI, AMX): bf16 and int8 figures
    differ between CPUs that have them and CPUs that emulate them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"name": platform.processor(), "flags": []}
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
    return {"name": name, "flags": [flag for flag in wanted if flag in flags]}


if __name__ == "__main__":
    main()
