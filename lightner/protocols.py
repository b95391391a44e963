"""The LightNER paper's low-resource protocols: which data files each trains and tests on, with the reference
implementation's hyperparameters.

Two settings: in-domain (CoNLL-2003 with LOC and MISC cut down to 100 mentions each, or the full set) and
cross-domain (a CoNLL-2003 source adapter whose prompts start k-shot training on MIT Movie, MIT Restaurant or ATIS).
A third, `quickstart`, is the first run for a machine without a GPU: the MIT Restaurant 10-shot adapter trained
straight from the backbone (no CoNLL-2003 source) at the cross-domain protocol's settings, so that a trained adapter,
its test scores and its entities come within minutes on two CPU cores; unless a backbone is named it is bart-mini,
bundled with the package, so that it also runs offline.
They are kept apart from the loop so that a protocol is only data files and settings, overridable option by option.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .arguments import LightNerTrainingArguments

_CONLL_SETTINGS = {"learning_rate": 2e-5, "batch_size": 16, "epochs": 30, "max_length_a": 0.6}
_MIT_SETTINGS = {"learning_rate": 5e-5, "batch_size": 3, "epochs": 30, "max_length_a": 0.8}
PROTOCOLS = ("quickstart", "indomain", "supervised", "crossdomain")
# The quickstart: one 10-shot target trained from the backbone at the cross-domain settings (its 40 sentences, batch 3,
# 30 epochs: 420 steps), which with the test scoring takes minutes on two CPU cores (`benchmarks/quickstart.py`).
QUICKSTART_TARGET, QUICKSTART_SHOTS = "mit-restaurant", 10
# Its backbone unless one is named: bart-mini, the small BART pretrained in this repository (`assets/bart-mini`, also
# installed with the package), so that the first run needs no download. Its prompts underfit at bart-large's settings;
# these were chosen on held-out sentences of the 500-shot training file, never on a test file (benchmarks/quality.py).
BART_MINI = Path(__file__).resolve().parent / "assets" / "bart-mini"
BART_MINI_SETTINGS = {"learning_rate": 3e-3, "epochs": 60, "dropout": 0.0}
CROSS_DOMAIN_SHOTS = {
    "mit-movie": (10, 20, 50, 100, 200, 500),
    "mit-restaurant": (10, 20, 50, 100, 200, 500),
    "atis": (10, 20, 50),
}


def protocol_settings(name: str, data_dir: str | os.PathLike, target: str | None = None, shots: int | None = None):
    """Data files and the reference's hyperparameters of one protocol, as `LightNerTrainingArguments` fields.

    `indomain`: CoNLL-2003 `indomain-train.txt` (LOC and MISC with 100 mentions each), dev `dev.txt`, test `test.txt`.
    `supervised`: CoNLL-2003 `train.txt`, `dev.txt`, `test.txt`.
    `crossdomain`: the `target` corpus's `{shots}-shot-train.txt`, tested on its `test.txt`. These corpora have no dev
    set and the test set is never used for selection, so the last epoch's adapter is kept.
    `quickstart`: the `crossdomain` run for MIT Restaurant 10-shot; `protocol_runs` trains it without a source
    adapter.
    """
    if name == "quickstart":
        return protocol_settings("crossdomain", data_dir, QUICKSTART_TARGET, QUICKSTART_SHOTS)
    data_dir = Path(data_dir)
    if name in ("indomain", "supervised"):
        train = "indomain-train.txt" if name == "indomain" else "train.txt"
        files = {
            "train_file": f"conll2003/{train}",
            "dev_file": "conll2003/dev.txt",
            "test_file": "conll2003/test.txt",
        }
        settings = _CONLL_SETTINGS
    elif name == "crossdomain":
        if target not in CROSS_DOMAIN_SHOTS:
            raise ValueError(
                f"the crossdomain protocol needs a target among {sorted(CROSS_DOMAIN_SHOTS)}, got {target!r}"
            )
        if shots not in CROSS_DOMAIN_SHOTS[target]:
            raise ValueError(f"{target} has k-shot files for k in {CROSS_DOMAIN_SHOTS[target]}, got {shots!r}")
        files = {"train_file": f"{target}/{shots}-shot-train.txt", "dev_file": None, "test_file": f"{target}/test.txt"}
        settings = _MIT_SETTINGS
    else:
        raise ValueError(f"unknown protocol {name!r}; expected one of {PROTOCOLS}")
    resolved = {key: None if value is None else str(data_dir / value) for key, value in files.items()}
    missing = [path for path in resolved.values() if path is not None and not Path(path).exists()]
    if missing:
        raise FileNotFoundError(
            f"protocol {name!r} needs {missing[0]}, which does not exist; point --data-dir at the folder holding the "
            "paper's splits (conll2003/, mit-movie/, mit-restaurant/, atis/)"
        )
    return {**settings, **resolved}


def protocol_runs(
    name: str,
    data_dir: str | os.PathLike,
    options: dict[str, Any],
    target: str | None = None,
    shots: int | None = None,
) -> list[LightNerTrainingArguments]:
    """The runs of a protocol in order; `options` (explicit user choices) override the protocol's settings.

    The cross-domain protocol is two runs unless `options["init_prompts_from"]` names a source adapter: a supervised
    CoNLL-2003 source adapter in `<output>/source`, then the target adapter in `<output>`, whose prompts start from
    the source's. Data files, types and label words given in `options` concern the target run only.
    """
    settings = protocol_settings(name, data_dir, target, shots)
    if name == "quickstart" and "backbone" not in options:
        settings.update(backbone=str(BART_MINI.resolve()), **BART_MINI_SETTINGS)
    runs = [LightNerTrainingArguments(**{**settings, **options})]
    if name == "crossdomain" and not options.get("init_prompts_from"):
        target_only = {"train_file", "dev_file", "test_file", "entity_types", "label_words", "output_dir"}
        shared = {key: value for key, value in options.items() if key not in target_only}
        source_dir = str(Path(options["output_dir"]) / "source")
        source = LightNerTrainingArguments(
            **{**protocol_settings("supervised", data_dir), **shared, "output_dir": source_dir}
        )
        runs = [source, replace(runs[0], init_prompts_from=source_dir)]
    return runs


__all__ = ["BART_MINI", "CROSS_DOMAIN_SHOTS", "PROTOCOLS", "protocol_runs", "protocol_settings"]
