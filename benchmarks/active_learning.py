#!/usr/bin/env python
"""The annotation loop, simulated: does choosing the next sentences by the model's uncertainty (`lightner select`)
reach a given F1 with fewer labels than choosing them at random?

MIT Restaurant on `assets/bart-mini`: the pool is the 500-shot training file with its labels hidden until a sentence
is "labelled"; each seed starts from the same 10 random sentences for every strategy, trains an adapter on them
(from the backbone, the quickstart's settings: lr 3e-3, dropout 0, batch 3, 60 epochs), then for each round ranks
the rest of the pool with the adapter (`lightner.select.choose`), adds the top 10, and trains again from the
last round's adapter (`--init-from`, `ROUND_EPOCHS` epochs), or with `--from-backbone` from the backbone at the first
round's settings: a warm start costs a third of the time, but a warm-started adapter barely moves with new labels
(F1 4.0 -> 4.4 from 10 to 60 random labels in an earlier session), which hides any difference the selection makes.
Every round's adapter is scored on the first `--test-limit` sentences of the test file (entity-level F1).

    python benchmarks/active_learning.py --seeds 0 1 2            # about 35 minutes a seed (4 strategies), 1 thread
    python benchmarks/active_learning.py --seeds 0 1 2 --from-backbone --work-dir runs/active-learning-backbone
    python benchmarks/active_learning.py --report                 # table + docs/active_learning.png from runs/

Each round's result is kept in `--work-dir` (default `runs/active-learning`): a rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from shared_assets import REPO_ROOT, log, shared_dir

sys.path.insert(0, str(REPO_ROOT))

BART_MINI = REPO_ROOT / "assets" / "bart-mini"
DATA = ("data", "lightner", "mit-restaurant")
STRATEGIES = ("random", "sequence", "margin", "diverse")
START, STEP, ROUNDS = 10, 10, 5
FIRST_EPOCHS, ROUND_EPOCHS = 60, 20
PLOT = REPO_ROOT / "docs" / "active_learning.png"


def train_round(train_file: Path, test_file: Path, folder: Path, seed: int, init_from: Path | None) -> dict:
    """One adapter as `lightner train` makes it: from the backbone, or from the last round's adapter."""
    from lightner.train import LightNerTrainingArguments, train

    args = LightNerTrainingArguments(
        train_file=str(train_file),
        test_file=str(test_file),
        output_dir=str(folder),
        backbone=str(BART_MINI),
        epochs=ROUND_EPOCHS if init_from else FIRST_EPOCHS,
        batch_size=3,
        learning_rate=3e-3,
        max_length_a=0.8,
        dropout=0.0,
        seed=seed,
        checkpoint_steps=10**9,
        overwrite=True,
        init_from=str(init_from) if init_from else None,
    )
    return train(args)


def choose(strategy: str, folder: Path, pool, unlabelled: list[int], seed: int) -> list[int]:
    """The next `STEP` pool indices under `strategy`, ranked with the adapter in `folder`."""
    from lightner.modeling_lightner import LightNerModel
    from lightner.select import choose as choose_indices

    model = None if strategy == "random" else LightNerModel.from_pretrained(str(folder))
    words = [pool[i].words for i in unlabelled]
    chosen, _ = choose_indices(strategy, words, STEP, model, batch_size=32, seed=seed * 1000 + len(unlabelled))
    return [unlabelled[i] for i in chosen]


def run_seed(work: Path, pool, test_file: Path, seed: int, strategies, from_backbone: bool = False) -> None:
    """Every round of every strategy for one seed; round 0 (the same 10 sentences) is trained once for all. With
    `from_backbone` each round's adapter starts from the backbone rather than from the last round's."""
    from lightner.formats import write_jsonl

    initial = sorted(random.Random(seed).sample(range(len(pool)), START))
    for strategy in strategies:
        labelled = list(initial)
        previous = None
        for round_number in range(ROUNDS + 1):
            name = "round0" if round_number == 0 else f"{strategy}/round{round_number}"
            folder = work / f"seed{seed}" / name
            done = folder / "round.json"
            if done.exists():
                record = json.loads(done.read_text())
            else:
                folder.mkdir(parents=True, exist_ok=True)
                train_file = folder / "labelled.jsonl"
                write_jsonl([pool[i] for i in labelled], train_file)
                started = time.perf_counter()
                init_from = None if from_backbone else previous
                results = train_round(train_file, test_file, folder / "adapter", seed, init_from)
                record = {"labelled": labelled, "f1": results["f1"], "seconds": 0.0}
                unlabelled = [i for i in range(len(pool)) if i not in set(labelled)]
                if round_number < ROUNDS:
                    chosen_by = strategy if round_number else "random"  # round 0's own choice is random's
                    record["chosen"] = choose(chosen_by, folder / "adapter", pool, unlabelled, seed)
                record["seconds"] = round(time.perf_counter() - started, 1)
                done.write_text(json.dumps(record) + "\n")
                log(f"seed {seed} {name}: {len(labelled)} labels, F1 {record['f1']:.4f} ({record['seconds']} s)")
            if round_number == 0 and "chosen" not in record:
                raise RuntimeError(f"{done} has no choice")
            if round_number < ROUNDS:
                # Round 0 is shared: its stored choice is random's; the others rank with round 0's adapter again.
                chosen = record["chosen"] if round_number > 0 or strategy == "random" else None
                if chosen is None:
                    cache = folder / f"chosen-{strategy}.json"
                    if not cache.exists():
                        unlabelled = [i for i in range(len(pool)) if i not in set(labelled)]
                        cache.write_text(json.dumps(choose(strategy, folder / "adapter", pool, unlabelled, seed)))
                    chosen = json.loads(cache.read_text())
                labelled = labelled + chosen
            previous = folder / "adapter"


def curves(work: Path) -> dict[str, dict[int, dict[int, float]]]:
    """F1 per strategy, per number of labels, per seed that finished that round."""
    table: dict[str, dict[int, dict[int, float]]] = {strategy: {} for strategy in STRATEGIES}
    for seed_dir in sorted(work.glob("seed*")):
        seed = int(seed_dir.name.removeprefix("seed"))
        zero = seed_dir / "round0" / "round.json"
        if not zero.exists():
            continue
        first = json.loads(zero.read_text())["f1"]
        for strategy in STRATEGIES:
            table[strategy].setdefault(START, {})[seed] = first
            for round_number in range(1, ROUNDS + 1):
                path = seed_dir / strategy / f"round{round_number}" / "round.json"
                if path.exists():
                    labels = START + STEP * round_number
                    table[strategy].setdefault(labels, {})[seed] = json.loads(path.read_text())["f1"]
    return table


def complete_seeds(table: dict[str, dict[int, dict[int, float]]]) -> list[int]:
    """The seeds every strategy finished every round of: strategies are compared on these only (paired), since
    the seeds' starting sentences differ far more than the strategies do."""
    final = START + STEP * ROUNDS
    sets = [set(table[strategy].get(final, {})) for strategy in STRATEGIES]
    return sorted(set.intersection(*sets)) if sets else []


def labels_to_reach(curve: dict[int, float], target: float) -> float | None:
    """Labels at which a mean curve first reaches `target`, interpolated linearly between rounds; None if never."""
    points = sorted(curve.items())
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if y0 >= target:
            return float(x0)
        if y1 >= target:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return float(points[0][0]) if points and points[0][1] >= target else None


def report(work: Path, pool) -> str:
    """The Markdown table (mean ± sd over the seeds every strategy finished, per round) and the labels each strategy
    needs to reach random selection's final F1; the plot goes to `PLOT`."""
    table = curves(work)
    seeds = complete_seeds(table)
    if not seeds:
        return "no seed has finished every strategy's rounds yet"
    counts = [START + STEP * round_number for round_number in range(ROUNDS + 1)]
    lines = [
        f"F1 × 100 on the first 500 test sentences, mean ± sd over seeds {', '.join(map(str, seeds))}:",
        "",
        "| labels | " + " | ".join(STRATEGIES) + " |",
        "|---" * (len(STRATEGIES) + 1) + "|",
    ]
    means: dict[str, dict[int, float]] = {strategy: {} for strategy in STRATEGIES}
    for labels in counts:
        cells = []
        for strategy in STRATEGIES:
            values = [table[strategy][labels][seed] for seed in seeds]
            means[strategy][labels] = statistics.mean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * means[strategy][labels]:.1f} ± {100 * sd:.1f}")
        lines.append(f"| {labels} | " + " | ".join(cells) + " |")
    final = counts[-1]
    target = means["random"][final]
    lines += ["", f"Random selection's mean F1 with {final} labels: {100 * target:.2f}."]
    for strategy in STRATEGIES:
        needed = labels_to_reach(means[strategy], target)
        if needed is None:
            lines.append(f"- {strategy}: never reaches it within {final} labels")
        else:
            lines.append(
                f"- {strategy}: reaches it with {needed:.0f} labels ({100 * (1 - needed / final):.0f}% fewer)"
            )
    lines.append(
        "(Random's own curve is the yardstick: when it reaches its final F1 well before its final round, F1 is not "
        "rising with labels, and the labels-saved figure measures noise, not selection.)"
    )
    for strategy in STRATEGIES[1:]:
        gaps = [100 * (table[strategy][final][seed] - table["random"][final][seed]) for seed in seeds]
        described = ", ".join(f"{gap:+.2f}" for gap in gaps)
        lines.append(f"- {strategy} minus random at {final} labels, per seed (F1 × 100): {described}")
    lines.append(
        f"Less noisy than one round: each seed's mean F1 over the selected rounds ({counts[1]}-{counts[-1]} labels), "
        "strategy minus random on the same seed (F1 × 100), and the mean gap ± its standard error:"
    )
    for strategy in STRATEGIES[1:]:
        gaps = [100 * curve_gap(table, strategy, seed, counts[1:]) for seed in seeds]
        error = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("nan")
        described = ", ".join(f"{gap:+.2f}" for gap in gaps)
        lines.append(f"- {strategy}: {described}; mean {statistics.mean(gaps):+.2f} ± {error:.2f}")
    lines += ["What each strategy chose (rounds 1-5, the seeds above), per sentence against the pool's:"]
    lines += [f"- {line}" for line in chosen_profile(work, pool, seeds)]
    plot(means, seeds)
    return "\n".join(lines)


def chosen_profile(work: Path, pool, seeds: list[int]) -> list[str]:
    """Mean words and gold entities per sentence each strategy added: a sentence is the unit the target counts,
    but a long sentence with many entities costs its annotator more and teaches the adapter more."""

    def described(name: str, sentences) -> str:
        words = statistics.mean(len(sentence.words) for sentence in sentences)
        entities = statistics.mean(len(sentence.entities) for sentence in sentences)
        return f"{name}: {words:.1f} words, {entities:.2f} entities"

    profile = [described("pool", pool)]
    for strategy in STRATEGIES:
        added = []
        for seed in seeds:
            for round_number in range(1, ROUNDS + 1):
                path = work / f"seed{seed}" / strategy / f"round{round_number}" / "round.json"
                added += [pool[i] for i in json.loads(path.read_text())["labelled"][-STEP:]]
        profile.append(described(strategy, added))
    return profile


def curve_gap(table: dict, strategy: str, seed: int, counts: list[int]) -> float:
    """`strategy`'s mean F1 over the rounds at `counts` labels minus random selection's, on one seed: the same
    starting adapter and test set, so the seed's own luck cancels."""
    return statistics.mean(table[strategy][labels][seed] - table["random"][labels][seed] for labels in counts)


def plot(means: dict[str, dict[int, float]], seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for strategy, curve in means.items():
        points = sorted(curve.items())
        axes.plot([x for x, _ in points], [100 * y for _, y in points], marker="o", label=strategy)
    axes.set_xlabel("labelled sentences")
    axes.set_ylabel("test F1 (first 500 sentences)")
    axes.set_title(f"MIT Restaurant on bart-mini, mean over seeds {', '.join(map(str, seeds))}")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--test-limit", type=int, default=500)
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "runs" / "active-learning")
    parser.add_argument(
        "--from-backbone", action="store_true", help="train every round from the backbone, not the last adapter"
    )
    parser.add_argument("--report", action="store_true", help="only print the table and draw the plot")
    args = parser.parse_args()
    from lightner.formats import read_conll, write_jsonl

    data = shared_dir(DATA).joinpath(*DATA)
    pool = read_conll(data / "500-shot-train.txt")
    if not args.report:
        import torch

        torch.set_num_threads(1)
        test_file = args.work_dir / f"test-first{args.test_limit}.jsonl"
        if not test_file.exists():
            test_file.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(read_conll(data / "test.txt")[: args.test_limit], test_file)
        for seed in args.seeds:
            run_seed(args.work_dir, pool, test_file, seed, args.strategies, args.from_backbone)
    print(report(args.work_dir, pool))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
