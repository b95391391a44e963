#!/usr/bin/env python
"""Training speed and memory of LightNER on the bart-large shape, on this machine: prompt-only versus full fine-tuning.

Random weights of the bart-large shape (`BartModel(BartConfig())`, nothing downloaded) under a fresh adapter, the real
tokenizer, and batches of 16 from CoNLL-2003 `indomain-train.txt` (4,001 sentences) in the order the training loop
would draw them (seeded shuffle). Each mode runs the loop's own step (`lightner.train.training_step` under accelerate:
forward, backward, clipping, fused AdamW, linear schedule) on batches from the loop's own set-up
(`lightner.train.prepare_training`: the data loader goes through `accelerator.prepare`, so batches land on the
model's device) once untimed (it allocates the optimizer state), then
`--steps` timed steps, in a process of its own so that its peak resident memory is its own.

Seconds per epoch are a projection, not a measured epoch: steps per epoch (251) times the mean timed step. The timed
batches' mean padded length is reported beside the corpus's mean sentence length so that the projection can be judged.

    python benchmarks/train.py --json             # both modes, 3 timed steps each (about 5 minutes on 2 CPU cores)
    python benchmarks/train.py --modes prompt     # prompt-only alone

A table goes to stderr; with `--json`, one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from shared_assets import TOKENIZER_DIR, TRAIN_FILE, log, shared_dir

MODES = {"prompt": "prompt-only (LightNER)", "full": "full fine-tuning (BARTNER)"}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (`ru_maxrss`, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------------
# Worker: one mode in its own process
# ---------------------------------------------------------------------------------------------------------------------


def worker(mode: str, steps: int, batch_size: int, seed: int) -> dict:
    import tempfile
    from pathlib import Path

    import torch
    from transformers import AutoTokenizer, BartConfig, BartModel

    from lightner.arguments import LightNerTrainingArguments
    from lightner.configuration_lightner import LightNerConfig
    from lightner.data import entity_types
    from lightner.formats import read_conll
    from lightner.modeling_lightner import LightNerModel
    from lightner.train import encode_examples, make_accelerator, prepare_training, training_step

    shared = shared_dir(TRAIN_FILE)
    sentences = read_conll(shared.joinpath(*TRAIN_FILE))
    types = entity_types(sentences)
    torch.manual_seed(seed)
    log(f"{mode}: building a random bart-large-shaped model")
    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    config = LightNerConfig(backbone="facebook/bart-large", entity_types=types, freeze_backbone=mode == "prompt")
    model = LightNerModel(config, backbone=BartModel(BartConfig()), tokenizer=tokenizer)
    examples = encode_examples(tokenizer, sentences, types, model.backbone.config.max_position_embeddings)

    # The loop's settings but one epoch, no warm-up and no mixed precision; nothing is written to the folder.
    output_dir = tempfile.mkdtemp(prefix="lightner-train-benchmark-")
    args = LightNerTrainingArguments(
        train_file=str(shared.joinpath(*TRAIN_FILE)),
        output_dir=output_dir,
        epochs=1,
        batch_size=batch_size,
        warmup_ratio=0.0,
        mixed_precision="no",
        seed=seed,
    )
    accelerator = make_accelerator(args, Path(output_dir))
    model, optimizer, loader, scheduler = prepare_training(accelerator, model, examples, args)
    model.train()

    batches = iter(loader)
    log(f"{mode}: 1 warm-up step, then {steps} timed steps at batch {batch_size}")
    training_step(accelerator, model, optimizer, scheduler, next(batches), max_grad_norm=1.0)
    times, lengths = [], []
    for _ in range(steps):
        batch = next(batches)
        start = time.perf_counter()
        training_step(accelerator, model, optimizer, scheduler, batch, max_grad_norm=1.0)
        times.append(time.perf_counter() - start)
        lengths.append(batch["input_ids"].shape[1])
        log(f"{mode}: step of {batch['input_ids'].shape[1]} source pieces took {times[-1]:.1f} s")

    step_seconds = statistics.mean(times)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    return {
        "mode": mode,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "step_seconds": times,
        "mean_step_seconds": step_seconds,
        "median_step_seconds": statistics.median(times),
        "sentences_per_second": batch_size / step_seconds,
        "steps_per_epoch": steps_per_epoch,
        "projected_epoch_seconds": steps_per_epoch * step_seconds,
        "timed_batch_padded_lengths": lengths,
        "corpus_mean_pieces": statistics.mean(len(source.input_ids) for source, _ in examples),
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------


def run_worker(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps)]
    command += ["--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(completed.stdout)


def table(results: list[dict]) -> str:
    rows = [f"{'mode':<28}{'trainable':>14}{'s/step':>9}{'median':>9}{'sent/s':>9}{'s/epoch':>10}{'peak RSS':>12}"]
    for r in results:
        rows.append(
            f"{MODES[r['mode']]:<28}{r['trainable_parameters']:>14,}{r['mean_step_seconds']:>9.2f}"
            f"{r['median_step_seconds']:>9.2f}"
            f"{r['sentences_per_second']:>9.2f}{r['projected_epoch_seconds']:>10.0f}{r['peak_rss_mb']:>9.0f} MiB"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to measure")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per step (the reference's 16)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the weights and of the batch order")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size, args.seed)))
        return
    shared_dir(TRAIN_FILE)
    results = [run_worker(mode, args) for mode in args.modes]
    print(table(results), file=sys.stderr)
    if args.json:
        machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()}
        print(json.dumps({"machine": machine, "batch_size": args.batch_size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
