"""LightNER: named-entity recognition by a frozen BART with prompt-guided attention and a pointer decoder.

Chen et al., "LightNER: A Lightweight Generative Framework with Prompt-guided Attention for Low-resource NER"
(COLING 2022). Read top to bottom: the prompt encoder, the attention hook that prepends prompts inside BART's
attention, the pointer head that scores the output index space, the model, and generation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, BartModel, PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface
from transformers.utils import ModelOutput, cached_file

try:
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
except ImportError:  # imported as a top-level module (pip install) rather than as Hub remote code
    from configuration_lightner import BACKBONE_SHAPE_FIELDS, LightNerConfig
    from tokenization_utils import (
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

    def prepend(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        tensors = self.tensors.get(attention_kind(module))
        if tensors is None:
            return key, value, attention_mask
        prompt_key, prompt_value = tensors[module.layer_idx]
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
    if lightner_prompts is not None:
        key, value, attention_mask = lightner_prompts.prepend(module, query, key, value, attention_mask)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(LIGHTNER_ATTENTION, prompt_attention_forward)
# Without a mask function registered under the same name, transformers hands custom attentions no padding mask.
AttentionMaskInterface.register(LIGHTNER_ATTENTION, sdpa_mask)


# ---------------------------------------------------------------------------------------------------------------------
# Pointer head: the semantic-aware answer space
# ---------------------------------------------------------------------------------------------------------------------


class PointerHead(nn.Module):
    """Scores every output index from the decoder state `h` (§4).

    `</s>` by `h . E[</s>]`; type t by its label words, `sum_j softmax(alpha_t)_j h . E[l_j]`, so that types start from
    what the pretrained vocabulary already knows; a pointer to source position p by `h . (H[p] + E[src[p]]) / 2`.
    `alpha` (`label_word_weights`) is trainable, unlike in the reference where a precedence slip froze it.
    """

    def __init__(self, config: LightNerConfig, label_word_ids: Sequence[Sequence[int]]):
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
        self.dropout = nn.Dropout(config.dropout)

    def type_embeddings(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        weights = self.label_word_weights.masked_fill(~self.label_word_mask, float("-inf")).softmax(dim=-1)
        return torch.einsum("tp,tpd->td", weights.to(token_embeddings.dtype), token_embeddings[self.label_word_ids])

    def forward(
        self,
        decoder_hidden: torch.Tensor,
        encoder_hidden: torch.Tensor,
        input_ids: torch.Tensor,
        pointer_mask: torch.Tensor,
        token_embeddings: torch.Tensor,
        eos_token_id: int,
    ) -> torch.Tensor:
        """`[batch, steps, 2 + T + source length]` scores; `<s>` and invalid pointers are minus infinity."""
        hidden = self.dropout(decoder_hidden)
        eos = self.dropout(token_embeddings[eos_token_id])
        types = self.dropout(self.type_embeddings(token_embeddings))
        sources = self.dropout((encoder_hidden + token_embeddings[input_ids]) / 2)
        start_scores = hidden.new_full((*hidden.shape[:2], 1), float("-inf"))
        end_scores = hidden @ eos.unsqueeze(-1)
        type_scores = hidden @ types.T
        pointer_scores = torch.einsum("bsd,bpd->bsp", hidden, sources)
        pointer_scores = pointer_scores.masked_fill(~pointer_mask[:, None, :], float("-inf"))
        return torch.cat([start_scores, end_scores, type_scores, pointer_scores], dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


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
    distribution; `step_logits`, when asked for, are the raw scores at every step for every beam."""

    sequences: torch.Tensor | None = None
    token_log_probs: torch.Tensor | None = None
    step_logits: tuple[torch.Tensor, ...] | None = None


class LightNerPreTrainedModel(PreTrainedModel):
    config_class = LightNerConfig
    base_model_prefix = "lightner"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Adapter parameters are initialised where they are built; the backbone arrives pretrained."""


class LightNerModel(LightNerPreTrainedModel):
    """A LightNER adapter on a BART backbone.

    Build one with `from_backbone`, load one with `from_pretrained`, train it with any loop that calls `forward` with
    `labels`, and run it with `predict` or `generate`. Only the adapter (prompts and label-word weights) is saved.
    """

    def __init__(
        self,
        config: LightNerConfig,
        backbone: BartModel | None = None,
        tokenizer=None,
        reparameterize: bool = True,
    ):
        super().__init__(config)
        if config.num_types == 0:
            raise ValueError("a LightNER model needs at least one entity type (config.entity_types is empty)")
        self.backbone = backbone if backbone is not None else load_backbone(config.backbone)
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(config.backbone)
        _fill_and_check_backbone_shape(config, self.backbone)
        self.backbone.config._attn_implementation = LIGHTNER_ATTENTION
        self.backbone.requires_grad_(not config.freeze_backbone)
        self.prompt_encoder = PromptEncoder(config, reparameterize=reparameterize)
        label_ids = label_word_token_ids(self.tokenizer, config.label_words)
        self.pointer_head = PointerHead(config, label_ids)
        decoder_inputs = [self.tokenizer.bos_token_id, self.tokenizer.eos_token_id] + [ids[0] for ids in label_ids]
        self.register_buffer("index_token_ids", torch.tensor(decoder_inputs), persistent=False)
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
        backbone_model = load_backbone(str(backbone), dtype=dtype)
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

        `backbone` and `tokenizer` may be given to share one backbone between several adapters. Hub arguments
        (`revision`, `cache_dir`, `token`, `local_files_only`, ...) apply to the adapter repository.
        """
        hub_kwargs = {
            key: kwargs[key]
            for key in ("revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder")
            if key in kwargs
        }
        path = str(pretrained_model_name_or_path)
        if config is None:
            config = LightNerConfig.from_pretrained(path, **hub_kwargs)
        if backbone is None:
            backbone = load_backbone(config.backbone, dtype=dtype)
        if tokenizer is None:
            tokenizer = load_tokenizer(path, fallback=config.backbone, **hub_kwargs)
        model = cls(config, backbone=backbone, tokenizer=tokenizer, reparameterize=False)
        weights_file = cached_file(path, ADAPTER_WEIGHTS_NAME, **hub_kwargs)
        model.load_adapter_state_dict(read_adapter_file(weights_file))
        if dtype is not None:
            model.to(dtype)
        return model.eval()

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What an adapter file holds: the folded prompts and the label-word weights, never a backbone tensor."""
        state = {f"prompt_encoder.prompts.{kind}": t.detach() for kind, t in self.prompt_encoder().items()}
        state["pointer_head.label_word_weights"] = self.pointer_head.label_word_weights.detach()
        return {name: tensor.contiguous() for name, tensor in state.items()}

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "adapter") -> None:
        """Load folded prompts and label-word weights, refusing missing, extra or misshapen tensors by name."""
        expected = {name: tuple(t.shape) for name, t in self.adapter_state_dict().items()}
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
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

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write `config.json`, the adapter as `model.safetensors` and the tokenizer; never the backbone."""
        kwargs.setdefault("state_dict", self.adapter_state_dict())
        super().save_pretrained(save_directory, **kwargs)
        self.tokenizer.save_pretrained(save_directory)

    # --- forward -----------------------------------------------------------------------------------------------------

    def prompt_key_values(self) -> PromptKeyValues:
        """The adapter's prompts in the per-head layout the attention hook prepends (one copy for the whole batch)."""
        return PromptKeyValues.from_prompts(self.prompt_encoder(), self.heads)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: PromptKeyValues | None
    ) -> torch.Tensor:
        return self.backbone.encoder(
            input_ids=input_ids, attention_mask=attention_mask, lightner_prompts=prompts
        ).last_hidden_state

    def decoder_token_ids(self, index_ids: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Decoder inputs for output indices (§3): `<s>`, `</s>`, a type's first label piece, or the pointed token."""
        first_pointer = FIRST_TYPE_INDEX + self.config.num_types
        pointed = input_ids.gather(1, (index_ids - first_pointer).clamp(min=0))
        fixed = self.index_token_ids[index_ids.clamp(max=first_pointer - 1)]
        return torch.where(index_ids >= first_pointer, pointed, fixed)

    def pointer_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Source positions a pointer may name: real tokens other than `<s>` and `</s>`."""
        special = (input_ids == self.tokenizer.bos_token_id) | (input_ids == self.tokenizer.eos_token_id)
        return attention_mask.bool() & ~special

    def decode(
        self,
        index_ids: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_hidden: torch.Tensor,
        prompts: PromptKeyValues | None,
        cache: EncoderDecoderCache | None = None,
    ) -> torch.Tensor:
        """Scores for the steps in `index_ids`, continuing `cache` if given (then only new steps)."""
        decoder_out = self.backbone.decoder(
            input_ids=self.decoder_token_ids(index_ids, input_ids),
            encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=attention_mask,
            cache=cache,
            use_cache=cache is not None,
            lightner_prompts=prompts,
        )
        return self.pointer_head(
            decoder_out.last_hidden_state,
            encoder_hidden,
            input_ids,
            self.pointer_mask(input_ids, attention_mask),
            self.backbone.get_input_embeddings().weight,
            self.tokenizer.eos_token_id,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_index_ids: torch.Tensor | None = None,
        prompt_key_values: PromptKeyValues | None = None,
        **kwargs,
    ) -> LightNerOutput:
        r"""
        input_ids (`[batch, source length]`): `<s> pieces </s>` per sentence, right-padded (see `tokenization_utils`).
        labels (`[batch, steps]`): the target index sequence after its leading 0, padded with -100.
        decoder_index_ids (`[batch, steps]`): decoder inputs as output indices; by default `labels` shifted right
            behind the start index 0 (teacher forcing).
        prompt_key_values: prompts to use instead of this adapter's (per-example prompts, ablations).
        """
        if attention_mask is None:
            attention_mask = input_ids.ne(self.tokenizer.pad_token_id).long()
        if decoder_index_ids is None:
            if labels is None:
                raise ValueError("forward needs `labels` or `decoder_index_ids` to know what the decoder reads")
            decoder_index_ids = shift_labels_right(labels)
        prompts = prompt_key_values if prompt_key_values is not None else self.prompt_key_values()
        encoder_hidden = self.encode(input_ids, attention_mask, prompts)
        logits = self.decode(decoder_index_ids, input_ids, attention_mask, encoder_hidden, prompts)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD)
        return LightNerOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoder_hidden)

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
        prompt_key_values: PromptKeyValues | None = None,
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

        `max_length` defaults to the config's rule `b + a * source length` per sentence.
        """
        num_beams = num_beams or self.config.beam_width
        constrained = self.config.constrained_decoding if constrained is None else constrained
        if constrained and word_starts is None:
            raise ValueError("constrained decoding needs `word_starts` for each sentence (see encode_sentences)")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.tokenizer.pad_token_id).long()
        batch = input_ids.shape[0]
        prompts = prompt_key_values if prompt_key_values is not None else self.prompt_key_values()
        encoder_hidden = self.encode(input_ids, attention_mask, prompts)
        beam_rows = torch.arange(batch, device=input_ids.device).repeat_interleave(num_beams)
        search = _BeamSearch(self, input_ids, attention_mask, word_starts, num_beams, max_length, constrained)
        input_ids, attention_mask = input_ids[beam_rows], attention_mask[beam_rows]
        encoder_hidden, prompts = encoder_hidden[beam_rows], prompts.select(beam_rows)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if use_cache else None
        step_logits = []
        while not search.done():
            step_input = search.sequences[:, -1:] if use_cache else search.sequences
            logits = self.decode(step_input, input_ids, attention_mask, encoder_hidden, prompts, cache)[:, -1]
            if output_step_logits:
                step_logits.append(logits)
            reorder = search.step(logits)
            if cache is not None:
                cache.reorder_cache(reorder)
        sequences, log_probs = search.best()
        return LightNerGenerationOutput(
            sequences=sequences, token_log_probs=log_probs, step_logits=tuple(step_logits) if step_logits else None
        )

    def predict(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 32,
        num_beams: int | None = None,
        show_progress: bool = False,
    ) -> list[list[dict]]:
        """Entities for each sentence (a list of words).

        Returns per sentence a list of `{"type", "start", "end", "text", "score"}`: word offsets with `end`
        exclusive, the words joined by spaces, and `score`, the probability the model gave to writing this entity
        (the product of its pointer and type token probabilities under the decoding distribution, given what it wrote
        before). An empty sentence gets no entities; a sentence longer than the backbone's positions raises
        `ValueError` (the pipeline splits raw text into windows instead).
        """
        results: list[list[dict]] = [[] for _ in sentences]
        non_empty = [i for i, words in enumerate(sentences) if isinstance(words, str) or len(words) > 0]
        encoded = encode_sentences(
            self.tokenizer, [sentences[i] for i in non_empty], self.backbone.config.max_position_embeddings
        )
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
        was_training = self.training
        self.eval()
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for rows in _progress(batches, show_progress, "Predicting"):
            for row, entities in zip(rows, self._predict_batch([encoded[i] for i in rows], num_beams)):
                words = sentences[non_empty[row]]
                results[non_empty[row]] = [
                    _entity_dict(entity, score, words, self.config) for entity, score in entities
                ]
        self.train(was_training)
        return results

    def _predict_batch(self, encoded: list[EncodedSentence], num_beams: int | None) -> list[list[tuple]]:
        batch = collate(encoded, self.tokenizer.pad_token_id)
        device = self.pointer_head.label_word_weights.device
        output = self.generate(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            word_starts=[sentence.word_starts for sentence in encoded],
            num_beams=num_beams,
        )
        predictions = []
        for sentence, indices, log_probs in zip(encoded, output.sequences.tolist(), output.token_log_probs):
            entities = decode_indices(indices, sentence, self.config.num_types)
            predictions.append([(e, float(log_probs[list(e.steps)].sum().exp())) for e in entities])
        return predictions


# ---------------------------------------------------------------------------------------------------------------------
# Generation: beam search with constraints
# ---------------------------------------------------------------------------------------------------------------------


class _BeamSearch:
    """State of a batched beam search over output indices; rows are `sentence * num_beams + beam`.

    Keeps, per row, the indices written so far, their log-probabilities, whether `</s>` was written, and which word the
    open entity ends at (-1 when none is open), which is all the constraints need.
    """

    def __init__(
        self,
        model: LightNerModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_starts: Sequence[Sequence[int]] | None,
        num_beams: int,
        max_length: int | None,
        constrained: bool,
    ):
        device = input_ids.device
        batch, source_length = input_ids.shape
        rows = batch * num_beams
        self.num_beams, self.batch, self.constrained = num_beams, batch, constrained
        self.first_pointer = FIRST_TYPE_INDEX + model.config.num_types
        lengths = attention_mask.sum(-1)
        # The decoder has as many positions as the encoder: a longer output could not be written.
        ceiling = model.backbone.config.max_position_embeddings
        limits = [min(max_length or model.config.max_output_length(int(n)), ceiling) for n in lengths]
        self.max_length = torch.tensor(limits, device=device).repeat_interleave(num_beams)
        self.sequences = torch.full((rows, 1), START_INDEX, dtype=torch.long, device=device)
        self.log_probs = torch.zeros((rows, 0), device=device)
        self.scores = torch.zeros(batch, num_beams, device=device)
        self.scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.open_word = torch.full((rows,), -1, dtype=torch.long, device=device)
        if constrained:
            self.word_of_position = torch.full((batch, source_length), -1, dtype=torch.long, device=device)
            max_words = max(len(starts) for starts in word_starts)
            self.word_start = torch.full((batch, max_words + 1), -1, dtype=torch.long, device=device)
            for row, starts in enumerate(word_starts):
                self.word_of_position[row, starts] = torch.arange(len(starts), device=device)
                self.word_start[row, : len(starts)] = torch.tensor(starts, device=device)
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
        source = (flat // vocab + torch.arange(self.batch, device=flat.device)[:, None] * self.num_beams).view(-1)
        chosen = (flat % vocab).view(-1)
        self.log_probs = torch.cat([self.log_probs[source], log_probs[source, chosen][:, None]], dim=1)
        self.sequences = torch.cat([self.sequences[source], chosen[:, None]], dim=1)
        self.finished = self.finished[source] | (chosen == END_INDEX)
        self.open_word = self._next_open_word(self.open_word[source], chosen)
        return source

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The top beam of each sentence (beams stay sorted by score), without the leading start index."""
        top = torch.arange(self.batch, device=self.scores.device) * self.num_beams
        sequences = self.sequences[top, 1:]
        log_probs = self.log_probs[top]
        return sequences.masked_fill(_after_end(sequences), END_INDEX), log_probs.masked_fill(_after_end(sequences), 0)

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
        rows = self.sequences.shape[0]
        steps_left = self.max_length - self.log_probs.shape[1]
        allowed = torch.zeros(rows, vocab, dtype=torch.bool, device=self.sequences.device)
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
    ended = (sequences == END_INDEX).long().cumsum(-1)
    return (ended - (sequences == END_INDEX).long()) > 0


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def shift_labels_right(labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing decoder inputs: the start index, then the labels but the last; padding reads `</s>`."""
    shifted = labels.new_full(labels.shape, START_INDEX)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == LABEL_PAD, END_INDEX)


def load_backbone(name_or_path: str, dtype: torch.dtype | None = None) -> BartModel:
    """The BART backbone, with an error that says what to do when it cannot be fetched (offline machines)."""
    try:
        return BartModel.from_pretrained(name_or_path, dtype=dtype)
    except OSError as error:
        raise OSError(
            f"could not load the backbone {name_or_path!r}: {error}\nIf this machine is offline, download the "
            "backbone elsewhere (`huggingface-cli download facebook/bart-large`) and pass its local folder as "
            "the backbone (`--backbone DIR`, `LightNerModel.from_backbone(DIR, ...)` or "
            "`from_pretrained(..., backbone=...)`)."
        ) from error


def load_tokenizer(name_or_path: str, fallback: str | None = None, **hub_kwargs):
    """The tokenizer saved with an adapter, or else the backbone's."""
    try:
        return AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
    except (OSError, ValueError):
        if fallback is None:
            raise
        return AutoTokenizer.from_pretrained(fallback)


def read_adapter_file(path: str) -> dict[str, torch.Tensor]:
    """Adapter tensors from a safetensors file (never a pickle), with an error naming the file if it is damaged."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors adapter file (truncated or corrupted?): {error}"
        ) from error


def _fill_and_check_backbone_shape(config: LightNerConfig, backbone: BartModel) -> None:
    """Record the backbone's shape in a new config; refuse a backbone whose shape differs from a saved one's."""
    mismatches = []
    for field in BACKBONE_SHAPE_FIELDS:
        actual = getattr(backbone.config, field)
        recorded = getattr(config, field)
        if recorded is None:
            setattr(config, field, actual)
        elif recorded != actual:
            mismatches.append(f"{field}: adapter {recorded}, backbone {actual}")
    if mismatches:
        raise ValueError(
            f"the backbone {config.backbone!r} does not have the shape this adapter was trained on ("
            + "; ".join(mismatches)
            + ")"
        )


def _entity_dict(entity, score: float, words: Sequence[str], config: LightNerConfig) -> dict:
    return {
        "type": config.entity_types[entity.type_id],
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


__all__ = ["LightNerModel", "LightNerPreTrainedModel", "LightNerOutput", "LightNerGenerationOutput", "PromptKeyValues"]
