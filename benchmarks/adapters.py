#!/usr/bin/env python
"""Adapters on a shared backbone: file sizes, memory for 1 versus 10 adapters, mixed-adapter batch throughput.

On random weights of the bart-large shape (nothing is downloaded) with the real tokenizer from the shared assets:

1. the adapter file in fp32 and fp16 against the full model (backbone plus adapter) in fp32;
2. resident memory of a process holding one bart-large-shaped backbone with 1 and with 10 adapters loaded from
   their files (each count in its own subprocess; steady-state VmRSS after loading, and the peak VmHWM);
3. greedy generation throughput over CoNLL-2003 test sentences at batch 32 with one adapter for the whole batch
   versus a batch mixing 10 adapters round-robin (one forward pass, per-example prompts). Decoding is forced to the
   reference's maximum length (`</s>` made unreachable) so both do the same work.

    python benchmarks/adapters.py --json           # full setting
    python benchmarks/adapters.py --quick --json   # smaller setting

Targets: 10 adapters cost at most 10 x adapter size + 5% over one; mixed-batch throughput within 10% of one adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_assets import TEST_FILE, TOKENIZER_DIR, shared_dir

TYPE_SETS = [
    ["LOC", "PER", "ORG", "MISC"],
    ["TITLE", "DIRECTOR", "ACTOR", "GENRE", "YEAR"],
    ["fromloc.city_name", "toloc.city_name", "airline_name"],
]


def memory_mb() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def bart_large_backbone(seed: int):
    import torch
    from transformers import BartConfig, BartModel

    torch.manual_seed(seed)
    return BartModel(BartConfig()).eval()


def read_words(shared: Path, limit: int) -> list[list[str]]:
    from lightner.formats import read_conll

    return [s.words for s in read_conll(shared.joinpath(*TEST_FILE))[:limit]]


def make_adapters(folder: Path, count: int, shared: Path) -> tuple[list[Path], int]:
    """`count` adapter folders with random prompts, label sets cycling through three domains (and the first one
    again in fp16); returns them with the backbone's parameter count."""
    import torch
    from transformers import AutoTokenizer

    from lightner.configuration_lightner import LightNerConfig
    from lightner.modeling_lightner import LightNerModel

    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    backbone = bart_large_backbone(0)
    folders = []
    for index in range(count):
        config = LightNerConfig(backbone="facebook/bart-large", entity_types=TYPE_SETS[index % len(TYPE_SETS)])
        model = LightNerModel(config, backbone=backbone, tokenizer=tokenizer, reparameterize=False)
        with torch.no_grad():
            for tensor in model.prompt_encoder.prompts.values():
                tensor.normal_(0, 1.0, generator=torch.Generator().manual_seed(index))
        model.save_pretrained(folder / f"adapter{index}")
        folders.append(folder / f"adapter{index}")
        if index == 0:
            model.save_pretrained(folder / "adapter0-fp16", adapter_dtype="float16")
    return folders, sum(p.numel() for p in backbone.parameters())


def load_model(folders: list[Path], shared: Path):
    from transformers import AutoTokenizer

    from lightner.modeling_lightner import LightNerModel

    tokenizer = AutoTokenizer.from_pretrained(shared.joinpath(*TOKENIZER_DIR))
    model = LightNerModel.from_pretrained(folders[0], backbone=bart_large_backbone(0), tokenizer=tokenizer)
    for index, folder in enumerate(folders[1:], start=1):
        model.load_adapter(folder, adapter_name=f"adapter{index}")
    return model


def memory_worker(folders: list[Path], shared: Path) -> dict:
    import gc

    model = load_model(folders, shared)
    gc.collect()
    return {"adapters": len(model.list_adapters()), **memory_mb()}


def throughput_worker(folders: list[Path], shared: Path, sentences: int, batch_size: int, repeats: int) -> dict:
    import torch

    from lightner.tokenization_utils import END_INDEX, collate, encode_sentences

    torch.manual_seed(0)
    model = load_model(folders, shared)
    decode = model.decode

    def decode_without_end(*args, **kwargs):  # force every output to the length limit: same work for both
        scores = decode(*args, **kwargs)
        scores[..., END_INDEX] = torch.finfo(scores.dtype).min
        return scores

    model.decode = decode_without_end
    encoded = encode_sentences(model.tokenizer, read_words(shared, sentences))
    names = model.list_adapters()
    timings = {}
    for setting in ("one adapter", "mixed adapters"):
        start = time.perf_counter()
        for _ in range(repeats):
            for first in range(0, len(encoded), batch_size):
                chunk = encoded[first : first + batch_size]
                batch = collate(chunk, model.tokenizer.pad_token_id)
                rows = None if setting == "one adapter" else [names[i % len(names)] for i in range(len(chunk))]
                with torch.inference_mode():
                    model.generate(**batch, word_starts=[e.word_starts for e in chunk], adapter_names=rows)
        timings[setting] = repeats * len(encoded) / (time.perf_counter() - start)
    return {"sentences_per_s": timings}


def run_subprocess(kind: str, args, folders: list[Path]) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--folders", json.dumps([str(f) for f in folders])]
    command += [
        "--sentences",
        str(args.sentences),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="32 sentences, one repeat")
    parser.add_argument("--sentences", type=int, default=128, help="CoNLL-2003 test sentences to generate for")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folders", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shared = shared_dir(TEST_FILE)
    if args.worker:
        folders = [Path(f) for f in json.loads(args.folders)]
        if args.worker == "memory":
            result = memory_worker(folders, shared)
        else:
            result = throughput_worker(folders, shared, args.sentences, args.batch_size, args.repeats)
        print(json.dumps(result))
        return
    if args.quick:
        args.sentences, args.repeats = 32, 1
    with tempfile.TemporaryDirectory() as tmp:
        folders, backbone_parameters = make_adapters(Path(tmp), 10, shared)
        adapter_mb = os.path.getsize(folders[0] / "model.safetensors") / 2**20
        adapter_fp16_mb = os.path.getsize(Path(tmp) / "adapter0-fp16" / "model.safetensors") / 2**20
        one = run_subprocess("memory", args, folders[:1])
        ten = run_subprocess("memory", args, folders)
        speed = run_subprocess("throughput", args, folders)["sentences_per_s"]
    backbone_mb = backbone_parameters * 4 / 2**20
    extra_mb = ten["VmRSS"] - one["VmRSS"]
    budget_mb = 10 * adapter_mb + 0.05 * one["VmRSS"]
    report = {
        "adapter_file_mb_fp32": round(adapter_mb, 3),
        "adapter_file_mb_fp16": round(adapter_fp16_mb, 3),
        "full_model_mb_fp32": round(backbone_mb + adapter_mb, 1),
        "adapter_share_of_full_model": round(adapter_mb / (backbone_mb + adapter_mb), 5),
        "rss_mb_1_adapter": round(one["VmRSS"], 1),
        "rss_mb_10_adapters": round(ten["VmRSS"], 1),
        "peak_rss_mb_1_adapter": round(one["VmHWM"], 1),
        "peak_rss_mb_10_adapters": round(ten["VmHWM"], 1),
        "extra_mb_for_9_more_adapters": round(extra_mb, 1),
        "memory_budget_mb": round(budget_mb, 1),
        "memory_target_met": extra_mb <= budget_mb,
        "sentences_per_s_one_adapter": round(speed["one adapter"], 3),
        "sentences_per_s_mixed_adapters": round(speed["mixed adapters"], 3),
        "mixed_over_one_throughput": round(speed["mixed adapters"] / speed["one adapter"], 3),
        "throughput_target_met": speed["mixed adapters"] >= 0.9 * speed["one adapter"],
        "sentences": args.sentences,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
    }
    for key, value in report.items():
        print(f"{key:32} {value}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
