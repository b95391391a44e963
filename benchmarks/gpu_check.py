#!/usr/bin/env python
"""On a CUDA machine: do half-precision training and cached generation on the GPU agree with float32 on the CPU, and
how fast are they?

    python benchmarks/gpu_check.py [--sentences 64] [--batch-size 16] [--dtypes bf16 fp16] [--json]

Without CUDA it says so and exits 0: there is nothing to check, and nothing is reported as checked.

The model is a random bart-large-shaped backbone (`BartModel(BartConfig())`, seeded) under a fresh CoNLL-2003 adapter
(seeded, dropout 0 so that a training step is deterministic), with the real tokenizer; the data are the first
`--sentences` sentences of CoNLL-2003 test.txt (the shared assets, as the other benchmarks). The same weights are
copied to the GPU, and for each dtype:

1. **Training step** (autocast in that dtype, as `accelerate`'s mixed precision runs it, parameters float32): the loss
   and the gradient norm of the trainable parameters must be within `TOLERANCE[dtype]` (relative) of the float32 CPU
   step on the same batch.
2. **Cached generation** (the whole model cast to that dtype, greedy, `model.predict`): the fraction of sentences whose
   entities (spans and types) equal the float32 CPU ones must be at least `MIN_SAME_ENTITIES`, and on those sentences
   the entity scores must differ by at most `TOLERANCE[dtype]` (absolute). Random weights make near-ties between
   outputs more frequent than a trained model does, so a few flips are expected and allowed.

Speed: sentences/s of the training step (mean of 5 after a warm-up) and of generation, each with
`torch.cuda.synchronize()` around the timed part. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

from shared_assets import TEST_FILE, TOKENIZER_DIR, shared_dir

# bf16 keeps 8 bits of mantissa (relative error ~4e-3 per operation), fp16 11 bits (~5e-4); summed over the 24 layers
# of bart-large, a few percent for bf16 and half a percent for fp16 are what rounding alone gives.
TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2}
MIN_SAME_ENTITIES = 0.9
TIMED_STEPS = 5


def build(shared, sentences_count: int):
    import torch
    from transformers import AutoTokenizer, BartConfig, BartModel

    from lightner.configuration_lightner import LightNerConfig
    from lightner.data import entity_types
    from lightner.formats import read_conll
    from lightner.modeling_lightner import LightNerModel

    sentences = [s for s in read_conll(shared.joinpath(*TEST_FILE)) if s.words][:sentences_count]
    types = entity_types(sentences)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    config = LightNerConfig(backbone="facebook/bart-large", entity_types=types, dropout=0.0)
    model = LightNerModel(config, backbone=BartModel(BartConfig()), tokenizer=tokenizer)
    return model, sentences, types


def training_step(model, batch, device: str, dtype=None) -> tuple[float, float]:
    """Loss and gradient norm of one forward and backward pass (autocast in `dtype` when given)."""
    import torch

    model.train()
    model.zero_grad(set_to_none=True)
    batch = {key: value.to(device) for key, value in batch.items()}
    with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        loss = model(**batch).loss
    loss.backward()
    norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    return loss.item(), norm.item()


def compare_predictions(reference: list, other: list, tolerance: float) -> dict:
    same = [i for i, (a, b) in enumerate(zip(reference, other)) if _spans(a) == _spans(b)]
    score_gap = max(
        (abs(x["score"] - y["score"]) for i in same for x, y in zip(_sorted(reference[i]), _sorted(other[i]))),
        default=0.0,
    )
    fraction = len(same) / len(reference)
    return {
        "same_entities_fraction": fraction,
        "max_score_difference": score_gap,
        "ok": fraction >= MIN_SAME_ENTITIES and score_gap <= tolerance,
    }


def _sorted(entities: list[dict]) -> list[dict]:
    return sorted(entities, key=lambda e: (e["start"], e["end"], e["type"]))


def _spans(entities: list[dict]) -> list[tuple]:
    return [(e["start"], e["end"], e["type"]) for e in _sorted(entities)]


def check(args: argparse.Namespace) -> dict:
    import torch

    from lightner.tokenization_utils import collate
    from lightner.train import encode_examples

    shared = shared_dir(TEST_FILE)
    cpu_model, sentences, types = build(shared, args.sentences)
    examples = encode_examples(cpu_model.tokenizer, sentences[: args.batch_size], types, 1024)
    batch = collate([s for s, _ in examples], cpu_model.tokenizer.pad_token_id, [t for _, t in examples])
    reference_loss, reference_norm = training_step(cpu_model, batch, "cpu")
    cpu_model.eval()
    reference_entities = cpu_model.predict([s.words for s in sentences], batch_size=args.batch_size)

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    report = {"device": torch.cuda.get_device_name(0), "sentences": len(sentences), "checks": {}}
    for name in args.dtypes:
        gpu_model = copy.deepcopy(cpu_model).to("cuda")
        loss, norm = training_step(gpu_model, batch, "cuda", dtypes[name])
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            training_step(gpu_model, batch, "cuda", dtypes[name])
        torch.cuda.synchronize()
        train_rate = TIMED_STEPS * len(examples) / (time.perf_counter() - start)

        gpu_model = gpu_model.to(dtypes[name]).eval()
        gpu_model.predict([s.words for s in sentences[: args.batch_size]], batch_size=args.batch_size)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        entities = gpu_model.predict([s.words for s in sentences], batch_size=args.batch_size)
        torch.cuda.synchronize()
        generation_rate = len(sentences) / (time.perf_counter() - start)

        tolerance = TOLERANCE[name]
        train_ok = abs(loss - reference_loss) <= tolerance * abs(reference_loss) and abs(
            norm - reference_norm
        ) <= tolerance * abs(reference_norm)
        report["checks"][name] = {
            "tolerance": tolerance,
            "training": {
                "loss": loss,
                "cpu_fp32_loss": reference_loss,
                "grad_norm": norm,
                "cpu_fp32_grad_norm": reference_norm,
                "ok": train_ok,
                "sentences_per_second": train_rate,
            },
            "generation": {
                **compare_predictions(reference_entities, entities, tolerance),
                "sentences_per_second": generation_rate,
            },
        }
        del gpu_model
        torch.cuda.empty_cache()
    report["ok"] = all(c["training"]["ok"] and c["generation"]["ok"] for c in report["checks"].values())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtypes", nargs="+", choices=("bf16", "fp16"), default=["bf16", "fp16"])
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON object on stdout")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "No CUDA device on this machine (torch.cuda.is_available() is False): nothing was checked.",
            file=sys.stderr,
        )
        return 0
    if "bf16" in args.dtypes and not torch.cuda.is_bf16_supported():
        print(f"{torch.cuda.get_device_name(0)} has no bfloat16: checking fp16 only.", file=sys.stderr)
        args.dtypes = [d for d in args.dtypes if d != "bf16"]
    report = check(args)
    for name, result in report["checks"].items():
        training, generation = result["training"], result["generation"]
        verdict = {True: "ok", False: "FAILED"}
        print(
            f"{name} (tolerance {result['tolerance']}): training step loss {training['loss']:.5f} vs CPU fp32 "
            f"{training['cpu_fp32_loss']:.5f}, grad norm {training['grad_norm']:.5f} vs "
            f"{training['cpu_fp32_grad_norm']:.5f} [{verdict[training['ok']]}], "
            f"{training['sentences_per_second']:.1f} sentences/s; generation same entities "
            f"{generation['same_entities_fraction']:.1%}, max score difference "
            f"{generation['max_score_difference']:.2e} [{verdict[generation['ok']]}], "
            f"{generation['sentences_per_second']:.1f} sentences/s",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
