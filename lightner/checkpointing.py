"""Where a training run stands, its resumable checkpoints, and what may be written into its output folder.

A checkpoint is `accelerator.save_state` (trainable weights only, optimizer, scheduler, random states) plus the
run's `RunState` as JSON, written last: a folder without it is a checkpoint a kill interrupted, never resumed from.
Everything a refused run could trip over (an output folder holding another run, a resume with other arguments, a
corrupt state file) is checked by `check_output_dir` before the run writes anything.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import SAFE_WEIGHTS_NAME
from safetensors.torch import load_file

from .arguments import TRAINING_ARGS_NAME
from .hub_lightner import ADAPTER_WEIGHTS_NAME
from .modeling_lightner import LightNerModel

logger = get_logger(__name__)

CHECKPOINTS_DIR = "checkpoints"
RUN_STATE_NAME = "trainer_state.json"
METRICS_LOG_NAME = "metrics.jsonl"
RESULTS_NAME = "results.json"
LEARNING_CURVE_NAME = "learning_curve.png"
# What a run writes into its output folder besides the adapter's own files (config, weights, tokenizer, card).
RUN_FILES = (CHECKPOINTS_DIR, METRICS_LOG_NAME, RESULTS_NAME, LEARNING_CURVE_NAME, TRAINING_ARGS_NAME, "logs")
# Files whose presence means the folder already holds an adapter or a run, or a README.md the model card would replace.
ADAPTER_FILES = ("config.json", ADAPTER_WEIGHTS_NAME, "README.md", "backbone")


@dataclass
class RunState:
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
    """The newest complete checkpoint (one whose run state was written), or None."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    complete = [path for path in folder.glob("checkpoint_*") if (path / RUN_STATE_NAME).exists()]
    return max(complete, key=_checkpoint_number, default=None)


def read_run_state(checkpoint: Path) -> RunState:
    """A checkpoint's run state; a damaged file is named, with what to do, rather than failing deep in json."""
    path = checkpoint / RUN_STATE_NAME
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is corrupt ({error}); delete {checkpoint} to resume from the checkpoint before it"
        ) from None
    known = {spec.name for spec in fields(RunState)}
    if not isinstance(values, dict) or not set(values) <= known:
        raise ValueError(f"{path} is not a LightNER run state; delete {checkpoint} to resume from the one before it")
    return RunState(**values)


def check_output_dir(output_dir: Path, arguments: dict[str, Any], resume: bool, overwrite: bool) -> RunState | None:
    """Refuse an output this run must not write into (a file, a folder holding another run); with `resume`, the
    state to resume from, if any.

    Runs before anything is written, so that a refused run leaves the folder as it found it: a new run is refused
    where an earlier run or adapter lives (unless `overwrite`), and a resume whose arguments differ from the
    interrupted run's is refused before `training_args.json` would be replaced.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} is a file, and a run writes a folder; choose another --output")
    checkpoint = latest_checkpoint(output_dir)
    if resume and checkpoint is not None:
        state = read_run_state(checkpoint)
        changed = sorted(
            key for key in arguments.keys() | state.arguments.keys() if arguments.get(key) != state.arguments.get(key)
        )
        if changed:
            raise ValueError(
                f"cannot resume {output_dir}: these arguments differ from the interrupted run's: {changed}"
            )
        return state
    # Resuming a run killed before its first checkpoint: its run files are its own, an adapter would not be.
    guarded = ADAPTER_FILES if resume else (*ADAPTER_FILES, *RUN_FILES)
    occupied = [name for name in guarded if (output_dir / name).exists()]
    if occupied and not overwrite:
        hint = "pass --resume to continue it, " if checkpoint is not None else ""
        raise FileExistsError(
            f"{output_dir} already holds {', '.join(occupied)}; {hint}pass --overwrite to replace them, or choose "
            "another --output"
        )
    return None


def clear_output_dir(output_dir: Path) -> None:
    """Delete an earlier run's checkpoints and run files (for `--overwrite`), so that none is mistaken for this run's.
    Other files stay: the adapter files are replaced as the new adapter is saved."""
    for name in RUN_FILES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _remove_incomplete_checkpoints(output_dir: Path) -> None:
    """Checkpoints a kill interrupted would otherwise count towards the limit and push out a complete one."""
    for path in (output_dir / CHECKPOINTS_DIR).glob("checkpoint_*"):
        if not (path / RUN_STATE_NAME).exists():
            shutil.rmtree(path)


def keep_trainable_weights(models: list, weights: list[dict], output_dir: str) -> None:
    """Checkpoint only what training changes (a `save_state` pre-hook): with a frozen backbone, the prompt MLPs
    (0.25 GB for bart-large) rather than also the 1.6 GB of backbone weights that never change."""
    for index, model in enumerate(models):
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        weights[index] = {name: tensor for name, tensor in weights[index].items() if name in trainable}


def load_trainable_weights(models: list, input_dir: str) -> None:
    """The counterpart of `keep_trainable_weights` (a `load_state` pre-hook); takes the models off accelerate's list
    so that it loads nothing itself."""
    for model in models:
        state = load_file(os.path.join(input_dir, SAFE_WEIGHTS_NAME))
        missing = {name for name, p in model.named_parameters() if p.requires_grad} - set(state)
        if missing:
            raise ValueError(f"checkpoint {input_dir} lacks trainable tensors {sorted(missing)[:5]}")
        model.load_state_dict(state, strict=False)
    models.clear()


def register_checkpoint_hooks(accelerator: Accelerator) -> None:
    accelerator.register_save_state_pre_hook(keep_trainable_weights)
    accelerator.register_load_state_pre_hook(load_trainable_weights)


def save_checkpoint(accelerator: Accelerator, state: RunState) -> None:
    """A resumable checkpoint in `checkpoints/checkpoint_<n>`; its run state, written last, marks it complete."""
    location = Path(accelerator.save_state())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (location / RUN_STATE_NAME).write_text(json.dumps(asdict(state), indent=1))
    accelerator.wait_for_everyone()


def restore_checkpoint(accelerator: Accelerator, output_dir: Path, state: RunState) -> None:
    """Load the newest complete checkpoint (whose state `check_output_dir` read) into the prepared objects."""
    checkpoint = latest_checkpoint(output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _remove_incomplete_checkpoints(output_dir)
    accelerator.wait_for_everyone()
    accelerator.load_state(str(checkpoint))
    accelerator.project_configuration.iteration = _checkpoint_number(checkpoint) + 1
    logger.info(f"resuming from {checkpoint}: epoch {state.epoch + 1}, {state.step_in_epoch} steps into it")


def load_best_adapter(output_dir: Path, current: LightNerModel, full_finetune: bool) -> LightNerModel:
    """The adapter saved in `output_dir`, sharing `current`'s backbone unless full fine-tuning changed it since."""
    if full_finetune:
        return LightNerModel.from_pretrained(output_dir)
    return LightNerModel.from_pretrained(output_dir, backbone=current.backbone, tokenizer=current.tokenizer)


__all__ = [
    "CHECKPOINTS_DIR",
    "RUN_STATE_NAME",
    "RunState",
    "check_output_dir",
    "clear_output_dir",
    "latest_checkpoint",
    "load_best_adapter",
    "read_run_state",
    "register_checkpoint_hooks",
    "restore_checkpoint",
    "save_checkpoint",
]
