"""Predicting and scoring labelled sentences, alone or split across the processes of a training run.

Scores are `span_f1`'s: exact span and type, micro and macro averaged, per type. Results files are JSON:
`results.json` in a training run's output folder, and a separate file (`EVALUATION_RESULTS_NAME`) for
`lightner evaluate`, so that evaluating an adapter never replaces the scores its training run recorded.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from .data import Sentence, describe_counts, type_counts
from .metrics import span_f1
from .modeling_lightner import LightNerModel

EVALUATION_RESULTS_NAME = "eval_results.json"


def cpu_process_group() -> bool:
    """Whether processes started by `accelerate launch` must be joined as a CPU (gloo) group: on a machine without
    accelerators, accelerate otherwise turns them into independent single-process runs, each doing all the work.
    Passed as `cpu=` to `Accelerator` (training) and `PartialState` (prediction)."""
    return not torch.accelerator.is_available()


def predict_entities(
    model: LightNerModel,
    sentences: Sequence[Sequence[str]],
    accelerator: Accelerator | None = None,
    batch_size: int = 32,
    num_beams: int | None = None,
) -> list[list[dict]]:
    """Predictions for every sentence; with several processes each predicts a share and all get every prediction.

    A sentence's prediction does not depend on its batch (the model guarantees it), so the result, and any score
    computed from it, is the same for any number of processes.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    indices = list(range(rank, len(sentences), world))
    show_progress = accelerator is None or accelerator.is_local_main_process
    predictions = model.predict([sentences[i] for i in indices], batch_size, num_beams, show_progress=show_progress)
    shared = list(zip(indices, predictions))
    if world > 1:
        shared = gather_object(shared)
    return [prediction for _, prediction in sorted(shared, key=lambda pair: pair[0])]


def evaluate_sentences(
    model: LightNerModel,
    sentences: Sequence[Sentence],
    accelerator: Accelerator | None = None,
    batch_size: int = 32,
    num_beams: int | None = None,
) -> dict[str, Any]:
    """Entity-level scores (`span_f1`) of the model's predictions over every sentence, with or without entities."""
    predictions = predict_entities(model, [s.words for s in sentences], accelerator, batch_size, num_beams)
    return span_f1([s.entities for s in sentences], predictions)


def check_shared_types(adapter_types: Sequence[str], sentences: Sequence[Sentence], data: str) -> str | None:
    """Compare the data's entity types with the adapter's, which are all it can predict. Data whose types it shares
    none of would score 0 whatever it predicts, so it is refused, naming both; otherwise a warning (returned, or
    None) names the data's types it lacks, whose entities all count as missed."""
    counts = type_counts(sentences)
    foreign = Counter({name: count for name, count in counts.items() if name not in adapter_types})
    if counts and foreign == counts:
        raise ValueError(
            f"{data}: its entity types, {describe_counts(counts)}, share none with the adapter's "
            f"({', '.join(adapter_types)}), so every score would be 0; evaluate it on data labelled with its types"
        )
    if foreign:
        missed = describe_counts(foreign)
        return f"{data}: the adapter does not predict these types, whose entities all count as missed: {missed}"
    return None


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> None:
    """A results file, its folder created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


__all__ = [
    "EVALUATION_RESULTS_NAME",
    "check_shared_types",
    "cpu_process_group",
    "evaluate_sentences",
    "predict_entities",
    "write_results",
]
