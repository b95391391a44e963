"""Speed of `lightner predict` on one process and on several (`accelerate launch --multi_gpu --num_processes N`), on
this machine's CPU cores, and a check that both write the same bytes.

    python benchmarks/predict.py --backbone DIR [--documents 48] [--processes 2] [--batch-size 8]

DIR is a BART folder (config, safetensors weights, tokenizer files); random weights of the bart-large shape time the
same as pretrained ones per decoder step, but decode to the length limit (nothing teaches them to stop), so the
absolute documents/s are a lower bound; the speed-up is the figure this script is for. Without --backbone, a random
bart-large-shaped backbone is written to a temporary folder with the tokenizer of `$LIGHTNER_SHARED_DIR` (or
../shared)/assets/bart-large-tokenizer. Documents are the first N sentences of CoNLL-2003 test.txt, one per line.
Each run gets the machine's cores split evenly (OMP_NUM_THREADS = cores / processes), and the two runs run one after
the other. Prints a table and one JSON line: the speed-up, whether the outputs are byte-identical, whether they hold
the same entities, and the largest score difference (threads change the order of additions; see `compare`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_assets import TEST_FILE, shared_dir  # noqa: E402


def random_bart_large(folder: Path, tokenizer_dir: Path) -> Path:
    """A random bart-large-shaped backbone with the real tokenizer, saved as safetensors."""
    import torch
    from transformers import BartConfig, BartModel

    torch.manual_seed(0)
    BartModel(BartConfig()).save_pretrained(folder)
    for name in os.listdir(tokenizer_dir):
        if name != "README.md":
            shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def make_adapter(backbone: Path, folder: Path) -> Path:
    from lightner.modeling_lightner import LightNerModel

    LightNerModel.from_backbone(str(backbone), ["PER", "LOC", "ORG", "MISC"]).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_run(processes: int, argv: list[str], cores: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": str(max(1, cores // processes))}
    launch = [sys.executable, "-m", "lightner"]
    if processes > 1:
        launch = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "lightner",
        ]  # fmt: skip
    start = time.perf_counter()
    completed = subprocess.run([*launch, *argv], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{completed.stderr[-3000:]}")
    return seconds


def compare(first: Path, second: Path) -> tuple[bool, float]:
    """Whether two outputs hold the same entities (spans and types) for the same texts, and the largest difference
    between their scores. With a different number of threads per process, matrix products add in another order, so
    scores may differ in their last digits: the tests compare runs with one thread per process, byte for byte."""
    pairs = list(zip(*(map(json.loads, path.read_text(encoding="utf-8").splitlines()) for path in (first, second))))
    keys = [
        [(r["text"], [(e["start"], e["end"], e["entity_group"]) for e in r["entities"]]) for r in pair]
        for pair in pairs
    ]
    same = all(a == b for a, b in keys)
    gaps = [abs(x["score"] - y["score"]) for a, b in pairs for x, y in zip(a["entities"], b["entities"])]
    return same, max(gaps, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", type=Path, help="BART folder (default: random bart-large in a temp folder)")
    parser.add_argument("--documents", type=int, default=48)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from lightner.formats import read_conll

    shared = shared_dir(TEST_FILE)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        backbone = args.backbone or random_bart_large(work / "backbone", shared / "assets" / "bart-large-tokenizer")
        adapter = make_adapter(backbone, work / "adapter")
        sentences = read_conll(shared / "data" / "lightner" / "conll2003" / "test.txt")[: args.documents]
        corpus = work / "corpus.txt"
        corpus.write_text("".join(" ".join(s.words) + "\n" for s in sentences), encoding="utf-8")
        base = ["predict", "--model", str(adapter), "--input", str(corpus), "--batch-size", str(args.batch_size)]
        outputs = {n: work / f"out-{n}.jsonl" for n in (1, args.processes)}
        seconds = {n: timed_run(n, [*base, "--output", str(path)], cores) for n, path in outputs.items()}
        identical = outputs[1].read_bytes() == outputs[args.processes].read_bytes()
        same_entities, score_gap = compare(outputs[1], outputs[args.processes])
    rates = {n: args.documents / s for n, s in seconds.items()}
    speedup = seconds[1] / seconds[args.processes]
    print(f"{'processes':>9}  {'seconds':>8}  {'docs/s':>7}", file=sys.stderr)
    for n in seconds:
        print(f"{n:>9}  {seconds[n]:>8.1f}  {rates[n]:>7.2f}", file=sys.stderr)
    print(
        f"speed-up {speedup:.2f}x on {cores} cores; outputs byte-identical: {identical}; same entities: "
        f"{same_entities}, largest score difference {score_gap:.1e}",
        file=sys.stderr,
    )
    figures = {"documents": args.documents, "cores": cores, "seconds": seconds, "speedup": speedup}
    print(
        json.dumps(
            {**figures, "identical": identical, "same_entities": same_entities, "max_score_difference": score_gap}
        )
    )


if __name__ == "__main__":
    main()
