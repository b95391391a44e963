"""Raw text to the words LightNER reads, with exact character offsets, and words to windows that fit the backbone.

LightNER never sees characters: it reads a sentence as words and points at them. To run it on raw text, the text is
split into words the way its training data (CoNLL-2003) was, every word keeps its `(start, end)` character offsets in
the original string, and an entity over words `[s, e)` is the text from `start` of word `s` to `end` of word `e - 1`.
Splitting never normalises, drops or rewrites a character, so `text[start:end]` is always exactly the entity.

Splitting policy (CoNLL-2003 / Penn Treebank style):

- Separators: every character Python counts as whitespace (spaces, tabs, newlines, no-break and ideographic spaces,
  line and paragraph separators), plus ZERO WIDTH SPACE (U+200B) and the byte-order mark U+FEFF, which are invisible
  word boundaries. They are never part of a word.
- Other zero-width and format characters (ZERO WIDTH JOINER and NON-JOINER, WORD JOINER, soft hyphen, direction
  marks) belong to the word they are written in: they join, they do not separate (Persian, Indic scripts, emoji).
- Punctuation is a word of its own: `"Hello,"` -> `"`, `Hello`, `,`; a run of one repeated mark stays together (`...`,
  `--`, `**`, `!!`), brackets and commas do not (`((` is two words).
- Hyphens inside a word keep it whole (`AL-AIN`, `1996-12-06`, `2-1`, `pro-European`); a hyphen at a word's edge or
  doubled (`--`) is split off. Other dashes (en, em) always stand apart.
- Apostrophes inside a word keep it whole (`O'Brien`, `d'Italia`, `rock'n'roll`), except English clitics, which are
  split off as in the treebank: `it's` -> `it`, `'s`; `don't` -> `do`, `n't`; also `'re`, `'m`, `'ve`, `'ll`, `'d`
  (straight or curly apostrophe). A trailing apostrophe is its own word (`players'` -> `players`, `'`).
- Numbers keep their sign, leading point and inner separators (`+44`, `-5`, `.778`, `1,000`, `3.5`, `10:30`, `1/2`);
  `%` and `$` are split off, but a currency prefix stays whole (`US$`, `C$`, `HK$`). A number and its period at the
  start of a line are a list marker and stay whole (`1. Michael Johnson`); elsewhere a final period is split off.
- Abbreviations keep their period: letter-period runs (`U.S.`, `e.g.`), single capital initials (`J.`) and common
  titles and company words (`Mr.`, `Dr.`, `St.`, `Inc.`, `Corp.`, `Ltd.`, `Co.`, `vs.`, ...); any other final period is
  split off.
- URLs (`http://`, `https://`, `ftp://`, `www.`) and e-mail addresses are one word, without trailing punctuation.
- Ideographs, hiragana and katakana (which are written without spaces) are one word per character, as in
  character-level Chinese and Japanese NER; Hangul and alphabetic scripts are split at spaces like English. Scripts
  written without spaces and without per-character words (Thai, Lao, Khmer, Myanmar) stay whole between spaces.
- Emoji and other symbols are one word per user-perceived character (a grapheme cluster: `👨‍👩‍👧`, `👍🏽` and flags
  stay whole).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import regex

from .tokenization_utils import FRAGMENT_SEPARATOR

# Every whitespace character of Python's `str.isspace` (all lie below U+3001), plus the two invisible separators.
_SEPARATORS = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\u200b\ufeff"
_CHUNK = re.compile("[^" + "".join(f"\\u{ord(c):04x}" for c in _SEPARATORS) + "]+")

_WORD_CHAR = r"[[\p{L}\p{M}\p{N}\p{Pc}\p{Cf}]--[\p{Han}\p{Hiragana}\p{Katakana}]]"
_CLITIC = r"(?i:n['’]t|['’](?:s|re|m|ve|ll|d))(?!" + _WORD_CHAR + ")"
_ABBREVIATIONS = (
    "Mr|Mrs|Ms|Dr|Prof|St|Mt|Ft|Jr|Sr|Gen|Gov|Sen|Rep|Lt|Col|Capt|Sgt|Rev|Inc|Corp|Ltd|Co|Bros|vs|"
    "Jan|Feb|Aug|Sept|Oct|Nov|Dec"
)
_WORD_PATTERN = regex.compile(
    "|".join(
        [
            # URLs and e-mail addresses, without the punctuation that usually follows them.
            r"(?i:(?:https?|ftp)://|www\.)[^<>\"]*[^<>\".,;:!?'’\")\]}]",
            r"\w[\w.+-]*@\w[\w-]*(?:\.\w[\w-]*)+",
            _CLITIC,
            # Abbreviations keep their final period.
            rf"(?:\p{{L}}\.){{2,}}(?!{_WORD_CHAR})",
            rf"(?:\p{{Lu}}|{_ABBREVIATIONS})\.(?!{_WORD_CHAR})",
            r"\p{Lu}{1,3}\$",
            # A list number at the start of a line: `1. Michael Johnson`.
            r"(?<=(?:\A|\n)[^\S\n]*)\p{N}{1,3}\.(?=\s|\Z)",
            # A word: letters, marks, digits; inner hyphens, apostrophes and ampersands; a number's sign, leading
            # point and inner separators.
            rf"(?:(?<!{_WORD_CHAR})[+-]?\.?(?=\p{{N}}))?{_WORD_CHAR}"
            rf"(?:(?!{_CLITIC})(?:{_WORD_CHAR}|(?<=\p{{N}})[.,:/](?=\p{{N}})|[-'’&](?={_WORD_CHAR})))*",
            # A run of one repeated mark: `...`, `--`, `**`, `!!` (brackets and commas stand alone).
            r"(?P<mark>[-.*=~#+!?'`])(?P=mark)*",
            # Anything else, one grapheme cluster at a time: CJK characters, emoji, other symbols.
            r"\X",
        ]
    ),
    regex.V1,
)

# Where `detokenize` leaves out the space.
_NO_SPACE_BEFORE = re.compile(r"[,.;:!?)\]}%]|\.\.\.|(?i:n['’]t|['’](?:s|re|m|ve|ll|d))")
_NO_SPACE_AFTER = {"(", "[", "{", "$"}

# Words that end a sentence, and words that may follow the end inside it (closing quotes and brackets).
_SENTENCE_FINAL = re.compile(r"[.!?。！？…‼⁇⁈⁉]+")
_CLOSING = re.compile(r"[\"'’”»)\]}」』〕】]+")


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the words of `text` (see the module docstring for the policy).

    Spans are in order, do not overlap, and cover every character that is not a separator.
    """
    spans = []
    for chunk in _CHUNK.finditer(text):
        if chunk.group().isascii() and chunk.group().isalnum():  # most words: no need for the full pattern
            spans.append(chunk.span())
        else:
            spans.extend(word.span() for word in _WORD_PATTERN.finditer(text, chunk.start(), chunk.end()))
    return spans


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-split words joined by single spaces, as the token-classification pipeline joins them, and their spans."""
    spans, cursor = [], 0
    for word in words:
        spans.append((cursor, cursor + len(word)))
        cursor += len(word) + 1
    return " ".join(words), spans


def detokenize(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Treebank-style words back to running text, and each word's span in it: the inverse of `split_words`.

    No space goes before closing punctuation and clitics (`,` `.` `)` `%` `'s` `n't`) or after opening brackets and
    `$`; double quotes alternate between opening and closing. This builds realistic raw text from tokenised corpora
    (CoNLL-2003) for tests and benchmarks, where the original words are the expected split.
    """
    pieces, spans, cursor = [], [], 0
    glue_next, quote_open = True, False
    for word in words:
        glue = glue_next or bool(_NO_SPACE_BEFORE.fullmatch(word))
        glue_next = word in _NO_SPACE_AFTER
        if word == '"':
            glue, glue_next, quote_open = glue or quote_open, not quote_open, not quote_open
        separator = "" if glue else " "
        pieces.append(separator + word)
        cursor += len(separator)
        spans.append((cursor, cursor + len(word)))
        cursor += len(word)
    return "".join(pieces), spans


# Entities are word-level: `model.predict` (and `LightNerPipeline.predict_words`) give `{"type", "start", "end",
# "text", "score"}` with WORD offsets (end exclusive). Only the pipeline's output, at its edge, has
# token-classification's `{"entity_group", "score", "word", "start", "end"}` with CHARACTER offsets:
# `character_entity` is that one conversion.


def character_entity(entity: Mapping, text: str, spans: Sequence[tuple[int, int]]) -> dict:
    """A `predict` entity (word offsets into `spans`) as the pipeline's dict, its offsets the characters of `text`
    that its words cover, so that `text[start:end] == word`.

    A discontinuous entity (several `fragments`) keeps `start`/`end` around the whole mention, `word` its fragments'
    texts joined by `FRAGMENT_SEPARATOR`, and adds `fragments`: one `{"start", "end", "word"}` per fragment, each with
    `text[start:end] == word`. A contiguous entity has no `fragments` key, as in the token-classification pipeline.
    """
    fragments = []
    for first, end in entity.get("fragments") or [(entity["start"], entity["end"])]:
        start, stop = spans[first][0], spans[end - 1][1]
        fragments.append({"start": start, "end": stop, "word": text[start:stop]})
    start, end = fragments[0]["start"], fragments[-1]["end"]
    result = {
        "entity_group": entity["type"],
        "score": entity["score"],
        "word": text[start:end] if len(fragments) == 1 else FRAGMENT_SEPARATOR.join(f["word"] for f in fragments),
        "start": start,
        "end": end,
    }
    if len(fragments) > 1:
        result["fragments"] = fragments
    return result


def split_long_spans(text: str, spans: Sequence[tuple[int, int]], max_bytes: int) -> list[tuple[int, int]]:
    """Cut every word longer than `max_bytes` UTF-8 bytes into consecutive pieces of at most `max_bytes` bytes.

    A byte-level BPE token covers at least one byte, so with `max_bytes` one less than a window's token budget every
    piece, behind its leading space, fits in a window: a URL, a base64 blob or a paragraph of Thai longer than the
    backbone's positions is read in pieces rather than refused. Pieces are cut between code points.
    """
    pieces = []
    for start, end in spans:
        if len(text[start:end].encode("utf-8")) <= max_bytes:
            pieces.append((start, end))
            continue
        piece_start, size = start, 0
        for position in range(start, end):
            width = len(text[position].encode("utf-8"))
            if size + width > max_bytes:
                pieces.append((piece_start, position))
                piece_start, size = position, 0
            size += width
        pieces.append((piece_start, end))
    return pieces


def sentence_starts(words: Sequence[str], text: str, spans: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the words that begin a sentence (always 0 first, for non-empty `words`).

    A sentence ends after sentence-final punctuation (`.`, `!`, `?`, `...`, `。`) and any closing quotes or brackets
    after it, and at a blank line. Periods of abbreviations are inside their word (`U.S.`), so they end nothing.
    """
    starts = [0] if words else []
    ended = False
    for index in range(1, len(words)):
        previous = words[index - 1]
        ended = bool(_SENTENCE_FINAL.fullmatch(previous)) or (ended and bool(_CLOSING.fullmatch(previous)))
        paragraph = text.count("\n", spans[index - 1][1], spans[index][0]) >= 2
        if (ended and not _CLOSING.fullmatch(words[index])) or paragraph:
            starts.append(index)
    return starts


@dataclass(frozen=True)
class Window:
    """Words `[start, end)` read by the model at once; entities starting in `[own_start, own_end)` are kept from it.

    Consecutive windows cut from one over-long sentence overlap; each owns the words up to the middle of its overlap
    with the next, so an entity seen by two windows is kept once, from the window where it is furthest from an edge.
    """

    start: int
    end: int
    own_start: int
    own_end: int


def plan_windows(costs: Sequence[int], starts: Sequence[int], budget: int) -> list[Window]:
    """Pack whole sentences into windows of at most `budget` tokens; cut a longer sentence into overlapping windows.

    `costs[i]` is word i's token count and `starts` the sentence starts (`sentence_starts`). Every cost must be at
    most `budget` (`split_long_spans` guarantees it). Every word is owned by exactly one window.
    """
    windows: list[Window] = []
    bounds = [*starts, len(costs)]
    open_start, open_cost = 0, 0
    for first, last in zip(bounds, bounds[1:]):
        cost = sum(costs[first:last])
        if open_cost + cost > budget and open_start < first:
            windows.append(Window(open_start, first, open_start, first))
            open_start, open_cost = first, 0
        if cost > budget:
            windows.extend(_cut_sentence(costs, first, last, budget))
            open_start = last
        else:
            open_cost += cost
    if open_start < len(costs):
        windows.append(Window(open_start, len(costs), open_start, len(costs)))
    return windows


def _cut_sentence(costs: Sequence[int], first: int, last: int, budget: int) -> list[Window]:
    """Windows over one over-long sentence: each as long as the budget allows, the next repeating its last quarter."""
    pieces = []
    piece_start = first
    while True:
        piece_end, total = piece_start, 0
        while piece_end < last and total + costs[piece_end] <= budget:
            total += costs[piece_end]
            piece_end += 1
        pieces.append((piece_start, piece_end))
        if piece_end == last:
            break
        piece_start = max(piece_start + 1, piece_end - (piece_end - piece_start) // 4)
    owned = [first, *((following[0] + piece[1]) // 2 for piece, following in zip(pieces, pieces[1:])), last]
    return [Window(start, end, owned[k], owned[k + 1]) for k, (start, end) in enumerate(pieces)]


__all__ = [
    "Window",
    "character_entity",
    "detokenize",
    "join_words",
    "plan_windows",
    "sentence_starts",
    "split_long_spans",
    "split_words",
]
