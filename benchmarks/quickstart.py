#!/usr/bin/env python
"""The README's main job, timed on this machine: the quickstart adapter trained and scored, then three sentences.

It runs the README's commands as a newcomer does (`lightner train --protocol quickstart`, then `lightner predict` on
three sentences), in subprocesses, on random weights of the bart-large shape (`BartForConditionalGeneration
(BartConfig())`, saved to a temporary folder as the backbone) with the real tokenizer and the paper's MIT Restaurant
splits; nothing is downloaded.

Training time does not depend on the weights' values; scoring does, because generation stops when the model writes
`</s>`, and an adapter trained on random weights writes far fewer entities than the test set's 2.1 per sentence
(reported as `entities_predicted`). So the 1,521 test sentences are scored again in this process with the trained
adapter, the same batch size and the same constrained search, each output forced to a length (`</s>` unreachable
before it):

- `gold`: each sentence's gold target length, what a model that writes the gold entities writes;
- `limit`: the length limit, the most any model writes (the upper bound).

The first-run time is the measured main job with its scoring replaced by the `gold` scoring.

    python benchmarks/quickstart.py --json        # about 10 minutes on 2 quiet cores

A table goes to stderr; with `--json`, one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import force_full_length

from shared_assets import REPO_ROOT, TOKENIZER_DIR, log, shared_dir

DATA_DIR = ("data", "lightner")
SENTENCES = [
    "book a table for two at an italian place near downtown tonight",
    "cheap sushi open after midnight",
    "any vegan restaurants with outdoor seating",
]


def build_backbone(shared: Path, folder: Path) -> None:
    """Random bart-large-shaped weights and the real tokenizer, saved where `--backbone` can load them."""
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR)).save_pretrained(folder)


def timed_command(arguments: list[str], log_path: Path) -> float:
    """Seconds a `lightner` command takes, run as the README runs it; its output goes to `log_path`."""
    start = time.perf_counter()
    with log_path.open("w") as output:
        completed = subprocess.run(
            [sys.executable, "-m", "lightner", *arguments], cwd=log_path.parent, stdout=output, stderr=output
        )
    if completed.returncode != 0:
        sys.exit(f"error: `lightner {' '.join(arguments)}` failed; see {log_path}")
    return time.perf_counter() - start


def forced_lengths(model, lengths_of) -> None:
    """Make every output run to `lengths_of(input_ids, attention_mask)` (one length per row): `</s>` is unreachable
    before it (`run.force_full_length`), and the length rule ends it there."""
    force_full_length(model)
    generate = model.generate

    def generate_to_length(input_ids, attention_mask, *args, **kwargs):
        limits = lengths_of(input_ids, attention_mask)
        model._output_limits = lambda *_: limits
        try:
            return generate(input_ids, attention_mask, *args, **kwargs)
        finally:
            del model._output_limits

    model.generate = generate_to_length


def timed_scoring(adapter: Path, sentences, batch_size: int, lengths: str | None) -> dict:
    """Score the test sentences as training's last step does, outputs forced to `lengths` (None: as the model
    writes them); seconds, and the output indices written in all."""
    import torch

    from lightner.evaluation import predict_entities
    from lightner.modeling_lightner import LightNerModel
    from lightner.tokenization_utils import encode_sentences, encode_target

    model = LightNerModel.from_pretrained(adapter).eval()
    limit = model.config.max_output_length
    encoded = encode_sentences(
        model.tokenizer, [s.words for s in sentences], model.backbone.config.max_position_embeddings
    )
    type_ids = {name: index for index, name in enumerate(model.config.entity_types)}
    gold = {}
    for source, sentence in zip(encoded, sentences):
        length = min(len(encode_target(source, sentence.entities, type_ids)) - 1, limit(len(source.input_ids)))
        gold[tuple(source.input_ids)] = max(length, gold.get(tuple(source.input_ids), 0))
    written = []

    def lengths_of(input_ids, attention_mask):
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        chosen = [gold[tuple(row)] if lengths == "gold" else limit(len(row)) for row in rows]
        written.append(sum(chosen))
        return chosen

    if lengths is not None:
        forced_lengths(model, lengths_of)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        predictions = predict_entities(model, [s.words for s in sentences], batch_size=batch_size)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "output_indices": sum(written) if written else None,
        "entities_predicted": sum(len(p) for p in predictions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", type=Path, help="a saved bart-large-shaped backbone (default: built, random)")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    args = parser.parse_args()
    shared = shared_dir(DATA_DIR)
    data_dir = shared.joinpath(*DATA_DIR)
    os.environ.setdefault("PYTHONPATH", str(REPO_ROOT))
    with tempfile.TemporaryDirectory(prefix="quickstart-") as work:
        work = Path(work)
        backbone = args.backbone
        if backbone is None:
            backbone = work / "bart-large-random"
            log("building random bart-large weights")
            build_backbone(shared, backbone)
        output = work / "runs" / "quickstart"
        log("lightner train --protocol quickstart (training, then scoring the test file)")
        train_seconds = timed_command(
            ["train", "--protocol", "quickstart", "--data-dir", str(data_dir), "--backbone", str(backbone),
             "--output", str(output)],
            work / "train.log",
        )  # fmt: skip
        (work / "mine.txt").write_text("".join(line + "\n" for line in SENTENCES), encoding="utf-8")
        log("lightner predict (three sentences)")
        predict_seconds = timed_command(
            ["predict", "--model", str(output), "--input", "mine.txt", "--output", "mine.jsonl"], work / "predict.log"
        )
        results = json.loads((output / "results.json").read_text())
        training_args = json.loads((output / "training_args.json").read_text())
        from lightner.formats import read_conll

        test = read_conll(results["data"])
        scoring = {}
        for lengths in (None, "gold", "limit"):
            log(f"scoring {len(test)} test sentences, outputs {lengths or 'as written'}")
            scoring[lengths or "as_written"] = timed_scoring(output, test, training_args["eval_batch_size"], lengths)
    first_run = train_seconds - scoring["as_written"]["seconds"] + scoring["gold"]["seconds"] + predict_seconds
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "train_command_seconds": train_seconds,
        "predict_command_seconds": predict_seconds,
        "main_job_seconds": train_seconds + predict_seconds,
        "test_sentences": len(test),
        "gold_entities": sum(len(s.entities) for s in test),
        "scoring": scoring,
        "first_run_seconds_gold_lengths": first_run,
        "first_run_seconds_limit_lengths": first_run - scoring["gold"]["seconds"] + scoring["limit"]["seconds"],
    }
    log(f"main job as run: {report['main_job_seconds']:.0f} s (train+score {train_seconds:.0f} s, predict "
        f"{predict_seconds:.0f} s)")  # fmt: skip
    for name, figures in scoring.items():
        log(f"scoring, outputs {name}: {figures['seconds']:.0f} s, {figures['output_indices']} output indices, "
            f"{figures['entities_predicted']} entities")  # fmt: skip
    log(f"first run with gold-length outputs: {first_run / 60:.1f} min; with limit-length outputs: "
        f"{report['first_run_seconds_limit_lengths'] / 60:.1f} min")  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
