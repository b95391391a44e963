#!/usr/bin/env python
"""Threads under load: the same generation on quiet cores and beside busy processes, with a fixed thread count and
with `--threads auto` (`lightner.threads.AdaptiveThreads`), and what MKL's reproducible mode costs.

The work is `benchmarks/run.py`'s: random bart-large-shaped weights, the first `--sentences` CoNLL-2003 test sentences
in one batch, greedy decoding forced to `--steps` steps (`run.force_full_length`), in float32 and int8. Each setting
runs `--repeats` times, settings interleaved, and the best time is kept. Loads are `run.COMPETITOR` processes (each a
single thread multiplying matrices without pause). The process runs with `MKL_CBWR=AUTO,STRICT`, as the `lightner`
command does; `--cost` also times the same float32 generation in two fresh processes, with and without it.

    python benchmarks/threads.py --json              # about 10 minutes on 2 cores
    python benchmarks/threads.py --quick             # a smoke run: 8 sentences, 4 steps

A table goes to stderr; with `--json`, one JSON object goes to stdout. Run it on otherwise quiet cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

from run import competing_load, forced_generate, forced_workload, longest_first, low_precision_model

from shared_assets import REPO_ROOT, log

sys.path.insert(0, str(REPO_ROOT))

from lightner.threads import REPRODUCIBLE_MKL, AdaptiveThreads, allowed_cpus, make_products_reproducible  # noqa: E402

# (competing processes, threads): fixed counts and "auto", quiet and beside one and two busy processes.
SETTINGS = [(0, "fixed"), (0, "one"), (0, "auto"), (1, "fixed"), (1, "one"), (1, "auto"), (2, "fixed"), (2, "auto")]


def generation(args):
    """A function that runs the forced generation once with `model` and returns its seconds, and the two models."""
    import torch

    model, bart, tokenizer, _, encoded = forced_workload(args.sentences, seed=0)
    _, batch = longest_first(encoded, len(encoded), tokenizer.pad_token_id)[0]

    def seconds(which) -> float:
        started = time.perf_counter()
        forced_generate(torch, which, batch, args.steps)
        return time.perf_counter() - started

    models = {"fp32": model}
    if not args.fp32_only:
        models["int8"] = low_precision_model(model, bart, tokenizer, "int8")
    for which in models.values():  # warm-up: thread pools, allocator, packing
        seconds(which)
    return seconds, models


def threads_block(kind: str, most: int):
    """The block a setting runs in: `most` threads, 1 thread, or `AdaptiveThreads` starting from `most`."""
    import torch

    torch.set_num_threads(1 if kind == "one" else most)
    return AdaptiveThreads() if kind == "auto" else contextlib.nullcontext()


def measure_settings(args) -> list[dict]:
    import torch

    most = torch.get_num_threads()
    seconds, models = generation(args)
    best: dict[tuple, dict] = {}
    for _ in range(args.repeats):
        for competitors, kind in SETTINGS:
            if competitors > args.max_competitors:
                continue
            with competing_load(competitors) if competitors else contextlib.nullcontext():
                for precision, model in models.items():
                    with threads_block(kind, most) as block:
                        taken = seconds(model)
                    chosen = getattr(block, "changes", [])
                    key = (competitors, kind, precision)
                    log(f"{precision}, {competitors} competing, threads {kind}: {taken:.1f} s {chosen or ''}")
                    if key not in best or taken < best[key]["seconds"]:
                        best[key] = {
                            "competitors": competitors,
                            "threads": kind,
                            "precision": precision,
                            "seconds": round(taken, 2),
                            "threads_chosen": chosen,
                        }
    torch.set_num_threads(most)
    return list(best.values())


def reproducible_mode_cost(args) -> dict:
    """Seconds of the same float32 generation in fresh processes with and without `MKL_CBWR`, alternating."""
    results: dict[str, list[float]] = {"strict": [], "default": []}
    for _ in range(args.repeats):
        for mode in results:
            env = {key: value for key, value in os.environ.items() if key not in REPRODUCIBLE_MKL}
            env.update(REPRODUCIBLE_MKL if mode == "strict" else {name: "" for name in REPRODUCIBLE_MKL})
            command = [sys.executable, __file__, "--worker-seconds", "--sentences", str(args.sentences)]
            command += ["--steps", str(args.steps)]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            results[mode].append(float(output.split()[-1]))
            log(f"MKL {mode}: {results[mode][-1]:.1f} s")
    best = {mode: min(values) for mode, values in results.items()}
    return {**best, "strict_over_default": round(best["strict"] / best["default"], 3)}


def print_table(report: dict) -> None:
    rows = {(r["competitors"], r["threads"], r["precision"]): r for r in report["settings"]}
    quiet = {precision: rows[(0, "fixed", precision)]["seconds"] for _, _, precision in rows}
    print(f"{report['sentences']} sentences x {report['steps']} steps; {report['cpus']} cores", file=sys.stderr)
    print("competing  threads  precision  seconds  over quiet  chosen", file=sys.stderr)
    for (competitors, kind, precision), row in sorted(rows.items()):
        over = row["seconds"] / quiet[precision]
        cells = f"{competitors:9d}  {kind:7s}  {precision:9s}  {row['seconds']:7.1f}  {over:10.2f}"
        print(f"{cells}  {row['threads_chosen']}", file=sys.stderr)
    if "mkl" in report:
        print(f"MKL reproducible mode: {report['mkl']}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-competitors", type=int, default=2)
    parser.add_argument("--fp32-only", action="store_true")
    parser.add_argument("--cost", action="store_true", help="also time MKL's reproducible mode against its default")
    parser.add_argument("--quick", action="store_true", help="8 sentences, 4 steps, 1 repeat, 1 competitor")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker-seconds", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.steps, args.repeats, args.max_competitors = 8, 4, 1, 1
    if args.worker_seconds:  # one float32 timing in this process's MKL mode (set by the parent's environment)
        seconds, models = generation(argparse.Namespace(**{**vars(args), "fp32_only": True}))
        print(min(seconds(models["fp32"]) for _ in range(2)))
        return 0
    make_products_reproducible()
    report = {"sentences": args.sentences, "steps": args.steps, "cpus": len(allowed_cpus())}
    report["settings"] = measure_settings(args)
    if args.cost:
        report["mkl"] = reproducible_mode_cost(args)
    print_table(report)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
