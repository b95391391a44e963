"""Words and entities to LightNER's pointer sequences and back.

The model never sees characters: a sentence is a list of words, each BPE-encoded on its own with a leading space, and
an entity is written as pointers to the first piece of each of its words followed by its type. An entity is a type
and one or more fragments (word spans, in order, not overlapping); its pointers name every word of every fragment in
order, so a gap between two pointed words is where a new fragment starts (BARTNER's format for discontinuous NER).
Everything here is plain Python over token ids so that the same code serves training, generation and the data tools.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

# Fixed indices of the decoder's output space; types follow, then one pointer per source position.
START_INDEX = 0
END_INDEX = 1
FIRST_TYPE_INDEX = 2
LABEL_PAD = -100
# Joins a discontinuous entity's fragment texts into its one text (`predict`'s "text", the pipeline's "word"): a single
# space, as BRAT's standoff files write the text of a discontinuous annotation ("muscle pain").
FRAGMENT_SEPARATOR = " "


@dataclass(frozen=True)
class EncodedSentence:
    """A sentence as the encoder sees it.

    `input_ids` is `<s> pieces </s>`; `word_starts[k]` is the position in `input_ids` of word k's first piece, which is
    where an entity pointer to word k points.
    """

    input_ids: list[int]
    word_starts: list[int]

    @property
    def num_words(self) -> int:
        return len(self.word_starts)


Fragments = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DecodedEntity:
    """An entity read off an output index sequence; `steps` are the output positions that wrote it (for scoring).

    `fragments` are its word spans `[start, end)` in order (one for a contiguous entity); `start` and `end` cover them.
    """

    start: int
    end: int
    type_id: int
    steps: tuple[int, ...]
    fragments: Fragments


def encode_sentences(
    tokenizer, sentences: Sequence[Sequence[str]], max_positions: int | None = None
) -> list[EncodedSentence]:
    """Encode word lists the way the reference does: each word on its own, with a leading space.

    Prefixing the space by hand (rather than `add_prefix_space=True`, which transformers 5 ignores for pre-split
    words) gives the ids of the pretrained vocabulary's word-initial pieces, e.g. `" EU"` -> 1281 and not 14707.
    All words of all sentences go through the tokenizer in one call, which is what makes this fast.

    Raises `ValueError` naming the sentence and word for an empty sentence, an empty or whitespace-only word, a word
    that encodes to no pieces, or a sentence longer than `max_positions` pieces.
    """
    for sentence_index, words in enumerate(sentences):
        _check_words(words, sentence_index)
    flat_words = [" " + word for words in sentences for word in words]
    flat_pieces = tokenizer(flat_words, add_special_tokens=False)["input_ids"] if flat_words else []
    encoded, cursor = [], 0
    for sentence_index, words in enumerate(sentences):
        word_pieces = flat_pieces[cursor : cursor + len(words)]
        cursor += len(words)
        encoded.append(_join_word_pieces(tokenizer, words, word_pieces, sentence_index, max_positions))
    return encoded


def _check_words(words: Sequence[str], sentence_index: int) -> None:
    if isinstance(words, str):
        raise TypeError(f"sentence {sentence_index} is a string; give a list of words (use the pipeline for raw text)")
    if len(words) == 0:
        raise ValueError(f"sentence {sentence_index} has no words")
    for word_index, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(f"word {word_index} of sentence {sentence_index} is {type(word).__name__}, not str")
        if not word.strip():
            raise ValueError(f"word {word_index} of sentence {sentence_index} is empty or whitespace ({word!r})")


def _join_word_pieces(
    tokenizer,
    words: Sequence[str],
    word_pieces: Sequence[Sequence[int]],
    sentence_index: int,
    max_positions: int | None,
) -> EncodedSentence:
    input_ids, word_starts = [tokenizer.bos_token_id], []
    for word_index, pieces in enumerate(word_pieces):
        if not pieces:
            raise ValueError(
                f"word {word_index} of sentence {sentence_index} ({words[word_index]!r}) encodes to no tokens"
            )
        word_starts.append(len(input_ids))
        input_ids.extend(pieces)
    input_ids.append(tokenizer.eos_token_id)
    if max_positions is not None and len(input_ids) > max_positions:
        raise ValueError(
            f"sentence {sentence_index} encodes to {len(input_ids)} tokens, more than the backbone's {max_positions} "
            "positions; split it into shorter sentences (the pipeline does this for raw text)"
        )
    return EncodedSentence(input_ids=input_ids, word_starts=word_starts)


def _span_fields(entity) -> tuple[int, int, str, Fragments]:
    """`(start, end, type, fragments)` of a `(start, end, type[, fragments])` tuple or a mapping with those keys
    (`fragments` as `[[start, end], ...]`); a contiguous entity has the one fragment `((start, end),)`."""
    if isinstance(entity, Mapping):
        fragments = entity.get("fragments") or [(entity["start"], entity["end"])]
        start, end, entity_type = (
            entity.get("start", fragments[0][0]),
            entity.get("end", fragments[-1][1]),
            entity["type"],
        )
    else:
        start, end, entity_type, *rest = entity
        fragments = rest[0] if rest else [(start, end)]
    return int(start), int(end), entity_type, tuple((int(s), int(e)) for s, e in fragments)


def _check_fragments(start: int, end: int, fragments: Fragments, num_words: int, entity: str) -> None:
    """Fragments must be non-empty spans in order with gaps between them, inside the sentence, covered by start/end:
    anything else would write a target that reads back as another entity."""
    previous_end = -1
    for fragment_start, fragment_end in fragments:
        if not 0 <= fragment_start < fragment_end <= num_words:
            part = "fragment" if len(fragments) > 1 else "entity"
            raise ValueError(f"{entity}: {part} [{fragment_start}, {fragment_end}) outside its {num_words} words")
        if fragment_start <= previous_end:
            raise ValueError(f"{entity}: its fragments are out of order, overlap or touch")
        previous_end = fragment_end
    if (start, end) != (fragments[0][0], fragments[-1][1]):
        raise ValueError(f"{entity}: [{start}, {end}) does not cover its fragments")


def encode_target(
    encoded: EncodedSentence, entities: Iterable, type_ids: Mapping[str, int], sentence_index: int = 0
) -> list[int]:
    """The output index sequence `[0, <entity>..., 1]` for gold entities (word offsets, end exclusive), ordered by
    start then end: each entity is a pointer to every word of every fragment, in order, then its type index.

    Entities are `(start, end, type)` tuples (or `lightner.data.Span`s), `(start, end, type, fragments)` tuples
    (`DiscontinuousSpan`s), or mappings with those keys. Nested, overlapping and discontinuous entities are kept as
    they are: the pointer sequence expresses them, which BIO tags cannot. An unknown type, or fragments outside the
    sentence, out of order, overlapping or touching, raise `ValueError` naming the sentence and the entity.
    """
    num_types = len(type_ids)
    spans = sorted({_span_fields(entity) for entity in entities})
    target = [START_INDEX]
    for start, end, entity_type, fragments in spans:
        described = (
            f"sentence {sentence_index} has an entity at {[list(fragment) for fragment in fragments]} of type "
            f"{entity_type!r}"
        )
        if entity_type not in type_ids:
            raise ValueError(f"{described}, which is not among the model's types {sorted(type_ids)}")
        _check_fragments(start, end, fragments, encoded.num_words, described)
        for fragment_start, fragment_end in fragments:
            target.extend(
                FIRST_TYPE_INDEX + num_types + encoded.word_starts[word]
                for word in range(fragment_start, fragment_end)
            )
        target.append(FIRST_TYPE_INDEX + type_ids[entity_type])
    target.append(END_INDEX)
    return target


def parse_entities(
    indices: Sequence[int], encoded: EncodedSentence, num_types: int, discontinuous: bool = False
) -> list[DecodedEntity]:
    """Read entities off an output index sequence (the leading 0 excluded): the inverse of `encode_target`.

    A run of pointers closed by a type index is one entity; reading stops at `</s>`. A run is kept only if its pointers
    are word starts of strictly increasing words: consecutive words make one fragment, and with `discontinuous` a
    skipped word starts a new fragment; without it (`entity_shapes` "flat" or "nested") a run with a gap is ill formed.
    Unconstrained outputs are repaired by dropping what does not parse (constrained decoding never produces such runs).
    A type with no open pointer, and pointers left open at the end, are dropped too. The same fragments and type
    written twice are returned once.
    """
    word_of_position = {position: word for word, position in enumerate(encoded.word_starts)}
    first_pointer = FIRST_TYPE_INDEX + num_types
    entities: dict[tuple[Fragments, int], DecodedEntity] = {}
    open_words: list[int] = []
    open_steps: list[int] = []
    well_formed = True
    for step, index in enumerate(indices):
        if index == END_INDEX:
            break
        if index >= first_pointer:
            word = word_of_position.get(index - first_pointer)
            well_formed &= word is not None and (
                not open_words or word == open_words[-1] + 1 or (discontinuous and word > open_words[-1])
            )
            open_words.append(-1 if word is None else word)
            open_steps.append(step)
        elif index >= FIRST_TYPE_INDEX:
            if open_words and well_formed:
                fragments = _fragments(open_words)
                key = (fragments, index - FIRST_TYPE_INDEX)
                entities.setdefault(
                    key,
                    DecodedEntity(
                        fragments[0][0], fragments[-1][1], key[1], steps=(*open_steps, step), fragments=fragments
                    ),
                )
            open_words, open_steps, well_formed = [], [], True
    return list(entities.values())


def _fragments(words: Sequence[int]) -> Fragments:
    """Strictly increasing word indices as maximal runs of consecutive words, `[start, end)` each."""
    fragments = [[words[0], words[0] + 1]]
    for word in words[1:]:
        if word == fragments[-1][1]:
            fragments[-1][1] = word + 1
        else:
            fragments.append([word, word + 1])
    return tuple((start, end) for start, end in fragments)


def collate(
    encoded: Sequence[EncodedSentence], pad_token_id: int, targets: Sequence[Sequence[int]] | None = None
) -> dict[str, torch.Tensor]:
    """Pad a batch on the right; `labels` is each target after its leading 0, padded with -100."""
    width = max(len(sentence.input_ids) for sentence in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, sentence in enumerate(encoded):
        input_ids[row, : len(sentence.input_ids)] = torch.tensor(sentence.input_ids)
        attention_mask[row, : len(sentence.input_ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if targets is not None:
        label_width = max(len(target) - 1 for target in targets)
        labels = torch.full((len(targets), label_width), LABEL_PAD, dtype=torch.long)
        for row, target in enumerate(targets):
            labels[row, : len(target) - 1] = torch.tensor(target[1:])
        batch["labels"] = labels
    return batch


def label_word_token_ids(tokenizer, label_words: Sequence[str]) -> list[list[int]]:
    """The pieces of each type's label words, encoded with a leading space like source words."""
    pieces = tokenizer([" " + words.strip() for words in label_words], add_special_tokens=False)["input_ids"]
    for words, ids in zip(label_words, pieces):
        if not ids:
            raise ValueError(f"label words {words!r} encode to no tokens")
    return pieces


__all__ = [
    "START_INDEX",
    "END_INDEX",
    "FIRST_TYPE_INDEX",
    "LABEL_PAD",
    "FRAGMENT_SEPARATOR",
    "EncodedSentence",
    "DecodedEntity",
    "encode_sentences",
    "encode_target",
    "parse_entities",
    "collate",
    "label_word_token_ids",
]
