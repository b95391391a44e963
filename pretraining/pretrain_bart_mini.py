"""Pretrain `assets/bart-mini`: a small BART with bart-large's tokenizer, by BART's own denoising objective, on 2 cores.

BART (Lewis et al., 2020) corrupts a text by sentence permutation and text infilling (spans with Poisson(3) lengths
replaced by one `<mask>` each, 30% of the tokens) and trains the decoder to write the original. Three choices make
that fit in about an hour on a 2-core CPU:
- the loss is computed where it teaches something: every target token that was masked, the first token of every
  sentence (where permutation hides the order) and `</s>`, plus a random quarter of the tokens the decoder could copy.
  The 50,265-way softmax over every target position is two thirds of the work of a model this size; this halves it;
- matrix products run in bfloat16 (autocast; AMX on this CPU), the loss and the optimiser in float32;
- words are BPE-encoded one by one with a leading space, exactly as LightNER feeds its encoder, so the pointer features
  are pretrained on the encoding they will see.

    python pretraining/build_corpus.py --output runs/corpus.jsonl
    python pretraining/pretrain_bart_mini.py --corpus runs/corpus.jsonl --output assets/bart-mini

It writes `config.json`, `model.safetensors` (float16 storage; loads as float32), the tokenizer files and
`pretraining_log.json` (loss curve, held-out denoising accuracy, timings) plus `pretraining_curve.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BartConfig, BartModel

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
SHARED_TOKENIZER = Path(os.environ.get("LIGHTNER_SHARED_DIR", REPO_ROOT.parent / "shared")) / "assets/bart-large-tokenizer"
# Sources from the task's own domains, seen more often than their share of the words.
UPSAMPLED_SOURCES = {
    "conll2003/train.txt": 4,
    "mit-movie/500-shot-train.txt": 4,
    "mit-restaurant/500-shot-train.txt": 4,
    "atis/50-shot-train.txt": 4,
}
HELD_OUT_PER_MILLE = 10


@dataclass
class PretrainingArguments:
    corpus: str = "runs/corpus.jsonl"
    output: str = "assets/bart-mini"
    seed: int = 0
    steps: int = 1100
    tokens_per_batch: int = 4096  # target tokens, padding included
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    copy_loss_fraction: float = 0.25
    long_segment_share: float = 0.25  # segments of up to max_positions tokens; the rest up to short_segment
    short_segment: int = 128
    d_model: int = 256
    encoder_layers: int = 4
    decoder_layers: int = 3
    heads: int = 4
    ffn_dim: int = 896
    max_positions: int = 256
    dropout: float = 0.1
    threads: int = 2
    eval_every: int = 200
    log_every: int = 20


def model_config(args: PretrainingArguments, tokenizer) -> BartConfig:
    return BartConfig(
        vocab_size=len(tokenizer),
        d_model=args.d_model,
        encoder_layers=args.encoder_layers,
        decoder_layers=args.decoder_layers,
        encoder_attention_heads=args.heads,
        decoder_attention_heads=args.heads,
        encoder_ffn_dim=args.ffn_dim,
        decoder_ffn_dim=args.ffn_dim,
        max_position_embeddings=args.max_positions,
        dropout=args.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id,
        scale_embedding=False,
        architectures=["BartModel"],
    )


# ----------------------------------------------------------------------------------------------------------------
# Data: documents -> segments of sentences (token ids) -> noised pairs


class WordEncoder:
    """Each word's BPE pieces with a leading space, cached: the corpus has few distinct words."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, words: list[str]) -> list[int]:
        missing = [word for word in dict.fromkeys(words) if word not in self.cache]
        if missing:
            pieces = self.tokenizer([" " + word for word in missing], add_special_tokens=False)["input_ids"]
            self.cache.update(zip(missing, pieces))
        return [piece for word in words for piece in self.cache[word]]


def read_segments(args: PretrainingArguments, tokenizer) -> tuple[list[list[list[int]]], list[list[list[int]]], dict]:
    """Training and held-out segments (lists of sentences as token ids), packed from whole documents.

    A document goes to the held-out set by a hash of its first sentence (1% of them); each segment takes consecutive
    sentences up to its length budget, drawn once per segment (short or long), so positions up to `max_positions` are
    all trained.
    """
    rng = random.Random(args.seed)
    encode = WordEncoder(tokenizer)
    train, held_out, counts = [], [], {}
    budget_long = args.max_positions - 2
    with open(args.corpus, encoding="utf-8") as lines:
        for line in lines:
            document = json.loads(line)
            sentences = [encode(words)[:budget_long] for words in document["sentences"]]
            sentences = [sentence for sentence in sentences if sentence]
            if not sentences:
                continue
            is_held_out = zlib.crc32(" ".join(document["sentences"][0]).encode()) % 1000 < HELD_OUT_PER_MILLE
            source_counts = counts.setdefault(document["source"], {"documents": 0, "tokens": 0})
            source_counts["documents"] += 1
            source_counts["tokens"] += sum(map(len, sentences))
            repeats = 1 if is_held_out else UPSAMPLED_SOURCES.get(document["source"], 1)
            for _ in range(repeats):
                for segment in pack(sentences, rng, args):
                    (held_out if is_held_out else train).append(segment)
    return train, held_out, counts


def pack(sentences: list[list[int]], rng: random.Random, args: PretrainingArguments) -> list[list[list[int]]]:
    segments, current, used = [], [], 0
    budget = segment_budget(rng, args)
    for sentence in sentences:
        if current and used + len(sentence) > budget:
            segments.append(current)
            current, used, budget = [], 0, segment_budget(rng, args)
        current.append(sentence[:budget])
        used += len(current[-1])
    segments.append(current)
    return segments


def segment_budget(rng: random.Random, args: PretrainingArguments) -> int:
    long = rng.random() < args.long_segment_share
    return (args.max_positions if long else args.short_segment) - 2


@dataclass
class NoisedSegment:
    source: list[int]  # <s> permuted and infilled tokens </s>
    target: list[int]  # <s> original tokens </s>
    hard: list[bool]  # per target token: masked, a sentence start or </s> (always in the loss)


def noise(segment: list[list[int]], rng: np.random.Generator, args: PretrainingArguments, tokenizer) -> NoisedSegment:
    """BART's sentence permutation and text infilling (Lewis et al. 2020, section 2.2) of one segment."""
    bos, eos, mask = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id
    original = [token for sentence in segment for token in sentence]
    sentence_start = np.zeros(len(original), dtype=bool)
    sentence_start[np.cumsum([0] + [len(s) for s in segment[:-1]])] = True
    order = rng.permutation(len(segment))
    permuted = [token for index in order for token in segment[index]]
    # Which original token each permuted position holds, so masking a permuted token marks its target position hard.
    offsets = np.cumsum([0] + [len(s) for s in segment])
    origin = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in order])
    masked_total = int(round(args.mask_ratio * len(permuted)))
    is_masked = np.zeros(len(permuted), dtype=bool)
    span_starts: dict[int, int] = {}  # start -> length (0: insert a mask before the token)
    while is_masked.sum() < masked_total:
        length = min(int(rng.poisson(args.poisson_lambda)), masked_total - int(is_masked.sum()))
        start = int(rng.integers(len(permuted)))
        if is_masked[start : start + max(length, 1)].any() or start in span_starts:
            continue
        span_starts[start] = length
        is_masked[start : start + length] = True
    source = [bos]
    for position, token in enumerate(permuted):
        if position in span_starts:
            source.append(mask)
        if not is_masked[position]:
            source.append(token)
    source.append(eos)
    hard = sentence_start.copy()
    hard[origin[is_masked]] = True
    return NoisedSegment(source, [bos, *original, eos], [True, *hard.tolist(), True])


def batches(segments: list[list[list[int]]], rng: random.Random, tokens_per_batch: int) -> list[list[int]]:
    """Segment indices grouped into batches of similar length (less padding), the batch order shuffled."""
    order = list(range(len(segments)))
    rng.shuffle(order)
    length = [sum(map(len, segment)) + 2 for segment in segments]
    result = []
    pool = 64 * max(1, tokens_per_batch // 128)
    for first in range(0, len(order), pool):
        chunk = sorted(order[first : first + pool], key=length.__getitem__)
        batch: list[int] = []
        for index in chunk:
            if batch and (len(batch) + 1) * max(length[i] for i in (*batch, index)) > tokens_per_batch:
                result.append(batch)
                batch = []
            batch.append(index)
        result.append(batch)
    rng.shuffle(result)
    return result


def collate(pairs: list[NoisedSegment], pad: int, eos: int) -> dict[str, torch.Tensor]:
    source_len = max(len(pair.source) for pair in pairs)
    target_len = max(len(pair.target) for pair in pairs)
    input_ids = torch.full((len(pairs), source_len), pad)
    labels = torch.full((len(pairs), target_len), pad)
    hard = torch.zeros((len(pairs), target_len), dtype=torch.bool)
    for row, pair in enumerate(pairs):
        input_ids[row, : len(pair.source)] = torch.tensor(pair.source)
        labels[row, : len(pair.target)] = torch.tensor(pair.target)
        hard[row, : len(pair.target)] = torch.tensor(pair.hard)
    decoder_input_ids = torch.cat([torch.full((len(pairs), 1), eos), labels[:, :-1]], dim=1)  # BART's shift right
    return {
        "input_ids": input_ids,
        "attention_mask": input_ids.ne(pad),
        "decoder_input_ids": decoder_input_ids,
        "decoder_attention_mask": decoder_input_ids.ne(pad),
        "labels": labels,
        "hard": hard,
    }


# ----------------------------------------------------------------------------------------------------------------
# Model step


def decoder_states(model: BartModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
            decoder_attention_mask=batch["decoder_attention_mask"],
        ).last_hidden_state  # (batch, target, d)


def token_logits(model: BartModel, states: torch.Tensor) -> torch.Tensor:
    """Scores over the vocabulary with the tied embedding (BART's LM head), in bfloat16, returned as float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return (states @ model.shared.weight.T).float()  # (positions, vocab)


def loss_positions(batch: dict[str, torch.Tensor], pad: int, copy_fraction: float, generator) -> torch.Tensor:
    """Every hard target token, and a random `copy_fraction` of the others (not padding)."""
    real = batch["labels"].ne(pad)
    sampled = torch.rand(real.shape, generator=generator) < copy_fraction
    return real & (batch["hard"] | sampled)


def training_loss(model, batch, pad, copy_fraction, generator) -> tuple[torch.Tensor, int]:
    states = decoder_states(model, batch)
    chosen = loss_positions(batch, pad, copy_fraction, generator)
    logits = token_logits(model, states[chosen])
    return F.cross_entropy(logits, batch["labels"][chosen]), int(chosen.sum())


@torch.no_grad()
def denoising_accuracy(model: BartModel, pairs: list[NoisedSegment], tokenizer, batch_size: int = 32) -> dict:
    """Teacher-forced argmax accuracy on held-out segments: on masked tokens, and on every token."""
    model.eval()
    correct_hard = total_hard = correct_all = total_all = 0
    for first in range(0, len(pairs), batch_size):
        batch = collate(pairs[first : first + batch_size], tokenizer.pad_token_id, tokenizer.eos_token_id)
        real = batch["labels"].ne(tokenizer.pad_token_id)
        states = decoder_states(model, batch)
        predicted = token_logits(model, states[real]).argmax(-1)
        right = predicted.eq(batch["labels"][real])
        hard = batch["hard"][real]
        correct_hard += int(right[hard].sum())
        total_hard += int(hard.sum())
        correct_all += int(right.sum())
        total_all += int(real.sum())
    model.train()
    return {"masked_and_order": correct_hard / total_hard, "all_tokens": correct_all / total_all}


def learning_rate(step: int, args: PretrainingArguments) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------------------------
# Saving


def save(model: BartModel, tokenizer, output: Path, log: dict) -> None:
    """float16 tensors, float32 config dtype: half the file, and loads back as float32."""
    output.mkdir(parents=True, exist_ok=True)
    model.config.dtype = "float32"
    model.half().save_pretrained(output, safe_serialization=True)
    model.float()
    config = json.loads((output / "config.json").read_text())
    config["dtype"] = "float32"
    (output / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in TOKENIZER_FILES:
        (output / name).write_bytes((Path(tokenizer.name_or_path) / name).read_bytes())
    (output / "pretraining_log.json").write_text(json.dumps(log, indent=1) + "\n")
    plot_curve(log, output / "pretraining_curve.png")


def plot_curve(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    steps = [entry["step"] for entry in log["train"]]
    axis.plot(steps, [entry["loss"] for entry in log["train"]], label="training loss (chosen positions)")
    axis.set_xlabel("step")
    axis.set_ylabel("cross-entropy")
    twin = axis.twinx()
    evals = log["held_out"]
    twin.plot([e["step"] for e in evals], [e["masked_and_order"] for e in evals], "o-", color="C1")
    twin.set_ylabel("held-out accuracy, masked tokens", color="C1")
    axis.set_title("bart-mini pretraining (text infilling + sentence permutation)")
    axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field, value in asdict(PretrainingArguments()).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--tokenizer", default=str(SHARED_TOKENIZER))
    parser.add_argument("--max-minutes", type=float, default=None, help="stop early (for throughput checks)")
    namespace = vars(parser.parse_args(argv))
    tokenizer_path, max_minutes = namespace.pop("tokenizer"), namespace.pop("max_minutes")
    args = PretrainingArguments(**namespace)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    started = time.perf_counter()
    train, held_out, counts = read_segments(args, tokenizer)
    numpy_rng = np.random.default_rng(args.seed)
    held_out_pairs = [noise(segment, numpy_rng, args, tokenizer) for segment in held_out[:512]]
    print(f"{len(train)} training segments, {len(held_out)} held out; read in {time.perf_counter() - started:.0f} s")
    model = BartModel(model_config(args, tokenizer))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    log = {
        "arguments": asdict(args),
        "corpus": counts,
        "train": [],
        "held_out": [{"step": 0, **denoising_accuracy(model, held_out_pairs, tokenizer)}],
    }
    print(log["held_out"][-1])
    generator = torch.Generator().manual_seed(args.seed)
    data_rng = random.Random(args.seed)
    queue: list[list[int]] = []
    model.train()
    began, seen_tokens, window = time.perf_counter(), 0, []
    for step in range(args.steps):
        if not queue:
            queue = batches(train, data_rng, args.tokens_per_batch)
        batch = collate(
            [noise(train[i], numpy_rng, args, tokenizer) for i in queue.pop()],
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        loss, positions = training_loss(model, batch, tokenizer.pad_token_id, args.copy_loss_fraction, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())
        seen_tokens += tokens
        window.append(loss.item())
        if (step + 1) % args.log_every == 0:
            elapsed = time.perf_counter() - began
            entry = {"step": step + 1, "loss": sum(window) / len(window), "lr": learning_rate(step, args)}
            entry.update(seconds=round(elapsed, 1), tokens_per_second=round(seen_tokens / elapsed))
            log["train"].append(entry)
            window = []
            print(json.dumps(entry), flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            log["held_out"].append({"step": step + 1, **denoising_accuracy(model, held_out_pairs, tokenizer)})
            print(json.dumps(log["held_out"][-1]), flush=True)
            log["seconds"] = round(time.perf_counter() - began, 1)
            save(model, tokenizer, Path(args.output), log)
        if max_minutes is not None and time.perf_counter() - began > 60 * max_minutes:
            break
    log["seconds"] = round(time.perf_counter() - began, 1)
    log["source_plus_target_tokens"] = seen_tokens
    save(model, tokenizer, Path(args.output), log)
    print(f"done in {log['seconds'] / 60:.1f} min; {seen_tokens} tokens")


if __name__ == "__main__":
    sys.exit(main())
