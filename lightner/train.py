"""Training LightNER adapters with `accelerate`, and the paper's low-resource protocols (§7 of the spec).

One loop serves one CPU, one GPU and several processes (`accelerate launch`): AdamW on the parameters that require
gradients (the prompt generators and label-word weights, or everything with `full_finetune`), linear warm-up and
decay, gradient clipping and accumulation, mixed precision where the hardware has it, an evaluation on the dev set
after every epoch, and the best adapter kept in the output folder (adapter only). Checkpoints made with
`accelerator.save_state` hold only the trainable parameters, the optimizer, the scheduler and the random states, so
that a run killed mid-epoch resumes with `resume=True` and ends with the adapter an uninterrupted run would have made.

Output folder: the adapter (`config.json`, `model.safetensors`, tokenizer files), `results.json`, `metrics.jsonl`,
`learning_curve.png`, `training_args.json` and `checkpoints/`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import (
    SAFE_WEIGHTS_NAME,
    DataLoaderConfiguration,
    ProjectConfiguration,
    gather_object,
    set_seed,
)
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.utils import cached_file

from lightner.configuration_lightner import LightNerConfig
from lightner.modeling_lightner import ADAPTER_WEIGHTS_NAME, LightNerModel
from lightner.tokenization_utils import EncodedSentence, collate, encode_sentences, encode_target

from .data import Sentence, entity_types, load_sentences
from .metrics import span_f1

logger = get_logger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
METRICS_LOG_NAME = "metrics.jsonl"
RESULTS_NAME = "results.json"
LEARNING_CURVE_NAME = "learning_curve.png"
TRAINING_ARGS_NAME = "training_args.json"
# Exit status of a run stopped by `stop_after_steps`, as if it had been killed.
INTERRUPTED_EXIT_CODE = 75


@dataclass
class TrainingArguments:
    """Everything one training run needs. Defaults are the reference's CoNLL-2003 settings (§8)."""

    backbone: str = "facebook/bart-large"
    train_file: str | None = None
    output_dir: str | None = None
    dev_file: str | None = None
    test_file: str | None = None
    entity_types: list[str] | None = None
    label_words: dict[str, str] | None = None
    init_prompts_from: str | None = None
    epochs: int = 30
    batch_size: int = 16
    eval_batch_size: int = 32
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "auto"
    seed: int = 42
    prompt_length: int = 10
    prompt_hidden_size: int = 800
    dropout: float = 0.3
    full_finetune: bool = False
    max_length_a: float = 0.6
    num_beams: int = 1
    checkpoint_steps: int = 500
    checkpoints_limit: int = 2
    logging_steps: int = 10
    resume: bool = False
    report_to: list[str] = field(default_factory=list)
    stop_after_steps: int | None = None

    def __post_init__(self):
        if self.train_file is None or self.output_dir is None:
            raise ValueError("training needs a train file and an output folder")
        for name in ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "checkpoint_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The arguments a resumed run must share with the run it continues (everything that shapes the result)."""
        ignored = {"resume", "report_to", "stop_after_steps", "logging_steps", "checkpoint_steps", "checkpoints_limit"}
        return {name: value for name, value in asdict(self).items() if name not in ignored}


# ---------------------------------------------------------------------------------------------------------------------
# Protocols (§7)
# ---------------------------------------------------------------------------------------------------------------------

_CONLL_SETTINGS = {"learning_rate": 2e-5, "batch_size": 16, "epochs": 30, "max_length_a": 0.6}
_MIT_SETTINGS = {"learning_rate": 5e-5, "batch_size": 3, "epochs": 30, "max_length_a": 0.8}
PROTOCOLS = ("indomain", "supervised", "crossdomain")
CROSS_DOMAIN_SHOTS = {
    "mit-movie": (10, 20, 50, 100, 200, 500),
    "mit-restaurant": (10, 20, 50, 100, 200, 500),
    "atis": (10, 20, 50),
}


def protocol_settings(name: str, data_dir: str | os.PathLike, target: str | None = None, shots: int | None = None):
    """Data files and the reference's hyperparameters of one protocol, as `TrainingArguments` fields.

    `indomain`: CoNLL-2003 `indomain-train.txt` (LOC and MISC with 100 mentions each), dev `dev.txt`, test `test.txt`.
    `supervised`: CoNLL-2003 `train.txt`, `dev.txt`, `test.txt`.
    `crossdomain`: the `target` corpus's `{shots}-shot-train.txt`, tested on its `test.txt`. These corpora have no dev
    set and the test set is never used for selection, so the last epoch's adapter is kept.
    """
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
) -> list[TrainingArguments]:
    """The runs of a protocol in order; `options` (explicit user choices) override the protocol's settings.

    The cross-domain protocol is two runs unless `options["init_prompts_from"]` names a source adapter: a supervised
    CoNLL-2003 source adapter in `<output>/source`, then the target adapter in `<output>`, whose prompts start from
    the source's. Data files, types and label words given in `options` concern the target run only.
    """
    runs = [TrainingArguments(**{**protocol_settings(name, data_dir, target, shots), **options})]
    if name == "crossdomain" and not options.get("init_prompts_from"):
        target_only = {"train_file", "dev_file", "test_file", "entity_types", "label_words", "output_dir"}
        shared = {key: value for key, value in options.items() if key not in target_only}
        source_dir = str(Path(options["output_dir"]) / "source")
        source = TrainingArguments(**{**protocol_settings("supervised", data_dir), **shared, "output_dir": source_dir})
        runs = [source, replace(runs[0], init_prompts_from=source_dir)]
    return runs


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def resolve_entity_types(requested: Sequence[str] | None, *splits: Sequence[Sentence]) -> list[str]:
    """`requested` if given, else every type of the splits in order of first appearance (train first)."""
    types = list(requested) if requested else entity_types(sentence for split in splits for sentence in split)
    if not types:
        raise ValueError("the training data has no entities, so there are no entity types to learn; pass --types")
    return types


def restrict_to_types(sentences: Sequence[Sentence], types: Sequence[str]) -> list[Sentence]:
    """The sentences without entities of other types, for a run restricted to some types (`--types`): it learns and
    is scored on those only. Without that choice nothing is dropped, so a test type never seen in training counts."""
    keep = set(types)
    return [Sentence(s.words, [span for span in s.entities if span.type in keep]) for s in sentences]


def encode_examples(
    tokenizer, sentences: Sequence[Sentence], types: Sequence[str], max_positions: int
) -> list[tuple[EncodedSentence, list[int]]]:
    """Source ids and pointer targets of every sentence, computed once before training."""
    type_ids = {name: index for index, name in enumerate(types)}
    encoded = encode_sentences(tokenizer, [sentence.words for sentence in sentences], max_positions)
    return [
        (source, encode_target(source, sentence.entities, type_ids, index))
        for index, (source, sentence) in enumerate(zip(encoded, sentences))
    ]


class Collator:
    """Pads `(source, target)` pairs into a batch; a class rather than a closure so that workers can pickle it."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[tuple[EncodedSentence, list[int]]]) -> dict[str, torch.Tensor]:
        sources, targets = zip(*examples)
        return collate(sources, self.pad_token_id, targets)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def build_model(args: TrainingArguments, types: Sequence[str]) -> LightNerModel:
    """A fresh adapter on the backbone; raises the backbone loader's `OSError` (which says what to do) if it fails."""
    model = LightNerModel.from_backbone(
        args.backbone,
        list(types),
        label_words=args.label_words,
        prompt_length=args.prompt_length,
        prompt_hidden_size=args.prompt_hidden_size,
        dropout=args.dropout,
        freeze_backbone=not args.full_finetune,
        max_length_a=args.max_length_a,
        beam_width=args.num_beams,
        training_data=Path(args.train_file).name,
    )
    if args.init_prompts_from:
        init_prompts_from(model, args.init_prompts_from)
    return model


def init_prompts_from(model: LightNerModel, source: str | os.PathLike) -> None:
    """Start `model`'s prompts from another adapter's (cross-domain transfer); the model keeps its own label words.

    Only the prompts are copied: the label-word weights belong to the target's label set. The source's prompts are
    folded tensors, so from here on `model` trains its prompts directly rather than through the reparameterisation MLP.
    """
    source = str(source)
    source_config = LightNerConfig.from_pretrained(source)
    if source_config.prompt_length != model.config.prompt_length:
        raise ValueError(
            f"the source adapter {source} has prompts of length {source_config.prompt_length}, this model "
            f"{model.config.prompt_length}; pass --prompt-length {source_config.prompt_length}"
        )
    if source_config.backbone_shape != model.config.backbone_shape:
        raise ValueError(
            f"the source adapter {source} was trained on a backbone of another shape than {model.config.backbone}"
        )
    source_state = load_file(cached_file(source, ADAPTER_WEIGHTS_NAME))
    own_state = model.adapter_state_dict()
    prompts = {name: tensor for name, tensor in source_state.items() if not name.startswith("pointer_head.")}
    head = {name: tensor for name, tensor in own_state.items() if name.startswith("pointer_head.")}
    model.load_adapter_state_dict({**prompts, **head}, source=source)


def load_adapter(output_dir: Path, current: LightNerModel, full_finetune: bool) -> LightNerModel:
    """The adapter saved in `output_dir`, sharing `current`'s backbone unless full fine-tuning changed it since."""
    if full_finetune:
        return LightNerModel.from_pretrained(output_dir)
    return LightNerModel.from_pretrained(output_dir, backbone=current.backbone, tokenizer=current.tokenizer)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints and logs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    """Where a run stands: saved with every checkpoint (as JSON, after everything else, so it marks a complete one)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    best_f1: float | None = None
    best_epoch: int | None = None
    log_lines: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    arguments: dict[str, Any] = field(default_factory=dict)


def _checkpoint_number(path: Path) -> int:
    return int(path.name.rsplit("_", 1)[-1])


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer state was written), or None."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    complete = [path for path in folder.glob("checkpoint_*") if (path / TRAINER_STATE_NAME).exists()]
    return max(complete, key=_checkpoint_number, default=None)


def _remove_incomplete_checkpoints(output_dir: Path) -> None:
    """Checkpoints a kill interrupted would otherwise count towards the limit and push out a complete one."""
    for path in (output_dir / CHECKPOINTS_DIR).glob("checkpoint_*"):
        if not (path / TRAINER_STATE_NAME).exists():
            shutil.rmtree(path)


def _keep_trainable_weights(models: list, weights: list[dict], output_dir: str) -> None:
    """Checkpoint only what training changes: with a frozen backbone, the prompt MLPs (0.25 GB for bart-large)
    rather than also the 1.6 GB of backbone weights that never change."""
    for index, model in enumerate(models):
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        weights[index] = {name: tensor for name, tensor in weights[index].items() if name in trainable}


def _load_trainable_weights(models: list, input_dir: str) -> None:
    """The counterpart of `_keep_trainable_weights`; takes the models off accelerate's list so it loads nothing."""
    for model in models:
        state = load_file(os.path.join(input_dir, SAFE_WEIGHTS_NAME))
        missing = {name for name, p in model.named_parameters() if p.requires_grad} - set(state)
        if missing:
            raise ValueError(f"checkpoint {input_dir} lacks trainable tensors {sorted(missing)[:5]}")
        model.load_state_dict(state, strict=False)
    models.clear()


def save_checkpoint(accelerator: Accelerator, state: TrainerState) -> None:
    """A resumable checkpoint in `checkpoints/checkpoint_<n>`; its trainer state, written last, marks it complete."""
    location = Path(accelerator.save_state())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (location / TRAINER_STATE_NAME).write_text(json.dumps(asdict(state), indent=1))
    accelerator.wait_for_everyone()


def resume_from_checkpoint(accelerator: Accelerator, output_dir: Path, arguments: dict[str, Any]) -> TrainerState:
    """Load the newest complete checkpoint into the prepared objects; a fresh state if there is none."""
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        logger.info(f"no checkpoint in {output_dir / CHECKPOINTS_DIR}: starting from the beginning")
        return TrainerState(arguments=arguments)
    state = TrainerState(**json.loads((checkpoint / TRAINER_STATE_NAME).read_text()))
    changed = sorted(
        key for key in arguments.keys() | state.arguments.keys() if arguments.get(key) != state.arguments.get(key)
    )
    if changed:
        raise ValueError(f"cannot resume {output_dir}: these arguments differ from the interrupted run's: {changed}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _remove_incomplete_checkpoints(output_dir)
    accelerator.wait_for_everyone()
    accelerator.load_state(str(checkpoint))
    accelerator.project_configuration.iteration = _checkpoint_number(checkpoint) + 1
    logger.info(f"resuming from {checkpoint}: epoch {state.epoch + 1}, {state.step_in_epoch} steps into it")
    return state


def _truncate_log(path: Path, lines: int) -> None:
    """Forget log lines written after the checkpoint a run resumes from: they will be written again."""
    if path.exists():
        kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        path.write_text("".join(kept), encoding="utf-8")


def log_metrics(accelerator: Accelerator, state: TrainerState, path: Path, values: dict[str, Any]) -> None:
    """One JSON line in `metrics.jsonl` (main process) and the same values to accelerate's trackers."""
    record = {"step": state.global_step, **values}
    if accelerator.is_main_process:
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
    state.log_lines += 1
    accelerator.log({key: value for key, value in values.items() if value is not None}, step=state.global_step)


def plot_learning_curve(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss and dev F1 per epoch, as a PNG: the first thing to look at when a run goes wrong."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [entry["epoch"] for entry in history]
    figure, loss_axis = plt.subplots(figsize=(6, 4))
    loss_axis.plot(epochs, [entry["train_loss"] for entry in history], "o-", color="tab:blue", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axis.set_ylabel("train loss", color="tab:blue")
    scored = [entry for entry in history if entry.get("dev_f1") is not None]
    if scored:
        f1_axis = loss_axis.twinx()
        f1_axis.plot([e["epoch"] for e in scored], [e["dev_f1"] for e in scored], "s-", color="tab:orange")
        f1_axis.set_ylabel("dev F1 (micro)", color="tab:orange")
        f1_axis.set_ylim(0, 1)
    loss_axis.set_title("LightNER learning curve")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------------


def resolve_mixed_precision(choice: str) -> str | None:
    """`auto`: what `accelerate launch` was told, else bf16 on GPUs that have it, fp16 on other GPUs, none on CPU."""
    if choice != "auto":
        return choice
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return None
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(args: TrainingArguments, output_dir: Path) -> Accelerator:
    accelerator = Accelerator(
        # Without `cpu`, accelerate turns processes launched on a machine without accelerators into independent
        # single-process runs instead of one gloo group.
        cpu=not torch.accelerator.is_available(),
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to or None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir),
            logging_dir=str(output_dir / "logs"),
            automatic_checkpoint_naming=True,
            total_limit=args.checkpoints_limit,
        ),
        # Shuffling from (seed, epoch) alone, so that a resumed epoch replays the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    accelerator.register_save_state_pre_hook(_keep_trainable_weights)
    accelerator.register_load_state_pre_hook(_load_trainable_weights)
    return accelerator


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the parameters that require gradients (the freeze rule), fused: on CPU the default implementation
    is several times slower over bart-large's 406 M parameters when the whole backbone trains."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)


def training_step(
    accelerator: Accelerator, model, optimizer, scheduler, batch: dict[str, torch.Tensor], max_grad_norm: float
) -> torch.Tensor:
    """One batch: forward and backward; at the end of an accumulation cycle also clip, step and schedule."""
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return loss.detach()


def single_process_launch_hint(num_processes: int, environ: Mapping[str, str]) -> str | None:
    """What to do when `accelerate launch --num_processes N` started one process (it does so on machines without
    GPUs, where it expects `mpirun`), recognised by the rendezvous address it set for processes that never came."""
    if num_processes == 1 and "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ:
        return (
            "this run has 1 process although a multi-process launch was asked for; without GPUs, start several "
            "processes with `accelerate launch --multi_gpu --num_processes N` (CPU processes join over gloo) or "
            "`torchrun --nproc-per-node N -m lightner train ...`"
        )
    return None


def _check_output_dir(output_dir: Path, resume: bool) -> None:
    if not resume and latest_checkpoint(output_dir) is not None:
        raise FileExistsError(
            f"{output_dir} has checkpoints of an earlier run; pass --resume to continue it or choose another --output"
        )


@dataclass
class _Run:
    """The prepared objects of a run, passed around as one."""

    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    loader: DataLoader
    state: TrainerState
    args: TrainingArguments
    output_dir: Path


def train(args: TrainingArguments) -> dict[str, Any]:
    """Train an adapter as `args` says and return the final results (also written to `results.json`)."""
    output_dir = Path(args.output_dir)
    _check_output_dir(output_dir, args.resume)
    accelerator = make_accelerator(args, output_dir)
    set_seed(args.seed)

    train_sentences, dev_sentences, test_sentences = (
        load_sentences(path) if path else [] for path in (args.train_file, args.dev_file, args.test_file)
    )
    types = resolve_entity_types(args.entity_types, train_sentences, dev_sentences)
    if args.entity_types:
        train_sentences, dev_sentences, test_sentences = (
            restrict_to_types(split, types) for split in (train_sentences, dev_sentences, test_sentences)
        )
    model = build_model(args, types)
    examples = encode_examples(model.tokenizer, train_sentences, types, model.backbone.config.max_position_embeddings)

    # A generator of its own: a DataLoader otherwise draws from the global RNG whenever it starts iterating, and a
    # resumed epoch, which starts mid-way, would then see other dropout masks than the uninterrupted run.
    loader = DataLoader(
        examples,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=Collator(model.tokenizer.pad_token_id),
        generator=torch.Generator(),
    )
    # Counted in single-process steps: the prepared scheduler steps once per process for every optimizer step.
    total_steps = math.ceil(len(loader) / args.gradient_accumulation_steps) * args.epochs
    optimizer = make_optimizer(model, args.learning_rate, args.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / TRAINING_ARGS_NAME).write_text(json.dumps(asdict(args), indent=1))
    state = TrainerState(arguments=args.fingerprint())
    if args.resume:
        state = resume_from_checkpoint(accelerator, output_dir, args.fingerprint())
    if accelerator.is_main_process:
        _truncate_log(output_dir / METRICS_LOG_NAME, state.log_lines)
    accelerator.init_trackers("lightner", config=_tracker_config(args))
    hint = single_process_launch_hint(accelerator.num_processes, os.environ)
    if hint:
        logger.warning(hint)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        f"training {len(types)} types {types} on {len(examples)} sentences for {args.epochs} epochs: "
        f"{trainable:,} trainable parameters, {accelerator.num_processes} process(es) on {accelerator.device}"
    )

    run = _Run(accelerator, model, optimizer, scheduler, loader, state, args, output_dir)
    for epoch in range(state.epoch, args.epochs):
        _train_epoch(run, epoch)
        _end_epoch(run, epoch, dev_sentences)
    results = _final_results(run, dev_sentences, test_sentences, types)
    accelerator.end_training()
    return results


def _tracker_config(args: TrainingArguments) -> dict[str, Any]:
    """Hyperparameters as every tracker accepts them: numbers, strings and booleans (anything else as JSON)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in asdict(args).items()}


def _train_epoch(run: _Run, epoch: int) -> None:
    accelerator, state, args = run.accelerator, run.state, run.args
    run.loader.set_epoch(epoch)
    skipped = state.step_in_epoch * args.gradient_accumulation_steps
    batches = accelerator.skip_first_batches(run.loader, skipped) if skipped else run.loader
    steps_in_epoch = math.ceil(len(run.loader) / args.gradient_accumulation_steps)
    progress = tqdm(
        total=steps_in_epoch,
        initial=state.step_in_epoch,
        desc=f"epoch {epoch + 1}/{args.epochs}",
        unit="step",
        disable=not accelerator.is_local_main_process,
    )
    run.model.train()
    started, sentences = time.perf_counter(), 0
    for batch in batches:
        loss = training_step(accelerator, run.model, run.optimizer, run.scheduler, batch, args.max_grad_norm)
        # The mean over processes, so that every process holds the same state (only the main one's is saved).
        state.epoch_loss_sum += accelerator.gather(loss).mean().item()
        state.epoch_loss_count += 1
        sentences += batch["input_ids"].shape[0] * accelerator.num_processes
        if accelerator.sync_gradients:
            speed = sentences / (time.perf_counter() - started)
            _end_step(run, speed)
            progress.update(1)
            progress.set_postfix(
                loss=f"{state.epoch_loss_sum / state.epoch_loss_count:.4f}", sent_per_s=f"{speed:.1f}"
            )
    progress.close()


def _end_step(run: _Run, speed: float) -> None:
    state, args = run.state, run.args
    state.global_step += 1
    state.step_in_epoch += 1
    if state.global_step % args.logging_steps == 0:
        values = {
            "train/loss": state.epoch_loss_sum / state.epoch_loss_count,
            "train/learning_rate": run.scheduler.get_last_lr()[0],
            "train/sentences_per_second": speed,
        }
        log_metrics(run.accelerator, state, run.output_dir / METRICS_LOG_NAME, values)
    if state.global_step % args.checkpoint_steps == 0:
        save_checkpoint(run.accelerator, state)
    if state.global_step == args.stop_after_steps:
        run.accelerator.print(f"stopping abruptly after step {state.global_step} (--stop-after-steps)")
        os._exit(INTERRUPTED_EXIT_CODE)


def _end_epoch(run: _Run, epoch: int, dev_sentences: Sequence[Sentence]) -> None:
    """Score the dev set, keep the adapter if it is the best so far, log, plot and checkpoint the epoch boundary."""
    accelerator, state, args = run.accelerator, run.state, run.args
    model = accelerator.unwrap_model(run.model)
    entry = {"epoch": epoch + 1, "train_loss": state.epoch_loss_sum / max(state.epoch_loss_count, 1), "dev_f1": None}
    improved = not dev_sentences
    if dev_sentences:
        scores = evaluate_sentences(model, dev_sentences, accelerator, args.eval_batch_size, args.num_beams)
        entry.update(dev_f1=scores["f1"], dev_precision=scores["precision"], dev_recall=scores["recall"])
        improved = state.best_f1 is None or scores["f1"] > state.best_f1
    if improved:
        state.best_f1, state.best_epoch = entry["dev_f1"], epoch + 1
        if accelerator.is_main_process:
            # After full fine-tuning this writes the trained backbone too, into `backbone/`.
            model.save_pretrained(run.output_dir)
    state.history.append(entry)
    log_metrics(accelerator, state, run.output_dir / METRICS_LOG_NAME, {f"epoch/{k}": v for k, v in entry.items()})
    if accelerator.is_main_process:
        plot_learning_curve(state.history, run.output_dir / LEARNING_CURVE_NAME)
    state.epoch, state.step_in_epoch = epoch + 1, 0
    state.epoch_loss_sum, state.epoch_loss_count = 0.0, 0
    save_checkpoint(accelerator, state)


def _final_results(
    run: _Run, dev_sentences: Sequence[Sentence], test_sentences: Sequence[Sentence], types: Sequence[str]
) -> dict[str, Any]:
    """Score the kept adapter on the test file (if any; never used for selection), else on dev; write results.json."""
    accelerator, args, state = run.accelerator, run.args, run.state
    accelerator.wait_for_everyone()
    results: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "best_dev_f1": state.best_f1,
        "epochs": args.epochs,
        "steps": state.global_step,
        "num_processes": accelerator.num_processes,
        "entity_types": list(types),
    }
    evaluated_file, sentences = (args.test_file, test_sentences) if args.test_file else (args.dev_file, dev_sentences)
    if evaluated_file:
        best = load_adapter(run.output_dir, accelerator.unwrap_model(run.model), args.full_finetune)
        scores = evaluate_sentences(best, sentences, accelerator, args.eval_batch_size, args.num_beams)
        split = "test" if args.test_file else "dev"
        results.update(data=str(evaluated_file), split=split, **scores)
        if accelerator.is_main_process:
            # Saved again with its scores in the config, so that the model card (and the Hub page) shows them.
            best.config.evaluation = {
                f"{split} {name}": round(scores[name], 4) for name in ("precision", "recall", "f1")
            }
            best.save_pretrained(run.output_dir)
    if accelerator.is_main_process:
        (run.output_dir / RESULTS_NAME).write_text(json.dumps(results, indent=1))
    return results


__all__ = [
    "PROTOCOLS",
    "CROSS_DOMAIN_SHOTS",
    "TrainingArguments",
    "TrainerState",
    "evaluate_sentences",
    "init_prompts_from",
    "latest_checkpoint",
    "predict_entities",
    "protocol_runs",
    "protocol_settings",
    "train",
]
