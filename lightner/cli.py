"""The `lightner` command: train, evaluate, predict and push LightNER adapters.

    lightner train --backbone facebook/bart-large --train train.txt --dev dev.txt --output runs/my-adapter
    lightner train --protocol indomain --output runs/conll-indomain
    lightner evaluate --model runs/my-adapter --data test.txt
    lightner predict --model runs/my-adapter --input sentences.txt --output entities.jsonl --html entities.html
    lightner push --model runs/my-adapter --repo-id me/my-adapter

`train` runs under `accelerate launch` unchanged, on one or several processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(os.environ.get("LIGHTNER_SHARED_DIR", "../shared")) / "data" / "lightner"
INPUT_FORMATS = ("auto", "conll", "jsonl", "text")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (1 with a one-line message for bad input or a missing backbone)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        return args.handler(args, parser)
    except (OSError, ValueError) as error:
        print(f"lightner {args.command}: error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightner",
        description="Few-shot named-entity recognition with LightNER adapters on a frozen BART.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)
    _add_evaluate_parser(commands)
    _add_predict_parser(commands)
    _add_push_parser(commands)
    _add_convert_parser(commands)
    return parser


def _configure_logging() -> None:
    """Our progress messages at INFO; other libraries stay at their defaults."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("lightner")
    if not package_logger.handlers:
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


# ---------------------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------------------


def _add_train_parser(commands) -> None:
    from .train import CROSS_DOMAIN_SHOTS, PROTOCOLS, TrainingArguments

    defaults = TrainingArguments(train_file="-", output_dir="-")

    def default(name: str) -> str:
        return f" (default: {getattr(defaults, name)})"

    parser = commands.add_parser(
        "train",
        help="train an adapter; the output folder is a loadable adapter",
        description="Train a LightNER adapter with accelerate (1 CPU, 1 GPU, or several processes under "
        "`accelerate launch`). Evaluates on --dev after every epoch and keeps the best adapter; checkpoints into "
        "OUTPUT/checkpoints so that --resume continues an interrupted run. Writes the adapter, results.json, "
        "metrics.jsonl, learning_curve.png and training_args.json into OUTPUT.",
    )
    parser.set_defaults(handler=_run_train)

    protocol = parser.add_argument_group("protocols (the paper's settings, §7; explicit options below override them)")
    protocol.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="indomain: CoNLL-2003 indomain-train/dev/test; supervised: CoNLL-2003 train/dev/test; crossdomain: a "
        "CoNLL-2003 source adapter (trained first into OUTPUT/source unless --init-prompts-from names one) whose "
        "prompts initialise an adapter for --target, trained on its --shots file and tested on its test file (these "
        "corpora have no dev set, so the last epoch is kept)",
    )
    protocol.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder holding the paper's splits (conll2003/, mit-movie/, mit-restaurant/, atis/); default "
        "$LIGHTNER_SHARED_DIR/data/lightner, else ../shared/data/lightner",
    )
    protocol.add_argument("--target", choices=sorted(CROSS_DOMAIN_SHOTS), help="crossdomain: the target corpus")
    protocol.add_argument(
        "--shots",
        type=int,
        default=10,
        help="crossdomain: the k-shot training file: 10 (default), 20, 50, 100, 200 or 500 (ATIS: up to 50)",
    )

    data = parser.add_argument_group("data (CoNLL column files with BIO tags, or .jsonl)")
    data.add_argument("--train", dest="train_file", help="training sentences (required without --protocol)")
    data.add_argument(
        "--dev", dest="dev_file", help="dev sentences, scored after every epoch to keep the best adapter"
    )
    data.add_argument(
        "--test", dest="test_file", help="test sentences, scored once with the kept adapter (never used to select it)"
    )
    data.add_argument(
        "--types",
        dest="entity_types",
        nargs="+",
        metavar="TYPE",
        help="entity types to learn, in this order; entities of other types are ignored (default: every type of the "
        "train and dev files, in order of first appearance)",
    )
    data.add_argument(
        "--label-words",
        type=_json_object,
        help='label words per type, as a JSON object or a JSON file: \'{"LOC": "location"}\'; types left out get '
        "words derived from their names (LOC -> location, fromloc.city_name -> fromloc city name)",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", help="BART backbone: Hub id or local folder" + default("backbone"))
    model.add_argument(
        "--init-prompts-from",
        metavar="ADAPTER",
        help="start the prompts from this adapter's (cross-domain transfer); label words stay this run's own, and the "
        "prompts then train directly rather than through the reparameterisation MLP",
    )
    model.add_argument("--prompt-length", type=int, help="prompt slots per attention" + default("prompt_length"))
    model.add_argument(
        "--prompt-hidden-size", type=int, help="width of the prompt MLP" + default("prompt_hidden_size")
    )
    model.add_argument("--dropout", type=float, help="dropout on decoder states and scores" + default("dropout"))
    model.add_argument(
        "--full-finetune",
        action="store_true",
        default=None,
        help="train the backbone too (BARTNER); the fine-tuned backbone is saved in OUTPUT/backbone",
    )
    model.add_argument(
        "--max-length-a", type=float, help="output length limit 10 + A x source pieces" + default("max_length_a")
    )
    model.add_argument("--num-beams", type=int, help="beams when evaluating; 1 is greedy" + default("num_beams"))

    optimisation = parser.add_argument_group("optimisation")
    optimisation.add_argument("--epochs", type=int, help="training epochs" + default("epochs"))
    optimisation.add_argument(
        "--batch-size", type=int, help="training sentences per batch and process" + default("batch_size")
    )
    optimisation.add_argument(
        "--eval-batch-size", type=int, help="sentences per batch when predicting" + default("eval_batch_size")
    )
    optimisation.add_argument(
        "--lr", dest="learning_rate", type=float, help="peak AdamW learning rate" + default("learning_rate")
    )
    optimisation.add_argument("--weight-decay", type=float, help="AdamW weight decay" + default("weight_decay"))
    optimisation.add_argument(
        "--warmup-ratio",
        type=float,
        help="share of steps with linear warm-up, then linear decay" + default("warmup_ratio"),
    )
    optimisation.add_argument(
        "--max-grad-norm", type=float, help="gradient clipping norm; 0 disables" + default("max_grad_norm")
    )
    optimisation.add_argument(
        "--gradient-accumulation-steps",
        type=int,
        help="batches per optimizer step" + default("gradient_accumulation_steps"),
    )
    optimisation.add_argument(
        "--mixed-precision",
        choices=("auto", "no", "fp16", "bf16"),
        help="auto: what `accelerate launch` was told, else bf16 or fp16 on a GPU that has it, none on CPU"
        + default("mixed_precision"),
    )
    optimisation.add_argument(
        "--seed", type=int, help="seed of initialisation, shuffling and dropout" + default("seed")
    )

    run = parser.add_argument_group("run")
    run.add_argument("--output", dest="output_dir", help="output folder: the adapter and the run's files (required)")
    run.add_argument(
        "--checkpoint-steps",
        type=int,
        help="save a resumable checkpoint every N optimizer steps (and after every epoch)"
        + default("checkpoint_steps"),
    )
    run.add_argument(
        "--checkpoints-limit", type=int, help="checkpoints kept, oldest deleted first" + default("checkpoints_limit")
    )
    run.add_argument("--logging-steps", type=int, help="log training loss every N steps" + default("logging_steps"))
    run.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the newest checkpoint in OUTPUT/checkpoints (start afresh if there is none)",
    )
    run.add_argument(
        "--report-to",
        nargs="+",
        metavar="TRACKER",
        help="accelerate trackers to log to as well (tensorboard, wandb, mlflow, ...); metrics.jsonl is always kept",
    )
    run.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="testing aid: exit abruptly after N optimizer steps, as if killed, to exercise --resume",
    )


def _json_object(value: str) -> dict[str, str]:
    """A JSON object given inline or as a file path (argparse type)."""
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {error}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise argparse.ArgumentTypeError('expected a JSON object of strings, e.g. {"LOC": "location"}')
    return parsed


_PROTOCOL_ONLY = ("command", "handler", "protocol", "data_dir", "target", "shots")


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from accelerate import PartialState

    from .train import TrainingArguments, protocol_runs, train

    options = {key: value for key, value in vars(args).items() if key not in _PROTOCOL_ONLY and value is not None}
    if args.output_dir is None:
        parser.error("train needs --output")
    if args.protocol:
        runs = protocol_runs(args.protocol, args.data_dir, options, args.target, args.shots)
    elif args.train_file is None:
        parser.error("train needs --train FILE (or --protocol)")
    else:
        runs = [TrainingArguments(**options)]
    for run in runs:
        results = train(run)
    if PartialState().is_main_process:
        _print_results(results, Path(runs[-1].output_dir))
    return 0


def _print_results(results: dict[str, Any], output_dir: Path) -> None:
    from .metrics import format_table

    if "per_type" in results:
        print(f"\n{results['split']} scores of the kept adapter (epoch {results['best_epoch']}) on {results['data']}:")
        print(format_table(results))
    print(f"\nadapter and results in {output_dir}")


# ---------------------------------------------------------------------------------------------------------------------
# evaluate, predict, push
# ---------------------------------------------------------------------------------------------------------------------


def _add_model_arguments(parser: argparse.ArgumentParser, batch_size: bool = True) -> None:
    parser.add_argument("--model", required=True, help="adapter folder or Hub id (its backbone is loaded too)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    if batch_size:
        parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default: 32)")
        parser.add_argument("--num-beams", type=int, help="beams; 1 is greedy (default: the adapter's setting)")


def _add_evaluate_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score an adapter on a labelled file",
        description="Entity-level precision, recall and F1 (micro, macro, per type; exact span and type) over every "
        "sentence of a labelled file, printed as a table and written to OUTPUT/results.json.",
    )
    _add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="labelled sentences: CoNLL column file or .jsonl")
    parser.add_argument("--output", type=Path, help="folder for results.json (default: the --model folder)")
    parser.set_defaults(handler=_run_evaluate)


def _add_predict_parser(commands) -> None:
    parser = commands.add_parser(
        "predict",
        help="tag sentences and write entities as JSON Lines",
        description='Predict entities for every sentence of --input and write one {"tokens": [...], "entities": '
        '[{"type", "start", "end", "text", "score"}]} line per sentence (word offsets, end exclusive).',
    )
    _add_model_arguments(parser)
    parser.add_argument("--input", required=True, help="sentences: CoNLL column file, .jsonl, or plain text")
    parser.add_argument("--output", required=True, type=Path, help="JSON Lines file to write")
    parser.add_argument("--html", type=Path, help="also write the sentences with their entities as an HTML page")
    parser.add_argument(
        "--format",
        choices=INPUT_FORMATS,
        default="auto",
        help="input format (default: auto): .jsonl/.json as JSON Lines, else a CoNLL file if it parses as one, "
        "else plain text with one sentence per line, split into words as the pipeline splits raw text (punctuation "
        "apart, as in CoNLL data; a blank line is an empty sentence)",
    )
    parser.set_defaults(handler=_run_predict)


def _add_push_parser(commands) -> None:
    parser = commands.add_parser(
        "push",
        help="upload an adapter to the Hugging Face Hub",
        description="Load the adapter (checking it is complete and matches its backbone) and push it to the Hub: "
        "config, adapter weights, tokenizer files and model card; a backbone only if full fine-tuning trained it.",
    )
    _add_model_arguments(parser, batch_size=False)
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. me/lightner-conll")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token (default: the one saved by `hf auth login`)")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument(
        "--commit-message", default="Upload LightNER adapter", help="commit message (default: %(default)s)"
    )
    parser.set_defaults(handler=_run_push)


def _add_convert_parser(commands) -> None:
    from lightner.convert.deepke_to_lightner import add_arguments

    parser = commands.add_parser(
        "convert-deepke",
        help="turn a DeepKE LightNER checkpoint (best_model.pth) into an adapter folder",
        description="Fold a DeepKE checkpoint's prompt MLPs into an adapter, with the label set given by --labels "
        "(a preset: conll2003, mit-movie, mit-restaurant, atis; or a JSON/YAML file of type -> label words).",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lightner.convert.deepke_to_lightner import run

    return run(args)


def _load_model(args: argparse.Namespace):
    import torch

    from lightner.modeling_lightner import LightNerModel

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return LightNerModel.from_pretrained(args.model).to(device)


def _run_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .data import load_sentences
    from .metrics import format_table
    from .train import RESULTS_NAME, evaluate_sentences

    sentences = load_sentences(args.data)
    model = _load_model(args)
    scores = evaluate_sentences(model, sentences, batch_size=args.batch_size, num_beams=args.num_beams)
    output_dir = args.output or Path(args.model)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / RESULTS_NAME
    path.write_text(json.dumps({"model": str(args.model), "data": str(args.data), **scores}, indent=1))
    print(format_table(scores))
    print(f"\nwritten to {path}")
    return 0


def read_input_sentences(path: str | os.PathLike, input_format: str = "auto") -> list[list[str]]:
    """Word lists of a labelled file (labels ignored) or of plain text, one sentence per line.

    Plain text is split as the pipeline splits raw text (`text_utils.split_words`): a model trained on CoNLL-style
    words sees `Paris .` rather than `Paris.`.
    """
    from .data import DataFormatError, read_conll, read_jsonl

    suffix = Path(path).suffix.lower()
    if input_format == "jsonl" or (input_format == "auto" and suffix in (".jsonl", ".json")):
        return [sentence.words for sentence in read_jsonl(path)]
    if input_format in ("conll", "auto"):
        try:
            return [sentence.words for sentence in read_conll(path)]
        except DataFormatError:
            if input_format == "conll":
                raise
    from lightner.text_utils import split_words

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [[line[start:end] for start, end in split_words(line)] for line in lines]


def _run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sentences = read_input_sentences(args.input, args.format)
    model = _load_model(args)
    predictions = model.predict(sentences, batch_size=args.batch_size, num_beams=args.num_beams, show_progress=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as file:
        for words, entities in zip(sentences, predictions):
            file.write(json.dumps({"tokens": words, "entities": entities}, ensure_ascii=False) + "\n")
    print(f"{sum(map(len, predictions))} entities in {len(sentences)} sentences written to {args.output}")
    if args.html:
        args.html.write_text(html_page(sentences, predictions), encoding="utf-8")
        print(f"HTML page written to {args.html}")
    return 0


def html_page(sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[dict]]) -> str:
    """The sentences, words joined by spaces, with their entities marked (word offsets turned into characters)."""
    from lightner.text_utils import join_words

    from .render import render_html

    texts, groups = [], []
    for words, entities in zip(sentences, predictions):
        text, spans = join_words(words)
        texts.append(text)
        groups.append(
            [
                {
                    "entity_group": e["type"],
                    "start": spans[e["start"]][0],
                    "end": spans[e["end"] - 1][1],
                    "score": e["score"],
                }
                for e in entities
            ]
        )
    return render_html(texts, groups)


def _run_push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = _load_model(args)
    commit = model.push_to_hub(
        args.repo_id,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    print(f"pushed {args.model} to {getattr(commit, 'commit_url', None) or args.repo_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
