"""The pieces under the readable views: display thinning keeps what the eye needs, the folded
graph stays small whatever the run, and every text in SVG and DOT stays text."""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import have_dot
from jupyter_prov4ml.provmodel import GraphEdge, GraphNode, graph_elements, run_document
from jupyter_prov4ml.views.graph_groups import MAX_NODES, fold, wrap
from jupyter_prov4ml.views.prov_graph import ProvGraph
from jupyter_prov4ml.views.svg_plot import (
    Dot,
    Series,
    downsample,
    line_chart,
    nice_ticks,
    scatter_chart,
    scene_dot,
    scene_svg,
    sparkline,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_graph import sample_run  # the benchmark's run is the one measured

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>x()</script>"];a -> b [label=<<b>y</b>>]\\'


def test_downsample_keeps_extremes_and_ends() -> None:
    """Thinning 100,000 points to 100 buckets keeps the first and last point and every
    spike (the global min and max), drops NaN, and leaves short series as they are."""
    xs = list(range(100_000))
    ys = [math.sin(x / 1000) for x in xs]
    ys[31_337], ys[77_777], ys[5] = 50.0, -50.0, math.nan
    tx, ty = downsample(xs, ys, 100)
    assert len(tx) <= 400
    assert tx[0] == 0 and tx[-1] == 99_999
    assert 50.0 in ty and -50.0 in ty and not any(math.isnan(y) for y in ty)
    assert tx == sorted(tx)
    assert downsample([1, 2, 3], [3.0, math.inf, 1.0], 100) == ([1, 3], [3.0, 1.0])


def test_nice_ticks_cover_the_range() -> None:
    """Ticks are round numbers within the range, and a flat or empty range does not fail."""
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(5, 5)
    assert nice_ticks(math.nan, 1) == []


def test_charts_are_well_formed_svg_with_text_only() -> None:
    """Line, scatter and spark charts with hostile labels parse as SVG; the labels are in
    <text>/<title> as text; no element comes from a label."""
    line = scene_svg(
        line_chart([Series(HOSTILE, [0, 1, 2], [1.0, 0.5, 0.2])], HOSTILE, "x", HOSTILE)
    )
    scatter = scene_svg(scatter_chart([Dot(HOSTILE, 1.0, 2.0, HOSTILE)], HOSTILE, "J", "acc"))
    for svg in (line, scatter, sparkline([1.0, 2.0, 0.5])):
        root = ET.fromstring(svg)
        tags = {element.tag.removeprefix(SVG) for element in root.iter()}
        assert tags <= {"svg", "line", "polyline", "polygon", "circle", "text", "title"}
    texts = [t.text for t in ET.fromstring(line).iter(f"{SVG}text")]
    assert HOSTILE in texts


def svg_texts(svg: str) -> tuple[set[str], str]:
    """The element names of an SVG document, and all its text and hover text."""
    root = ET.fromstring(svg[svg.index("<svg") :])
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    texts = [e.text or "" for e in root.iter() if e.tag in (f"{SVG}text", f"{SVG}title")]
    titles = [e.get("{http://www.w3.org/1999/xlink}title", "") for e in root.iter()]
    return tags, "\n".join(texts + titles)


@pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")
def test_png_scene_has_no_html_like_labels() -> None:
    """The PNG's Graphviz input keeps a hostile label as text: laid out by the same engine
    (as SVG, to read it back), the label is a <text>, and no markup came from it."""
    import graphviz

    source = scene_dot(line_chart([Series(HOSTILE, [0, 1], [1.0, 0.0])], HOSTILE, "x", "y"))
    svg = graphviz.Source(source, engine="neato").pipe(
        format="svg", encoding="utf-8", neato_no_op=2
    )
    tags, text = svg_texts(svg)
    assert "b" not in tags and "script" not in tags
    assert HOSTILE in text


@pytest.mark.parametrize("steps", [10, 1_000, 100_000])
def test_folded_graph_is_small_for_any_run(steps: int) -> None:
    """Runs of 10 to 100,000 steps fold to the same dozen nodes: one per loop, one for the
    parameters, variables, data files and metrics; the step count is in the loop's label."""
    document = run_document(*sample_run(steps))
    folded = fold(*graph_elements(document))
    assert len(folded.nodes) <= 12
    labels = [n.label for n in folded.nodes]
    assert any(label.startswith(f"epoch × {steps:,}") for label in labels)
    assert any(label.startswith("parameters (12)") for label in labels)
    assert all(max(map(len, label.split("\n"))) <= 31 for label in labels)


def test_fold_bounds_nodes_of_many_types() -> None:
    """A graph of 200 types of 2 elements each still folds to at most MAX_NODES nodes, and
    edges only join nodes that exist."""
    nodes = [
        GraphNode(f"n{t}_{i}", "entity", f"x{t}", "", f"Type{t}")
        for t in range(200)
        for i in range(2)
    ]
    nodes.append(GraphNode("run", "activity", "run", "", "ProvRun"))
    edges = [GraphEdge(n.node_id, "run", "wasGeneratedBy") for n in nodes[:-1]]
    folded = fold(nodes, edges)
    assert len(folded.nodes) <= MAX_NODES
    ids = {n.node_id for n in folded.nodes}
    assert all(e.source in ids and e.target in ids for e in folded.edges)


def test_wrap_never_makes_wide_lines() -> None:
    """A 500-character name becomes at most three lines of 30 characters."""
    text = wrap("word " * 100)
    assert len(text.split("\n")) <= 3 and max(map(len, text.split("\n"))) <= 30


@pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")
def test_readable_graph_fits_a_cell_at_readable_size() -> None:
    """The 2,000-step run's inline graph is at most ~1,000 CSS px wide, scaled (if at all) so
    that 10 pt text stays ≥ 10 px, under 150 KB, with a caption naming `--full`."""
    graph = ProvGraph.readable(run_document(*sample_run(2_000)), "t", run_id="R")
    assert graph.svg is not None
    width_pt = float(re.search(r'<svg width="([\d.]+)pt"', graph.svg).group(1))  # type: ignore[union-attr]
    scale = re.search(r"scale\(([\d.]+)", graph.svg)
    factor = float(scale.group(1)) if scale else 1.0
    assert width_pt * 4 / 3 <= 1_000
    assert 10 * 4 / 3 * factor >= 10
    assert len(graph.svg.encode()) <= 150_000
    assert "%prov show R --full" in graph._repr_mimebundle_()["text/html"]


@pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")
def test_readable_graph_keeps_hostile_names_as_text() -> None:
    """Parameter names shaped as DOT and HTML-like labels are text in the folded graph."""
    from dataclasses import replace

    from jupyter_prov4ml.records import Param

    run, info = sample_run(3)
    hostile = replace(run, params=(Param(HOSTILE, HOSTILE), Param("b", 1)))
    graph = ProvGraph.readable(run_document(hostile, info))
    assert graph.svg is not None
    tags, text = svg_texts(graph.svg)
    assert "b" not in tags and "script" not in tags
    assert f"{HOSTILE} = {HOSTILE}" in text
