"""Loading and saving LightNER adapters: backbones (shared between adapters), adapter folders, model cards, uploads.

An adapter folder (or Hub repository) holds `config.json`, the adapter tensors in `model.safetensors`, the tokenizer,
a model card, and the code files that remote code needs; its backbone is loaded from the repository its config names
(or from its `backbone/` subfolder when the backbone was fine-tuned too). Weights are read only from safetensors.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoTokenizer, BartConfig, BartModel, PretrainedConfig, PreTrainedModel
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.utils import cached_file, logging
from transformers.utils.hub import extract_commit_hash

from .configuration_lightner import ENTITY_SHAPES, LightNerConfig
from .quantization_lightner import check_quantize, is_quantized, quantize_backbone

logger = logging.get_logger(__name__)

ADAPTER_WEIGHTS_NAME = "model.safetensors"
SHARDED_WEIGHTS_INDEX = "model.safetensors.index.json"
TRAINED_BACKBONE_FOLDER = "backbone"
# `pipeline()` looks a task up among the config's `custom_pipelines` before resolving aliases, so a saved adapter's
# "ner" reaches `LightNerPipeline` rather than the token-classification pipeline.
PIPELINE_TASK = "ner"
PIPELINE_MODULE = "pipeline_lightner"
PIPELINE_CLASS = "LightNerPipeline"
ENDPOINT_HANDLER_FILE = "handler.py"


# ---------------------------------------------------------------------------------------------------------------------
# Loading arguments
# ---------------------------------------------------------------------------------------------------------------------

# Where an adapter repository's files come from: the download arguments transformers' loaders take. `AutoModel` (from
# transformers 5.25 on) hands every one of them to a remote-code model, set or not, so none may be refused; `proxies`
# goes on to the Hub client, which (huggingface_hub 1.x on) ignores it with a warning and reads HTTP(S)_PROXY instead.
ADAPTER_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies", "subfolder")
# Of those, the ones that also apply to the backbone's repository, whose revision is `backbone_revision` instead.
BACKBONE_HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "proxies")
# What `AutoModel.from_pretrained` and `pipeline()` hand every model class; none of it asks anything of this one.
FRAMEWORK_KWARGS = (
    "trust_remote_code",
    "adapter_kwargs",
    "code_revision",
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
)
# The dtypes a backbone may be loaded in, by the names transformers users write.
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
# The dtypes a backbone may be loaded in, and those an adapter file may be written in (float64 too).
LOADING_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
COMPUTE_DTYPES = (*LOADING_DTYPES, torch.float64)
LOADING_KWARGS = (
    *ADAPTER_HUB_KWARGS,
    "backbone_revision",
    "dtype",
    "torch_dtype",
    "device_map",
    "quantize",
    *FRAMEWORK_KWARGS,
)


@dataclass(frozen=True)
class LoadingOptions:
    """The keyword arguments of a loading call, checked and sorted by what they apply to.

    `dtype` None keeps the dtype the backbone was saved in (transformers' "auto"); `device` None leaves the model
    where transformers loads it (the CPU). `backbone_revision` None means the one the adapter's config records.
    """

    adapter_hub: dict[str, Any] = field(default_factory=dict)
    backbone_hub: dict[str, Any] = field(default_factory=dict)
    backbone_revision: str | None = None
    dtype: torch.dtype | None = None
    device: torch.device | None = None
    quantize: str | None = None


def loading_options(kwargs: Mapping[str, Any], call: str = "from_pretrained") -> LoadingOptions:
    """Check the keyword arguments of a loading call (`call` names it in messages) and sort them.

    The one place that knows which loading arguments exist: an argument no loader uses is refused by name, because
    transformers users pass many (`low_cpu_mem_usage`, `attn_implementation`, ...) and one silently dropped would
    let them believe it took effect.
    """
    unknown = sorted(set(kwargs) - set(LOADING_KWARGS))
    if unknown:
        raise TypeError(
            f"{call} got argument(s) LightNER does not support: {', '.join(unknown)}; it takes "
            f"{', '.join(name for name in LOADING_KWARGS if name not in FRAMEWORK_KWARGS)}"
        )
    dtype = kwargs.get("dtype")
    if kwargs.get("torch_dtype") is not None:
        if dtype is not None and resolve_dtype(dtype) != resolve_dtype(kwargs["torch_dtype"]):
            raise ValueError(f"{call} got dtype={dtype!r} and torch_dtype={kwargs['torch_dtype']!r}; give one")
        dtype = kwargs["torch_dtype"]
    check_quantize(kwargs.get("quantize"), resolve_dtype(dtype))
    return LoadingOptions(
        adapter_hub={key: kwargs[key] for key in ADAPTER_HUB_KWARGS if kwargs.get(key) is not None},
        backbone_hub={key: kwargs[key] for key in BACKBONE_HUB_KWARGS if kwargs.get(key) is not None},
        backbone_revision=kwargs.get("backbone_revision"),
        dtype=resolve_dtype(dtype),
        device=resolve_device(kwargs.get("device_map")),
        quantize=kwargs.get("quantize"),
    )


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A backbone dtype for loading from a `torch.dtype` or its name; None for None or "auto" (as saved)."""
    if dtype == "auto":
        return None
    return check_dtype(dtype, allowed=LOADING_DTYPES, also=' (or "auto", the dtype it was saved in)')


def resolve_device(device_map: str | int | torch.device | Mapping | None) -> torch.device | None:
    """The one device a `device_map` names: "cpu", "cuda", "cuda:N", a GPU index, a `torch.device`, `{"": device}`,
    or "auto" (the first GPU if there is one, else the CPU). None for None.

    A per-module map is refused: the prompts enter every attention layer, so the backbone and its adapters live on
    one device. A device this machine lacks is refused here, before anything is loaded.
    """
    if device_map is None:
        return None
    if isinstance(device_map, Mapping):
        if set(device_map) != {""}:
            raise ValueError(
                f"device_map {dict(device_map)!r} places modules on several devices; LightNER keeps the backbone and "
                'its adapters on one: pass "cpu", "cuda", "cuda:N", "auto" or {"": device}'
            )
        device_map = device_map[""]
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device_map, "device_map")


def check_device(device: str | int | torch.device, argument: str = "device") -> torch.device:
    """`device` as a `torch.device` this machine has; a misspelt one, or one this machine (or torch build) lacks, is
    refused naming `argument`, before anything is loaded rather than deep inside torch. The one device check, for
    `device_map` and the command line's `--device`."""
    try:
        checked = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f'{argument}={device!r} is not a device: expected "cpu", "cuda", "cuda:N" or a GPU index'
        ) from None
    if checked.type == "cpu":
        return checked
    backend = getattr(torch, checked.type, None)
    if backend is None or not backend.is_available():
        raise ValueError(f"{argument}={device!r}: this machine (or this torch build) has no {checked.type} device")
    if checked.index is not None and checked.index >= backend.device_count():
        raise ValueError(f"{argument}={device!r}: this machine has {backend.device_count()} {checked.type} device(s)")
    return checked


# ---------------------------------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------------------------------


class SharedBackbones:
    """Frozen backbones loaded in this process, and the models using each backbone.

    Adapters loaded one by one get the same backbone when it comes from the same place in the same dtype. The rule
    for moving: a model moved to another device or dtype while other models use its backbone gets its own copy first
    (`LightNerModel._apply`), and a moved backbone leaves the registry, whose keys name the dtype it was loaded in.
    """

    def __init__(self):
        self._by_key: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._users: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, key: tuple) -> BartModel | None:
        return self._by_key.get(key)

    def put(self, key: tuple, backbone: BartModel) -> None:
        self._by_key[key] = backbone

    def add_user(self, backbone: BartModel, model) -> None:
        self._users.setdefault(backbone, weakref.WeakSet()).add(model)

    def detach(self, backbone: BartModel, model) -> bool:
        """`model` is about to move `backbone`: take both out of sharing; True when other models still use it."""
        users = self._users.get(backbone, weakref.WeakSet())
        users.discard(model)
        if users:
            return True
        for key in [key for key, shared in self._by_key.items() if shared is backbone]:
            del self._by_key[key]
        return False


SHARED_BACKBONES = SharedBackbones()


class BackboneSharing:
    """What a model does about the backbone it may share: join `SHARED_BACKBONES` as one of its users when built,
    and take a copy of its own before a move (`to()`, `half()`, `cuda()`...) would move other models' backbone too."""

    def _share_backbone(self) -> None:
        SHARED_BACKBONES.add_user(self.backbone, self)

    def _apply(self, fn, recurse: bool = True):
        """`to()`, `half()`, `cuda()`...: a backbone other models share is copied first, so that moving this model
        never leaves theirs on another device or dtype than their adapters; a moved backbone is no longer shared."""
        reference = next(self.backbone.parameters())
        probe = torch.empty(0, dtype=reference.dtype, device=reference.device)
        moved = fn(probe)
        if moved.dtype != probe.dtype or moved.device != probe.device:
            if SHARED_BACKBONES.detach(self.backbone, self):
                self.backbone = copy.deepcopy(self.backbone)
                SHARED_BACKBONES.add_user(self.backbone, self)
        return super()._apply(fn, recurse)


def load_backbone(
    name_or_path: str,
    dtype: torch.dtype | None = None,
    share: bool = True,
    subfolder: str = "",
    device: torch.device | None = None,
    quantize: str | None = None,
    **hub,
) -> BartModel:
    """The BART backbone at `name_or_path` (a Hub id or a local folder), shared with other adapters when frozen;
    `quantize="int8"` quantizes its linear layers (`quantize_backbone`), and every adapter asking for that shares it.

    `hub` (`revision`, `cache_dir`, `token`, `local_files_only`, `force_download`, `proxies`) says where its files come
    from; `dtype` None keeps the dtype it was saved in; `device` None leaves it on the CPU. Refuses, naming the folder:
    a folder that does not exist, one that holds something else than a BART model (an adapter, say), and one whose
    weights do not all load (transformers would initialise the rest at random).
    """
    check_quantize(quantize, dtype)
    key = (str(name_or_path), subfolder, str(dtype), str(device), hub.get("revision"), quantize)
    if share and SHARED_BACKBONES.get(key) is not None:
        return SHARED_BACKBONES.get(key)
    where = os.path.join(name_or_path, subfolder) if subfolder else name_or_path
    _check_folder(
        name_or_path, subfolder, ("config.json", (ADAPTER_WEIGHTS_NAME, SHARDED_WEIGHTS_INDEX)), "BART backbone"
    )
    try:
        config_dict = _config_dict(BartConfig, name_or_path, "BART backbone", subfolder=subfolder, **hub)
        if config_dict.get("model_type") != "bart":
            raise ValueError(
                f"{where} holds a {config_dict.get('model_type')!r} model, not a BART backbone"
                + (
                    " (it is a LightNER adapter: load it with from_pretrained)"
                    if config_dict.get("model_type") == "lightner"
                    else ""
                )
            )
        backbone, info = BartModel.from_pretrained(
            name_or_path, dtype=dtype, subfolder=subfolder, use_safetensors=True, output_loading_info=True, **hub
        )
    except OSError as error:
        raise OSError(
            f"could not load the backbone {where!r}: {error}\nIf this machine is offline, download the backbone "
            "elsewhere (`hf download facebook/bart-large --local-dir DIR`) and pass its local folder as the backbone "
            "(`--backbone DIR`, `LightNerModel.from_backbone(DIR, ...)` or `from_pretrained(..., backbone=...)`)."
        ) from error
    not_loaded = sorted(info["missing_keys"]) + sorted(
        str(key if isinstance(key, str) else key[0]) for key in info["mismatched_keys"]
    )
    if not_loaded:
        raise ValueError(
            f"{where} is not a complete BART backbone: {len(not_loaded)} of its weights are missing or misshapen in "
            f"its {ADAPTER_WEIGHTS_NAME} ({', '.join(not_loaded[:3])}{', ...' if len(not_loaded) > 3 else ''})"
        )
    if quantize is not None:
        quantize_backbone(backbone, quantize)
    if device is not None:
        backbone.to(device)
    if share:
        SHARED_BACKBONES.put(key, backbone)
    return backbone


def hub_commit(name_or_path: str, subfolder: str = "", **hub) -> str | None:
    """The Hub commit a repository's files were fetched at (from the cache's snapshot folder); None for a folder."""
    if os.path.isdir(os.path.join(name_or_path, subfolder)):
        return None
    return extract_commit_hash(cached_file(name_or_path, "config.json", subfolder=subfolder, **hub), None)


# ---------------------------------------------------------------------------------------------------------------------
# Low precision: the dtype the backbone computes in (int8 linear layers: quantization_lightner.py)
# ---------------------------------------------------------------------------------------------------------------------


def check_dtype(
    dtype: torch.dtype | str | None,
    argument: str = "dtype",
    allowed: tuple[torch.dtype, ...] = COMPUTE_DTYPES,
    also: str = "",
) -> torch.dtype | None:
    """`dtype` (a `torch.dtype` or its name: "bfloat16", "bf16", "half", ...) as one of the floating dtypes `allowed`;
    None stays None (the backbone's own). Anything else is refused by name: the backbone cannot compute in it and the
    adapter's prompts cannot be cast to it. The one parser of dtype arguments, for loading and saving alike."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        resolved = DTYPES.get(name, getattr(torch, name, None))
    else:
        resolved = dtype
    if resolved not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise ValueError(
            f"unknown {argument} {dtype!r}: the backbone cannot be cast to it; use one of {names}{also}"
            + ("; for int8 weights pass quantize='int8'" if "int" in str(dtype) else "")
        )
    return resolved


# ---------------------------------------------------------------------------------------------------------------------
# Adapter folders
# ---------------------------------------------------------------------------------------------------------------------


def load_tokenizer(
    name_or_path: str,
    config: LightNerConfig | None = None,
    backbone_hub: Mapping[str, Any] | None = None,
    backbone: str | None = None,
    **hub,
):
    """The tokenizer saved with an adapter (fetched with `hub`), or else its backbone's (with `backbone_hub`): the
    one at `backbone` when given (a local copy of the backbone the config names), else at `config.backbone`.

    Handing `AutoTokenizer` the adapter's config stops it from loading that config itself, which for a folder with
    remote code would ask whether to trust it.
    """
    try:
        return AutoTokenizer.from_pretrained(name_or_path, config=config, **hub)
    except (OSError, ValueError):
        if config is None:
            raise
        return AutoTokenizer.from_pretrained(backbone or config.backbone, **(backbone_hub or {}))


def load_adapter_config(path: str, **hub) -> LightNerConfig:
    """An adapter's config, refusing folders that hold something other than a LightNER adapter."""
    _check_folder(path, hub.get("subfolder", ""), ("config.json",), "LightNER adapter")
    config_dict = _config_dict(LightNerConfig, path, "LightNER adapter", **hub)
    model_type = config_dict.get("model_type")
    if model_type != LightNerConfig.model_type:
        raise ValueError(
            f"{path}: config.json has model_type {model_type!r}, not 'lightner'; this is not a LightNER adapter"
        )
    return LightNerConfig.from_dict(config_dict)


# How a `config.json` that holds some other JSON value than an object is described.
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _config_dict(config_class, path: str, what: str, **hub) -> dict[str, Any]:
    """The `config.json` of the `what` at `path` (read by `config_class`) as a dict. A file that holds valid JSON
    but no object (an array, say) is refused naming the file, where reading a field of it would fail on a list."""
    config_dict, _ = config_class.get_config_dict(path, **hub)
    if not isinstance(config_dict, dict):
        where = os.path.join(path, hub.get("subfolder") or "", "config.json")
        kind = _JSON_KINDS.get(type(config_dict), "null")
        raise ValueError(f"{where} holds {kind}, not a JSON object of settings: it is not a saved {what}")
    return config_dict


def read_adapter_file(path: str, **hub) -> dict[str, torch.Tensor]:
    """Adapter tensors from `model.safetensors` (never a pickle), with an error naming the file if it is damaged."""
    _check_folder(path, hub.get("subfolder", ""), (ADAPTER_WEIGHTS_NAME,), "LightNER adapter")
    weights_file = cached_file(path, ADAPTER_WEIGHTS_NAME, **hub)
    try:
        return load_file(weights_file)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{weights_file} is not a readable safetensors adapter file (truncated or corrupted?): {error}"
        ) from error


def _only(kwargs: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The entries of `kwargs` named in `names` whose value is set."""
    return {key: value for key, value in kwargs.items() if key in names and value is not None}


def _check_folder(path: str, subfolder: str, needed: tuple[str | tuple[str, ...], ...], what: str) -> None:
    """For a local path, say plainly that the folder or one of its `needed` files (a name, or alternatives) does not
    exist, where transformers would report a malformed repo id or a Hub URL that does not exist either."""
    folder = os.path.join(path, subfolder) if subfolder else path
    if os.path.isdir(folder):
        for names in needed:
            names = (names,) if isinstance(names, str) else names
            if not any(os.path.isfile(os.path.join(folder, name)) for name in names):
                raise FileNotFoundError(f"{folder} has no {' or '.join(names)}: it is not a saved {what}")
    elif _looks_local(str(path)):
        raise FileNotFoundError(f"{folder}: the folder does not exist (looking for a {what})")


def _looks_local(path: str) -> bool:
    """Whether `path` can only mean a local folder: it cannot be a Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1:
        return True
    try:
        validate_repo_id(path)
    except HFValidationError:
        return True
    return False


def add_pipeline_to_folder(save_directory: str | os.PathLike, config: LightNerConfig) -> None:
    """Make a saved adapter folder build `LightNerPipeline` from `pipeline("ner", model=folder,
    trust_remote_code=True)`: record it in `config.custom_pipelines` (call before the config is written) and copy
    the pipeline's file and the files it imports into the folder, without importing the pipeline here."""
    pipeline_file = Path(__file__).parent / f"{PIPELINE_MODULE}.py"
    if not pipeline_file.is_file():  # a model loaded as remote code without its pipeline file
        logger.warning(f"{pipeline_file} not found: the saved adapter will not register the LightNER pipeline")
        return
    config.custom_pipelines = {
        PIPELINE_TASK: {"impl": f"{PIPELINE_MODULE}.{PIPELINE_CLASS}", "pt": ["AutoModel"], "type": "text"}
    }
    os.makedirs(save_directory, exist_ok=True)
    for source in [pipeline_file, *get_relative_import_files(pipeline_file)]:
        shutil.copy(source, os.path.join(save_directory, os.path.basename(source)))


def add_endpoint_handler(save_directory: str | os.PathLike) -> None:
    """Copy `handler.py`, the Inference Endpoints entry point, into a saved adapter folder (it imports nothing of the
    project but through transformers, so it is copied as it is)."""
    handler_file = Path(__file__).parent / ENDPOINT_HANDLER_FILE
    if not handler_file.is_file():  # a model loaded as remote code: only imported files travel with it
        logger.warning(f"{handler_file} not found: the saved adapter will not carry an Inference Endpoints handler")
        return
    os.makedirs(save_directory, exist_ok=True)
    shutil.copy(handler_file, os.path.join(save_directory, ENDPOINT_HANDLER_FILE))


# The usage snippet's repository until the card is written for an upload, which knows the real one.
CARD_REPOSITORY_PLACEHOLDER = "<this repository>"


def write_model_card(save_directory: str | os.PathLike, config: LightNerConfig, repo_id: str | None = None) -> None:
    """A Hub model card: metadata for the Hub's filters and widgets, and what a user needs to trust the adapter.

    The scores become model-index `eval_results`, which the Hub shows on the model page; `datasets` names the
    training data only when it was a Hub dataset (a local file name would link to a dataset that does not exist);
    the usage snippet loads `repo_id` (the placeholder until `push_to_hub` or `lightner push` writes it again).
    """
    from huggingface_hub import ModelCard, ModelCardData

    model_name = repo_id or Path(save_directory).resolve().name
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="token-classification",
        base_model=config.backbone,
        license="apache-2.0",
        tags=["lightner", "ner", "named-entity-recognition", "prompt-tuning", "custom_code"],
        datasets=[config.training_dataset_id] if config.training_dataset_id else None,
        eval_results=eval_results(config) or None,
    )
    label_rows = "\n".join(f"| {t} | {w} |" for t, w in zip(config.entity_types, config.label_words))
    scores = "\n".join(f"| {name} | {value} |" for name, value in (config.evaluation or {}).items())
    scored_on = f" on {config.evaluation_data}" if config.evaluation_data else ""
    body = f"""# LightNER adapter

A [LightNER](https://arxiv.org/abs/2109.00720) adapter: prompts (length {config.prompt_length}) prepended inside every
attention layer of a frozen `{config.backbone}`, and label-word weights for its {config.num_types} entity types. The
adapter holds only these tensors; the backbone is loaded from its own repository.

## Labels

| type | label words |
|---|---|
{label_rows}

## Training data

{config.training_data or "Not recorded."}

Entity shapes: `{config.entity_shapes}`, {ENTITY_SHAPES[config.entity_shapes]} (what decoding writes).

## Evaluation{scored_on}

{"| metric | value |" + chr(10) + "|---|---|" + chr(10) + scores if scores else "Not recorded."}

## Use

```python
from transformers import AutoModel, pipeline

model = AutoModel.from_pretrained("{repo_id or CARD_REPOSITORY_PLACEHOLDER}", trust_remote_code=True)
model.predict([["Angela", "Merkel", "visited", "Paris"]])

ner = pipeline("ner", model="{repo_id or CARD_REPOSITORY_PLACEHOLDER}", trust_remote_code=True)
ner("Angela Merkel visited Paris.")
```
{_endpoint_card_section()}"""
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    card.save(os.path.join(save_directory, "README.md"))


def _endpoint_card_section() -> str:
    """The card's section on the Inference Endpoints handler and its request limits, which `handler.py` states (the
    one place they are set); none where this code has no handler to save (a model loaded as remote code)."""
    import importlib.util

    handler_file = Path(__file__).parent / ENDPOINT_HANDLER_FILE
    if not handler_file.is_file():
        return ""
    spec = importlib.util.spec_from_file_location("_lightner_endpoint_handler", handler_file)
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    return f"""
## Inference Endpoints

`handler.py` answers `{{"inputs": text or list of texts, "parameters": {{...}}}}` with the pipeline's entities.
{handler.describe_limits()}
"""


def eval_results(config: LightNerConfig) -> list:
    """`config.evaluation` (`{"test f1": 0.91, ...}`: split, then metric) as the Hub's model-index results."""
    from huggingface_hub import EvalResult

    dataset = config.evaluation_data or config.training_dataset_id or "unrecorded"
    results = []
    for name, value in (config.evaluation or {}).items():
        split, _, metric = name.rpartition(" ")
        results.append(
            EvalResult(
                task_type="token-classification",
                task_name="Named entity recognition",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split or None,
                metric_type=metric,
                metric_name=f"entity-level {metric} (exact span and type)",
                metric_value=value,
            )
        )
    return results


def write_card_repository(folder: str | os.PathLike, repo_id: str) -> None:
    """Write a saved folder's card again for `repo_id` if it still shows the placeholder (a card edited by hand, or
    written for another repository, is left as it is)."""
    card_file = Path(folder) / "README.md"
    if card_file.is_file() and CARD_REPOSITORY_PLACEHOLDER in card_file.read_text(encoding="utf-8"):
        write_model_card(folder, load_adapter_config(str(folder)), repo_id=repo_id)


def upload_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str = "Upload LightNER adapter",
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
):
    """Upload a saved adapter folder to the Hub as it is, subfolders (a trained `backbone/`) included; the repository
    is created if it does not exist. Returns the commit info."""
    from huggingface_hub import HfApi

    _check_folder(str(folder), "", ("config.json", ADAPTER_WEIGHTS_NAME), "LightNER adapter")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    write_card_repository(folder, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
    )


# ---------------------------------------------------------------------------------------------------------------------
# The model's loading and saving
# ---------------------------------------------------------------------------------------------------------------------


def _backbone_argument(backbone: Any) -> tuple[str | None, torch.nn.Module | None]:
    """`from_pretrained`'s `backbone=` as (a Hub id or folder to load, a loaded backbone to use): one of them or
    neither; anything else is refused by name."""
    if backbone is None or isinstance(backbone, torch.nn.Module):
        return None, backbone
    if isinstance(backbone, str | os.PathLike):
        return str(backbone), None
    raise TypeError(
        "backbone= must be a loaded BartModel, or the Hub id or folder of a BART backbone, not "
        f"{type(backbone).__name__}"
    )


@contextmanager
def _config_swapped(model: PreTrainedModel, config: PretrainedConfig) -> Iterator[None]:
    """`model.config` is `config` inside the block, and what it was after it. `PreTrainedModel.save_pretrained` has
    no config argument: it writes `model.config`, recording in it what it writes, so it is handed the copy to save."""
    own = model.config
    model.config = config
    try:
        yield
    finally:
        model.config = own


def _save_trained_backbone(backbone: BartModel, folder: str) -> None:
    """Save a fine-tuned backbone, leaving its config as it was (saving records `architectures` and `dtype` in it)."""
    with _config_swapped(backbone, copy.deepcopy(backbone.config)):
        backbone.save_pretrained(folder)


class LightNerHubMixin(BackboneSharing):
    """`from_backbone`, `from_pretrained`, `load_adapter`, `save_pretrained` and `push_to_hub` for `LightNerModel`:
    everything that reads or writes files, so that the model's constructor itself loads nothing."""

    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike,
        entity_types: Sequence[str] | Mapping[str, str],
        tokenizer=None,
        **kwargs,
    ):
        """A fresh adapter on a pretrained backbone (hub id or local path).

        `entity_types` is a list of type names (label words derived from them) or a dict type -> label words. Keyword
        arguments are loading arguments (`dtype`, `device_map`, `quantize`, and `revision`, `cache_dir`, `token`,
        `local_files_only`, `force_download`, `proxies` for the backbone's repository; see `loading_options`) or
        `LightNerConfig` fields. The new adapter stays in float32 whatever the backbone's dtype (it is trained), and
        its config records the backbone's revision when it is known (a Hub commit), so that loading it later fetches
        the backbone it was trained on. `quantize="int8"` quantizes the frozen backbone's linear layers for inference
        (`quantize_backbone`), so such a model predicts but cannot be trained.
        """
        loading = {key: kwargs.pop(key) for key in list(kwargs) if key in LOADING_KWARGS}
        options = loading_options(loading, call="from_backbone")
        if options.quantize is not None and not kwargs.get("freeze_backbone", True):
            raise ValueError(
                f"quantize={options.quantize!r} is for a frozen backbone; full fine-tuning needs float weights"
            )
        revision = options.adapter_hub.get("revision") or options.backbone_revision
        hub = {**options.backbone_hub, **_only({"revision": revision}, ("revision",))}
        subfolder = options.adapter_hub.get("subfolder", "")
        backbone_model = load_backbone(
            str(backbone),
            dtype=options.dtype,
            device=options.device,
            share=kwargs.get("freeze_backbone", True),
            subfolder=subfolder,
            quantize=options.quantize,
            **hub,
        )
        config = LightNerConfig.from_entity_types(
            str(backbone),
            entity_types,
            backbone_revision=revision or hub_commit(str(backbone), subfolder, **hub),
            **kwargs,
        )
        if tokenizer is None:
            tokenizer = load_tokenizer(str(backbone), **hub, **_only({"subfolder": subfolder}, ("subfolder",)))
        return cls(config, backbone=backbone_model, tokenizer=tokenizer, reparameterize=True)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: LightNerConfig | None = None,
        backbone: BartModel | str | os.PathLike | None = None,
        tokenizer=None,
        **kwargs,
    ):
        """Load the backbone named in the adapter's config, then the adapter on top of it.

        A frozen backbone is shared: adapters loaded one after another in a process use the same backbone tensors (pass
        a loaded `BartModel` as `backbone=` to share one explicitly). `backbone=` a Hub id or a folder loads that
        backbone instead of the one the config names, such as a local copy of it on a machine without the Hub; the
        config keeps naming its own, and the backbone must have the shape the adapter records. Keyword arguments
        (checked by `loading_options`; any other is refused): `revision`, `cache_dir`, `token`, `local_files_only`,
        `force_download`, `proxies`, `subfolder` for the adapter repository, all but `revision` and `subfolder` also
        for the backbone's, whose revision is `backbone_revision` (default: the one the adapter was trained on, when
        its config records one); `dtype` (or `torch_dtype`): float32, float16, bfloat16 or "auto" (as saved), for the
        backbone; `device_map`: "cpu", "cuda", "cuda:N", "auto" or `{"": device}`, for both; `quantize="int8"`: the
        backbone's linear layers in int8 (`quantize_backbone`). The adapter stays float32 under low precision, so
        saving it again writes the same tensors.
        """
        if model_args:
            raise TypeError(f"from_pretrained takes no positional arguments after the path, got {len(model_args)}")
        options = loading_options(kwargs)
        path, hub = str(pretrained_model_name_or_path), options.adapter_hub
        backbone_name, backbone = _backbone_argument(backbone)
        if backbone is not None and options.quantize is not None and not is_quantized(backbone):
            raise ValueError("quantize= applies to a backbone loaded here; quantize_backbone(backbone) one you pass")
        if config is None:
            config = load_adapter_config(path, **hub)
        state = read_adapter_file(path, **hub)
        # The recorded revision is a commit of the config's backbone repository, meaningless for another one.
        recorded_revision = config.backbone_revision if backbone_name in (None, config.backbone) else None
        revision = options.backbone_revision or recorded_revision
        backbone_hub = {**options.backbone_hub, **_only({"revision": revision}, ("revision",))}
        if backbone is not None and options.dtype not in (None, next(backbone.parameters()).dtype):
            raise ValueError(
                f"dtype={options.dtype} but the backbone passed is {next(backbone.parameters()).dtype}; convert the "
                "backbone before passing it, or leave dtype out"
            )
        if backbone is None and backbone_name is None and config.backbone_subfolder:
            backbone = load_backbone(
                path,
                dtype=options.dtype,
                device=options.device,
                share=False,
                # A trained backbone lives in the adapter repository, below the adapter's own subfolder if any.
                subfolder=os.path.join(hub.get("subfolder", ""), config.backbone_subfolder),
                quantize=options.quantize,
                **{key: value for key, value in hub.items() if key != "subfolder"},
            )
        if backbone is None:
            backbone = load_backbone(
                backbone_name or config.backbone,
                dtype=options.dtype,
                device=options.device,
                share=config.freeze_backbone,
                quantize=options.quantize,
                **backbone_hub,
            )
        if tokenizer is None:
            tokenizer = load_tokenizer(path, config=config, backbone_hub=backbone_hub, backbone=backbone_name, **hub)
        model = cls(config, backbone=backbone, tokenizer=tokenizer, reparameterize=False)
        model.load_adapter_state_dict(state, source=path)
        if options.device is not None:
            model.to(options.device)
        return model.eval()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        adapter: str | None = None,
        adapter_dtype: torch.dtype | str | None = None,
        **kwargs,
    ) -> None:
        """Write an adapter as a complete Hub repository: `config.json` (with `auto_map` and the pipeline),
        `model.safetensors` (the adapter alone, optionally in fp16/bf16 to halve it), the code files remote code
        needs, the tokenizer and a model card. Saves the active adapter unless `adapter` names another. The backbone
        is saved only when it was trained (`freeze_backbone=False`), into the subfolder `backbone`, which the config
        then names so that loading finds it."""
        name = adapter or self.active_adapter
        self._check_adapter_names([name])
        # What is written differs from the adapter's config (the pipeline, the trained backbone's subfolder, and what
        # `PreTrainedModel.save_pretrained` records: architectures, dtype, auto_map): all of it goes into a copy.
        config = copy.deepcopy(self.adapters[name].config)
        dtype = check_dtype(adapter_dtype, "adapter_dtype")
        if not config.freeze_backbone:
            _save_trained_backbone(self.backbone, os.path.join(save_directory, TRAINED_BACKBONE_FOLDER))
            config.backbone_subfolder = TRAINED_BACKBONE_FOLDER
        add_pipeline_to_folder(save_directory, config)
        add_endpoint_handler(save_directory)
        with _config_swapped(self, config):
            super().save_pretrained(save_directory, state_dict=self.adapters[name].adapter_state_dict(dtype), **kwargs)
        self.tokenizer.save_pretrained(save_directory)
        write_model_card(save_directory, config)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        adapter: str | None = None,
        adapter_dtype: torch.dtype | str | None = None,
        commit_message: str = "Upload LightNER adapter",
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ):
        """Upload what `save_pretrained` writes (~3 MB for bart-large; with the backbone folder if it was trained)."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, adapter=adapter, adapter_dtype=adapter_dtype)
            return upload_adapter_folder(
                folder,
                repo_id,
                commit_message=commit_message,
                private=private,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    def load_adapter(self, path_or_repo_id: str | os.PathLike, adapter_name: str, **kwargs) -> None:
        """Load a saved adapter onto this model's backbone under `adapter_name` (the backbone is not loaded again)."""
        options = loading_options(kwargs, call="load_adapter")
        if options.dtype is not None or options.device is not None:
            raise ValueError(
                "load_adapter puts the adapter on the model's device and in its dtype; move the model with `to()` "
                "instead of passing dtype or device_map"
            )
        path, hub = str(path_or_repo_id), options.adapter_hub
        config, state = load_adapter_config(path, **hub), read_adapter_file(path, **hub)
        adapter = self._register_adapter(adapter_name, config, reparameterize=False)
        try:
            adapter.load_adapter_state_dict(state, source=path)
        except Exception:
            del self.adapters[adapter_name]
            raise
        adapter.eval()


__all__ = [
    "ADAPTER_WEIGHTS_NAME",
    "LightNerHubMixin",
    "SHARED_BACKBONES",
    "TRAINED_BACKBONE_FOLDER",
    "add_endpoint_handler",
    "add_pipeline_to_folder",
    "LOADING_KWARGS",
    "LoadingOptions",
    "check_dtype",
    "load_adapter_config",
    "load_backbone",
    "load_tokenizer",
    "loading_options",
    "read_adapter_file",
    "check_device",
    "resolve_device",
    "resolve_dtype",
    "upload_adapter_folder",
    "eval_results",
    "write_card_repository",
    "write_model_card",
]
