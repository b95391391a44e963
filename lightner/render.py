"""Entities in text as one self-contained HTML page, in the manner of displaCy's entity view.

The page has inline CSS and no script or external resource, so it can be mailed or opened offline. Text is escaped
and keeps its line breaks and tabs. Nested entities are drawn inside one another; an entity that crosses another
(which HTML cannot nest) is listed under its text instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from .text_utils import entity_type

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
.legend mark { display: inline-block; margin-bottom: 0.4em; }
"""


def render_html(
    text: str | Sequence[str],
    entities: Sequence[Mapping] | Sequence[Sequence[Mapping]],
    title: str = "LightNER entities",
) -> str:
    """An HTML page showing `entities` in `text`: dicts with `start`, `end` (character offsets), `score` and the type
    as `entity_group` (the pipeline's) or `type` (`text_utils.character_entity` turns `predict`'s word offsets into
    characters).

    `text` is one text and `entities` its entities, or `text` is a list of texts and `entities` one list per text.
    """
    return html_page(title, render_entities(text, entities))


def render_entities(text: str | Sequence[str], entities: Sequence[Mapping] | Sequence[Sequence[Mapping]]) -> str:
    """The body of `render_html`'s page: a legend of the types, then each text with its entities marked."""
    texts, groups = ([text], [entities]) if isinstance(text, str) else (list(text), list(entities))
    if len(texts) != len(groups):
        raise ValueError(f"got {len(texts)} texts but {len(groups)} entity lists")
    types = sorted({entity_type(entity) for group in groups for entity in group})
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


def _render_text(text: str, entities: Sequence[Mapping], colors: Mapping[str, str]) -> str:
    inline, crossing = _nestable(entities)
    html = f'<div class="text" dir="auto">{_inline(text, inline, colors)}</div>'
    if crossing:
        items = ", ".join(
            _open_mark(entity_type(e), colors, e.get("score"))
            + escape(text[e["start"] : e["end"]])
            + _close_mark(entity_type(e))
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
            parts.append(escape(text[cursor : entity["end"]]) + _close_mark(entity_type(entity)))
            cursor = entity["end"]

    for entity in entities:
        close_until(entity["start"])
        parts.append(
            escape(text[cursor : entity["start"]]) + _open_mark(entity_type(entity), colors, entity.get("score"))
        )
        cursor = entity["start"]
        open_entities.append(entity)
    close_until(len(text))
    parts.append(escape(text[cursor:]))
    return "".join(parts)


def _open_mark(name: str, colors: Mapping[str, str], score: float | None) -> str:
    tooltip = escape(name if score is None else f"{name} {score:.2f}")
    return f'<mark class="entity" style="background: {colors[name]}" title="{tooltip}">'


def _close_mark(name: str) -> str:
    return f'<span class="label">{escape(name)}</span></mark>'


__all__ = ["render_html", "render_entities", "html_page", "PALETTE"]
