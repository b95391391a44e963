"""Entities in text as one self-contained HTML page, in the manner of displaCy's entity view.

The page has inline CSS and no script or external resource, so it can be mailed or opened offline. Text is escaped
and keeps its line breaks and tabs. Nested entities are drawn inside one another; an entity that crosses another
(which HTML cannot nest) is listed under its text instead of being dropped. The fragments of a discontinuous entity
are drawn as one: each is outlined, carries the entity's number and, on hover, the whole mention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from .text_utils import character_entity, join_words

# displaCy's entity colours, then a few more; a type keeps its colour across the texts of one page.
PALETTE = (
    "#7aecec",
    "#bfeeb7",
    "#feca74",
    "#ff9561",
    "#aa9cfc",
    "#c887fb",
    "#9cc9cc",
    "#ffeb80",
    "#ff8197",
    "#bfe1d9",
    "#e4e7d2",
    "#f0d0ff",
)

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
.text { white-space: pre-wrap; line-height: 2.6; margin-bottom: 1.5em; padding-bottom: 1em;
        border-bottom: 1px solid #eee; }
mark { padding: 0.2em 0.35em; margin: 0 0.15em; border-radius: 0.35em; line-height: 1; }
mark .label { font-size: 0.6em; font-weight: bold; text-transform: uppercase; vertical-align: middle;
              margin-left: 0.4em; }
.crossing { font-size: 0.85em; color: #555; }
mark.fragment { outline: 1px dashed #555; }
mark .link { font-size: 0.6em; font-weight: bold; vertical-align: super; margin-left: 0.2em; }
.legend mark { display: inline-block; margin-bottom: 0.4em; }
"""


def render_html(
    text: str | Sequence[str],
    entities: Sequence[Mapping] | Sequence[Sequence[Mapping]],
    title: str = "LightNER entities",
) -> str:
    """An HTML page showing `entities` in `text`: the pipeline's dicts, with `entity_group`, `start`, `end`
    (character offsets), `score`, and `fragments` for a discontinuous entity (`render_word_entities` draws
    `predict`'s word-offset entities).

        `text` is one text and `entities` its entities, or `text` is a list of texts and `entities` one list per text.
    """
    return html_page(title, render_entities(text, entities))


def render_entities(text: str | Sequence[str], entities: Sequence[Mapping] | Sequence[Sequence[Mapping]]) -> str:
    """The body of `render_html`'s page: a legend of the types, then each text with its entities marked."""
    texts, groups = ([text], [entities]) if isinstance(text, str) else (list(text), list(entities))
    if len(texts) != len(groups):
        raise ValueError(f"got {len(texts)} texts but {len(groups)} entity lists")
    types = sorted({entity["entity_group"] for group in groups for entity in group})
    colors = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(types)}
    legend = " ".join(_open_mark(name, colors, None) + _close_mark(name) for name in types)
    sections = "\n".join(_render_text(body, group, colors) for body, group in zip(texts, groups))
    return f'<div class="legend">{legend}</div>\n{sections}'


def html_page(title: str, body: str, extra_style: str = "") -> str:
    """A self-contained page around `body` (already escaped HTML), with the entity styles inline."""
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}{extra_style}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


def render_word_entities(sentences: Sequence[Sequence[str]], predictions: Sequence[Sequence[Mapping]]) -> str:
    """`render_html`'s page for word lists and `model.predict`'s entities (word offsets, `fragments` for a
    discontinuous one): each sentence is its words joined by spaces, entities moved to character offsets."""
    texts, groups = [], []
    for words, entities in zip(sentences, predictions):
        text, spans = join_words(words)
        texts.append(text)
        groups.append([character_entity(entity, text, spans) for entity in entities])
    return render_html(texts, groups)


def _parts(text: str, entities: Sequence[Mapping]) -> list[dict]:
    """Each entity as the spans to draw: itself, or one span per fragment of a discontinuous entity, which carry the
    entity's number among the text's discontinuous entities (`link`) and its whole mention (`mention`)."""
    parts, linked = [], 0
    for entity in entities:
        fragments = entity.get("fragments") or []
        if len(fragments) < 2:
            parts.append(dict(entity))
            continue
        linked += 1
        mention = " … ".join(text[f["start"] : f["end"]] for f in fragments)
        parts.extend(
            {**entity, "start": f["start"], "end": f["end"], "link": linked, "mention": mention} for f in fragments
        )
    return parts


def _render_text(text: str, entities: Sequence[Mapping], colors: Mapping[str, str]) -> str:
    inline, crossing = _nestable(_parts(text, entities))
    html = f'<div class="text" dir="auto">{_inline(text, inline, colors)}</div>'
    if crossing:
        items = ", ".join(
            _open_mark(e["entity_group"], colors, e.get("score"), e)
            + escape(text[e["start"] : e["end"]])
            + _close_mark(e["entity_group"], e)
            + f" ({e['start']}-{e['end']})"
            for e in crossing
        )
        html += f'\n<p class="crossing">Overlapping entities: {items}</p>'
    return html


def _nestable(entities: Sequence[Mapping]) -> tuple[list[Mapping], list[Mapping]]:
    """Split entities into those that nest (drawn inline) and those that cross an earlier one (listed)."""
    inline, crossing, open_ends = [], [], []
    for entity in sorted(entities, key=lambda e: (e["start"], -e["end"])):
        while open_ends and open_ends[-1] <= entity["start"]:
            open_ends.pop()
        if open_ends and entity["end"] > open_ends[-1]:
            crossing.append(entity)
        else:
            inline.append(entity)
            open_ends.append(entity["end"])
    return inline, crossing


def _inline(text: str, entities: Sequence[Mapping], colors: Mapping[str, str]) -> str:
    """Escaped text with a `<mark>` around each entity; `entities` are sorted by start and nest."""
    parts, cursor, open_entities = [], 0, []

    def close_until(position: int) -> None:
        nonlocal cursor
        while open_entities and open_entities[-1]["end"] <= position:
            entity = open_entities.pop()
            parts.append(escape(text[cursor : entity["end"]]) + _close_mark(entity["entity_group"], entity))
            cursor = entity["end"]

    for entity in entities:
        close_until(entity["start"])
        parts.append(
            escape(text[cursor : entity["start"]])
            + _open_mark(entity["entity_group"], colors, entity.get("score"), entity)
        )
        cursor = entity["start"]
        open_entities.append(entity)
    close_until(len(text))
    parts.append(escape(text[cursor:]))
    return "".join(parts)


def _open_mark(name: str, colors: Mapping[str, str], score: float | None, part: Mapping | None = None) -> str:
    """A mark's opening tag; a fragment of a discontinuous entity (`part` with `link`) is outlined, carries the
    entity's number and names the whole mention in its tooltip."""
    tooltip = name if score is None else f"{name} {score:.2f}"
    if part is not None and "link" in part:
        tooltip += f": {part['mention']}"
        return (
            f'<mark class="entity fragment" data-entity="{part["link"]}" style="background: {colors[name]}" '
            f'title="{escape(tooltip)}">'
        )
    return f'<mark class="entity" style="background: {colors[name]}" title="{escape(tooltip)}">'


def _close_mark(name: str, part: Mapping | None = None) -> str:
    link = f'<span class="link">{part["link"]}</span>' if part is not None and "link" in part else ""
    return f'<span class="label">{escape(name)}</span>{link}</mark>'


__all__ = ["render_html", "render_entities", "render_word_entities", "html_page", "PALETTE"]
