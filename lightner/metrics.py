"""Span-level NER evaluation: exact-match entity precision, recall and F1, and a plain-text report.

The scoring itself lives in the `evaluate` metric module `lightner/span_f1/span_f1.py`, so that `evaluate.load` of
that folder and `span_f1` here are one implementation.
"""

from __future__ import annotations

from typing import Any

from .span_f1.span_f1 import span_f1


def format_table(result: dict[str, Any], digits: int = 4) -> str:
    """The per-type scores of a `span_f1` result as an aligned text table, followed by micro and macro averages."""
    names = [*result["per_type"], "micro", "macro"]
    name_width = max(len(name) for name in ["type", *names])
    number_width = max(len("precision"), digits + 2)

    def row(name: str, scores: dict[str, float], support: int) -> str:
        cells = [f"{scores[key]:.{digits}f}".rjust(number_width) for key in ("precision", "recall", "f1")]
        return "  ".join([name.ljust(name_width), *cells, str(support).rjust(number_width)])

    titles = [title.rjust(number_width) for title in ("precision", "recall", "f1", "support")]
    lines = ["  ".join(["type".ljust(name_width), *titles])]
    lines += [row(name, scores, scores["support"]) for name, scores in result["per_type"].items()]
    lines += ["", row("micro", result["micro"], result["num_gold"]), row("macro", result["macro"], result["num_gold"])]
    return "\n".join(lines)


__all__ = ["format_table", "span_f1"]
