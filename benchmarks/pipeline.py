#!/usr/bin/env python
"""Throughput of the raw-text pipeline against `model.predict` on the same words.

On random BART weights (nothing is downloaded) with the real bart-large tokenizer, over the first N sentences of
CoNLL-2003 `test.txt` re-joined into running text (`text_utils.detokenize`), measures texts per second of:

1. `model.predict(words)` on the original words: the model's own cost, no text handling;
2. `pipeline(texts)` on the raw texts: word splitting, windows, prediction, character offsets;
3. `pipeline(words, is_split_into_words=True)` on the same words as 1: the pipeline's overhead alone;
4. one long document (`--document-chars`, 100,000 by default: those texts repeated and joined by blank lines) through
   `pipeline(text)` once, which cuts it into windows: seconds and characters per second.

Each is run `--repeats` times after a warm-up, alternating, and the median is kept. The overhead is
`predict texts/s / pipeline texts/s - 1` (target: at most 10%). A small model makes the overhead look larger than on
bart-large, where the model's cost dwarfs the text handling; both a tiny and a small shape are measured by default.

    python benchmarks/pipeline.py             # table on stderr
    python benchmarks/pipeline.py --json      # and one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from shared_assets import ENTITY_TYPES, TEST_FILE, TOKENIZER_DIR, shared_dir

OVERHEAD_TARGET = 0.10

# Backbone shapes (BartConfig fields); the vocabulary is the real tokenizer's.
SHAPES = {
    "tiny": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=64, decoder_ffn_dim=64),
    "small": dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024),
}  # fmt: skip


def build_model(shape: str, tokenizer, seed: int):
    """A random BART of `shape` under a fresh LightNER adapter (prompts folded, as in a loaded adapter)."""
    import torch
    from transformers import BartConfig, BartModel

    from lightner.configuration_lightner import LightNerConfig
    from lightner.modeling_lightner import LightNerModel

    torch.manual_seed(seed)
    bart = BartModel(BartConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, **SHAPES[shape]))
    config = LightNerConfig(backbone="facebook/bart-large", entity_types=ENTITY_TYPES)
    model = LightNerModel(config, backbone=bart, tokenizer=tokenizer)
    model.prompt_encoder.fold()
    return model.eval()


def median_seconds(runs: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median wall time of each run, after one warm-up of each; runs alternate so that load drifts hit all alike."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(shape: str, tokenizer, sentences: list[list[str]], args) -> dict:
    from lightner.pipeline_lightner import LightNerPipeline
    from lightner.text_utils import detokenize, split_words

    model = build_model(shape, tokenizer, args.seed)
    ner = LightNerPipeline(model=model, device=-1)
    texts = [detokenize(words)[0] for words in sentences]
    same_words = sum([t[a:b] for a, b in split_words(t)] == words for t, words in zip(texts, sentences))
    seconds = median_seconds(
        {
            "predict": lambda: model.predict(sentences, batch_size=args.batch_size),
            "pipeline_text": lambda: ner(texts, batch_size=args.batch_size),
            "pipeline_words": lambda: ner(sentences, is_split_into_words=True, batch_size=args.batch_size),
            "split_words": lambda: [split_words(text) for text in texts],
        },
        args.repeats,
    )
    rates = {f"{name}_texts_per_s": len(texts) / value for name, value in seconds.items()}
    joined = "\n\n".join(texts)
    document = (joined * (args.document_chars // len(joined) + 1))[: args.document_chars]
    started = time.perf_counter()
    document_entities = ner(document, batch_size=args.batch_size)
    document_seconds = time.perf_counter() - started
    return {
        "shape": shape,
        **{f"{name}_seconds": value for name, value in seconds.items()},
        **rates,
        "overhead_text": seconds["pipeline_text"] / seconds["predict"] - 1,
        "overhead_words": seconds["pipeline_words"] / seconds["predict"] - 1,
        "texts_split_as_in_data": same_words / len(texts),
        "document_chars": len(document),
        "document_seconds": document_seconds,
        "document_chars_per_s": len(document) / document_seconds,
        "document_entities": len(document_entities),
    }


def print_table(report: dict) -> None:
    header = ("shape", "predict", "pipeline(text)", "pipeline(words)", "overhead text", "overhead words", "document")
    rows = [
        (
            r["shape"],
            f"{r['predict_texts_per_s']:.1f}/s",
            f"{r['pipeline_text_texts_per_s']:.1f}/s",
            f"{r['pipeline_words_texts_per_s']:.1f}/s",
            f"{r['overhead_text']:+.1%}",
            f"{r['overhead_words']:+.1%}",
            f"{r['document_chars']:,} chars in {r['document_seconds']:.1f} s",
        )
        for r in report["results"]
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(
        f"\n{report['sentences']} CoNLL-2003 test sentences, batch {report['batch_size']}, "
        f"{report['torch_threads']} threads, median of {report['repeats']}",
        file=sys.stderr,
    )
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)), file=sys.stderr)
    split = report["results"][0]
    print(
        f"word splitting alone: {split['split_words_texts_per_s']:.0f} texts/s; "
        f"{split['texts_split_as_in_data']:.1%} of texts split exactly into the data's words; "
        f"target overhead <= {OVERHEAD_TARGET:.0%}",
        file=sys.stderr,
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--sentences", type=int, default=256, help="first N test sentences (256)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of predict and the pipeline (32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method after a warm-up (3)")
    parser.add_argument(
        "--document-chars", type=int, default=100_000, help="length of the long document (100,000 characters)"
    )
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["tiny", "small"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key in ("sentences", "batch_size", "repeats", "document_chars"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    shared = shared_dir(TEST_FILE)
    import torch
    from transformers import AutoTokenizer

    from lightner.formats import read_conll

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    sentences = [sentence.words for sentence in read_conll(shared.joinpath(*TEST_FILE))][: args.sentences]
    report = {
        "sentences": len(sentences),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "results": [measure(shape, tokenizer, sentences, args) for shape in args.shapes],
    }
    report["overhead_target"] = OVERHEAD_TARGET
    report["overhead_met"] = all(r["overhead_text"] <= OVERHEAD_TARGET for r in report["results"])
    print_table(report)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
