"""The training loop of LightNER adapters, with `accelerate`.

One loop serves one CPU, one GPU and several processes (`accelerate launch`): AdamW on the parameters that require
gradients (the prompt generators and label-word weights, or everything with `full_finetune`), linear warm-up and
decay, gradient clipping and accumulation, mixed precision where the hardware has it, an evaluation on the dev set
after every epoch, and the best adapter kept in the output folder (adapter only). Every data file is read and encoded
before the first step, so that a bad dev or test sentence stops the run at once rather than after hours of training.

Output folder: the adapter (`config.json`, `model.safetensors`, tokenizer files), `results.json`, `metrics.jsonl`,
`learning_curve.png`, `training_args.json` and `checkpoints/` (see `lightner.checkpointing`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    is_bf16_available,
    is_fp16_available,
    set_seed,
)
from accelerate.utils.imports import get_torch_accelerator_backend
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .arguments import ENTITY_SHAPE_CHOICES, TRAINING_ARGS_NAME, LightNerTrainingArguments, model_settings
from .checkpointing import (
    LEARNING_CURVE_NAME,
    METRICS_LOG_NAME,
    RESULTS_NAME,
    RunState,
    check_output_dir,
    clear_output_dir,
    latest_checkpoint,
    load_best_adapter,
    register_checkpoint_hooks,
    restore_checkpoint,
    save_checkpoint,
)
from .configuration_lightner import backbone_shape_mismatches
from .data import DataFormatError, Sentence, describe_counts, is_discontinuous, type_counts
from .evaluation import cpu_process_group, evaluate_sentences, write_results
from .formats import data_name, is_hub_dataset, load_sentences, split_source
from .hub_lightner import ADAPTER_WEIGHTS_NAME, load_adapter_config, read_adapter_file
from .modeling_lightner import LABEL_WORD_WEIGHTS_NAME, LightNerModel
from .tokenization_utils import EncodedSentence, collate, encode_sentences, encode_target

logger = get_logger(__name__)

# Exit status of a run stopped by `stop_after_steps`, as if it had been killed.
INTERRUPTED_EXIT_CODE = 75


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The sentences of every split (empty without a file), the entity types the run learns and the shapes it
    decodes (`LightNerConfig.entity_shapes`)."""

    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    types: list[str]
    entity_shapes: str


def _type_counts(splits: Mapping[str, Sequence[Sentence]]) -> dict[str, Counter]:
    return {name: type_counts(sentences) for name, sentences in splits.items()}


def resolve_entity_types(requested: Sequence[str] | None, splits: Mapping[str, Sequence[Sentence]]) -> list[str]:
    """The types to learn: `requested` if given, else every type of the train and dev splits in order of first
    appearance (train first).

    A requested type absent from the training data is refused, since nothing could teach it, naming the types that do
    occur with their counts.
    """
    if requested:
        train_counts = _type_counts(splits)["train"]
        absent = [name for name in requested if train_counts[name] == 0]
        if absent:
            occurring = describe_counts(train_counts)
            raise ValueError(f"--types {' '.join(absent)}: not in the training data, whose types are {occurring}")
        return list(requested)
    types = list(dict.fromkeys(span.type for split in ("train", "dev") for s in splits[split] for span in s.entities))
    if not types:
        raise ValueError("the training data has no entities, so there are no entity types to learn; pass --types")
    return types


def left_out_types(types: Sequence[str], splits: Mapping[str, Sequence[Sentence]]) -> str | None:
    """Per split, the entities of types outside `types` with their counts, or None: a run restricted by `--types`
    warns with this rather than dropping them silently, since a left-out type is often a typo or a wrong file."""
    counts = _type_counts(splits)
    left_out = {
        split: Counter({t: c for t, c in counter.items() if t not in types}) for split, counter in counts.items()
    }
    described = "; ".join(f"{split}: {describe_counts(counter)}" for split, counter in left_out.items() if counter)
    return f"leaving out entities of types not in --types: {described}" if described else None


def restrict_to_types(sentences: Sequence[Sentence], types: Sequence[str]) -> list[Sentence]:
    """The sentences without entities of other types, for a run restricted to some types (`--types`): it learns and
    is scored on those only. Without that choice nothing is dropped, so a test type never seen in training counts."""
    keep = set(types)
    return [Sentence(s.words, [span for span in s.entities if span.type in keep], s.line, s.source) for s in sentences]


def _sentence_shape(sentence: Sentence) -> str:
    """The widest shape among a sentence's entities: discontinuous, nested (two share a word) or flat."""
    if any(is_discontinuous(entity) for entity in sentence.entities):
        return "discontinuous"
    words = [w for entity in sentence.entities for start, end in entity.fragments for w in range(start, end)]
    return "nested" if len(words) != len(set(words)) else "flat"


def resolve_entity_shapes(requested: str | None, train: Sequence[Sentence], path: str = "training data") -> str:
    """The shapes the adapter decodes: `requested` if given, else "discontinuous" when the training data has a
    discontinuous entity and "nested" (the default) otherwise.

    A requested setting narrower than the training data (`flat` for nested entities, either for discontinuous ones)
    is refused, naming the first sentence that needs more: the adapter would learn targets it may never write.
    """
    shapes = [_sentence_shape(sentence) for sentence in train]
    if requested is None:
        return "discontinuous" if "discontinuous" in shapes else "nested"
    wider = [
        i
        for i, shape in enumerate(shapes)
        if ENTITY_SHAPE_CHOICES.index(shape) > ENTITY_SHAPE_CHOICES.index(requested)
    ]
    if wider:
        sentence = train[wider[0]]
        raise DataFormatError(
            sentence.source or path,
            sentence.line,
            f"--entity-shapes {requested}: this sentence has {shapes[wider[0]]} entities, which {requested} decoding "
            f"cannot write; pass --entity-shapes {max(shapes, key=ENTITY_SHAPE_CHOICES.index)} (or leave it out)",
        )
    return requested


def load_run_data(args: LightNerTrainingArguments) -> RunData:
    """Every split read (errors name file and line) and restricted to the run's types when `--types` chose them."""
    files = {"train": args.train_file, "dev": args.dev_file, "test": args.test_file}
    options = args.read_options()
    splits = {name: load_sentences(path, options) if path else [] for name, path in files.items()}
    if args.init_from:
        types, shapes = init_from_types(args.init_from, splits, args.train_file)
        return RunData(splits["train"], splits["dev"], splits["test"], types, shapes)
    types = resolve_entity_types(args.entity_types, splits)
    if args.entity_types:
        warning = left_out_types(types, splits)
        if warning:
            logger.warning(warning)
        splits = {name: restrict_to_types(sentences, types) for name, sentences in splits.items()}
    shapes = resolve_entity_shapes(args.entity_shapes, splits["train"], args.train_file)
    return RunData(splits["train"], splits["dev"], splits["test"], types, shapes)


def init_from_types(
    source: str, splits: Mapping[str, Sequence[Sentence]], path: str = "training data"
) -> tuple[list[str], str]:
    """The types and entity shapes of a run that goes on from the adapter `source` (`--init-from`): the adapter's
    types first (a round of annotation may lack some; they stay as the adapter learnt them), then any type the data
    adds, which starts from its label words as in a new adapter (annotators meet new types as they go). The shapes
    are the adapter's, refused by the first sentence that needs wider ones."""
    config = load_adapter_config(str(source))
    known = list(config.entity_types)
    added = [name for name in type_counts(s for split in splits.values() for s in split) if name not in known]
    if added:
        logger.info(f"--init-from {source}: the data adds the types {added}, which start from their label words")
    return known + added, resolve_entity_shapes(config.entity_shapes, splits["train"], path)


def init_from(model: LightNerModel, source: str | os.PathLike) -> None:
    """Start `model` from the whole adapter `source` (`--init-from`): its prompts, and the label-word weights of the
    types it knows, which are `model`'s first types (`init_from_types`); types added since keep their fresh rows."""
    source = str(source)
    state = read_adapter_file(source)
    model.load_adapter_state_dict(state, source=source, prompts_only=True)
    weights = state[LABEL_WORD_WEIGHTS_NAME]
    target = model.adapters[model.active_adapter].pointer_head.label_word_weights
    if weights.shape[0] > target.shape[0] or weights.shape[1] > target.shape[1]:
        raise ValueError(f"{source}: its label-word weights {tuple(weights.shape)} do not fit {tuple(target.shape)}")
    with torch.no_grad():
        target[: weights.shape[0], : weights.shape[1]].copy_(weights)


def encode_file_sentences(
    tokenizer, sentences: Sequence[Sentence], path: str, max_positions: int
) -> list[EncodedSentence]:
    """Encode the sentences of one file; a sentence that cannot be encoded (too long for the backbone, a word that
    encodes to nothing) raises `DataFormatError` naming the file, the sentence's number and its line."""
    try:
        return encode_sentences(tokenizer, [sentence.words for sentence in sentences], max_positions)
    except (TypeError, ValueError) as error:
        failure = error
    # Slow path, only on failure: encode one sentence at a time to find the first bad one.
    for number, sentence in enumerate(sentences, start=1):
        try:
            encode_sentences(tokenizer, [sentence.words], max_positions)
        except (TypeError, ValueError) as error:
            # Encoded alone, the sentence is "sentence 0" in the message: give it its number in the file.
            problem = str(error).replace("sentence 0", f"sentence {number}", 1)
            raise DataFormatError(path, sentence.line, problem) from None
    raise DataFormatError(path, None, str(failure))


def encode_examples(
    tokenizer, sentences: Sequence[Sentence], types: Sequence[str], max_positions: int, path: str = "training data"
) -> list[tuple[EncodedSentence, list[int]]]:
    """Source ids and pointer targets of every sentence, computed once before training; an entity the targets cannot
    hold (a type outside `types`) raises `DataFormatError` naming the file, the sentence's line and the entity."""
    type_ids = {name: index for index, name in enumerate(types)}
    encoded = encode_file_sentences(tokenizer, sentences, path, max_positions)
    examples = []
    for number, (source, sentence) in enumerate(zip(encoded, sentences), start=1):
        try:
            examples.append((source, encode_target(source, sentence.entities, type_ids, number)))
        except ValueError as error:
            raise DataFormatError(sentence.source or path, sentence.line, str(error)) from None
    return examples


def check_evaluation_files(tokenizer, args: LightNerTrainingArguments, data: RunData, max_positions: int) -> None:
    """Encode the dev and test sentences once, so that one the model cannot take fails before training, not after.
    Empty sentences are skipped: prediction gives them no entities."""
    for path, sentences in ((args.dev_file, data.dev), (args.test_file, data.test)):
        if path:
            encode_file_sentences(tokenizer, [s for s in sentences if s.words], path, max_positions)


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


def build_model(args: LightNerTrainingArguments, types: Sequence[str], entity_shapes: str) -> LightNerModel:
    """A fresh adapter on the backbone. The backbone loader refuses what would train on random weights (a folder
    holding another model, weights that did not load) and says what to do when the backbone cannot be fetched."""
    source = load_adapter_config(args.init_from) if args.init_from else None
    settings = model_settings(args)
    if source:
        settings["prompt_length"] = source.prompt_length
    model = LightNerModel.from_backbone(
        settings.pop("backbone"),
        list(types),
        label_words=_label_words(source, args.label_words),
        freeze_backbone=not args.full_finetune,
        **settings,
        training_data=data_name(args.train_file),
        training_dataset_id=split_source(args.train_file)[0] if is_hub_dataset(args.train_file) else None,
        entity_shapes=entity_shapes,
    )
    if args.init_prompts_from:
        init_prompts_from(model, args.init_prompts_from)
    if args.init_from:
        init_from(model, args.init_from)
    return model


def _label_words(source, requested):
    """Label words of a new adapter: those asked for; with `--init-from`, the source adapter's for its own types."""
    if source is None:
        return requested
    own = dict(zip(source.entity_types, source.label_words))
    return {**own, **(requested if isinstance(requested, Mapping) else {})}


def init_prompts_from(model: LightNerModel, source: str | os.PathLike) -> None:
    """Start `model`'s prompts from another adapter's (cross-domain transfer); the model keeps its own label words.

    Only the prompts are copied: the label-word weights belong to the target's label set. The source's prompts are
    folded tensors, so from here on `model` trains its prompts directly rather than through the reparameterisation MLP.
    """
    source = str(source)
    source_config = load_adapter_config(source)
    if source_config.prompt_length != model.config.prompt_length:
        raise ValueError(
            f"the source adapter {source} has prompts of length {source_config.prompt_length}, this model "
            f"{model.config.prompt_length}; pass --prompt-length {source_config.prompt_length}"
        )
    mismatches = backbone_shape_mismatches(source_config.backbone_shape, model.backbone.config, "source adapter")
    if mismatches:
        raise ValueError(
            f"the source adapter {source} was trained on a backbone of another shape: {'; '.join(mismatches)}"
        )
    model.load_adapter_state_dict(read_adapter_file(source), source=source, prompts_only=True)


# ---------------------------------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------------------------------


def _truncate_log(path: Path, lines: int) -> None:
    """Forget log lines written after the checkpoint a run resumes from: they will be written again."""
    if path.exists():
        kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        path.write_text("".join(kept), encoding="utf-8")


def log_metrics(accelerator: Accelerator, state: RunState, path: Path, values: dict[str, Any]) -> None:
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
# Set-up
# ---------------------------------------------------------------------------------------------------------------------


def _native_bf16(device_type: str) -> bool:
    """bf16 the accelerator computes natively. accelerate's `is_bf16_available` answers for every backend (MPS by
    macOS version, XPU, NPU, ...), but on CUDA it also counts pre-Ampere GPUs, which emulate bf16 slower than fp16."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return is_bf16_available(ignore_tpu=True)


def resolve_mixed_precision(choice: str) -> str | None:
    """`auto`: what `accelerate launch` was told, else bf16 on an accelerator with native bf16, fp16 on other
    accelerators that have it, none on CPU (where autocast buys nothing for these models)."""
    if choice != "auto":
        return choice
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return None
    device_type, _ = get_torch_accelerator_backend()
    if device_type is None:
        return "no"
    if _native_bf16(device_type):
        return "bf16"
    return "fp16" if is_fp16_available() else "no"


def make_accelerator(args: LightNerTrainingArguments, output_dir: Path) -> Accelerator:
    accelerator = Accelerator(
        cpu=cpu_process_group(),
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
    register_checkpoint_hooks(accelerator)
    return accelerator


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the parameters that require gradients (the freeze rule), fused: on CPU the default implementation
    is several times slower over bart-large's 406 M parameters when the whole backbone trains."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)


def prepare_training(
    accelerator: Accelerator,
    model: LightNerModel,
    examples: Sequence[tuple[EncodedSentence, list[int]]],
    args: LightNerTrainingArguments,
) -> tuple[Any, torch.optim.Optimizer, DataLoader, Any]:
    """The model, optimizer, shuffled batches and warm-up/decay schedule, all passed through `accelerator.prepare`
    (so that batches land on the model's device and are sharded across processes)."""
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
    return accelerator.prepare(model, optimizer, loader, scheduler)


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


# ---------------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """The prepared objects of a run, passed around as one."""

    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    loader: DataLoader
    state: RunState
    args: LightNerTrainingArguments
    output_dir: Path
    # This process's summed micro-batch losses since they were last folded into `state`: kept on the device so that
    # a step never waits for the device or the other processes; `_fold_loss` syncs when a log or checkpoint needs it.
    loss_sum: torch.Tensor


def train(args: LightNerTrainingArguments) -> dict[str, Any]:
    """Train an adapter as `args` says and return the final results (also written to `results.json`).

    Everything that can refuse the run (output folder, resume arguments, data files, types, backbone) is checked
    before anything is written.
    """
    output_dir = Path(args.output_dir)
    resumed = check_output_dir(output_dir, args.fingerprint(), args.resume, args.overwrite)
    accelerator = make_accelerator(args, output_dir)
    set_seed(args.seed)
    data = load_run_data(args)
    model = build_model(args, data.types, data.entity_shapes)
    max_positions = model.backbone.config.max_position_embeddings
    examples = encode_examples(model.tokenizer, data.train, data.types, max_positions, args.train_file)
    check_evaluation_files(model.tokenizer, args, data, max_positions)
    model, optimizer, loader, scheduler = prepare_training(accelerator, model, examples, args)

    if accelerator.is_main_process:
        if args.overwrite:
            clear_output_dir(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        args.to_json_file(output_dir / TRAINING_ARGS_NAME)
    state = resumed or RunState(arguments=args.fingerprint())
    if resumed:
        restore_checkpoint(accelerator, output_dir, state)
    if accelerator.is_main_process:
        _truncate_log(output_dir / METRICS_LOG_NAME, state.log_lines)
    accelerator.init_trackers("lightner", config=_tracker_config(args))
    hint = single_process_launch_hint(accelerator.num_processes, os.environ)
    if hint:
        logger.warning(hint)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        f"training {len(data.types)} types {data.types} on {len(examples)} sentences for {args.epochs} epochs: "
        f"{trainable:,} trainable parameters, {accelerator.num_processes} process(es) on {accelerator.device}"
    )

    loss_sum = torch.zeros((), device=accelerator.device)
    run = _Run(accelerator, model, optimizer, scheduler, loader, state, args, output_dir, loss_sum)
    for epoch in range(state.epoch, args.epochs):
        _train_epoch(run, epoch)
        _end_epoch(run, epoch, data.dev)
    results = _final_results(run, data)
    accelerator.end_training()
    return results


def _tracker_config(args: LightNerTrainingArguments) -> dict[str, Any]:
    """Hyperparameters as every tracker accepts them: numbers, strings and booleans (anything else as JSON)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in asdict(args).items()}


def _fold_loss(run: _Run) -> None:
    """Add the processes' mean of the device-side loss sum to the run state (one sync), then restart the sum. A sum
    that is not a finite number means a step's loss was not (NaN propagates), and stops the run."""
    loss = run.accelerator.reduce(run.loss_sum, reduction="mean").item()
    if not math.isfinite(loss):
        _stop_non_finite(run, f"the training loss became {loss}")
    run.state.epoch_loss_sum += loss
    run.loss_sum.zero_()


def _check_parameters(run: _Run) -> None:
    """Stop the run if a trainable parameter holds NaN or infinity (one sync for all), before anything is saved: an
    adapter of NaNs predicts no entities, and a checkpoint of them would push a good one out."""
    parameters = [p for p in run.model.parameters() if p.requires_grad]
    if not torch.stack([torch.isfinite(p).all() for p in parameters]).all().item():
        names = [n for n, p in run.model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        _stop_non_finite(run, f"trainable parameters became NaN or infinite ({', '.join(names[:3])})")


def _stop_non_finite(run: _Run, what: str) -> None:
    """Raise the error that stops a run gone non-finite, saying what is kept and what to change."""
    checkpoint = latest_checkpoint(run.output_dir)
    kept = [f"the last good checkpoint, {checkpoint}"] if checkpoint else []
    if (run.output_dir / ADAPTER_WEIGHTS_NAME).exists():
        kept.append("the adapter saved before")
    raise FloatingPointError(
        f"training stopped at step {run.state.global_step} (epoch {run.state.epoch + 1}): {what}, so nothing more is "
        f"saved (kept as they were: {' and '.join(kept) or 'nothing, none was saved yet'}). Lower --lr, or check "
        "--weight-decay and --max-grad-norm, and train again with --overwrite"
    )


def _mean_loss(state: RunState) -> float:
    return state.epoch_loss_sum / max(state.epoch_loss_count, 1)


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
        run.loss_sum += training_step(accelerator, run.model, run.optimizer, run.scheduler, batch, args.max_grad_norm)
        state.epoch_loss_count += 1
        sentences += batch["input_ids"].shape[0] * accelerator.num_processes
        if accelerator.sync_gradients:
            _end_step(run, sentences / (time.perf_counter() - started), progress)
    progress.close()


def _end_step(run: _Run, speed: float, progress: tqdm) -> None:
    state, args = run.state, run.args
    state.global_step += 1
    state.step_in_epoch += 1
    progress.update(1)
    if state.global_step % args.logging_steps == 0:
        _fold_loss(run)
        values = {
            "train/loss": _mean_loss(state),
            "train/learning_rate": run.scheduler.get_last_lr()[0],
            "train/sentences_per_second": speed,
        }
        log_metrics(run.accelerator, state, run.output_dir / METRICS_LOG_NAME, values)
        progress.set_postfix(loss=f"{values['train/loss']:.4f}", sent_per_s=f"{speed:.1f}")
    if state.global_step % args.checkpoint_steps == 0:
        _fold_loss(run)
        _check_parameters(run)
        save_checkpoint(run.accelerator, state)
    if state.global_step == args.stop_after_steps:
        run.accelerator.print(f"stopping abruptly after step {state.global_step} (--stop-after-steps)")
        os._exit(INTERRUPTED_EXIT_CODE)


def _end_epoch(run: _Run, epoch: int, dev_sentences: Sequence[Sentence]) -> None:
    """Score the dev set, keep the adapter if it is the best so far, log, plot and checkpoint the epoch boundary."""
    accelerator, state, args = run.accelerator, run.state, run.args
    model = accelerator.unwrap_model(run.model)
    _fold_loss(run)
    _check_parameters(run)
    entry = {"epoch": epoch + 1, "train_loss": _mean_loss(state), "dev_f1": None}
    improved = not dev_sentences
    if dev_sentences:
        # Under the run's mixed precision, as training ran: the scores are those of the model being trained.
        with accelerator.autocast():
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


def _final_results(run: _Run, data: RunData) -> dict[str, Any]:
    """Score the kept adapter on the test file (if any; never used for selection), else on dev; write results.json."""
    accelerator, args, state = run.accelerator, run.args, run.state
    accelerator.wait_for_everyone()
    results: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "best_dev_f1": state.best_f1,
        "epochs": args.epochs,
        "steps": state.global_step,
        "num_processes": accelerator.num_processes,
        "entity_types": list(data.types),
    }
    evaluated_file, sentences = (args.test_file, data.test) if args.test_file else (args.dev_file, data.dev)
    if evaluated_file:
        best = load_best_adapter(run.output_dir, accelerator.unwrap_model(run.model), args.full_finetune)
        with accelerator.autocast():
            scores = evaluate_sentences(best, sentences, accelerator, args.eval_batch_size, args.num_beams)
        split = "test" if args.test_file else "dev"
        results.update(data=str(evaluated_file), split=split, **scores)
        if accelerator.is_main_process:
            # Saved again with its scores in the config, so that the model card (and the Hub page) shows them.
            best.config.evaluation = {
                f"{split} {name}": round(scores[name], 4) for name in ("precision", "recall", "f1")
            }
            best.config.evaluation_data = data_name(evaluated_file)
            best.save_pretrained(run.output_dir)
    if accelerator.is_main_process:
        write_results(run.output_dir / RESULTS_NAME, results)
    return results


__all__ = [
    "INTERRUPTED_EXIT_CODE",
    "LightNerTrainingArguments",
    "encode_examples",
    "init_prompts_from",
    "prepare_training",
    "train",
]
