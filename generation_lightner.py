"""Generation for LightNER: beam search over output indices, the constraints that keep outputs well formed, and the
decoder cache they run on.

The decoder input at each step is a function of the source (a pointer reads the token it points at), which is why
this loop is LightNER's own rather than `GenerationMixin.generate`. As transformers keeps logits processors apart from
the search, the rules of what may be written next are their own classes (`PointerGrammar`, `EntityShapeGrammar`,
`LengthLimit`): a new decoding constraint is one class with `allowed`, `advance` and `select_rows` (sentences leave
the search when they finish); `BeamSearch` only keeps the beams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.utils import ModelOutput

from .tokenization_utils import (
    END_INDEX,
    FIRST_TYPE_INDEX,
    FRAGMENT_SEPARATOR,
    START_INDEX,
    EncodedSentence,
    collate,
    encode_sentences,
    parse_entities,
)

# ---------------------------------------------------------------------------------------------------------------------
# Decoder cache
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

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> None:
        self.device = key_states.device
        self._key_room = key_states.new_empty((*key_states.shape[:2], self.room, key_states.shape[-1]))
        self._value_room = value_states.new_empty((*value_states.shape[:2], self.room, value_states.shape[-1]))
        self.keys, self.values = self._key_room[:, :, :0], self._value_room[:, :, :0]  # [batch, heads, 0, head_dim]
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
        self.keys, self.values = self._key_room[:, :, :end], self._value_room[:, :, :end]  # [batch, heads, end, hd]
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

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows `indices` (sentences leaving the batch), in new room of the same length."""
        if not self.is_initialized:
            return
        filled = self.keys.shape[-2]
        for name in ("_key_room", "_value_room"):
            old = getattr(self, name)
            new = old.new_empty((indices.shape[0], *old.shape[1:]))  # [kept, heads, room, head_dim]
            new[:, :, :filled] = old[:, :, :filled].index_select(0, indices.to(old.device))
            setattr(self, name, new)
        self.keys, self.values = self._key_room[:, :, :filled], self._value_room[:, :, :filled]


def decoding_cache(decoder_layers: int, max_steps: int) -> EncoderDecoderCache:
    """Self-attention keys in room reserved for `max_steps` steps; cross-attention keys are written once."""
    return EncoderDecoderCache(
        Cache(layers=[ReservedRoomLayer(max_steps) for _ in range(decoder_layers)]), DynamicCache()
    )


# ---------------------------------------------------------------------------------------------------------------------
# Constraints: what each row may write next
# ---------------------------------------------------------------------------------------------------------------------


class Constraint(Protocol):
    """What `BeamSearch` asks of a decoding constraint, and all it asks: a new constraint is a class with these three
    methods (state per row, kept in step with the beams), made by `make_constraint`."""

    def allowed(self, steps_left: torch.Tensor, vocab: int) -> torch.Tensor:
        """`[rows, vocab]` booleans: True where an index may be written now, given each row's `steps_left` `[rows]`
        (a row must be able to finish, with `</s>`, before its length limit)."""

    def advance(self, source: torch.Tensor, chosen: torch.Tensor) -> None:
        """Follow the beams after a step: row r now continues row `source[r]` and wrote `chosen[r]`."""

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows`: the sentences that finished left the search."""


class LengthLimit:
    """No grammar: anything may be written, but only `</s>` on the last step a row's length limit leaves."""

    def allowed(self, steps_left: torch.Tensor, vocab: int) -> torch.Tensor:
        """`[rows, vocab]`: True where an index may be written now, given `steps_left` `[rows]`."""
        allowed = (steps_left > 1)[:, None].expand(-1, vocab).clone()  # [rows, vocab]
        allowed[:, START_INDEX] = False
        allowed[:, END_INDEX] = True
        return allowed

    def advance(self, source: torch.Tensor, chosen: torch.Tensor) -> None:
        """Follow the beams: row r now continues row `source[r]` and wrote `chosen[r]`."""

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (finished sentences left the search)."""


class PointerGrammar:
    """Only what keeps the output well formed, so that every output parses into entities.

    A pointer to a word start opens an entity; the next word's start or a type continues or closes it; `</s>` only
    between entities; nothing that could not be finished before the length limit. The state per row is the word the
    open entity ends at (-1 when none is open).
    """

    def __init__(self, word_starts: Sequence[Sequence[int]], source_length: int, first_pointer: int, num_beams: int):
        batch = len(word_starts)
        word_of_position = torch.full((batch, source_length), -1, dtype=torch.long)
        word_start = torch.full((batch, max(len(s) for s in word_starts) + 1), -1, dtype=torch.long)
        for row, starts in enumerate(word_starts):
            word_of_position[row, starts] = torch.arange(len(starts))
            word_start[row, : len(starts)] = torch.tensor(starts, dtype=torch.long)
        self.first_pointer = first_pointer
        self.word_of_position = word_of_position.repeat_interleave(num_beams, 0)  # [rows, source]
        self.word_start = word_start.repeat_interleave(num_beams, 0)  # [rows, words + 1]
        self.open_word = torch.full((batch * num_beams,), -1, dtype=torch.long)  # [rows]

    def to(self, device: torch.device) -> PointerGrammar:
        self.word_of_position, self.word_start, self.open_word = (
            t.to(device) for t in (self.word_of_position, self.word_start, self.open_word)
        )
        return self

    def allowed(self, steps_left: torch.Tensor, vocab: int) -> torch.Tensor:
        """`[rows, vocab]`: True where an index may be written now, given `steps_left` `[rows]`."""
        rows = self.open_word.shape[0]
        allowed = torch.zeros(rows, vocab, dtype=torch.bool, device=self.open_word.device)
        is_open = self.open_word >= 0  # [rows]
        can_point = steps_left >= 3  # a pointer needs room for a type and `</s>` after it
        allowed[:, END_INDEX] = ~is_open
        allowed[:, FIRST_TYPE_INDEX : self.first_pointer] = (is_open & (steps_left >= 2))[:, None]
        allowed[:, self.first_pointer :] = (~is_open & can_point)[:, None] & (self.word_of_position >= 0)
        next_start = self.word_start.gather(1, (self.open_word + 1).clamp(min=0)[:, None]).squeeze(1)  # [rows]
        continues = is_open & can_point & (next_start >= 0)  # [rows]
        column = (self.first_pointer + next_start.clamp(min=0))[:, None]  # [rows, 1]
        allowed.scatter_(1, column, allowed.gather(1, column) | continues[:, None])
        return allowed

    def advance(self, source: torch.Tensor, chosen: torch.Tensor) -> None:
        """Follow the beams: row r now continues row `source[r]` and wrote `chosen[r]`."""
        open_word = self.open_word[source]  # [rows]
        position = (chosen - self.first_pointer).clamp(min=0)
        pointed_word = self.word_of_position.gather(1, position[:, None]).squeeze(1)  # [rows]
        is_pointer = chosen >= self.first_pointer
        self.open_word = torch.where(is_pointer, pointed_word, torch.where(chosen >= FIRST_TYPE_INDEX, -1, open_word))

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (finished sentences left the search)."""
        self.word_of_position, self.word_start, self.open_word = (
            t.index_select(0, rows) for t in (self.word_of_position, self.word_start, self.open_word)
        )


class EntityShapeGrammar(PointerGrammar):
    """`PointerGrammar` under each sentence's `entity_shapes` (its adapter's setting).

    "nested" is `PointerGrammar` itself. Under "flat" an entity may only start after the last word of the entity
    before it, so entities never share a word (and none is written twice). Under "discontinuous" an open entity may
    continue at any later word start, each skipped stretch a gap between fragments; its words strictly increase, so an
    entity never repeats a word. Length and `</s>` rules are `PointerGrammar`'s, so every output still parses and
    finishes within the limit. The state per row adds the last word of the last closed entity (-1 before any).
    """

    def __init__(
        self,
        word_starts: Sequence[Sequence[int]],
        source_length: int,
        first_pointer: int,
        num_beams: int,
        shapes: Sequence[str],
    ):
        super().__init__(word_starts, source_length, first_pointer, num_beams)
        self.flat = torch.tensor([shape == "flat" for shape in shapes]).repeat_interleave(num_beams)  # [rows]
        self.gaps = torch.tensor([shape == "discontinuous" for shape in shapes]).repeat_interleave(num_beams)  # [rows]
        self.closed_word = torch.full_like(self.open_word, -1)  # [rows]

    def to(self, device: torch.device) -> EntityShapeGrammar:
        super().to(device)
        self.flat, self.gaps, self.closed_word = (t.to(device) for t in (self.flat, self.gaps, self.closed_word))
        return self

    def allowed(self, steps_left: torch.Tensor, vocab: int) -> torch.Tensor:
        """`[rows, vocab]`: `PointerGrammar`'s, with flat rows' openings and discontinuous rows' gaps applied."""
        allowed = super().allowed(steps_left, vocab)  # [rows, vocab]
        is_open = self.open_word >= 0  # [rows]
        pointers = allowed[:, self.first_pointer :]  # [rows, source], a view: edited in place
        word = self.word_of_position  # [rows, source], -1 off word starts
        pointers &= ~(self.flat & ~is_open)[:, None] | (word > self.closed_word[:, None])
        pointers |= (self.gaps & is_open & (steps_left >= 3))[:, None] & (word > self.open_word[:, None])
        return allowed

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (sentences that finished leave the search), this grammar's own state included."""
        super().select_rows(rows)
        self.flat, self.gaps, self.closed_word = (
            t.index_select(0, rows) for t in (self.flat, self.gaps, self.closed_word)
        )

    def advance(self, source: torch.Tensor, chosen: torch.Tensor) -> None:
        """Follow the beams; a type index closes the open entity at the word it had reached."""
        open_word = self.open_word[source]  # [rows], before this step's index
        super().advance(source, chosen)
        closes = (chosen >= FIRST_TYPE_INDEX) & (chosen < self.first_pointer)  # [rows]
        self.closed_word = torch.where(closes, open_word, self.closed_word[source])


def make_constraint(
    constrained: bool,
    word_starts: Sequence[Sequence[int]] | None,
    source_length: int,
    first_pointer: int,
    num_beams: int,
    shapes: Sequence[Sequence[str]],
    device: torch.device,
) -> Constraint:
    """The one place a decoding constraint is chosen: `EntityShapeGrammar` (each row's adapter's `entity_shapes`) when
    `constrained`, else `LengthLimit`. A new constraint is a class satisfying `Constraint` and a branch here."""
    if constrained:
        return EntityShapeGrammar(word_starts, source_length, first_pointer, num_beams, shapes).to(device)
    return LengthLimit()


# ---------------------------------------------------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------------------------------------------------


# Finished sentences leave the batch once at least this share of it has finished (any share at the length limit).
# Leaving copies every staying row of every cache (for 32 sentences of 143 pieces the cross-attention cache alone is
# 450 MB), which costs about one decoding step, while a step with a few rows fewer saves far less on a CPU (measured
# there: 102 ms a step at 32 rows, 90 at 16, 55 at 4); so rows leave in groups rather than one at a time.
RETIRE_AT_FRACTION = 0.25


class BeamSearch:
    """The beams of a batched search over output indices; rows are `sentence * num_beams + beam` among the sentences
    still searching.

    Keeps, per row, the indices written so far, their log-probabilities and whether `</s>` was written; a constraint
    (`PointerGrammar` or `LengthLimit`) says what each row may write. Finished hypotheses keep writing `</s>` at no
    cost, so beams stay sorted by the sum of their token log-probabilities and the first beam is the best found. A
    sentence whose beams have all finished (or reached its length limit) can no longer change its best beam, so
    `retire_finished` takes it out of the search: a batch then costs about the sum of its outputs' lengths rather than
    its longest output times its size.
    """

    def __init__(self, constraint: Constraint, limits: Sequence[int], num_beams: int, device: torch.device):
        batch, rows = len(limits), len(limits) * num_beams
        self.constraint, self.num_beams, self.batch, self.device = constraint, num_beams, batch, device
        self.max_steps = max(limits)
        self.max_length = torch.tensor(limits, device=device).repeat_interleave(num_beams)  # [rows]
        self.sequences = torch.full((rows, 1), START_INDEX, dtype=torch.long, device=device)  # [rows, 1 + steps]
        self.log_probs = torch.zeros((rows, 0), device=device)  # [rows, steps]
        self.scores = torch.zeros(batch, num_beams, device=device)  # [sentences, beams]
        self.scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)  # [rows]
        self.sentences = list(range(batch))  # the batch position of each sentence still searching
        self.rows = torch.arange(rows, device=device)  # [rows] the batch row each searching row has
        self._retired: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # sentence -> its best beam's outputs

    @property
    def steps(self) -> int:
        return self.log_probs.shape[1]

    def done(self) -> bool:
        """No sentence left searching."""
        return not self.sentences

    def retire_finished(self) -> torch.Tensor | None:
        """Take the sentences whose beams all finished, or reached their length limit, out of the search.

        Returns the rows `[kept rows]` (indices among the current rows) that keep searching, for the caller to select
        whatever else it keeps per row (cache, encoder states, adapters), or None when every row stays. Reading which
        sentences finished is the loop's one host-device synchronisation per step.
        """
        if self.steps >= self.max_steps:
            leaving = [True] * len(self.sentences)
        else:
            over = self.finished | (self.max_length <= self.steps)  # [rows]
            leaving = over.view(-1, self.num_beams).all(-1).tolist()  # [sentences]
        if sum(leaving) < RETIRE_AT_FRACTION * len(leaving) or not any(leaving):
            return None
        staying = [position for position, leaves in enumerate(leaving) if not leaves]
        leaving_positions = [position for position, leaves in enumerate(leaving) if leaves]
        top = torch.tensor(leaving_positions, device=self.device) * self.num_beams  # [leaving]
        for position, sequence, log_probs in zip(leaving_positions, self.sequences[top, 1:], self.log_probs[top]):
            self._retired[self.sentences[position]] = (sequence, log_probs)
        beams = torch.arange(self.num_beams, device=self.device)
        kept = (torch.tensor(staying, dtype=torch.long, device=self.device)[:, None] * self.num_beams + beams).view(-1)
        self.sentences = [self.sentences[position] for position in staying]
        self.scores = self.scores[staying]  # [sentences, beams]
        self.sequences, self.log_probs, self.finished, self.max_length, self.rows = (
            t.index_select(0, kept)
            for t in (self.sequences, self.log_probs, self.finished, self.max_length, self.rows)
        )
        self.constraint.select_rows(kept)
        return kept

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        """Extend every beam by one index; returns the row `[rows]` each new row came from (to reorder the cache)."""
        allowed = self.constraint.allowed(self.max_length - self.steps, logits.shape[-1])  # [rows, vocab]
        log_probs = logits.float().masked_fill(~allowed, float("-inf")).log_softmax(-1)  # [rows, vocab]
        log_probs = torch.where(self.finished[:, None], self._only_end(log_probs), log_probs)
        vocab, sentences = log_probs.shape[-1], len(self.sentences)
        candidates = (self.scores.view(-1, 1) + log_probs).view(sentences, self.num_beams * vocab)
        self.scores, flat = candidates.topk(self.num_beams, dim=-1)  # [sentences, beams]
        offset = torch.arange(sentences, device=self.device)[:, None] * self.num_beams  # [sentences, 1]
        source = (flat // vocab + offset).view(-1)  # [rows]
        chosen = (flat % vocab).view(-1)  # [rows]
        self.log_probs = torch.cat([self.log_probs[source], log_probs[source, chosen][:, None]], dim=1)
        self.sequences = torch.cat([self.sequences[source], chosen[:, None]], dim=1)
        self.finished = self.finished[source] | (chosen == END_INDEX)
        self.constraint.advance(source, chosen)
        return source

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The top beam of each sentence, `[batch, steps]` indices without the leading start index and their
        log-probabilities, `</s>` (and 0) after the first `</s>`; call once the search is done."""
        steps = self.steps
        outputs = [self._retired[sentence] for sentence in range(self.batch)]
        sequences = torch.stack([nn.functional.pad(s, (0, steps - s.shape[0]), value=END_INDEX) for s, _ in outputs])
        log_probs = torch.stack([nn.functional.pad(p, (0, steps - p.shape[0])) for _, p in outputs])
        after_end = _after_end(sequences)
        return sequences.masked_fill(after_end, END_INDEX), log_probs.masked_fill(after_end, 0.0)

    @staticmethod
    def _only_end(log_probs: torch.Tensor) -> torch.Tensor:
        ended = torch.full_like(log_probs, float("-inf"))
        ended[:, END_INDEX] = 0.0
        return ended


def _after_end(sequences: torch.Tensor) -> torch.Tensor:
    """True strictly after the first `</s>` of each row."""
    is_end = (sequences == END_INDEX).long()
    return (is_end.cumsum(-1) - is_end) > 0


# ---------------------------------------------------------------------------------------------------------------------
# Entry points: `model.generate` and `model.predict`
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LightNerGenerationOutput(ModelOutput):
    """Best output per sentence: `sequences` are output indices after the leading 0, ending in `</s>` (1) and padded
    with 1; `token_log_probs` are the log-probabilities of those choices under the (constrained) decoding
    distribution; `step_logits`, when asked for, are the raw scores at every step for every beam
    (`[batch * beams, vocab]`, NaN in the rows of sentences that had already left the search). In a batch mixing
    adapters with different label sets, indices use the padded layout of `AdapterBatch` (`num_types`)."""

    sequences: torch.Tensor | None = None
    token_log_probs: torch.Tensor | None = None
    step_logits: tuple[torch.Tensor, ...] | None = None
    num_types: int | None = None


class LightNerGenerationMixin:
    """`generate` (indices) and `predict` (entities) for `LightNerModel`, on its `adapter_batch`, `encode` and
    `decode`."""

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

        With `use_cache` the decoder reads one new token per step from an `EncoderDecoderCache` (prompts stay outside
        it); without, it recomputes the whole prefix every step, which is what the reference effectively does and is
        kept as a baseline. The encoder runs once per sentence; its rows are repeated per beam, and since beams never
        change sentence, only the self-attention cache is reordered between steps. A sentence leaves the batch once
        all its beams have finished: its cache rows, encoder states, pointer features and adapter rows are dropped,
        so the steps that follow compute only the sentences still writing.

        Constrained decoding (on by default, `EntityShapeGrammar` under each adapter's `entity_shapes`) needs
        `word_starts` (from `encode_sentences`).
        `max_length` defaults to each adapter's rule `b + a * source length`, capped at the decoder's positions.
        """
        num_beams = _check_positive_int("num_beams", self.config.beam_width if num_beams is None else num_beams)
        constrained = self.config.constrained_decoding if constrained is None else constrained
        if constrained and word_starts is None:
            raise ValueError("constrained decoding needs `word_starts` for each sentence (see encode_sentences)")
        if attention_mask is None:
            attention_mask = input_ids.ne(self.tokenizer.pad_token_id).long()
        adapters = self.adapter_batch(adapter_names)
        source = self.encode(input_ids, attention_mask, adapters)
        limits = self._output_limits(attention_mask, adapter_names, max_length)
        first_pointer = FIRST_TYPE_INDEX + adapters.num_types
        shapes = [self.adapters[name].config.entity_shapes for name in self._row_adapters(adapter_names, len(limits))]
        constraint = make_constraint(
            constrained, word_starts, input_ids.shape[1], first_pointer, num_beams, shapes, input_ids.device
        )
        search = BeamSearch(constraint, limits, num_beams, input_ids.device)
        if num_beams > 1:
            source, adapters = source.repeat_rows(num_beams), adapters.repeat_rows(num_beams)
        # Masks built once, as the 4D masks the decoder passes through: built from 2D masks at every step,
        # transformers would check them for padding on the host (a synchronisation per step and mask).
        source.attention_mask = source.attention_mask.bool()[:, None, None, :]  # [rows, 1, 1, source]
        cache, step_mask = None, None
        if use_cache:
            cache = decoding_cache(self.backbone.config.decoder_layers, max(limits))
            step_mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=input_ids.device)  # one query sees its past
        step_logits = []
        while True:
            kept = search.retire_finished()  # [rows left], or None when no sentence finished
            if search.done():
                break
            if kept is not None:
                source, adapters = source.select_rows(kept), adapters.select_rows(kept)
                if cache is not None:
                    cache.self_attention_cache.batch_select_indices(kept)
                    cache.cross_attention_cache.batch_select_indices(kept)
            step_input = search.sequences[:, -1:] if use_cache else search.sequences  # [rows, 1 or steps]
            logits = self.decode(step_input, source, adapters, cache, step_mask)[:, -1]  # [rows, 2 + T + source]
            if output_step_logits:
                every_row = logits.new_full((search.batch * num_beams, logits.shape[-1]), float("nan"))
                step_logits.append(every_row.index_copy_(0, search.rows, logits))  # [batch * beams, vocab]
            reorder = search.step(logits)
            if cache is not None and num_beams > 1:  # with one beam each row continues itself
                cache.self_attention_cache.reorder_cache(reorder)
        sequences, log_probs = search.best()
        return LightNerGenerationOutput(
            sequences=sequences,
            token_log_probs=log_probs,
            step_logits=tuple(step_logits) if step_logits else None,
            num_types=adapters.num_types,
        )

    def _output_limits(
        self, attention_mask: torch.Tensor, adapter_names: Sequence[str] | None, max_length: int | None
    ) -> list[int]:
        """Per-sentence output length limits; the decoder has as many positions as the encoder, never more."""
        ceiling = self.backbone.config.max_position_embeddings
        names = self._row_adapters(adapter_names, attention_mask.shape[0])
        lengths = attention_mask.sum(-1).tolist()  # [batch]
        return [
            min(max_length or self.adapters[name].config.max_output_length(int(n)), ceiling)
            for name, n in zip(names, lengths)
        ]

    def _row_adapters(self, adapter_names: Sequence[str] | None, batch: int) -> Sequence[str]:
        """The adapter of each of `batch` sentences: the names given, else the active adapter for all."""
        return adapter_names or [self.active_adapter] * batch

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
        before). A discontinuous entity (from an adapter with `entity_shapes="discontinuous"`) also has `fragments`,
        its word spans `[[start, end], ...]`, and its `text` joins theirs with `FRAGMENT_SEPARATOR` (a space); other
        entities have no `fragments` key. `adapter` names the adapter to use (default: the active one), or gives one
        name per sentence: a batch then mixes adapters in one forward pass. An empty sentence gets no entities; a
        sentence longer than the backbone's positions raises `ValueError` (the pipeline splits raw text into windows
        instead).
        """
        if isinstance(sentences, str) or not isinstance(sentences, Sequence):
            raise TypeError(
                f"predict takes a list of sentences, each a list of words, not {type(sentences).__name__}"
                + (" (use the pipeline for raw text)" if isinstance(sentences, str) else "")
            )
        batch_size = _check_positive_int("batch_size", batch_size)
        if num_beams is not None:
            _check_positive_int("num_beams", num_beams)
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
        """Entities with their scores; the outputs are moved to the host once per batch, not once per entity."""
        batch = collate(encoded, self.tokenizer.pad_token_id)
        device = self.backbone.get_input_embeddings().weight.device
        output = self.generate(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            word_starts=[sentence.word_starts for sentence in encoded],
            num_beams=num_beams,
            adapter_names=adapter_names,
        )
        sequences, token_log_probs = output.sequences.tolist(), output.token_log_probs.tolist()  # [batch, steps]
        predictions = []
        for sentence, name, indices, log_probs in zip(encoded, adapter_names, sequences, token_log_probs):
            discontinuous = self.adapters[name].config.entity_shapes == "discontinuous"
            entities = parse_entities(indices, sentence, output.num_types, discontinuous)
            predictions.append([(e, math.exp(math.fsum(log_probs[step] for step in e.steps))) for e in entities])
        return predictions


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return value


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
    """`predict`'s entity; a discontinuous one adds `fragments` (`[[start, end], ...]`, word offsets) and its text
    joins the fragments' texts with `FRAGMENT_SEPARATOR`, so contiguous entities are exactly as before."""
    texts = [" ".join(words[start:end]) for start, end in entity.fragments]
    result = {
        "type": entity_types[entity.type_id],
        "start": entity.start,
        "end": entity.end,
        "text": FRAGMENT_SEPARATOR.join(texts),
        "score": score,
    }
    if len(entity.fragments) > 1:
        result["fragments"] = [list(fragment) for fragment in entity.fragments]
    return result


def _progress(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="batch")


__all__ = [
    "BeamSearch",
    "EntityShapeGrammar",
    "LengthLimit",
    "LightNerGenerationMixin",
    "LightNerGenerationOutput",
    "PointerGrammar",
    "ReservedRoomLayer",
    "decoding_cache",
]
