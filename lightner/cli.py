"""The `lightner` command: train, evaluate, predict and push LightNER adapters.

    lightner train --backbone facebook/bart-large --train train.txt --dev dev.txt --output runs/my-adapter
    lightner train --protocol indomain --output runs/conll-indomain
    lightner evaluate --model runs/my-adapter --data test.txt
    lightner predict --model runs/my-adapter --input sentences.txt --output entities.jsonl --html entities.html
    lightner push --model runs/my-adapter --repo-id me/my-adapter
    lightner demo --model runs/my-adapter --adapter movies=runs/movies
    lightner label-studio --model runs/my-adapter --port 9090
    lightner select --model runs/my-adapter --input pool.txt --k 10 --output next.json

`train` runs under `accelerate launch` unchanged, on one or several processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .arguments import LightNerTrainingArguments
from .formats import LABELLED_FORMATS
from .threads import AUTO_THREADS, AdaptiveThreads, make_products_reproducible

DEFAULT_DATA_DIR = Path(os.environ.get("LIGHTNER_SHARED_DIR", "../shared")) / "data" / "lightner"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status: 2 for a usage error (argparse's), 1 for anything that fails while
    running, each reported as one line naming what to fix rather than a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    make_products_reproducible()
    try:
        with _threads(getattr(args, "threads", None)):
            # The command's own parser, so that its usage errors read "lightner train: error: ...".
            return args.handler(args, args.command_parser)
    except KeyboardInterrupt:  # Ctrl-C: what was done, and how to go on, rather than a traceback
        print(f"lightner {args.command}: interrupted{_INTERRUPTED.get(args.command, '')}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Interrupted as interrupted:
        print(f"lightner {args.command}: interrupted; {interrupted}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Exception as error:  # the CLI boundary: every failure becomes one line
        print(f"lightner {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _threads(threads: int | str | None) -> contextlib.AbstractContextManager:
    """`--threads`: a fixed count of torch's intra-op threads, or "auto" (the default), threads that follow the cores
    other processes leave free (`lightner.threads.AdaptiveThreads`: beside one busy process on 2 cores, 1 thread
    generates 1.8x faster than 2, while on quiet cores 2 are faster). Commands without the option run as torch sets."""
    if threads is None:
        return contextlib.nullcontext()
    if threads == AUTO_THREADS:
        return AdaptiveThreads()
    import torch

    torch.set_num_threads(threads)
    return contextlib.nullcontext()


# The exit status of a command stopped by Ctrl-C, as shells report a process ended by SIGINT.
INTERRUPTED_EXIT_CODE = 130
# What to do after Ctrl-C, by command, for those that can go on from where they stopped.
_INTERRUPTED = {"train": "; the same command with --resume continues from the last checkpoint"}


class Interrupted(Exception):
    """Ctrl-C during a command that can say how far it got and how to go on (the message)."""


def _one_line(error: Exception) -> str:
    """The error's message on one line; errors other than bad input or a missing file also say their type, since
    their message alone may not make sense."""
    message = " ".join(str(error).split()) or "(no message)"
    return message if isinstance(error, (OSError, ValueError)) else f"{type(error).__name__}: {message}"


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
    _add_demo_parser(commands)
    _add_convert_parser(commands)
    _add_label_studio_parser(commands)
    _add_select_parser(commands)
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
    from .protocols import CROSS_DOMAIN_SHOTS, PROTOCOLS

    parser = commands.add_parser(
        "train",
        help="train an adapter; the output folder is a loadable adapter",
        description="Train a LightNER adapter with accelerate (1 CPU, 1 GPU, or several processes under "
        "`accelerate launch`). Evaluates on --dev after every epoch and keeps the best adapter; checkpoints into "
        "OUTPUT/checkpoints so that --resume continues an interrupted run. Writes the adapter, results.json, "
        "metrics.jsonl, learning_curve.png and training_args.json into OUTPUT.",
    )
    parser.set_defaults(handler=_run_train, command_parser=parser)

    protocol = parser.add_argument_group("protocols (the paper's settings; explicit options below override them)")
    protocol.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="quickstart: a first run without a GPU, MIT Restaurant 10-shot trained from the backbone (the "
        "crossdomain settings) and tested on its test file, on the bundled bart-mini (offline; lr 3e-3, 60 epochs, "
        "dropout 0) unless --backbone names one (then the paper's lr 5e-5, 30 epochs, dropout 0.3); "
        "indomain: CoNLL-2003 indomain-train/dev/test; "
        "supervised: CoNLL-2003 train/dev/test; crossdomain: a CoNLL-2003 source adapter (trained first into "
        "OUTPUT/source unless --init-prompts-from names one) whose prompts initialise an adapter for --target, "
        "trained on its --shots file and tested on its test file (these corpora have no dev set, so the last epoch "
        "is kept)",
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
    protocol.add_argument(
        "--config",
        type=Path,
        metavar="JSON",
        help="start from the arguments of a saved run (OUTPUT/training_args.json) to replay it; options given on "
        "the command line override them",
    )
    add_dataclass_options(parser, LightNerTrainingArguments, TRAIN_OPTION_GROUPS)


# Titles of the option groups the training-argument fields name in their metadata, in display order.
TRAIN_OPTION_GROUPS = {
    "data": f"data ({', '.join(LABELLED_FORMATS)}: a folder is a datasets folder, .jsonl/.json JSON Lines, "
    "anything else a CoNLL column file)",
    "model": "model",
    "optimisation": "optimisation",
    "run": "run",
}


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, titles: dict[str, str]) -> None:
    """One option per field of the dataclass `cls`, from its type hint and its metadata (`lightner.arguments.option`:
    help, group, option name, argparse settings), so that no option restates a field by hand.

    Options default to unset (`SUPPRESS`), not to the field defaults: only what the user typed may override a
    protocol's settings or a replayed configuration; the dataclass fills in the rest.
    """
    groups = {key: parser.add_argument_group(title) for key, title in titles.items()}
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        settings = dict(spec.metadata)
        group, flag = groups[settings.pop("group")], settings.pop("flag") or "--" + spec.name.replace("_", "-")
        settings = {**_parsing_of(hints[spec.name]), **settings}
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        if default not in (None, [], False):
            settings["help"] += f" (default: {default})"
        group.add_argument(flag, dest=spec.name, default=argparse.SUPPRESS, **settings)


def _parsing_of(hint: Any) -> dict[str, Any]:
    """argparse settings for a field type: a flag for `bool`, several values for `list[X]`, `X` for `X | None`."""
    arguments = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if isinstance(hint, types.UnionType) and len(arguments) == 1:
        hint = arguments[0]
    if hint is bool:
        return {"action": "store_true"}
    if typing.get_origin(hint) is list:
        return {"type": typing.get_args(hint)[0], "nargs": "+"}
    return {"type": hint} if hint in (int, float, str) else {}


# Command-line values that are not fields of the training arguments.
_NOT_TRAINING_ARGUMENTS = ("command", "handler", "command_parser", "protocol", "data_dir", "target", "shots", "config")


def _training_runs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[LightNerTrainingArguments]:
    """The runs the command line asks for: a saved configuration (`--config`), then the options typed, over the
    protocol's settings if one is named; bad values are usage errors (exit 2) naming the field."""
    from .protocols import protocol_runs

    options = LightNerTrainingArguments.read_json_file(args.config) if args.config else {}
    options.update({key: value for key, value in vars(args).items() if key not in _NOT_TRAINING_ARGUMENTS})
    if options.get("output_dir") is None:
        parser.error("train needs --output")
    if not args.protocol and options.get("train_file") is None:
        parser.error("train needs --train FILE (or --protocol)")
    try:
        if args.protocol:
            return protocol_runs(args.protocol, args.data_dir, options, args.target, args.shots)
        return [LightNerTrainingArguments(**options)]
    except (TypeError, ValueError) as error:
        parser.error(_one_line(error))


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from accelerate import PartialState

    from .checkpointing import check_output_dir
    from .train import train

    runs = _training_runs(args, parser)
    # Every run's folder checked before the first trains: a protocol's second run must not fail after the first.
    for run in runs:
        check_output_dir(Path(run.output_dir), run.fingerprint(), run.resume, run.overwrite)
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


AUTO_DTYPE = "auto"  # `--dtype`'s default: see `inference_dtype`


def thread_count(value: str) -> int | str:
    """`--threads`: "auto" or a whole number of at least 1 (argparse type)."""
    return value if value == AUTO_THREADS else positive_int(value)


def positive_int(value: str) -> int:
    """An integer of at least 1 (argparse type), so that `--batch-size 0` is a usage error rather than a crash."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def torch_device(value: str) -> str:
    """A device this machine has (argparse type): a misspelt or missing device is a usage error before any model is
    loaded (`hub_lightner.check_device`), not a traceback from deep inside torch."""
    from .hub_lightner import check_device

    try:
        check_device(value, "--device")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _add_model_arguments(parser: argparse.ArgumentParser, batch_size: bool = True, beams: bool = True) -> None:
    parser.add_argument("--model", required=True, help="adapter folder or Hub id (its backbone is loaded too)")
    parser.add_argument(
        "--device",
        type=torch_device,
        help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=AUTO_THREADS,
        help="CPU threads: a number, or auto (the default): one per core, fewer while other processes keep cores "
        "busy (beside one busy process on 2 cores, 1 thread generates 1.8x faster than 2); results do not change",
    )
    parser.add_argument(
        "--dtype",
        choices=(AUTO_DTYPE, "float32", "bfloat16"),
        default=AUTO_DTYPE,
        help="the backbone's precision: auto (the default) is bfloat16 on a CPU with AMX (generation measured 2.2x "
        "float32, F1 within 0.4), else as saved (float32 for bart-large; without "
        "native bf16, bfloat16 runs 0.2-0.3x float32's speed)",
    )
    if batch_size:
        parser.add_argument("--batch-size", type=positive_int, default=32, help="sentences per batch (default: 32)")
    if batch_size and beams:
        parser.add_argument(
            "--num-beams", type=positive_int, help="beams; 1 is greedy (default: the adapter's setting)"
        )


def _add_evaluate_parser(commands) -> None:
    from .evaluation import EVALUATION_RESULTS_NAME

    parser = commands.add_parser(
        "evaluate",
        help="score an adapter on a labelled file",
        description="Entity-level precision, recall and F1 (micro, macro, per type; exact span and type) over every "
        "sentence of a labelled file, printed as a table and written as JSON to --output.",
    )
    _add_model_arguments(parser)
    parser.add_argument("--data", required=True, help=f"labelled sentences ({', '.join(LABELLED_FORMATS)})")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"JSON file for the scores, or a folder to hold {EVALUATION_RESULTS_NAME} (default: "
        f"{EVALUATION_RESULTS_NAME} in the --model folder when it is a local folder, else in the current directory; "
        "never the training run's results.json)",
    )
    parser.set_defaults(handler=_run_evaluate, command_parser=parser)


def _add_predict_parser(commands) -> None:
    from .formats import INPUT_FORMATS, OUTPUT_FORMATS

    parser = commands.add_parser(
        "predict",
        help="tag a corpus, written as it goes (JSON Lines, CoNLL, spaCy or BRAT)",
        description="Predict entities for every document of --input and write them to --output as they come, so "
        "that a corpus of any size fits in memory; --resume continues a killed run. Under `accelerate launch "
        "--num_processes N -m lightner predict ...` the processes share the documents and one output is written, in "
        "input order. Input formats: "
        + "; ".join(f"{spec.name}: {spec.input_description}" for spec in INPUT_FORMATS.values())
        + ". Output formats: "
        + "; ".join(f"{spec.name}: {spec.output_description}" for spec in OUTPUT_FORMATS.values())
        + ".",
    )
    _add_model_arguments(parser)
    parser.add_argument(
        "--input", required=True, help="the documents (see the formats above); - reads them from standard input"
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="file to write (a folder for --output-format brat), never one of the inputs; - writes to standard "
        "output (the summary then goes to standard error), which cannot be resumed",
    )
    parser.add_argument(
        "--format",
        choices=("auto", *INPUT_FORMATS),
        default="auto",
        help="input format (default: auto): a folder of .txt files as BRAT texts, another folder or a path without "
        "suffix as datasets, .jsonl/.json as JSON Lines, a file whose first lines are `word ... TAG` columns as "
        "CoNLL, anything else as plain text",
    )
    parser.add_argument(
        "--output-format", choices=tuple(OUTPUT_FORMATS), default="jsonl", help="output format (default: jsonl)"
    )
    parser.add_argument(
        "--min-score", type=float, default=0.0, help="leave out entities scoring below this (default: 0, keep all)"
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="run the frozen backbone's linear layers in int8 (CPU inference; see README, low-precision inference)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into the same --output: documents already written are not redone; "
        "refused if the input's documents done or the options that shape the output changed since",
    )
    parser.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="leave out (with a warning naming the line) JSON Lines input lines without a text field and documents "
        "the model cannot take (a word that is blank or encodes to nothing), instead of stopping there",
    )
    parser.add_argument(
        "--html", type=Path, help="also write the documents with their entities as an HTML page (for small inputs)"
    )
    parser.set_defaults(handler=_run_predict, command_parser=parser)


def _add_push_parser(commands) -> None:
    parser = commands.add_parser(
        "push",
        help="upload an adapter to the Hugging Face Hub",
        description="Upload a saved adapter folder to the Hub as it is, without loading its backbone: config, adapter "
        "weights, code, tokenizer files, model card, and the backbone/ folder if full fine-tuning trained one.",
    )
    parser.add_argument("--model", required=True, help="saved adapter folder (what `lightner train` wrote)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. me/lightner-conll")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token (default: the one saved by `hf auth login`)")
    parser.add_argument("--revision", help="branch to push to (default: main)")
    parser.add_argument(
        "--commit-message", default="Upload LightNER adapter", help="commit message (default: %(default)s)"
    )
    parser.set_defaults(handler=_run_push, command_parser=parser)


def adapter_option(value: str) -> tuple[str, str]:
    """`NAME=DIR` (argparse type of `lightner demo --adapter`)."""
    name, equals, folder = value.partition("=")
    if not equals or not name or not folder:
        raise argparse.ArgumentTypeError(
            f"expected NAME=DIR (an adapter name and its folder or Hub id), got {value!r}"
        )
    return name, folder


def _add_demo_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="serve a web page to try an adapter",
        description="Serve a small web page on this machine: a text box, the entities drawn in the text, a table of "
        "them with their scores, and a choice between the loaded adapters. Stop it with Ctrl-C.",
    )
    _add_server_arguments(parser, "another adapter on the same backbone, offered as NAME (repeatable)", port=7860)
    parser.set_defaults(handler=_run_demo, command_parser=parser)


def _add_server_arguments(parser: argparse.ArgumentParser, adapter_help: str, port: int) -> None:
    """What every command that serves a model takes: the model, more adapters on its backbone, where to listen."""
    _add_model_arguments(parser, batch_size=False)
    parser.add_argument(
        "--adapter", type=adapter_option, action="append", default=[], metavar="NAME=DIR", help=adapter_help
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=port, help="port (default: %(default)s; 0 picks a free one)")


def _load_model_with_adapters(args: argparse.Namespace):
    """The model of `--model`, with each `--adapter NAME=DIR` loaded beside it."""
    model = _load_model(args)
    for name, folder in args.adapter:
        model.load_adapter(folder, adapter_name=name)
    return model


def _serve_until_interrupted(server, what: str, adapters: Sequence[str]) -> int:
    """Announce the server, serve until Ctrl-C, and close its socket whatever ends it."""
    print(f"{what} on {server.url} (adapters: {', '.join(adapters)}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .demo import make_server
    from .pipeline_lightner import LightNerPipeline

    model = _load_model_with_adapters(args)
    server = make_server(LightNerPipeline(model=model), host=args.host, port=args.port)
    return _serve_until_interrupted(server, "LightNER demo", model.list_adapters())


def _add_label_studio_parser(commands) -> None:
    parser = commands.add_parser(
        "label-studio",
        help="serve an adapter as a Label Studio ML backend (pre-annotations, training on submitted annotations)",
        description="Serve Label Studio's ML backend protocol (GET /health, POST /setup, /predict, /webhook, /train): "
        "pre-annotations as labels regions with character offsets and scores; with --work-dir, submitted annotations "
        "are kept and every --train-every of them train a new adapter from the current one. Connect it in Label "
        "Studio under Settings > Model. Stop it with Ctrl-C.",
    )
    _add_server_arguments(
        parser,
        "another adapter on the same backbone (repeatable); each project gets the one sharing most labels",
        port=9090,
    )
    parser.add_argument("--work-dir", type=Path, help="keep submitted annotations and trained adapters here")
    parser.add_argument(
        "--train-every", type=positive_int, default=10, help="new annotations per training run (default: 10)"
    )
    parser.add_argument(
        "--train-epochs", type=positive_int, default=10, help="epochs of each training run (default: 10)"
    )
    parser.set_defaults(handler=_run_label_studio, command_parser=parser)


def _run_label_studio(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .label_studio_backend import make_backend
    from .pipeline_lightner import LightNerPipeline

    model = _load_model_with_adapters(args)
    backend = make_backend(
        LightNerPipeline(model=model),
        host=args.host,
        port=args.port,
        work_dir=args.work_dir,
        train_every=args.train_every,
        train_epochs=args.train_epochs,
        model_dir=args.model,
    )
    return _serve_until_interrupted(backend, "LightNER Label Studio backend", model.list_adapters())


def _add_select_parser(commands) -> None:
    from .formats import INPUT_FORMATS
    from .select import STRATEGIES

    parser = commands.add_parser(
        "select",
        help="choose the sentences to label next (active learning)",
        description="Choose --k documents of --input (any predict input format) to label next, at random or by the "
        "model's uncertainty, and write them to --output in the format its name says: .json as Label Studio tasks "
        "with the model's pre-annotations, .jsonl as JSON Lines (text or tokens, with the score), anything else as "
        "plain text, a document per line.",
    )
    _add_model_arguments(parser, beams=False)  # the uncertainty measures are read off one greedy pass
    parser.add_argument("--input", required=True, help="the unlabelled pool")
    parser.add_argument("--format", choices=("auto", *INPUT_FORMATS), default="auto", help="input format")
    parser.add_argument("--k", type=positive_int, required=True, help="how many documents to choose")
    parser.add_argument("--output", type=Path, required=True, help="where the chosen documents go")
    parser.add_argument(
        "--strategy",
        choices=tuple(STRATEGIES),
        default="random",
        help="random: a seeded shuffle (the default: on bart-mini with 10-60 labels no uncertainty measure beat it, "
        "see the README); sequence: lowest mean token probability; margin: smallest gap between the two likeliest "
        "next tokens at any step; diverse: the most uncertain by sequence, one per cluster of similar sentences",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random and diverse strategies (default: 0)")
    parser.set_defaults(handler=_run_select, command_parser=parser)


def _run_select(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .select import needs_model, select_documents

    model = _load_model(args) if needs_model(args.strategy, args.output) else None
    chosen = select_documents(
        model, args.input, args.output, args.k, args.strategy, args.format, args.batch_size, args.seed
    )
    print(f"{chosen} documents of {args.input} chosen by {args.strategy} written to {args.output}")
    return 0


def _add_convert_parser(commands) -> None:
    from .convert.deepke_to_lightner import add_arguments

    parser = commands.add_parser(
        "convert-deepke",
        help="turn a DeepKE LightNER checkpoint (best_model.pth) into an adapter folder",
        description="Fold a DeepKE checkpoint's prompt MLPs into an adapter, with the label set given by --labels "
        "(a preset: conll2003, mit-movie, mit-restaurant, atis; or a JSON/YAML file of type -> label words).",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_run_convert, command_parser=parser)


def _run_convert(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .convert.deepke_to_lightner import run

    return run(args)


def _is_hub_id(name: str) -> bool:
    """Whether `name` could name a Hub repository (`org/name` or `name`), as opposed to only a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _load_model(args: argparse.Namespace):
    """The adapter of `--model` on `--device`; a path that exists nowhere is named as a missing folder, not as a
    failed Hub download."""
    import torch

    from .modeling_lightner import LightNerModel

    local = Path(args.model).exists()
    if not local and not _is_hub_id(args.model):
        raise FileNotFoundError(f"folder {args.model} does not exist")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    quantize = getattr(args, "quantize", None)
    dtype = inference_dtype(args.dtype, torch.device(device), quantize)
    try:
        model = LightNerModel.from_pretrained(args.model, dtype=dtype, **({"quantize": quantize} if quantize else {}))
    except OSError as error:
        if local:
            raise
        raise FileNotFoundError(
            f"folder {args.model} does not exist, and it is not a model the Hub could give ({_one_line(error)})"
        ) from None
    return model.to(device)


def inference_dtype(dtype: str, device, quantize: str | None) -> str | None:
    """`--dtype`'s precision for `from_pretrained` (None: as the backbone was saved). `auto` is bfloat16 on a CPU
    with AMX (`amx_present`), where it generated 2.2x faster than float32 (AVX-512 machine with
    AMX) and the F1 gate held (bart-mini adapters: +0.01 and -0.36 F1 points); elsewhere the saved dtype, as before:
    on a GPU (not measured here), with `--quantize` (int8 keeps float32 around its products), and on CPUs without
    native bf16, where bfloat16 runs at 0.2-0.3x float32's speed."""
    if dtype != AUTO_DTYPE:
        return dtype
    return "bfloat16" if device.type == "cpu" and quantize is None and amx_present() else None


def amx_present() -> bool:
    """Whether this CPU has AMX tiles, where bfloat16 was measured 2.2x float32. CPUs with AVX-512 BF16 alone
    multiply it natively too, at a rate not measured here, so they keep the saved dtype."""
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def evaluation_output(model: str, output: Path | None) -> Path:
    """Where `lightner evaluate` writes its scores (see its --output help): never into a Hub id's name as a path,
    never over the training run's `results.json`."""
    from .evaluation import EVALUATION_RESULTS_NAME

    if output is None:
        folder = Path(model) if Path(model).is_dir() else Path.cwd()
        return folder / EVALUATION_RESULTS_NAME
    return output / EVALUATION_RESULTS_NAME if output.is_dir() else output


def _run_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .evaluation import check_shared_types, evaluate_sentences, write_results
    from .formats import load_sentences
    from .metrics import format_table

    sentences = load_sentences(args.data)
    model = _load_model(args)
    warning = check_shared_types(model.config.entity_types, sentences, args.data)
    if warning:
        logging.getLogger(__name__).warning(warning)
    scores = evaluate_sentences(model, sentences, batch_size=args.batch_size, num_beams=args.num_beams)
    path = evaluation_output(args.model, args.output)
    write_results(path, {"model": str(args.model), "data": str(args.data), **scores})
    print(format_table(scores))
    print(f"\nwritten to {path}")
    return 0


def _run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from accelerate import PartialState

    from .evaluation import cpu_process_group
    from .formats import is_stream
    from .pipeline_lightner import LightNerPipeline
    from .predict import STANDARD_STREAM, PredictionRun, run_prediction

    if not 0 <= args.min_score <= 1:
        parser.error(f"--min-score must be between 0 and 1, got {args.min_score}")
    state = PartialState(cpu=cpu_process_group())
    model = _load_model(args)
    if state.num_processes > 1:
        model.to(state.device)
    run = PredictionRun(
        source=args.input,
        output=args.output,
        input_format=args.format,
        output_format=args.output_format,
        batch_size=args.batch_size,
        num_beams=args.num_beams,
        min_score=args.min_score,
        resume=args.resume,
        skip_bad_lines=args.skip_bad_lines,
        show_progress=state.is_main_process,
        html=args.html,
        model=args.model,
        quantize=args.quantize,
    )
    try:
        counts = run_prediction(run, LightNerPipeline(model=model), state if state.num_processes > 1 else None)
    except KeyboardInterrupt:
        raise Interrupted(_how_to_resume(args.output)) from None
    if state.is_main_process:
        skipped = f" ({counts['skipped']} bad documents left out)" if counts["skipped"] else ""
        by = f" by {state.num_processes} processes" if state.num_processes > 1 else ""
        # Beside the predictions, the summary would be read as one of them.
        report = sys.stderr if is_stream(args.output) else sys.stdout
        where = "standard output" if str(args.output) == STANDARD_STREAM else args.output
        print(
            f"{counts['entities']} entities in {counts['documents']} documents written to {where}{by}{skipped}",
            file=report,
        )
        if args.html:
            print(f"HTML page written to {args.html}", file=report)
    return 0


def _how_to_resume(output: Path) -> str:
    """After Ctrl-C: how many documents are safely written, and the command that continues from there."""
    from .formats import is_stream
    from .predict import Progress

    if is_stream(output) or not Progress.path(output).is_file():
        return f"nothing of {output} can be resumed; run the command again"
    done = Progress.read(output).documents
    return f"{done} documents are written to {output}; the same command with --resume continues from there"


def _run_push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Upload the saved folder as it is: no backbone is loaded, and a trained `backbone/` folder goes along."""
    from .hub_lightner import upload_adapter_folder

    commit = upload_adapter_folder(
        args.model,
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
