"""The escaping boundary: hostile text stays text in HTML and in Graphviz graphs."""

from __future__ import annotations

import re

import pytest

from conftest import have_dot
from jupyter_prov4ml.views.escape import dot_text, html_text
from jupyter_prov4ml.views.lineage_graph import lineage_dot
from jupyter_prov4ml.views.prov_graph import new_digraph, render_svg

HOSTILE = [
    '"><img src=x onerror=alert(1)>',
    "<script>alert(1)</script>",
    '<<TABLE HREF="javascript:alert(1)"><TR><TD>x</TD></TR></TABLE>>',
    "ends with a backslash\\",
    'quote " and \\" and \\',
    "nul \x00 and bell \x07",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_html_text_leaves_no_markup(text: str) -> None:
    escaped = html_text(text)
    assert "<" not in escaped and ">" not in escaped and '"' not in escaped


@pytest.mark.parametrize("text", HOSTILE)
def test_graph_labels_are_text_and_the_dot_parses(text: str) -> None:
    """Every hostile label, tooltip and attribute gives DOT that `dot` lays out (a trailing
    backslash no longer swallows the closing quote) with no HTML-like label and no link."""
    graph = new_digraph("g", "TB")
    graph.attr(label=text, labelloc="t")
    graph.node("a", text, tooltip=text)
    graph.node(text, "b")
    graph.edge("a", text, label=text)
    source = graph.source
    assert "label=<" not in source.replace(" ", ""), "an HTML-like label reached the DOT"
    if have_dot:
        svg = render_svg(source)
        assert not re.search(r'\s(xlink:)?href="', svg), "a link in the SVG"
        assert "<script" not in svg and "<img" not in svg


def test_dot_text_caps_and_keeps_backslashes() -> None:
    assert dot_text("a\\") == "a\\\\"
    assert len(dot_text("x" * 10_000)) <= 2_000


@pytest.mark.skipif(not have_dot, reason="needs Graphviz's dot")
def test_a_session_whose_cell_ends_in_a_backslash_still_draws() -> None:
    """The lineage graph of cells whose first line ends in a backslash or holds markup."""
    import time

    from jupyter_prov4ml.records import CellRef, CellRun

    runs = [
        CellRun(
            f"s-{i}",
            "s",
            "cell",
            CellRef(f"{i:064x}", source, f"c{i}", i),
            time.time(),
            time.time(),
            0.0,
            0.0,
            "ok",
        )
        for i, source in enumerate(HOSTILE, start=1)
    ]
    svg = render_svg(lineage_dot(runs))
    assert svg.count('<g id="node') == len(HOSTILE)
    assert not re.search(r'\s(xlink:)?href="', svg) and "<script" not in svg
