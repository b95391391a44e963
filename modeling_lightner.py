"""LightNER: named-entity recognition by a frozen BART with prompt-guided attention and a pointer decoder.

Chen et al., "LightNER: A Lightweight Generative Framework with Prompt-guided Attention for Low-resource NER"
(COLING 2022). Read top to bottom: the prompt encoder, the attention hook that prepends prompts inside BART's
attention, the pointer head that scores the output index space, the adapter that holds one domain's trained tensors,
and the model, which encodes a source once and decodes output indices against it. Generation (beam search and the
pointer grammar) lives in `generation_lightner.py`, loading and saving in `hub_lightner.py`, int8 layers in
`quantization_lightner.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from transformers import BartModel, PreTrainedModel
from transformers.cache_utils import EncoderDecoderCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface
from transformers.utils import ModelOutput

from .configuration_lightner import ATTENTION_KINDS, LightNerConfig, check_backbone_shape
from .generation_lightner import LightNerGenerationMixin
from .hub_lightner import LightNerHubMixin
from .quantization_lightner import is_quantized
from .tokenization_utils import END_INDEX, FIRST_TYPE_INDEX, LABEL_PAD, START_INDEX, label_word_token_ids

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
        out = self.mlp(self.embedding).view(prompt_length, self.num_layers, 2, hidden_size)  # [L, layers, 2, d]
        return out.permute(1, 2, 0, 3)  # [layers, 2, L, d]


class PromptEncoder(nn.Module):
    """The prompts of the three attention kinds, either reparameterised (while training) or folded (once trained).

    Calling it returns, per attention kind, a `[layers, 2, L, d]` tensor: for each layer of that kind, L key vectors
    (slot 0) and L value vectors (slot 1) that attention reads in front of the sequence's own. Folded prompts are
    parameters named `prompts.<kind>`, exactly what an adapter file holds.

    Example:

    ```python
    >>> from transformers import BartConfig
    >>> from lightner.configuration_lightner import LightNerConfig, check_backbone_shape
    >>> config = LightNerConfig(entity_types=["PER"], prompt_length=4, prompt_hidden_size=8)
    >>> backbone = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=2,
    ...                       encoder_attention_heads=2, decoder_attention_heads=4)
    >>> check_backbone_shape(config, backbone)  # records the backbone's layer counts and width
    >>> prompts = PromptEncoder(config, reparameterize=True)()
    >>> {kind: tuple(tensor.shape) for kind, tensor in prompts.items()}
    {'encoder_self': (1, 2, 4, 16), 'decoder_self': (2, 2, 4, 16), 'decoder_cross': (2, 2, 4, 16)}

    ```
    """

    def __init__(self, config: LightNerConfig, reparameterize: bool):
        super().__init__()
        layers = {kind: config.prompt_layers(kind) for kind in ATTENTION_KINDS}
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
        # Contiguous: the MLP's output may be a view with other strides, which checkpoints (safetensors) refuse.
        folded = {kind: nn.Parameter(tensor.detach().contiguous().clone()) for kind, tensor in self().items()}
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
    def from_prompts(cls, prompts: Mapping[str, torch.Tensor], config: LightNerConfig) -> PromptKeyValues:
        """`[batch?, layers, 2, L, d]` per kind to the per-head layout attention uses."""
        tensors = {}
        for kind, tensor in prompts.items():
            if tensor.dim() == 4:
                tensor = tensor.unsqueeze(0)  # [1, layers, 2, L, d]
            batch, layers, _, length, hidden = tensor.shape
            heads = config.attention_heads(kind)
            per_head = tensor.reshape(batch, layers, 2, length, heads, hidden // heads)
            tensors[kind] = per_head.permute(1, 2, 0, 4, 3, 5)  # [layers, 2, batch, heads, L, head_dim]
        return cls(tensors)

    def repeat_rows(self, repeats: int) -> PromptKeyValues:
        """Each row `repeats` times in a row (beam expansion); shared prompts need none."""
        return PromptKeyValues(
            {kind: t if t.shape[2] == 1 else t.repeat_interleave(repeats, dim=2) for kind, t in self.tensors.items()}
        )

    def select_rows(self, rows: torch.Tensor) -> PromptKeyValues:
        """Only the rows `rows` (sentences leaving a search); shared prompts are kept as they are."""
        return PromptKeyValues(
            {kind: t if t.shape[2] == 1 else t.index_select(2, rows) for kind, t in self.tensors.items()}
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
    key = torch.cat([prompt_key.expand(batch, -1, -1, -1).to(key.dtype), key], dim=2)  # [batch, heads, L + kv, hd]
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
        attention_mask = (positions[None, :] <= positions[kv_length - q_length :, None])[None, None]  # [1, 1, q, kv]
    visible = 0.0 if attention_mask.dtype != torch.bool else True
    prompt_slots = attention_mask.new_full((*attention_mask.shape[:-1], length), visible)  # [batch, 1, q, L]
    return torch.cat([prompt_slots, attention_mask[..., -kv_length:]], dim=-1)  # [batch, 1, q, L + kv]


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
        return one_query_attention(query, key, value, attention_mask, *prompts, kwargs.get("scaling"))
    key, value, attention_mask = _prepend_prompts(module, query, key, value, attention_mask, *prompts)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def one_query_attention(
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
    largest cost of cached generation after the matrix products. The query is scaled before the products, as SDPA
    does, so that half-precision scores cannot overflow where the scaled ones fit.
    """
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    query = query * scaling  # [batch, heads, 1, head_dim]
    prompt_scores = _rows_matmul(query, prompt_key.to(query.dtype).transpose(-1, -2))  # [batch, heads, 1, L]
    scores = query @ key.transpose(-1, -2)  # [batch, heads, 1, kv]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., -key.shape[2] :], float("-inf"))
        else:
            scores = scores + attention_mask[..., -key.shape[2] :]
    weights = torch.cat([prompt_scores, scores], dim=-1).softmax(dim=-1)  # [batch, heads, 1, L + kv]
    length = prompt_key.shape[2]
    output = _rows_matmul(weights[..., :length], prompt_value.to(value.dtype)) + weights[..., length:] @ value
    return output.transpose(1, 2).contiguous(), None  # [batch, 1, heads, head_dim]


def _rows_matmul(rows: torch.Tensor, prompt_part: torch.Tensor) -> torch.Tensor:
    """`rows @ prompt_part` for one query per row (`[batch, heads, 1, n]`), prompts per row or shared (batch 1).

    Shared prompts would be broadcast to a copy per row; folding the rows into the query dimension instead makes it
    one small product per head.
    """
    if prompt_part.shape[0] == 1 and rows.shape[0] > 1:
        return (rows.transpose(0, 2) @ prompt_part).transpose(0, 2)  # [1, heads, batch, n] @ [1, heads, n, m]
    return rows @ prompt_part


AttentionInterface.register(LIGHTNER_ATTENTION, prompt_attention_forward)
# Without a mask function registered under the same name, transformers hands custom attentions no padding mask.
AttentionMaskInterface.register(LIGHTNER_ATTENTION, sdpa_mask)


# ---------------------------------------------------------------------------------------------------------------------
# Pointer head: the semantic-aware answer space
# ---------------------------------------------------------------------------------------------------------------------


class PointerHead(nn.Module):
    """A label set's side of the answer space: each entity type is represented by its label words.

    A type's vector is `sum_j softmax(alpha_t)_j E[l_j]` over the pieces `l_j` of its label words, so that types start
    from what the pretrained vocabulary already knows ("location" for LOC). `alpha` (`label_word_weights`, padded to
    the longest label words) is trainable, unlike in the reference implementation, where a precedence slip froze it.

    Example:

    ```python
    >>> from transformers import BartConfig, BartModel
    >>> embeddings = BartModel(BartConfig(vocab_size=64, d_model=16)).get_input_embeddings().weight
    >>> head = PointerHead([[5], [6, 7, 8]])  # two types: one label-word piece, and three
    >>> tuple(head.label_word_weights.shape), tuple(head.type_embeddings(embeddings).shape)
    ((2, 3), (2, 16))

    ```
    """

    def __init__(self, label_word_ids: Sequence[Sequence[int]]):
        super().__init__()
        width = max(len(ids) for ids in label_word_ids)
        ids = torch.zeros(len(label_word_ids), width, dtype=torch.long)
        mask = torch.zeros(len(label_word_ids), width, dtype=torch.bool)
        for row, pieces in enumerate(label_word_ids):
            ids[row, : len(pieces)] = torch.tensor(pieces)
            mask[row, : len(pieces)] = True
        self.register_buffer("label_word_ids", ids, persistent=False)  # [T, pieces]
        self.register_buffer("label_word_mask", mask, persistent=False)  # [T, pieces]
        self.label_word_weights = nn.Parameter(torch.empty(len(label_word_ids), width).uniform_(1.0, 2.5))

    def type_embeddings(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        """`[T, d]` type vectors from the backbone's `[vocab, d]` token embeddings."""
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
    """Scores `[batch, steps, 2 + T + source length]` of every output index from decoder states `[batch, steps, d]`.

    `</s>` by `h . E[</s>]`, type t by `h . type_t`, a pointer to source position p by `h . (H[p] + E[src[p]]) / 2`
    (`pointer_features`). `type_embeddings` is `[batch or 1, T, d]`, so each example may use its own label set
    (`type_mask` hides the padding of smaller ones). `<s>`, padded types and invalid pointers get minus infinity.

    The products are taken in float32 whatever the backbone computes in: scores are sums over d = 1024 of magnitude
    tens, where bfloat16's 8-bit mantissa would round them by a quarter and flip near-tied choices.
    """
    hidden, end_embedding, type_embeddings, pointer_features = (
        t.float() for t in (hidden, end_embedding, type_embeddings, pointer_features)
    )
    if training and dropout > 0:
        hidden, end_embedding, type_embeddings, pointer_features = (
            nn.functional.dropout(t, p=dropout) for t in (hidden, end_embedding, type_embeddings, pointer_features)
        )
    start_scores = hidden.new_full((*hidden.shape[:2], 1), float("-inf"))  # [batch, steps, 1]
    end_scores = hidden @ end_embedding.unsqueeze(-1)  # [batch, steps, 1]
    type_scores = torch.einsum("bsd,btd->bst", hidden, type_embeddings.expand(hidden.shape[0], -1, -1))
    type_scores = type_scores.masked_fill(~type_mask[:, None, :], float("-inf"))  # [batch, steps, T]
    pointer_scores = torch.einsum("bsd,bpd->bsp", hidden, pointer_features)
    pointer_scores = pointer_scores.masked_fill(~pointer_mask[:, None, :], float("-inf"))  # [batch, steps, source]
    return torch.cat([start_scores, end_scores, type_scores, pointer_scores], dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Adapter: one domain's trained tensors
# ---------------------------------------------------------------------------------------------------------------------

# The tensors of an adapter file (`model.safetensors`): folded prompts per attention kind, and the label-word weights.
PROMPT_TENSOR_NAMES = {kind: f"prompt_encoder.prompts.{kind}" for kind in ATTENTION_KINDS}
LABEL_WORD_WEIGHTS_NAME = "pointer_head.label_word_weights"


class LightNerAdapter(nn.Module):
    """One domain's trained part: its config (label set, prompt length), prompts and label-word weights.

    `adapter_state_dict` is exactly what `model.safetensors` holds; several adapters can share one backbone.
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
        self.register_buffer("index_token_ids", torch.tensor(decoder_inputs), persistent=False)  # [2 + T]

    def adapter_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The folded prompts and the label-word weights, under the names the adapter file uses."""
        state = {PROMPT_TENSOR_NAMES[kind]: t.detach() for kind, t in self.prompt_encoder().items()}
        state[LABEL_WORD_WEIGHTS_NAME] = self.pointer_head.label_word_weights.detach()
        return {name: tensor.to(dtype or tensor.dtype).contiguous() for name, tensor in state.items()}

    def load_adapter_state_dict(
        self, state: Mapping[str, torch.Tensor], source: str = "adapter", prompts_only: bool = False
    ) -> None:
        """Load an adapter file's tensors, refusing missing, unknown or misshapen ones by name.

        With `prompts_only` (a new label set starting from another domain's prompts), only the prompts are loaded and
        checked; the label-word weights stay as they are, and `state`'s own (another label set's) are ignored.
        """
        expected = {PROMPT_TENSOR_NAMES[kind]: shape for kind, shape in self.prompt_encoder.shapes.items()}
        if not prompts_only:
            expected[LABEL_WORD_WEIGHTS_NAME] = tuple(self.pointer_head.label_word_weights.shape)
        known = {*PROMPT_TENSOR_NAMES.values(), LABEL_WORD_WEIGHTS_NAME}
        missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - known)
        if missing or unknown:
            raise ValueError(f"{source} does not match this model: missing tensors {missing}, unexpected {unknown}")
        for name, shape in expected.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(
                    f"{source}: tensor {name} has shape {tuple(state[name].shape)}, expected {shape}; the adapter was "
                    "saved for another label set or backbone shape"
                )
        self.prompt_encoder.fold()
        with torch.no_grad():
            for kind in ATTENTION_KINDS:
                self.prompt_encoder.prompts[kind].copy_(state[PROMPT_TENSOR_NAMES[kind]])
            if not prompts_only:
                self.pointer_head.label_word_weights.copy_(state[LABEL_WORD_WEIGHTS_NAME])


class AdapterParts(NamedTuple):
    """What a batch needs from one adapter: prompts per kind, decoder input ids of the fixed indices, type vectors."""

    prompts: dict[str, torch.Tensor]  # kind -> [layers, 2, L, d]
    index_token_ids: torch.Tensor  # [2 + T]
    type_embeddings: torch.Tensor  # [T, d]


@dataclass
class AdapterBatch:
    """The adapters of one batch, laid out per example: prompts, decoder inputs for fixed indices, and type vectors.

    With one adapter every tensor has batch 1 and broadcasts. With several, the label sets are padded to the largest
    (`num_types`), so pointers start at the same index `2 + num_types` in every row; `type_mask` hides the padding.
    """

    prompts: PromptKeyValues
    index_token_ids: torch.Tensor  # [batch or 1, 2 + T]
    type_embeddings: torch.Tensor  # [batch or 1, T, d]
    type_mask: torch.Tensor  # [batch or 1, T]

    @property
    def num_types(self) -> int:
        return self.type_mask.shape[1]

    def repeat_rows(self, repeats: int) -> AdapterBatch:
        """Each row `repeats` times in a row (beam expansion); shared tensors need none."""
        if self.index_token_ids.shape[0] == 1:
            return self
        return AdapterBatch(
            self.prompts.repeat_rows(repeats),
            *(
                t.repeat_interleave(repeats, dim=0)
                for t in (self.index_token_ids, self.type_embeddings, self.type_mask)
            ),
        )

    def select_rows(self, rows: torch.Tensor) -> AdapterBatch:
        """Only the rows `rows` (sentences leaving a search); shared tensors are kept as they are."""
        if self.index_token_ids.shape[0] == 1:
            return self
        return AdapterBatch(
            self.prompts.select_rows(rows),
            *(t.index_select(0, rows) for t in (self.index_token_ids, self.type_embeddings, self.type_mask)),
        )


@dataclass
class EncodedSource:
    """What every decoder step reads from the source sentences.

    The pointer features `(H[p] + E[src[p]]) / 2` depend on the source alone, so they are computed with the encoder
    states, once per batch, rather than at every decoding step.
    """

    input_ids: torch.Tensor  # [batch, source]
    attention_mask: torch.Tensor  # [batch, source], or [batch, 1, 1, source] as the decoder's cross-attention reads it
    hidden: torch.Tensor  # [batch, source, d]
    pointer_features: torch.Tensor  # [batch, source, d]
    pointer_mask: torch.Tensor  # [batch, source]

    def repeat_rows(self, repeats: int) -> EncodedSource:
        """Each sentence `repeats` times in a row (beam expansion): the encoder ran once per sentence."""
        return EncodedSource(*(t.repeat_interleave(repeats, dim=0) for t in vars(self).values()))

    def select_rows(self, rows: torch.Tensor) -> EncodedSource:
        """Only the rows `rows`: sentences that finished leave the batch, and the decoder reads no more of them."""
        return EncodedSource(*(t.index_select(0, rows) for t in vars(self).values()))


@dataclass
class LightNerOutput(ModelOutput):
    """`logits[:, t]` scores `labels[:, t]` over the output index space (index `T + 2 + p` points at position p)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


class LightNerPreTrainedModel(PreTrainedModel):
    config_class = LightNerConfig
    base_model_prefix = "lightner"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Adapter parameters are initialised where they are built; the backbone arrives pretrained."""


DEFAULT_ADAPTER = "default"


class LightNerModel(LightNerGenerationMixin, LightNerHubMixin, LightNerPreTrainedModel):
    """LightNER adapters on a BART backbone.

    Build one with `from_backbone`, load one with `from_pretrained`, train it with any loop that calls `forward` with
    `labels`, and run it with `predict` or `generate`. Only adapters (prompts and label-word weights) are saved.
    More adapters can join the same backbone (`load_adapter`, `add_adapter`), one of them active (`set_adapter`);
    `model.config` is always the active adapter's config, and `predict` can mix adapters within one batch.

    The constructor loads nothing: it takes the backbone and tokenizer it is given. A new (`reparameterize=True`,
    trainable) adapter is kept in float32 on the backbone's device whatever the backbone's dtype, so that training
    updates are not rounded away; so is a loaded one, so that a backbone in bfloat16 or int8 never rounds the adapter
    it would save (`adapter_batch` casts the prompts to the backbone's dtype, 3 MB per batch).
    """

    def __init__(
        self, config: LightNerConfig, backbone: BartModel | None = None, tokenizer=None, reparameterize: bool = True
    ):
        if backbone is None or tokenizer is None:
            raise TypeError(
                "LightNerModel(config, backbone=..., tokenizer=...) needs both; use LightNerModel.from_backbone or "
                "from_pretrained to load them"
            )
        super().__init__(config)
        check_backbone_shape(config, backbone.config)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.backbone.config._attn_implementation = LIGHTNER_ATTENTION
        self.backbone.requires_grad_(not config.freeze_backbone)
        self._share_backbone()
        self.adapters = nn.ModuleDict({DEFAULT_ADAPTER: self._new_adapter(config, reparameterize)})
        self.active_adapter = DEFAULT_ADAPTER
        self.post_init()

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
        config = LightNerConfig.from_entity_types(self.config.backbone, entity_types, **config_overrides)
        self._register_adapter(name, config, reparameterize=True)

    def delete_adapter(self, name: str) -> None:
        self._check_adapter_names([name])
        if name == self.active_adapter:
            raise ValueError(f"adapter {name!r} is active; set_adapter another one before deleting it")
        del self.adapters[name]

    def _register_adapter(self, name: str, config: LightNerConfig, reparameterize: bool) -> LightNerAdapter:
        if name in self.adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded; delete_adapter it or choose another name")
        check_backbone_shape(config, self.backbone.config)
        self.adapters[name] = self._new_adapter(config, reparameterize)
        return self.adapters[name]

    def _new_adapter(self, config: LightNerConfig, reparameterize: bool) -> LightNerAdapter:
        """An adapter in float32 on the backbone's device, whatever the backbone's dtype."""
        reference = next(self.backbone.parameters())
        return LightNerAdapter(config, self.tokenizer, reparameterize).to(reference.device)

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
        return self.adapters[self.active_adapter].adapter_state_dict()

    def load_adapter_state_dict(
        self, state: Mapping[str, torch.Tensor], source: str = "adapter", prompts_only: bool = False
    ) -> None:
        """Load adapter-file tensors into the active adapter (`LightNerAdapter.load_adapter_state_dict`)."""
        self.adapters[self.active_adapter].load_adapter_state_dict(state, source, prompts_only=prompts_only)

    # --- encoding and decoding ---------------------------------------------------------------------------------------

    def adapter_batch(self, adapter_names: Sequence[str] | None = None) -> AdapterBatch:
        """The per-example layout of the adapters a batch uses: the active one, or one name per example.

        Each distinct adapter is computed and stacked once, then indexed per row. Mixed batches need adapters with the
        same prompt length (their prompts are stacked per example).
        """
        names = [self.active_adapter] if adapter_names is None else list(adapter_names)
        self._check_adapter_names(names)
        distinct = list(dict.fromkeys(names))
        embeddings = self.backbone.get_input_embeddings().weight  # [vocab, d]
        parts = [self._adapter_parts(self.adapters[name], embeddings) for name in distinct]
        if len(distinct) == 1:
            types = parts[0].type_embeddings
            mask = torch.ones(1, types.shape[0], dtype=torch.bool, device=types.device)
            prompts = PromptKeyValues.from_prompts(parts[0].prompts, self.config)
            return AdapterBatch(prompts, parts[0].index_token_ids[None], types[None], mask)
        lengths = {self.adapters[name].config.prompt_length for name in distinct}
        if len(lengths) > 1:
            raise ValueError(f"adapters {distinct} have different prompt lengths {sorted(lengths)}: batch them apart")
        width = max(part.type_embeddings.shape[0] for part in parts)
        rows = torch.tensor([distinct.index(name) for name in names], device=embeddings.device)  # [batch]
        prompts = {
            kind: torch.stack([part.prompts[kind] for part in parts])[rows]  # [batch, layers, 2, L, d]
            for kind in ATTENTION_KINDS
        }
        index_ids = torch.stack([_pad_rows(part.index_token_ids, 2 + width, END_INDEX) for part in parts])[rows]
        types = torch.stack([_pad_rows(part.type_embeddings, width, 0.0) for part in parts])[rows]  # [batch, T, d]
        counts = torch.tensor([part.type_embeddings.shape[0] for part in parts], device=embeddings.device)
        mask = torch.arange(width, device=embeddings.device)[None, :] < counts[rows][:, None]  # [batch, T]
        return AdapterBatch(PromptKeyValues.from_prompts(prompts, self.config), index_ids, types, mask)

    @staticmethod
    def _adapter_parts(adapter: LightNerAdapter, embeddings: torch.Tensor) -> AdapterParts:
        """One adapter's part of a batch, in the dtype the backbone computes in (that of its `embeddings`)."""
        prompts = {kind: tensor.to(embeddings.dtype) for kind, tensor in adapter.prompt_encoder().items()}
        return AdapterParts(prompts, adapter.index_token_ids, adapter.pointer_head.type_embeddings(embeddings))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, adapters: AdapterBatch) -> EncodedSource:
        """Run the encoder (with prompts) once over the source, and precompute what pointers score against."""
        hidden = self.backbone.encoder(
            input_ids=input_ids, attention_mask=attention_mask, lightner_prompts=adapters.prompts
        ).last_hidden_state  # [batch, source, d]
        embeddings = self.backbone.get_input_embeddings().weight
        return EncodedSource(
            input_ids,
            attention_mask,
            hidden,
            pointer_features=(hidden.float() + embeddings[input_ids].float()) / 2,  # [batch, source, d], float32
            pointer_mask=self.pointer_mask(input_ids, attention_mask),
        )

    def decoder_token_ids(
        self, index_ids: torch.Tensor, input_ids: torch.Tensor, adapters: AdapterBatch
    ) -> torch.Tensor:
        """Decoder inputs `[batch, steps]` for output indices: `<s>`, `</s>`, a type's first label piece, or the
        source token a pointer points at."""
        first_pointer = FIRST_TYPE_INDEX + adapters.num_types
        pointed = input_ids.gather(1, (index_ids - first_pointer).clamp(min=0))  # [batch, steps]
        fixed_index = index_ids.clamp(max=first_pointer - 1)  # [batch, steps]
        table = adapters.index_token_ids.expand(index_ids.shape[0], -1)  # [batch, 2 + T]
        fixed = table.gather(1, fixed_index)  # [batch, steps]
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
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the decoder: scores `[batch, steps, 2 + T + source]` for the steps in `index_ids` `[batch, steps]`,
        continuing `cache` if given, in which case `index_ids` holds only new steps.
        `decoder_attention_mask` and `source.attention_mask` may be 4D masks, which the decoder uses as they are."""
        decoder_out = self.backbone.decoder(
            input_ids=self.decoder_token_ids(index_ids, source.input_ids, adapters),
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=source.hidden,
            encoder_attention_mask=source.attention_mask,
            cache=cache,
            use_cache=cache is not None,
            lightner_prompts=adapters.prompts,
        )
        return score_output_indices(
            decoder_out.last_hidden_state,  # [batch, steps, d]
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
        if self.training and is_quantized(self.backbone):
            raise RuntimeError(
                "this model's backbone is quantized to int8, which is for inference (no gradients flow through it): "
                "train on the float32 backbone and load the saved adapter with quantize='int8' to predict"
            )
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
        logits = self.decode(decoder_index_ids, source, adapters)  # [batch, steps, 2 + T + source]
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD)
        return LightNerOutput(loss=loss, logits=logits, encoder_last_hidden_state=source.hidden)


def shift_labels_right(labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing decoder inputs: the start index, then the labels but the last; padding reads `</s>`."""
    shifted = labels.new_full(labels.shape, START_INDEX)  # [batch, steps]
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == LABEL_PAD, END_INDEX)


def _pad_rows(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    padding = tensor.new_full((length - tensor.shape[0], *tensor.shape[1:]), value)
    return torch.cat([tensor, padding])


LightNerConfig.register_for_auto_class()
LightNerModel.register_for_auto_class("AutoModel")

__all__ = [
    "LABEL_WORD_WEIGHTS_NAME",
    "PROMPT_TENSOR_NAMES",
    "LightNerModel",
    "LightNerPreTrainedModel",
    "LightNerAdapter",
    "LightNerOutput",
    "PromptEncoder",
    "PointerHead",
    "PromptKeyValues",
    "AdapterBatch",
    "shift_labels_right",
]
