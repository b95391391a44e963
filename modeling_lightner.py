"""LightNER: named-entity recognition by a frozen BART with prompt-guided attention and a pointer decoder.

Chen et al., "LightNER: A Lightweight Generative Framework with Prompt-guided Attention for Low-resource NER"
(COLING 2022). Read top to bottom: the prompt encoder, the attention hook that prepends prompts inside BART's
attention, the pointer head that scores the output index space, the model, and generation.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, BartModel, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface
from transformers.utils import ModelOutput, cached_file

from .configuration_lightner import BACKBONE_SHAPE_FIELDS, LightNerConfig
from .tokenization_utils import (
    END_INDEX,
    FIRST_TYPE_INDEX,
    LABEL_PAD,
    START_INDEX,
    EncodedSentence,
    collate,
    decode_indices,
    encode_sentences,
    label_word_token_ids,
)

ADAPTER_WEIGHTS_NAME = "model.safetensors"
TRAINED_BACKBONE_FOLDER = "backbone"
ATTENTION_KINDS = ("encoder_self", "decoder_self", "decoder_cross")


# ---------------------------------------------------------------------------------------------------------------------
# Prompt encoder
# ---------------------------------------------------------------------------------------------------------------------


class PromptReparameterization(nn.Module):
    """Prompts of one attention kind produced by `Linear -> tanh -> Linear` over a learned embedding.

    Training the prompts through an MLP rather than directly is what P-tuning v2 and the paper do: it stabilises
    optimisation. After training the output is a constant, so adapters store it folded (`PromptEncoder.fold`).
    """

    def __init__(self, prompt_length: int, hidden_size: int, mlp_width: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.embedding = nn.Parameter(torch.randn(prompt_length, hidden_size) * 0.02)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_width), nn.Tanh(), nn.Linear(mlp_width, num_layers * 2 * hidden_size)
        )

    def forward(self) -> torch.Tensor:
        """Keys and values for every layer: `[layers, 2, L, d]` (slot 0 keys, slot 1 values)."""
        prompt_length, hidden_size = self.embedding.shape
        out = self.mlp(self.embedding).view(prompt_length, self.num_layers, 2, hidden_size)
        return out.permute(1, 2, 0, 3)


class PromptEncoder(nn.Module):
    """The prompts of the three attention kinds, either reparameterised (while training) or folded (once trained).

    Folded prompts are plain `[layers, 2, L, d]` tensors named `prompts.<kind>`: exactly what an adapter file holds.
    """

    def __init__(self, config: LightNerConfig, reparameterize: bool):
        super().__init__()
        layers = {
            "encoder_self": config.encoder_layers,
            "decoder_self": config.decoder_layers,
            "decoder_cross": config.decoder_layers,
        }
        self.shapes = {kind: (layers[kind], 2, config.prompt_length, config.d_model) for kind in ATTENTION_KINDS}
        if reparameterize:
            self.reparameterization = nn.ModuleDict(
                {
                    kind: PromptReparameterization(
                        config.prompt_length, config.d_model, config.prompt_hidden_size, layers[kind]
                    )
                    for kind in ATTENTION_KINDS
                }
            )
        else:
            self.prompts = nn.ParameterDict(
                {kind: nn.Parameter(torch.zeros(shape)) for kind, shape in self.shapes.items()}
            )

    @property
    def is_folded(self) -> bool:
        return hasattr(self, "prompts")

    def forward(self) -> dict[str, torch.Tensor]:
        if self.is_folded:
            return dict(self.prompts.items())
        return {kind: generator() for kind, generator in self.reparameterization.items()}

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the MLPs by their output: same prompts, 0.16% of the parameters, no MLP left to store."""
        if self.is_folded:
            return
        folded = {kind: nn.Parameter(tensor.detach().clone()) for kind, tensor in self().items()}
        del self.reparameterization
        self.prompts = nn.ParameterDict(folded)


# ---------------------------------------------------------------------------------------------------------------------
# Attention hook: prompts prepended to the keys and values inside BART's own attention
# ---------------------------------------------------------------------------------------------------------------------

LIGHTNER_ATTENTION = "lightner_prompt_sdpa"


def attention_kind(module: nn.Module) -> str:
    """Which of the three attentions a BART attention module is, from the flags BART sets on it."""
    if not getattr(module, "is_decoder", False):
        return "encoder_self"
    return "decoder_self" if getattr(module, "is_causal", False) else "decoder_cross"


@dataclass
class PromptKeyValues:
    """Per-head prompt keys and values for every attention of the backbone.

    `tensors[kind]` is `[layers, 2, batch, heads, L, head_dim]` with batch 1 (one adapter for the whole batch) or one
    row per example (each example its own prompts). A kind that is absent gets no prompts.
    """

    tensors: dict[str, torch.Tensor]

    @classmethod
    def from_prompts(cls, prompts: Mapping[str, torch.Tensor], heads: Mapping[str, int]) -> PromptKeyValues:
        """`[batch?, layers, 2, L, d]` per kind to the per-head layout attention uses."""
        tensors = {}
        for kind, tensor in prompts.items():
            if tensor.dim() == 4:
                tensor = tensor.unsqueeze(0)
            batch, layers, _, length, hidden = tensor.shape
            per_head = tensor.reshape(batch, layers, 2, length, heads[kind], hidden // heads[kind])
            tensors[kind] = per_head.permute(1, 2, 0, 4, 3, 5)
        return cls(tensors)

    def select(self, batch_index: torch.Tensor) -> PromptKeyValues:
        """Rows for a new batch order (beam expansion); shared prompts need none."""
        return PromptKeyValues(
            {kind: t if t.shape[2] == 1 else t.index_select(2, batch_index) for kind, t in self.tensors.items()}
        )

    def for_module(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This attention module's prompt keys and values, `[batch or 1, heads, L, head_dim]` each, if it has any."""
        tensors = self.tensors.get(attention_kind(module))
        return None if tensors is None else tuple(tensors[module.layer_idx])


def _prepend_prompts(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_key: torch.Tensor,
    prompt_value: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keys and values with the prompts in front, and the mask widened to match."""
    batch, length = key.shape[0], prompt_key.shape[2]
    key = torch.cat([prompt_key.expand(batch, -1, -1, -1).to(key.dtype), key], dim=2)
    value = torch.cat([prompt_value.expand(batch, -1, -1, -1).to(value.dtype), value], dim=2)
    return key, value, _mask_with_prompt_slots(module, query, key, attention_mask, length)


def _mask_with_prompt_slots(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, length: int
) -> torch.Tensor | None:
    """Let every query see every prompt slot, under padding and causal masks alike.

    When BART skipped materialising a causal mask (sdpa's `is_causal` shortcut), it has to be built here: with prompts
    in front, the shortcut's upper-left alignment would hide the sequence's own past.
    """
    q_length, kv_length = query.shape[2], key.shape[2] - length
    if attention_mask is None:
        if not (getattr(module, "is_causal", False) and q_length > 1):
            return None
        positions = torch.arange(kv_length, device=query.device)
        attention_mask = (positions[None, :] <= positions[kv_length - q_length :, None])[None, None]
    visible = 0.0 if attention_mask.dtype != torch.bool else True
    prompt_slots = attention_mask.new_full((*attention_mask.shape[:-1], length), visible)
    return torch.cat([prompt_slots, attention_mask[..., -kv_length:]], dim=-1)


def prompt_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    lightner_prompts: PromptKeyValues | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA attention with LightNER's prompts in front of the keys and values.

    Prompts are joined here, after BART's k/v projections and after its cache update, so an incremental-decoding cache
    never holds (or duplicates) them: they are a fixed prefix of every step's keys. Without `lightner_prompts` this is
    plain SDPA, so a backbone switched to this attention still computes plain BART.
    """
    prompts = lightner_prompts.for_module(module) if lightner_prompts is not None else None
    if prompts is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if query.shape[2] == 1 and not module.training:
        return _one_query_attention(query, key, value, attention_mask, *prompts, kwargs.get("scaling"))
    key, value, attention_mask = _prepend_prompts(module, query, key, value, attention_mask, *prompts)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _one_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_key: torch.Tensor,
    prompt_value: torch.Tensor,
    scaling: float | None,
) -> tuple[torch.Tensor, None]:
    """Attention of one decoding step over the prompts and the cached keys, without joining them.

    One softmax over both score sets gives exactly attention over the concatenation, but only the scores are joined:
    concatenating the prompts in front of the whole cache (self- and cross-attention, every layer, every step) was the
    largest cost of cached generation after the matrix products.
    """
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    prompt_scores = _rows_matmul(query, prompt_key.to(query.dtype).transpose(-1, -2)) * scaling
    scores = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., -key.shape[2] :], float("-inf"))
        else:
            scores = scores + attention_mask[..., -key.shape[2] :]
    weights = torch.cat([prompt_scores, scores], dim=-1).softmax(dim=-1)
    length = prompt_key.shape[2]
    output = _rows_matmul(weights[..., :length], prompt_value.to(value.dtype)) + weights[..., length:] @ value
    return output.transpose(1, 2).contiguous(), None


def _rows_matmul(rows: torch.Tensor, prompt_part: torch.Tensor) -> torch.Tensor:
    """`rows @ prompt_part` for one query per row (`[batch, heads, 1, n]`), prompts per row or shared (batch 1).

    Shared prompts would be broadcast to a copy per row; folding the rows into the query dimension instead makes it
    one small product per head.
    """
    if prompt_part.shape[0] == 1 and rows.shape[0] > 1:
        return (rows.transpose(0, 2) @ prompt_part).transpose(0, 2)
    return rows @ prompt_part


AttentionInterface.register(LIGHTNER_ATTENTION, prompt_attention_forward)
# Without a mask function registered under the same name, transformers hands custom attentions no padding mask.
AttentionMaskInterface.register(LIGHTNER_ATTENTION, sdpa_mask)


# ---------------------------------------------------------------------------------------------------------------------
# Pointer head: the semantic-aware answer space
# ---------------------------------------------------------------------------------------------------------------------


class PointerHead(nn.Module):
    """A label set's side of the answer space (§4): each type is represented by its label words.

    A type's vector is `sum_j softmax(alpha_t)_j E[l_j]` over the pieces of its label words, so that types start from
    what the pretrained vocabulary already knows. `alpha` (`label_word_weights`, padded to the longest label words) is
    trainable, unlike in the reference where a precedence slip froze it.
    """

    def __init__(self, label_word_ids: Sequence[Sequence[int]]):
        super().__init__()
        width = max(len(ids) for ids in label_word_ids)
        ids = torch.zeros(len(label_word_ids), width, dtype=torch.long)
        mask = torch.zeros(len(label_word_ids), width, dtype=torch.bool)
        for row, pieces in enumerate(label_word_ids):
            ids[row, : len(pieces)] = torch.tensor(pieces)
            mask[row, : len(pieces)] = True
        self.register_buffer("label_word_ids", ids, persistent=False)
        self.register_buffer("label_word_mask", mask, persistent=False)
        self.label_word_weights = nn.Parameter(torch.empty(len(label_word_ids), width).uniform_(1.0, 2.5))

    def type_embeddings(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        weights = self.label_word_weights.masked_fill(~self.label_word_mask, float("-inf")).softmax(dim=-1)
        return torch.einsum("tp,tpd->td", weights.to(token_embeddings.dtype), token_embeddings[self.label_word_ids])


def score_output_indices(
    hidden: torch.Tensor,
    end_embedding: torch.Tensor,
    type_embeddings: torch.Tensor,
    type_mask: torch.Tensor,
    pointer_features: torch.Tensor,
    pointer_mask: torch.Tensor,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """Scores of every output index from decoder states `hidden` `[batch, steps, d]`.

    `</s>` by `h . E[</s>]`, type t by `h . type_t`, a pointer to source position p by `h . (H[p] + E[src[p]]) / 2`
    (`pointer_features`). `type_embeddings` is `[batch or 1, T, d]`, so each example may use its own label set
    (`type_mask` hides the padding of smaller ones). `<s>`, padded types and invalid pointers get minus infinity.
    """
    if training and dropout > 0:
        hidden, end_embedding, type_embeddings, pointer_features = (
            nn.functional.dropout(t, p=dropout) for t in (hidden, end_embedding, type_embeddings, pointer_features)
        )
    start_scores = hidden.new_full((*hidden.shape[:2], 1), float("-inf"))
    end_scores = hidden @ end_embedding.unsqueeze(-1)
    type_scores = torch.einsum("bsd,btd->bst", hidden, type_embeddings.expand(hidden.shape[0], -1, -1))
    type_scores = type_scores.masked_fill(~type_mask[:, None, :], float("-inf"))
    pointer_scores = torch.einsum("bsd,bpd->bsp", hidden, pointer_features)
    pointer_scores = pointer_scores.masked_fill(~pointer_mask[:, None, :], float("-inf"))
    return torch.cat([start_scores, end_scores, type_scores, pointer_scores], dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


class LightNerAdapter(nn.Module):
    """One domain's trained part: its config (label set, prompt length), prompts and label-word weights.

    `file_state` is exactly what `model.safetensors` holds; several adapters can share one backbone.
    """

    def __init__(self, config: LightNerConfig, tokenizer, reparameterize: bool):
        super().__init__()
        if config.num_types == 0:
            raise ValueError("a LightNER adapter needs at least one entity type (config.entity_types is empty)")
        self.config = config
        self.prompt_encoder = PromptEncoder(config, reparameterize=reparameterize)
        label_ids = label_word_token_ids(tokenizer, config.label_words)
        self.pointer_head = PointerHead(label_ids)
        decoder_inputs = [tokenizer.bos_token_id, tokenizer.eos_token_id] + [ids[0] for ids in label_ids]
        # Decoder input token for output indices 0 (start), 1 (end) and each type: its first label-word piece.
        self.register_buffer("index_token_ids", torch.tensor(decoder_inputs), persistent=False)

    def file_state(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The folded prompts and the label-word weights, under the names the adapter file uses."""
        state = {f"prompt_encoder.prompts.{kind}": t.detach() for kind, t in self.prompt_encoder().items()}
        state["pointer_head.label_word_weights"] = self.pointer_head.label_word_weights.detach()
        return {name: tensor.to(dtype or tensor.dtype).contiguous() for name, tensor in state.items()}

    def load_file_state(self, state: Mapping[str, torch.Tensor], source: str = "adapter") -> None:
        """Load an adapter file's tensors, refusing missing, extra or misshapen ones by name."""
        expected = {name: tuple(t.shape) for name, t in self.file_state().items()}
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"{source} does not match this model: missing tensors {missing}, unexpected {extra}")
        for name, shape in expected.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(
                    f"{source}: tensor {name} has shape {tuple(state[name].shape)}, expected {shape}; the adapter was "
                    "saved for another label set or backbone shape"
                )
        self.prompt_encoder.fold()
        with torch.no_grad():
            for kind in ATTENTION_KINDS:
                self.prompt_encoder.prompts[kind].copy_(state[f"prompt_encoder.prompts.{kind}"])
            self.pointer_head.label_word_weights.copy_(state["pointer_head.label_word_weights"])


@dataclass
class AdapterBatch:
    """The adapters of one batch, laid out per example: prompts, decoder inputs for fixed indices, and type vectors.

    With one adapter every tensor has batch 1 and broadcasts. With several, the label sets are padded to the largest
    (`num_types`), so pointers start at the same index `2 + num_types` in every row; `type_mask` hides the padding.
    """

    names: list[str]
    prompts: PromptKeyValues
    index_token_ids: torch.Tensor
    type_embeddings: torch.Tensor
    type_mask: torch.Tensor

    @property
    def num_types(self) -> int:
        return self.type_mask.shape[1]

    def select(self, rows: torch.Tensor) -> AdapterBatch:
        """Rows for a new batch order (beam expansion); shared tensors need none."""
        per_example = self.index_token_ids.shape[0] > 1
        pick = (lambda t: t.index_select(0, rows)) if per_example else (lambda t: t)
        names = [self.names[i] for i in rows.tolist()] if per_example else self.names
        return AdapterBatch(
            names,
            self.prompts.select(rows),
            pick(self.index_token_ids),
            pick(self.type_embeddings),
            pick(self.type_mask),
        )


@dataclass
class EncodedSource:
    """What every decoder step reads from the source sentences.

    The pointer features `(H[p] + E[src[p]]) / 2` depend on the source alone, so they are computed with the encoder
    states, once per batch, rather than at every decoding step.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    hidden: torch.Tensor
    pointer_features: torch.Tensor
    pointer_mask: torch.Tensor

    def select(self, rows: torch.Tensor) -> EncodedSource:
        """Rows for a new batch order (beam expansion)."""
        return EncodedSource(*(getattr(self, f.name).index_select(0, rows) for f in fields(self)))


@dataclass
class LightNerOutput(ModelOutput):
    """`logits[:, t]` scores `labels[:, t]` over the output index space (index `T + 2 + p` points at position p)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None


@dataclass
class LightNerGenerationOutput(ModelOutput):
    """Best output per sentence: `sequences` are output indices after the leading 0, ending in `</s>` (1) and padded
    with 1; `token_log_probs` are the log-probabilities of those choices under the (constrained) decoding
    distribution; `step_logits`, when asked for, are the raw scores at every step for every beam. In a batch mixing
    adapters with different label sets, indices use the padded layout of `AdapterBatch` (`num_types`)."""

    sequences: torch.Tensor | None = None
    token_log_probs: torch.Tensor | None = None
    step_logits: tuple[torch.Tensor, ...] | None = None
    num_types: int | None = None


class LightNerPreTrainedModel(PreTrainedModel):
    config_class = LightNerConfig
    base_model_prefix = "lightner"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Adapter parameters are initialised where they are built; the backbone arrives pretrained."""


DEFAULT_ADAPTER = "default"


class LightNerModel(LightNerPreTrainedModel):
    """LightNER adapters on a BART backbone.

    Build one with `from_backbone`, load one with `from_pretrained`, train it with any loop that calls `forward` with
    `labels`, and run it with `predict` or `generate`. Only adapters (prompts and label-word weights) are saved.
    More adapters can join the same backbone (`load_adapter`, `add_adapter`), one of them active (`set_adapter`);
    `model.config` is always the active adapter's config, and `predict` can mix adapters within one batch.
    """

    def __init__(
        self,
        config: LightNerConfig,
        backbone: BartModel | None = None,
        tokenizer=None,
        reparameterize: bool = True,
    ):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else load_backbone(config.backbone)
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(config.backbone)
        _fill_and_check_backbone_shape(config, self.backbone)
        self.backbone.config._attn_implementation = LIGHTNER_ATTENTION
        self.backbone.requires_grad_(not config.freeze_backbone)
        self.adapters = nn.ModuleDict({DEFAULT_ADAPTER: LightNerAdapter(config, self.tokenizer, reparameterize)})
        self.active_adapter = DEFAULT_ADAPTER
        self.heads = {
            "encoder_self": self.backbone.config.encoder_attention_heads,
            "decoder_self": self.backbone.config.decoder_attention_heads,
            "decoder_cross": self.backbone.config.decoder_attention_heads,
        }
        self.post_init()

    # --- construction and persistence --------------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike,
        entity_types: Sequence[str] | Mapping[str, str],
        tokenizer=None,
        dtype: torch.dtype | None = None,
        **config_overrides,
    ) -> LightNerModel:
        """A fresh adapter on a pretrained backbone (hub id or local path).

        `entity_types` is a list of type names (label words derived from them) or a dict type -> label words.
        """
        if isinstance(entity_types, Mapping):
            config_overrides.setdefault("label_words", dict(entity_types))
        config = LightNerConfig(backbone=str(backbone), entity_types=list(entity_types), **config_overrides)
        backbone_model = load_backbone(str(backbone), dtype=dtype, share=config.freeze_backbone)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(str(backbone))
        return cls(config, backbone=backbone_model, tokenizer=tokenizer, reparameterize=True)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        config: LightNerConfig | None = None,
        backbone: BartModel | None = None,
        tokenizer=None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> LightNerModel:
        """Load the backbone named in the adapter's config, then the adapter on top of it.

        A frozen backbone is shared: adapters loaded one after another in a process use the same backbone tensors
        (pass `backbone=` to share one explicitly). Hub arguments (`revision`, `cache_dir`, `token`,
        `local_files_only`, `subfolder`, ...) apply to the adapter repository.
        """
        path, hub_kwargs = str(pretrained_model_name_or_path), _hub_kwargs(kwargs)
        if dtype == "auto":  # what `pipeline()` asks for: keep the backbone's own dtype
            dtype = None
        if config is None:
            config = load_adapter_config(path, **hub_kwargs)
        if backbone is None and config.backbone_subfolder:
            backbone = load_backbone(path, dtype=dtype, share=False, subfolder=config.backbone_subfolder)
        if backbone is None:
            backbone = load_backbone(config.backbone, dtype=dtype, share=config.freeze_backbone)
        if tokenizer is None:
            tokenizer = load_tokenizer(path, config=config, **hub_kwargs)
        model = cls(config, backbone=backbone, tokenizer=tokenizer, reparameterize=False)
        model.adapters[DEFAULT_ADAPTER].load_file_state(read_adapter_file(path, **hub_kwargs), source=path)
        if dtype is not None:
            model.adapters.to(dtype)
        return model.eval()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        adapter: str | None = None,
        adapter_dtype: torch.dtype | str | None = None,
        **kwargs,
    ) -> None:
        """Write an adapter as a complete Hub repository: `config.json` (with `auto_map`), `model.safetensors`
        (the adapter alone, optionally in fp16/bf16 to halve it), the code files remote code needs, the tokenizer
        and a model card. Saves the active adapter unless `adapter` names another. The backbone is saved only when
        it was trained (`freeze_backbone=False`, full fine-tuning), into the subfolder `backbone`, which the config
        then names so that loading finds it."""
        name = adapter or self.active_adapter
        if not self.adapters[name].config.freeze_backbone:
            self.backbone.save_pretrained(os.path.join(save_directory, TRAINED_BACKBONE_FOLDER))
            self.adapters[name].config.backbone_subfolder = TRAINED_BACKBONE_FOLDER
        dtype = getattr(torch, adapter_dtype) if isinstance(adapter_dtype, str) else adapter_dtype
        previous = self.active_adapter
        self.set_adapter(name)
        try:
            kwargs["state_dict"] = self.adapters[name].file_state(dtype)
            # Pipeline registration (pipeline_lightner.py): `custom_pipelines` in config.json and the pipeline's files.
            from .pipeline_lightner import add_pipeline_to_folder

            add_pipeline_to_folder(save_directory, self.config)
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.set_adapter(previous)
        self.tokenizer.save_pretrained(save_directory)
        write_model_card(save_directory, self.adapters[name].config)

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
        """Upload an adapter repository (what `save_pretrained` writes: no backbone tensor, ~3 MB for bart-large)."""
        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, adapter=adapter, adapter_dtype=adapter_dtype)
            operations = [
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.path.join(folder, name))
                for name in sorted(os.listdir(folder))
            ]
            return api.create_commit(
                repo_id, operations, commit_message=commit_message, revision=revision, create_pr=create_pr
            )

    # --- several adapters on one backbone ----------------------------------------------------------------------------

    def list_adapters(self) -> list[str]:
        return list(self.adapters)

    def set_adapter(self, name: str) -> None:
        """Make `name` the adapter that `forward`, `predict`, `save_pretrained` and training use."""
        self._check_adapter_names([name])
        self.active_adapter = name
        self.config = self.adapters[name].config

    def add_adapter(self, name: str, entity_types: Sequence[str] | Mapping[str, str], **config_overrides) -> None:
        """A fresh, trainable adapter on this model's backbone (for example a new domain)."""
        if isinstance(entity_types, Mapping):
            config_overrides.setdefault("label_words", dict(entity_types))
        config = LightNerConfig(backbone=self.config.backbone, entity_types=list(entity_types), **config_overrides)
        self._register_adapter(name, config, reparameterize=True)

    def load_adapter(self, path_or_repo_id: str | os.PathLike, adapter_name: str, **kwargs) -> None:
        """Load a saved adapter onto this model's backbone under `adapter_name` (the backbone is not loaded again)."""
        path, hub_kwargs = str(path_or_repo_id), _hub_kwargs(kwargs)
        adapter = self._register_adapter(adapter_name, load_adapter_config(path, **hub_kwargs), reparameterize=False)
        try:
            adapter.load_file_state(read_adapter_file(path, **hub_kwargs), source=path)
        except Exception:
            del self.adapters[adapter_name]
            raise
        adapter.eval()

    def delete_adapter(self, name: str) -> None:
        self._check_adapter_names([name])
        if name == self.active_adapter:
            raise ValueError(f"adapter {name!r} is active; set_adapter another one before deleting it")
        del self.adapters[name]

    def _register_adapter(self, name: str, config: LightNerConfig, reparameterize: bool) -> LightNerAdapter:
        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded; delete_adapter it or choose another name")
        _fill_and_check_backbone_shape(config, self.backbone)
        reference = next(self.backbone.parameters())
        adapter = LightNerAdapter(config, self.tokenizer, reparameterize).to(reference.device, reference.dtype)
        self.adapters[name] = adapter
        return adapter

    def _check_adapter_names(self, names: Sequence[str]) -> None:
        unknown = sorted(set(names) - set(self.adapters))
        if unknown:
            raise ValueError(f"no adapter named {unknown}; loaded adapters: {self.list_adapters()}")

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.adapters[self.active_adapter].prompt_encoder

    @property
    def pointer_head(self) -> PointerHead:
        return self.adapters[self.active_adapter].pointer_head

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What the active adapter's file holds: folded prompts and label-word weights, never a backbone tensor."""
        return self.adapters[self.active_adapter].file_state()

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "adapter") -> None:
        """Load adapter-file tensors into the active adapter (for converters and cross-domain initialisation)."""
        self.adapters[self.active_adapter].load_file_state(state, source)

    # --- forward -----------------------------------------------------------------------------------------------------

    def adapter_batch(self, adapter_names: Sequence[str] | None = None) -> AdapterBatch:
        """The per-example layout of the adapters a batch uses: the active one, or one name per example.

        Mixed batches need adapters with the same prompt length (their prompts are stacked per example).
        """
        names = [self.active_adapter] if adapter_names is None else list(adapter_names)
        self._check_adapter_names(names)
        distinct = list(dict.fromkeys(names))
        embeddings = self.backbone.get_input_embeddings().weight
        per_adapter = {name: self._adapter_parts(self.adapters[name], embeddings) for name in distinct}
        if len(distinct) == 1:
            prompts, index_ids, types = per_adapter[distinct[0]]
            mask = torch.ones(1, types.shape[0], dtype=torch.bool, device=types.device)
            return AdapterBatch(
                names[:1], PromptKeyValues.from_prompts(prompts, self.heads), index_ids[None], types[None], mask
            )
        lengths = {self.adapters[name].config.prompt_length for name in distinct}
        if len(lengths) > 1:
            raise ValueError(f"adapters {distinct} have different prompt lengths {sorted(lengths)}: batch them apart")
        width = max(parts[2].shape[0] for parts in per_adapter.values())
        rows = [per_adapter[name] for name in names]
        prompts = {kind: torch.stack([row[0][kind] for row in rows]) for kind in ATTENTION_KINDS}
        index_ids = torch.stack([_pad_rows(row[1], 2 + width, END_INDEX) for row in rows])
        types = torch.stack([_pad_rows(row[2], width, 0.0) for row in rows])
        mask = torch.stack([torch.arange(width, device=types.device) < row[2].shape[0] for row in rows])
        return AdapterBatch(names, PromptKeyValues.from_prompts(prompts, self.heads), index_ids, types, mask)

    @staticmethod
    def _adapter_parts(adapter: LightNerAdapter, embeddings: torch.Tensor):
        return adapter.prompt_encoder(), adapter.index_token_ids, adapter.pointer_head.type_embeddings(embeddings)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, adapters: AdapterBatch) -> EncodedSource:
        hidden = self.backbone.encoder(
            input_ids=input_ids, attention_mask=attention_mask, lightner_prompts=adapters.prompts
        ).last_hidden_state
        embeddings = self.backbone.get_input_embeddings().weight
        return EncodedSource(
            input_ids,
            attention_mask,
            hidden,
            pointer_features=(hidden + embeddings[input_ids]) / 2,
            pointer_mask=self.pointer_mask(input_ids, attention_mask),
        )

    def decoder_token_ids(
        self, index_ids: torch.Tensor, input_ids: torch.Tensor, adapters: AdapterBatch
    ) -> torch.Tensor:
        """Decoder inputs for output indices (§3): `<s>`, `</s>`, a type's first label piece, or the pointed token."""
        first_pointer = FIRST_TYPE_INDEX + adapters.num_types
        pointed = input_ids.gather(1, (index_ids - first_pointer).clamp(min=0))
        fixed_index = index_ids.clamp(max=first_pointer - 1)
        table = adapters.index_token_ids.expand(index_ids.shape[0], -1)
        fixed = table.gather(1, fixed_index)
        return torch.where(index_ids >= first_pointer, pointed, fixed)

    def pointer_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Source positions a pointer may name: real tokens other than `<s>` and `</s>`."""
        special = (input_ids == self.tokenizer.bos_token_id) | (input_ids == self.tokenizer.eos_token_id)
        return attention_mask.bool() & ~special

    def decode(
        self,
        index_ids: torch.Tensor,
        source: EncodedSource,
        adapters: AdapterBatch,
        cache: EncoderDecoderCache | None = None,
    ) -> torch.Tensor:
        """Scores for the steps in `index_ids`, continuing `cache` if given (then only new steps)."""
        decoder_out = self.backbone.decoder(
            input_ids=self.decoder_token_ids(index_ids, source.input_ids, adapters),
            encoder_hidden_states=source.hidden,
            encoder_attention_mask=source.attention_mask,
            cache=cache,
            use_cache=cache is not None,
            lightner_prompts=adapters.prompts,
        )
        return score_output_indices(
            decoder_out.last_hidden_state,
            self.backbone.get_input_embeddings().weight[self.tokenizer.eos_token_id],
            adapters.type_embeddings,
            adapters.type_mask,
            source.pointer_features,
            source.pointer_mask,
            self.config.dropout,
            self.training,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_index_ids: torch.Tensor | None = None,
        adapter_names: Sequence[str] | None = None,
        prompt_key_values: PromptKeyValues | None = None,
        **kwargs,
    ) -> LightNerOutput:
        r"""
        input_ids (`[batch, source length]`): `<s> pieces </s>` per sentence, right-padded (see `tokenization_utils`).
        labels (`[batch, steps]`): the target index sequence after its leading 0, padded with -100.
        decoder_index_ids (`[batch, steps]`): decoder inputs as output indices; by default `labels` shifted right
            behind the start index 0 (teacher forcing).
        adapter_names: one adapter name per example (default: the active adapter for all).
        prompt_key_values: prompts to use instead of the adapters' (ablations, analysis).
        """
        if attention_mask is None:
            attention_mask = input_ids.ne(self.tokenizer.pad_token_id).long()
        if decoder_index_ids is None:
            if labels is None:
                raise ValueError("forward needs `labels` or `decoder_index_ids` to know what the decoder reads")
            decoder_index_ids = shift_labels_right(labels)
        adapters = self.adapter_batch(adapter_names)
        if prompt_key_values is not None:
            adapters.prompts = prompt_key_values
        source = self.encode(input_ids, attention_mask, adapters)
        logits = self.decode(decoder_index_ids, source, adapters)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD)
        return LightNerOutput(loss=loss, logits=logits, encoder_last_hidden_state=source.hidden)

    # --- generation --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        word_starts: Sequence[Sequence[int]] | None = None,
        num_beams: int | None = None,
        max_length: int | None = None,
        constrained: bool | None = None,
        use_cache: bool = True,
        output_step_logits: bool = False,
        adapter_names: Sequence[str] | None = None,
    ) -> LightNerGenerationOutput:
        """Beam search over output indices (greedy is one beam).

        The decoder input at each step is a function of the source (a pointer reads the token it points at), which is
        why this loop is LightNER's own rather than `GenerationMixin.generate`. With `use_cache` the decoder reads
        one new token per step from an `EncoderDecoderCache` (prompts stay outside it); without, it recomputes the
        whole prefix every step, which is what the reference effectively does and is kept as a baseline.

        Constrained decoding (on by default) allows at each step only what keeps the output well formed: a pointer to
        a word start to open an entity, then the next word's start or a type to close it, `</s>` only between
        entities, and nothing that could not be finished before the length limit; every output then parses. It needs
        `word_starts` (from `encode_sentences`). Finished hypotheses keep writing `</s>` at no cost; a hypothesis's
        score is the sum of its token log-probabilities.

        `max_length` defaults to each adapter's rule `b + a * source length`, capped at the decoder's positions.
        """
        num_beams = num_beams or self.config.beam_width
        constrained = self.config.constrained_decoding if constrained is None else constrained
        if constrained and word_starts is None:
            raise ValueError("constrained decoding needs `word_starts` for each sentence (see encode_sentences)")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.tokenizer.pad_token_id).long()
        adapters = self.adapter_batch(adapter_names)
        source = self.encode(input_ids, attention_mask, adapters)
        limits = self._output_limits(attention_mask, adapter_names, max_length)
        search = _BeamSearch(
            FIRST_TYPE_INDEX + adapters.num_types,
            input_ids.shape[1],
            limits,
            word_starts,
            num_beams,
            constrained,
            input_ids.device,
        )
        if num_beams > 1:
            beam_rows = torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(num_beams)
            source, adapters = source.select(beam_rows), adapters.select(beam_rows)
        cache = self._decoding_cache(max(limits)) if use_cache else None
        step_logits = []
        while not search.done():
            step_input = search.sequences[:, -1:] if use_cache else search.sequences
            logits = self.decode(step_input, source, adapters, cache)[:, -1]
            if output_step_logits:
                step_logits.append(logits)
            reorder = search.step(logits)
            if cache is not None and num_beams > 1:  # with one beam each row continues itself
                cache.reorder_cache(reorder)
        sequences, log_probs = search.best()
        return LightNerGenerationOutput(
            sequences=sequences,
            token_log_probs=log_probs,
            step_logits=tuple(step_logits) if step_logits else None,
            num_types=adapters.num_types,
        )

    def _decoding_cache(self, max_steps: int) -> EncoderDecoderCache:
        """Self-attention keys in room reserved for `max_steps` steps; cross-attention keys are written once."""
        layers = [ReservedRoomLayer(max_steps) for _ in range(self.backbone.config.decoder_layers)]
        return EncoderDecoderCache(Cache(layers=layers), DynamicCache())

    def _output_limits(
        self, attention_mask: torch.Tensor, adapter_names: Sequence[str] | None, max_length: int | None
    ) -> list[int]:
        """Per-sentence output length limits; the decoder has as many positions as the encoder, never more."""
        ceiling = self.backbone.config.max_position_embeddings
        names = adapter_names or [self.active_adapter] * attention_mask.shape[0]
        lengths = attention_mask.sum(-1).tolist()
        return [
            min(max_length or self.adapters[name].config.max_output_length(int(n)), ceiling)
            for name, n in zip(names, lengths)
        ]

    def predict(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 32,
        num_beams: int | None = None,
        adapter: str | Sequence[str] | None = None,
        show_progress: bool = False,
    ) -> list[list[dict]]:
        """Entities for each sentence (a list of words).

        Returns per sentence a list of `{"type", "start", "end", "text", "score"}`: word offsets with `end`
        exclusive, the words joined by spaces, and `score`, the probability the model gave to writing this entity
        (the product of its pointer and type token probabilities under the decoding distribution, given what it wrote
        before). `adapter` names the adapter to use (default: the active one), or gives one name per sentence: a
        batch then mixes adapters in one forward pass. An empty sentence gets no entities; a sentence longer than
        the backbone's positions raises `ValueError` (the pipeline splits raw text into windows instead).
        """
        names = [adapter or self.active_adapter] * len(sentences) if isinstance(adapter, str | None) else list(adapter)
        if len(names) != len(sentences):
            raise ValueError(f"got {len(names)} adapter names for {len(sentences)} sentences")
        self._check_adapter_names(names)
        results: list[list[dict]] = [[] for _ in sentences]
        non_empty = [i for i, words in enumerate(sentences) if isinstance(words, str) or len(words) > 0]
        encoded = encode_sentences(
            self.tokenizer, [sentences[i] for i in non_empty], self.backbone.config.max_position_embeddings
        )
        prompt_length = [self.adapters[names[i]].config.prompt_length for i in non_empty]
        order = sorted(range(len(encoded)), key=lambda i: (prompt_length[i], -len(encoded[i].input_ids)))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        batches = [rows for chunk in batches for rows in _split_by(chunk, lambda i: prompt_length[i])]
        was_training = self.training
        self.eval()
        for rows in _progress(batches, show_progress, "Predicting"):
            row_names = [names[non_empty[i]] for i in rows]
            for row, name, entities in zip(
                rows, row_names, self._predict_batch([encoded[i] for i in rows], row_names, num_beams)
            ):
                words = sentences[non_empty[row]]
                types = self.adapters[name].config.entity_types
                results[non_empty[row]] = [_entity_dict(entity, score, words, types) for entity, score in entities]
        self.train(was_training)
        return results

    def _predict_batch(
        self, encoded: list[EncodedSentence], adapter_names: list[str], num_beams: int | None
    ) -> list[list[tuple]]:
        batch = collate(encoded, self.tokenizer.pad_token_id)
        device = self.backbone.get_input_embeddings().weight.device
        output = self.generate(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            word_starts=[sentence.word_starts for sentence in encoded],
            num_beams=num_beams,
            adapter_names=adapter_names,
        )
        predictions = []
        for sentence, indices, log_probs in zip(encoded, output.sequences.tolist(), output.token_log_probs):
            entities = decode_indices(indices, sentence, output.num_types)
            predictions.append([(e, float(log_probs[list(e.steps)].sum().exp())) for e in entities])
        return predictions


# ---------------------------------------------------------------------------------------------------------------------
# Generation: beam search with constraints
# ---------------------------------------------------------------------------------------------------------------------


class ReservedRoomLayer(DynamicLayer):
    """A decoder self-attention cache layer that writes each step into room reserved up front.

    `DynamicLayer` grows by concatenation, copying the whole cache at every step (quadratic in the output length);
    generation knows its longest output, so the room is allocated once (and doubled should a step ever not fit).
    `keys` and `values` are views of the filled part, so attention reads only what was written.
    """

    def __init__(self, room: int):
        super().__init__()
        self.room = max(room, 1)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._key_room = key_states.new_empty((*key_states.shape[:2], self.room, key_states.shape[-1]))
        self._value_room = value_states.new_empty((*value_states.shape[:2], self.room, value_states.shape[-1]))
        self.keys, self.values = self._key_room[:, :, :0], self._value_room[:, :, :0]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self._key_room.shape[-2]:
            self._grow(max(end, 2 * self._key_room.shape[-2]))
        self._key_room[:, :, start:end] = key_states
        self._value_room[:, :, start:end] = value_states
        self.keys, self.values = self._key_room[:, :, :end], self._value_room[:, :, :end]
        return self.keys, self.values

    def _grow(self, room: int) -> None:
        filled = self.keys.shape[-2]
        for name in ("_key_room", "_value_room"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], room, old.shape[-1]))
            new[:, :, :filled] = old[:, :, :filled]
            setattr(self, name, new)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        filled = self.keys.shape[-2]
        if filled > 0:
            self._key_room[:, :, :filled] = self.keys.index_select(0, beam_idx.to(self.device))
            self._value_room[:, :, :filled] = self.values.index_select(0, beam_idx.to(self.device))


class _BeamSearch:
    """State of a batched beam search over output indices; rows are `sentence * num_beams + beam`.

    Keeps, per row, the indices written so far, their log-probabilities, whether `</s>` was written, and which word the
    open entity ends at (-1 when none is open), which is all the constraints need.
    """

    def __init__(
        self,
        first_pointer: int,
        source_length: int,
        limits: Sequence[int],
        word_starts: Sequence[Sequence[int]] | None,
        num_beams: int,
        constrained: bool,
        device: torch.device,
    ):
        batch, rows = len(limits), len(limits) * num_beams
        self.num_beams, self.batch, self.constrained, self.first_pointer = num_beams, batch, constrained, first_pointer
        self.device = device
        self.max_length = torch.tensor(limits, device=device).repeat_interleave(num_beams)
        self.sequences = torch.full((rows, 1), START_INDEX, dtype=torch.long, device=device)
        self.log_probs = torch.zeros((rows, 0), device=device)
        self.scores = torch.zeros(batch, num_beams, device=device)
        self.scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.open_word = torch.full((rows,), -1, dtype=torch.long, device=device)
        if constrained:
            self.word_of_position = torch.full((batch, source_length), -1, dtype=torch.long)
            self.word_start = torch.full((batch, max(len(s) for s in word_starts) + 1), -1, dtype=torch.long)
            for row, starts in enumerate(word_starts):
                self.word_of_position[row, starts] = torch.arange(len(starts))
                self.word_start[row, : len(starts)] = torch.tensor(starts, dtype=torch.long)
            self.word_of_position = self.word_of_position.to(device)
            self.word_start = self.word_start.to(device)
            self.word_of_position = self.word_of_position.repeat_interleave(num_beams, 0)
            self.word_start = self.word_start.repeat_interleave(num_beams, 0)

    def done(self) -> bool:
        return bool(self.finished.all()) or self.log_probs.shape[1] >= int(self.max_length.max())

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        """Extend every beam by one index; returns the row each new row came from (for reordering the cache)."""
        logits = logits.float().masked_fill(~self._allowed(logits.shape[-1]), float("-inf"))
        log_probs = logits.log_softmax(-1)
        log_probs = torch.where(self.finished[:, None], self._only_end(log_probs), log_probs)
        vocab = log_probs.shape[-1]
        candidates = (self.scores.view(-1, 1) + log_probs).view(self.batch, self.num_beams * vocab)
        self.scores, flat = candidates.topk(self.num_beams, dim=-1)
        source = (flat // vocab + torch.arange(self.batch, device=self.device)[:, None] * self.num_beams).view(-1)
        chosen = (flat % vocab).view(-1)
        self.log_probs = torch.cat([self.log_probs[source], log_probs[source, chosen][:, None]], dim=1)
        self.sequences = torch.cat([self.sequences[source], chosen[:, None]], dim=1)
        self.finished = self.finished[source] | (chosen == END_INDEX)
        self.open_word = self._next_open_word(self.open_word[source], chosen)
        return source

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The top beam of each sentence (beams stay sorted by score), without the leading start index."""
        top = torch.arange(self.batch, device=self.device) * self.num_beams
        sequences, log_probs = self.sequences[top, 1:], self.log_probs[top]
        after_end = _after_end(sequences)
        return sequences.masked_fill(after_end, END_INDEX), log_probs.masked_fill(after_end, 0.0)

    @staticmethod
    def _only_end(log_probs: torch.Tensor) -> torch.Tensor:
        ended = torch.full_like(log_probs, float("-inf"))
        ended[:, END_INDEX] = 0.0
        return ended

    def _next_open_word(self, open_word: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        if not self.constrained:
            return open_word
        position = (chosen - self.first_pointer).clamp(min=0)
        pointed_word = self.word_of_position.gather(1, position[:, None]).squeeze(1)
        is_pointer = chosen >= self.first_pointer
        return torch.where(is_pointer, pointed_word, torch.where(chosen >= FIRST_TYPE_INDEX, -1, open_word))

    def _allowed(self, vocab: int) -> torch.Tensor:
        """Which indices each row may write now (§6); without constraints, only the length limit is enforced."""
        steps_left = self.max_length - self.log_probs.shape[1]
        allowed = torch.zeros(self.sequences.shape[0], vocab, dtype=torch.bool, device=self.device)
        if not self.constrained:
            allowed[:, 1:] = (steps_left > 1)[:, None]
            allowed[:, END_INDEX] = True
            return allowed
        is_open = self.open_word >= 0
        allowed[:, END_INDEX] = ~is_open
        allowed[:, FIRST_TYPE_INDEX : self.first_pointer] = (is_open & (steps_left >= 2))[:, None]
        can_point = steps_left >= 3
        allowed[:, self.first_pointer :] = ((~is_open & can_point)[:, None]) & (self.word_of_position >= 0)
        next_start = self.word_start.gather(1, (self.open_word + 1).clamp(min=0)[:, None]).squeeze(1)
        continues = is_open & can_point & (next_start >= 0)
        allowed[continues, self.first_pointer + next_start[continues]] = True
        return allowed


def _after_end(sequences: torch.Tensor) -> torch.Tensor:
    """True strictly after the first `</s>` of each row."""
    is_end = (sequences == END_INDEX).long()
    return (is_end.cumsum(-1) - is_end) > 0


# ---------------------------------------------------------------------------------------------------------------------
# Loading, saving and small helpers
# ---------------------------------------------------------------------------------------------------------------------

# Frozen backbones already loaded in this process, so that adapters loaded one by one share one copy.
_SHARED_BACKBONES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder")


def _hub_kwargs(kwargs: Mapping) -> dict:
    return {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}


def shift_labels_right(labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing decoder inputs: the start index, then the labels but the last; padding reads `</s>`."""
    shifted = labels.new_full(labels.shape, START_INDEX)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == LABEL_PAD, END_INDEX)


def load_backbone(
    name_or_path: str, dtype: torch.dtype | None = None, share: bool = True, subfolder: str = ""
) -> BartModel:
    """The BART backbone, shared with other adapters when frozen, with an error that says what to do when it cannot
    be fetched (offline machines)."""
    key = (str(name_or_path), subfolder, str(dtype))
    if share and key in _SHARED_BACKBONES:
        return _SHARED_BACKBONES[key]
    try:
        backbone = BartModel.from_pretrained(name_or_path, dtype=dtype, subfolder=subfolder)
    except OSError as error:
        raise OSError(
            f"could not load the backbone {name_or_path!r}: {error}\nIf this machine is offline, download the "
            "backbone elsewhere (`hf download facebook/bart-large --local-dir DIR`) and pass its local folder as "
            "the backbone (`--backbone DIR`, `LightNerModel.from_backbone(DIR, ...)` or "
            "`from_pretrained(..., backbone=...)`)."
        ) from error
    if share:
        _SHARED_BACKBONES[key] = backbone
    return backbone


def load_tokenizer(name_or_path: str, config: LightNerConfig | None = None, **hub_kwargs):
    """The tokenizer saved with an adapter, or else its backbone's.

    Handing `AutoTokenizer` the adapter's config stops it from loading that config itself, which for a folder with
    remote code would ask whether to trust it.
    """
    try:
        return AutoTokenizer.from_pretrained(name_or_path, config=config, **hub_kwargs)
    except (OSError, ValueError):
        if config is None:
            raise
        return AutoTokenizer.from_pretrained(config.backbone)


def load_adapter_config(path: str, **hub_kwargs) -> LightNerConfig:
    """An adapter's config, refusing folders that hold something other than a LightNER adapter."""
    config_dict, _ = LightNerConfig.get_config_dict(path, **hub_kwargs)
    model_type = config_dict.get("model_type")
    if model_type != LightNerConfig.model_type:
        raise ValueError(
            f"{path}: config.json has model_type {model_type!r}, not 'lightner'; this is not a LightNER adapter"
        )
    return LightNerConfig.from_dict(config_dict)


def read_adapter_file(path: str, **hub_kwargs) -> dict[str, torch.Tensor]:
    """Adapter tensors from `model.safetensors` (never a pickle), with an error naming the file if it is damaged."""
    weights_file = cached_file(path, ADAPTER_WEIGHTS_NAME, **hub_kwargs)
    try:
        return load_file(weights_file)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{weights_file} is not a readable safetensors adapter file (truncated or corrupted?): {error}"
        ) from error


def write_model_card(save_directory: str | os.PathLike, config: LightNerConfig) -> None:
    """A Hub model card: metadata for the Hub's filters and widgets, and what a user needs to trust the adapter."""
    from huggingface_hub import ModelCard, ModelCardData

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="token-classification",
        base_model=config.backbone,
        license="apache-2.0",
        tags=["lightner", "ner", "named-entity-recognition", "prompt-tuning", "custom_code"],
        datasets=[config.training_data] if config.training_data else None,
    )
    label_rows = "\n".join(f"| {t} | {w} |" for t, w in zip(config.entity_types, config.label_words))
    scores = "\n".join(f"| {name} | {value} |" for name, value in (config.evaluation or {}).items())
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

## Evaluation

{"| metric | value |" + chr(10) + "|---|---|" + chr(10) + scores if scores else "Not recorded."}

## Use

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("<this repository>", trust_remote_code=True)
model.predict([["Angela", "Merkel", "visited", "Paris"]])
```
"""
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    card.save(os.path.join(save_directory, "README.md"))


def _fill_and_check_backbone_shape(config: LightNerConfig, backbone: BartModel) -> None:
    """Record the backbone's shape in a new config; refuse a backbone whose shape differs from a saved one's."""
    mismatches = []
    for field in BACKBONE_SHAPE_FIELDS:
        actual, recorded = getattr(backbone.config, field), getattr(config, field)
        if recorded is None:
            setattr(config, field, actual)
        elif recorded != actual:
            mismatches.append(f"{field}: adapter {recorded}, backbone {actual}")
    if mismatches:
        raise ValueError(
            f"the backbone does not have the shape this adapter was trained on ({'; '.join(mismatches)}); the adapter "
            f"names {config.backbone!r}"
        )


def _pad_rows(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    padding = tensor.new_full((length - tensor.shape[0], *tensor.shape[1:]), value)
    return torch.cat([tensor, padding])


def _split_by(rows: list[int], key) -> list[list[int]]:
    """Consecutive runs of `rows` with the same `key` (batches must not mix prompt lengths)."""
    runs: list[list[int]] = []
    for row in rows:
        if runs and key(runs[-1][-1]) == key(row):
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _entity_dict(entity, score: float, words: Sequence[str], entity_types: Sequence[str]) -> dict:
    return {
        "type": entity_types[entity.type_id],
        "start": entity.start,
        "end": entity.end,
        "text": " ".join(words[entity.start : entity.end]),
        "score": score,
    }


def _progress(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="batch")


LightNerConfig.register_for_auto_class()
LightNerModel.register_for_auto_class("AutoModel")

__all__ = [
    "LightNerModel",
    "LightNerPreTrainedModel",
    "LightNerAdapter",
    "LightNerOutput",
    "LightNerGenerationOutput",
    "PromptKeyValues",
    "AdapterBatch",
]
