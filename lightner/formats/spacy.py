"""spaCy/displaCy JSON Lines, an output of `lightner predict` only."""

from __future__ import annotations

import json

from .base import Document, Format, FoundEntities


def write_document(document: Document, found: FoundEntities) -> str:
    """spaCy's `{"text", "ents": [{"start", "end", "label"}]}` with character offsets (word input: the words joined
    by spaces), one per line: each line is what `displacy.render(..., style="ent", manual=True)` takes. A
    discontinuous entity is drawn as the one span around its fragments, since displaCy has no fragments."""
    text, _ = document.as_text()
    ents = [{"start": e["start"], "end": e["end"], "label": e["entity_group"]} for e in found.characters()]
    return json.dumps({"text": text, "ents": ents}, ensure_ascii=False) + "\n"


FORMAT = Format(
    "spacy",
    "spaCy/displaCy JSON Lines (prediction output only)",
    labelled=False,
    write_document=write_document,
    output_description='spaCy/displaCy JSON Lines: {"text", "ents": [{"start", "end", "label"}]}',
)
