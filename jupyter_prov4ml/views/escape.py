"""The one escaping boundary: every string that reaches HTML, SVG or DOT passes here.

Names, parameters, metric and loop names, cell sources and paths come from users and from
stores copied from elsewhere, so they are text, never markup. JupyterLab does not sanitise
ipywidgets `HTML` values, and Graphviz reads a label written `<...>` as an HTML-like label
(with links) and a backslash as an escape: each sink gets its own rule, here.
"""

from __future__ import annotations

import html
import re

# Graphviz labels longer than this are cut: a node is not a place for a whole cell.
MAX_DOT_CHARS = 2_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def html_text(value: object) -> str:
    """`value` as HTML text or as a quoted attribute's value (`&`, `<`, `>`, `"`, `'`)."""
    return html.escape(str(value), quote=True)


def dot_text(value: object) -> str:
    """`value` as the text of a Graphviz label or tooltip: backslashes kept as backslashes (a
    trailing one would swallow the closing quote), control characters dropped, length capped.
    The graph builder also marks it as never an HTML-like label (`graphviz.nohtml`)."""
    text = _CONTROL.sub("", str(value))
    if len(text) > MAX_DOT_CHARS:
        text = text[: MAX_DOT_CHARS - 1] + "…"
    return text.replace("\\", "\\\\")
