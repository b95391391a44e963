#!/usr/bin/env python
"""LightNER side by side with what users would pick instead: sentences/s and peak memory on this CPU (issue 25, 5).

Every system reads the same first N sentences of CoNLL-2003 `test.txt` (words, as `lightner.formats.read_conll` gives
them), on this machine's CPU, with random weights of its real shape (speed does not depend on the values; nothing is
downloaded), each system and mode in a fresh process so that its peak memory is its own. Each is timed over all N
sentences, tokenization and decoding to entities included, at every batch size of `--batch-sizes` after a warm-up;
the best batch size is reported. The rows:

1. LightNER, bart-large shape (`BartModel(BartConfig())`, the real tokenizer), through `LightNerModel.predict`
   (greedy, constrained: the defaults). With random weights the decoder would stop wherever `</s>` happens to win,
   so the headline figure forces each sentence to stop at its gold output length (`</s>` unreachable before it, the
   only choice there, as `run.py`'s natural-length figures do): the work a trained model does on these sentences.
   Modes: fp32, bf16 (the backbone in bfloat16, adapter float32, as `from_pretrained(dtype=torch.bfloat16)` loads
   it), int8 (`quantize_backbone`, as `quantize="int8"` loads it: `quantization_lightner.int8_kernel` picks the
   product for the CPU); `fp32-random-lengths` lets the random weights stop where they stop and reports the output
   indices, for reference only. A new domain costs an
   adapter (prompts and label-word weights, `adapter_state_dict()`); the backbone is shared.
2. BERT-base token classifier (`BertForTokenClassification(BertConfig(num_labels=9))`, 9 = CoNLL's BIO tags): one
   encoder pass, argmax at each word's first piece. BERT's WordPiece vocabulary cannot be downloaded, so the words are
   cut by the bart-large tokenizer exactly as LightNER's (`encode_sentences`) and the ids folded into BERT's 30522:
   only the sequence lengths matter for speed, and byte-level BPE over 50k pieces gives a few percent fewer pieces
   per word than cased WordPiece over 29k (so this row is, if anything, slightly flattered). Modes: fp32, bf16
   weights, int8 (`torch.ao.quantization.quantize_dynamic` on every `nn.Linear`). A new domain: a whole model.
3. GLiNER-medium shape (`gliner` package, `UniEncoderSpanGLiNER`, markerV0 spans up to 12 words, a DeBERTa-v3-base
   encoder: 12 layers, 768 wide, 128k vocabulary) through `GLiNER.inference` with the four CoNLL types as prompts
   (`<<ENT>> person <<ENT>> organization ... <<SEP>>` before each sentence), threshold 0.5. Built offline from a
   local config (its DeBERTa tokenizer cannot be downloaded: the bart-large tokenizer stands in, its vocabulary padded
   to GLiNER-medium's 128004 rows). Modes: fp32, bf16 (`model.to(torch.bfloat16)`), int8 (`GLiNER.quantize("int8")`,
   dynamic int8 linears). `gliner` is not a dependency of this package: where it cannot be imported, the row is
   `deberta-lower-bound` instead, the DeBERTa-v3-base encoder alone over the same prompt and sentence (no span
   layer, no decoding): a lower bound on GLiNER's time. A new domain: new types are words in the prompt (zero-shot);
   adapting the weights to a domain means fine-tuning the whole model.
4. spaCy's `en_core_web_trf` shape: a LOWER BOUND. Its pipeline cannot be downloaded, and building it offline from
   a config needs `spacy-curated-transformers` and a saved transformer; measured instead is its encoder, RoBERTa-base
   (`RobertaForTokenClassification`, random weights, a linear head), with its real tokenizer (RoBERTa's byte-level BPE
   is bart-large's): without the transition-based NER parser, spaCy's `Doc` handling, or the tagger, parser and
   lemmatizer the full pipeline also runs. Modes as BERT's. A new domain: a whole model.

Peak RSS is the kernel's high-water mark (`VmHWM`) while predicting, reset after the model is built (where Linux
allows), so it counts the loaded model plus what inference adds, not the one-off cost of building or converting it;
`loaded` is the RSS the built model adds over torch, transformers and the tokenizer.

    python benchmarks/peers.py --json             # full setting: 256 sentences, batches 8 and 32, every mode
    python benchmarks/peers.py --quick --json     # smoke setting: 16 sentences, batch 8, fp32 and int8 modes

The table (markdown) goes to stderr; with `--json`, one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from run import (
    adapter_on_backbone,
    build_model,
    force_full_length,
    read_sentences,
    reset_vm_hwm,
    setup_torch,
    vm_hwm_mb,
    vm_rss_mb,
)

from shared_assets import ENTITY_TYPES, TEST_FILE, TOKENIZER_DIR, log, shared_dir

MODES = {
    "lightner": ("fp32", "bf16", "int8", "fp32-random-lengths"),
    "bert": ("fp32", "bf16", "int8"),
    "gliner": ("fp32", "bf16", "int8"),
    "spacy-trf": ("fp32", "bf16", "int8"),
}
TITLES = {
    "lightner": "LightNER (bart-large shape)",
    "bert": "BERT-base token classifier",
    "gliner": "GLiNER-medium (DeBERTa-v3-base)",
    "spacy-trf": "spaCy trf shape: RoBERTa-base + linear head (lower bound)",
}
FULL = {"sentences": 256, "batch_sizes": "8,32", "modes": None}
QUICK = {"sentences": 16, "batch_sizes": "8", "modes": "fp32,int8"}
BIO_TAGS = 1 + 2 * len(ENTITY_TYPES)  # O plus B-/I- per CoNLL type
GLINER_LABELS = ["location", "person", "organization", "miscellaneous"]  # ENTITY_TYPES as GLiNER users name them
# DeBERTa-v3-base (GLiNER-medium-v2.1's encoder); `DebertaV2Config()` defaults are v2-xlarge's, so all are given.
DEBERTA_V3_BASE = {
    "vocab_size": 128100,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "relative_attention": True,
    "position_buckets": 256,
    "max_relative_positions": -1,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
    "layer_norm_eps": 1e-7,
}
GLINER_MEDIUM_VOCAB = 128004  # deberta-v3's 128001 tokens plus GLiNER's [FLERT], <<ENT>>, <<SEP>>


@dataclass
class Peer:
    """One system, built and ready: `run(sentences, batch_size)` predicts entities for word lists and returns
    counters (pieces, entities, steps) for the report."""

    run: Callable[[list[list[str]], int], dict]
    parameters: int
    per_domain: str
    notes: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Systems (workers only: they import torch)
# ---------------------------------------------------------------------------------------------------------------------


def tensor_mib(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def bart_tokenizer(shared: Path, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR), **kwargs)


def gold_lengths(model, tokenizer, sentences) -> dict[tuple[int, ...], int]:
    """Each sentence's gold output length (indices after the start one, `</s>` included), keyed by its input ids."""
    from lightner.tokenization_utils import encode_sentences, encode_target

    type_ids = {name: index for index, name in enumerate(model.config.entity_types)}
    encoded = encode_sentences(tokenizer, [s.words for s in sentences])
    return {
        tuple(source.input_ids): len(encode_target(source, sentence.entities, type_ids)) - 1
        for source, sentence in zip(encoded, sentences)
    }


def count_steps(model, lengths: dict[tuple[int, ...], int] | None) -> dict:
    """Wrap this model instance's `generate` to count decoder steps and output indices (benchmark only); with
    `lengths`, each row also stops at its gold length: `</s>` is unreachable before (`force_full_length`) and the
    only choice at the limit (`_output_limits`, which `generate` reads, returns the rows' gold lengths)."""
    import torch

    from lightner.tokenization_utils import END_INDEX

    counters = {"decoder_steps": 0, "output_indices": 0}
    generate, rows = model.generate, []
    if lengths is not None:
        force_full_length(model)
        model._output_limits = lambda *args: rows[:]

    def counted(input_ids, attention_mask, *args, **kwargs):
        if lengths is not None:
            rows[:] = [lengths[tuple(ids[mask.bool()].tolist())] for ids, mask in zip(input_ids, attention_mask)]
        output = generate(input_ids, attention_mask, *args, **kwargs)
        ends = (output.sequences == END_INDEX).int().argmax(-1) + 1
        counters["decoder_steps"] += output.sequences.shape[1]
        counters["output_indices"] += int(torch.where(ends > 1, ends, output.sequences.shape[1]).sum())
        return output

    model.generate = counted
    return counters


def lightner_peer(shared: Path, mode: str, seed: int, sentences) -> Peer:
    """LightNER on a random bart-large backbone, loaded as `from_pretrained` loads a saved adapter: the backbone in
    `mode`'s precision, the adapter's tensors loaded in float32 on top."""
    import torch

    from lightner.tokenization_utils import encode_sentences

    built, bart, tokenizer = build_model(shared, seed, fold=True)
    parameters = sum(p.numel() for p in bart.parameters())
    adapter = built.adapter_state_dict()
    model = adapter_on_backbone(built, bart, tokenizer, mode if mode in ("bf16", "int8") else "fp32")
    del built
    lengths = None if mode == "fp32-random-lengths" else gold_lengths(model, tokenizer, sentences)
    counters = count_steps(model, lengths)

    def run(words: list[list[str]], batch_size: int) -> dict:
        for key in counters:
            counters[key] = 0
        with torch.inference_mode():
            entities = model.predict(words, batch_size=batch_size)
        pieces = sum(len(e.input_ids) for e in encode_sentences(tokenizer, words))
        return {"pieces": pieces, "entities": sum(map(len, entities)), **counters}

    adapter_mib = tensor_mib(adapter.values())
    return Peer(
        run,
        parameters + sum(t.numel() for t in adapter.values()),
        f"adapter {adapter_mib:.1f} MiB (prompts + label words); backbone shared",
        "random-weight output lengths (not a trained model's)" if lengths is None else "gold output lengths",
        {"adapter_mib": adapter_mib, "adapter_parameters": sum(t.numel() for t in adapter.values())},
    )


def lower_precision(torch, model, mode: str):
    """A transformers model in `mode`: bf16 weights, or int8 dynamic quantization of every `nn.Linear` (what
    PyTorch offers for a BERT-like encoder on CPU); fp32 as it is."""
    if mode == "bf16":
        return model.to(torch.bfloat16)
    if mode == "int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def token_classifier_peer(shared: Path, mode: str, kind: str) -> Peer:
    """A BERT-base or RoBERTa-base token classifier, random weights: pieces from the bart-large tokenizer as
    LightNER cuts them (for RoBERTa its own vocabulary; for BERT folded into 30522 ids), one encoder pass per batch,
    argmax over BIO tags at each word's first piece, tags turned into entities."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, RobertaConfig, RobertaForTokenClassification

    from lightner.data import spans_from_tags
    from lightner.tokenization_utils import collate, encode_sentences

    tokenizer = bart_tokenizer(shared)
    if kind == "bert":
        model = BertForTokenClassification(BertConfig(num_labels=BIO_TAGS))  # defaults: bert-base's shape
    else:  # roberta-base's shape (RobertaConfig() defaults are BERT's vocabulary and positions)
        config = RobertaConfig(
            vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=BIO_TAGS
        )
        model = RobertaForTokenClassification(config)
    parameters = sum(p.numel() for p in model.parameters())
    vocab, pad = model.config.vocab_size, model.config.pad_token_id
    model = lower_precision(torch, model.eval(), mode)
    tag_names = ["O"] + [f"{prefix}-{name}" for name in ENTITY_TYPES for prefix in ("B", "I")]

    def run(words: list[list[str]], batch_size: int) -> dict:
        encoded = encode_sentences(tokenizer, words)
        entities = 0
        for first in range(0, len(encoded), batch_size):
            chunk = encoded[first : first + batch_size]
            batch = collate(chunk, tokenizer.pad_token_id)
            mask = batch["attention_mask"]
            ids = batch["input_ids"] % vocab if kind == "bert" else batch["input_ids"]
            with torch.inference_mode():
                logits = model(input_ids=ids.masked_fill(mask == 0, pad), attention_mask=mask).logits
            tags = logits.argmax(-1).tolist()
            for sentence, row in zip(chunk, tags):
                entities += len(spans_from_tags([tag_names[row[i]] for i in sentence.word_starts]))
        return {"pieces": sum(len(e.input_ids) for e in encoded), "entities": entities}

    whole = f"whole model ({parameters / 1e6:.0f} M parameters, {parameters * 4 / 2**20:.0f} MiB in fp32)"
    notes = "bart-large BPE pieces, ids folded into BERT's vocabulary" if kind == "bert" else "encoder + linear head"
    return Peer(run, parameters, whole, notes)


def gliner_peer(shared: Path, mode: str) -> Peer:
    """GLiNER-medium's shape built offline: `UniEncoderSpanGLiNER` over a DeBERTa-v3-base config, the bart-large
    tokenizer standing in for DeBERTa's (with GLiNER's three tokens added, as it adds them), the embedding table at
    GLiNER-medium's 128004 rows (ids past the tokenizer's are never read). The special-token indices are given in the
    config so that GLiNER does not resize the embeddings itself (its mean-preserving resize takes minutes)."""
    import torch
    from gliner import GLiNERConfig
    from gliner.model import UniEncoderSpanGLiNER

    tokenizer = bart_tokenizer(shared)
    tokenizer.add_tokens(["[FLERT]", "<<ENT>>", "<<SEP>>"], special_tokens=True)
    encoder = {"model_type": "deberta-v2", **DEBERTA_V3_BASE, "vocab_size": GLINER_MEDIUM_VOCAB}
    config = GLiNERConfig(
        model_name="microsoft/deberta-v3-base",
        encoder_config=encoder,
        max_width=12,
        hidden_size=512,
        dropout=0.4,
        span_mode="markerV0",
        max_len=384,
        max_types=25,
        words_splitter_type="whitespace",
        embed_ent_token=True,
        class_token_index=tokenizer.convert_tokens_to_ids("<<ENT>>"),
        vocab_size=GLINER_MEDIUM_VOCAB,
    )
    model = UniEncoderSpanGLiNER(config, tokenizer=tokenizer, backbone_from_pretrained=False)
    parameters = sum(p.numel() for p in model.parameters())
    model.eval()
    if mode == "bf16":
        model.to(torch.bfloat16)
    elif mode == "int8":
        model.quantize("int8")
    processor_tokenizer = model.data_processor.transformer_tokenizer

    def run(words: list[list[str]], batch_size: int) -> dict:
        texts = [" ".join(w) for w in words]
        with torch.inference_mode():
            entities = model.inference(texts, GLINER_LABELS, threshold=0.5, batch_size=batch_size)
        prompt = [token for label in GLINER_LABELS for token in ("<<ENT>>", label)] + ["<<SEP>>"]
        pieces = sum(len(processor_tokenizer(prompt + w, is_split_into_words=True).input_ids) for w in words)
        return {"pieces": pieces, "entities": sum(map(len, entities))}

    return Peer(
        run,
        parameters,
        f"types are prompt words (zero-shot); domain fine-tuning: whole model ({parameters / 1e6:.0f} M)",
        "gliner package; bart-large tokenizer standing in for DeBERTa's",
        {"gliner_version": __import__("gliner").__version__},
    )


def deberta_lower_bound_peer(shared: Path, mode: str) -> Peer:
    """Where `gliner` is missing: GLiNER-medium's encoder alone (DeBERTa-v3-base, random weights) over GLiNER's
    input, the entity-type prompt then the sentence; no span representation, scoring or decoding: a lower bound."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    tokenizer = bart_tokenizer(shared)
    model = DebertaV2Model(DebertaV2Config(**{**DEBERTA_V3_BASE, "vocab_size": GLINER_MEDIUM_VOCAB}))
    parameters = sum(p.numel() for p in model.parameters())
    model = lower_precision(torch, model.eval(), mode)
    marker, separator = GLINER_MEDIUM_VOCAB - 3, GLINER_MEDIUM_VOCAB - 2  # stand-ins for <<ENT>> and <<SEP>>
    prompt = []
    for label in GLINER_LABELS:
        prompt += [marker, *tokenizer(" " + label, add_special_tokens=False).input_ids]
    prompt.append(separator)

    def run(words: list[list[str]], batch_size: int) -> dict:
        from lightner.tokenization_utils import EncodedSentence, collate, encode_sentences

        encoded = [
            EncodedSentence([e.input_ids[0], *prompt, *e.input_ids[1:]], [])
            for e in encode_sentences(tokenizer, words)
        ]
        for first in range(0, len(encoded), batch_size):
            batch = collate(encoded[first : first + batch_size], 0)
            with torch.inference_mode():
                model(**batch)
        return {"pieces": sum(len(e.input_ids) for e in encoded), "entities": None}

    return Peer(
        run,
        parameters,
        f"types are prompt words (zero-shot); domain fine-tuning: whole model (>= {parameters / 1e6:.0f} M)",
        "LOWER BOUND: gliner not importable; DeBERTa-v3-base encoder alone over prompt + sentence",
    )


def build_peer(system: str, mode: str, shared: Path, seed: int, sentences) -> Peer:
    if system == "lightner":
        return lightner_peer(shared, mode, seed, sentences)
    if system == "bert":
        return token_classifier_peer(shared, mode, "bert")
    if system == "spacy-trf":
        return token_classifier_peer(shared, mode, "roberta")
    try:
        import gliner  # noqa: F401
    except ImportError as error:
        log(f"gliner: not importable ({error}); measuring the DeBERTa-v3-base encoder alone, a lower bound")
        return deberta_lower_bound_peer(shared, mode)
    return gliner_peer(shared, mode)


# ---------------------------------------------------------------------------------------------------------------------
# Worker: one system in one mode, in its own process
# ---------------------------------------------------------------------------------------------------------------------


def worker(args) -> dict:
    """Build the system, then time a full pass over the sentences at each batch size (a two-sentence warm-up
    first); the peak RSS is the high-water mark from just after building to the end."""
    torch = setup_torch(args.threads, args.seed)
    import transformers

    shared = shared_dir(TEST_FILE)
    sentences = read_sentences(shared.joinpath(*TEST_FILE), args.sentences)
    # Longest first, as LightNER's predict orders its batches: every system gets the same, least-padded batches.
    sentences = sorted(sentences, key=lambda s: -len(s.words))
    words = [list(s.words) for s in sentences]
    bart_tokenizer(shared)  # the tokenizer's memory is not the model's
    gc.collect()
    before = vm_rss_mb()
    start = time.perf_counter()
    log(f"{args.worker} {args.mode}: building (random weights)")
    peer = build_peer(args.worker, args.mode, shared, args.seed, sentences)
    gc.collect()
    build_seconds, loaded = time.perf_counter() - start, vm_rss_mb() - before
    reset_vm_hwm()
    runs = {}
    for batch_size in batch_sizes(args.batch_sizes):
        peer.run(words[-2:], batch_size)  # warm-up: thread pools, allocator, first-call dispatch
        start = time.perf_counter()
        counters = peer.run(words, batch_size)
        seconds = time.perf_counter() - start
        runs[str(batch_size)] = {"seconds": seconds, "sentences_per_s": len(words) / seconds, **counters}
        log(f"{args.worker} {args.mode}: batch {batch_size}: {len(words) / seconds:.2f} sentences/s ({seconds:.1f} s)")
    best = max(runs, key=lambda b: runs[b]["sentences_per_s"])  # JSON keys: strings
    return {
        "system": args.worker,
        "mode": args.mode,
        "sentences": len(words),
        "words": sum(map(len, words)),
        "parameters": peer.parameters,
        "per_domain": peer.per_domain,
        "notes": peer.notes,
        **peer.extra,
        "best_batch_size": int(best),
        "sentences_per_s": runs[best]["sentences_per_s"],
        "runs": runs,
        "build_seconds": build_seconds,
        "loaded_rss_mb": loaded,
        "peak_rss_mb": vm_hwm_mb() or vm_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Driver (does not import torch, so that it adds nothing to the workers' memory)
# ---------------------------------------------------------------------------------------------------------------------


def batch_sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",")]


def run_worker(system: str, mode: str, args) -> dict:
    """Run one system in one mode in a fresh interpreter; its JSON is the last line of its stdout, its log goes to
    stderr. A failing worker is recorded, not fatal: the other rows still count."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--mode", mode]
    command += ["--sentences", str(args.sentences), "--batch-sizes", args.batch_sizes, "--seed", str(args.seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    start, load_before = time.perf_counter(), os.getloadavg()
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        log(f"{system} {mode}: the worker failed with exit status {completed.returncode} (its log is above)")
        result = {"system": system, "mode": mode, "error": f"worker exit status {completed.returncode}"}
    else:
        result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["worker_wall_seconds"] = time.perf_counter() - start
    # Other processes share the cores: a 1-minute load well above the threads used means these timings are slowed.
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    return result


def table(report: dict) -> str:
    """The side-by-side markdown table: one row per system and mode, the fastest mode of each system in bold."""
    lines = [
        "| system | mode | parameters | per new domain | sentences/s (batch) | peak RSS MiB | loaded MiB | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, modes in report["systems"].items():
        measured = [r for r in modes.values() if "error" not in r]
        fastest = max(measured, key=lambda r: r["sentences_per_s"])["mode"] if measured else None
        for mode, r in modes.items():
            if "error" in r:
                lines.append(f"| {TITLES[system]} | {mode} | | | {r['error']} | | | |")
                continue
            speed = f"{r['sentences_per_s']:.2f} ({r['best_batch_size']})"
            speed = f"**{speed}**" if mode == fastest else speed
            notes = r["notes"]
            best = r["runs"][str(r["best_batch_size"])]
            if "output_indices" in best:
                notes += f"; {best['output_indices']} output indices"
            lines.append(
                f"| {TITLES[system]} | {mode} | {r['parameters'] / 1e6:.0f} M | {r['per_domain']} | {speed} | "
                f"{r['peak_rss_mb']:.0f} | {r['loaded_rss_mb']:.0f} | {notes} |"
            )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--quick", action="store_true", help="smoke setting: 16 sentences, batch 8, fp32 and the int8 modes"
    )
    parser.add_argument("--sentences", type=int, help="first N test sentences (256; quick 16)")
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes, the best is reported (8,32; quick 8)")
    parser.add_argument("--systems", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument(
        "--modes",
        help="comma-separated modes to run where a system has them (all; quick fp32,int8)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sentences < 1:
        parser.error("--sentences must be at least 1")
    try:
        if min(batch_sizes(args.batch_sizes)) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--batch-sizes must be positive integers separated by commas, not {args.batch_sizes!r}")
    unknown = set(args.systems.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(MODES)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    shared_dir(TEST_FILE)  # fail before starting any worker
    start = time.perf_counter()
    wanted = set(args.modes.split(",")) if args.modes else None
    systems = {}
    for system in args.systems.split(","):
        modes = [mode for mode in MODES[system] if wanted is None or mode in wanted]
        systems[system] = {}
        for mode in modes:
            systems[system][mode] = run_worker(system, mode, args)
    report = {
        "quick": args.quick,
        "sentences": args.sentences,
        "batch_sizes": batch_sizes(args.batch_sizes),
        "threads": args.threads,
        "systems": systems,
        "wall_seconds": time.perf_counter() - start,
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    print("\n" + table(report), file=sys.stderr)
    print(f"\nwall time {report['wall_seconds']:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
