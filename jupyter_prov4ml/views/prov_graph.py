"""Provenance graphs: PROV document → Graphviz DOT → SVG, shown inline.

Without the `dot` program the user gets one line on how to install it and the DOT text,
never a traceback. `graphviz` is imported here only, lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.views.escape import dot_text, html_text

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from jupyter_prov4ml.views.graph_groups import FoldedGraph

INSTALL_HINT = (
    "Graphviz's `dot` program was not found, so the provenance graph is shown as DOT text; "
    "install it with `sudo apt-get install graphviz`, `conda install graphviz` or "
    "`brew install graphviz`."
)

# PROV's conventional shapes and colours (as in the W3C PROV primer and `prov.dot`).
_STYLE = {
    "entity": {"shape": "ellipse", "style": "filled", "fillcolor": "#FFFC87", "color": "#808080"},
    "activity": {"shape": "box", "style": "filled", "fillcolor": "#9FB1FC", "color": "#0000FF"},
    "agent": {"shape": "house", "style": "filled", "fillcolor": "#FED37F", "color": "#808080"},
}


class SafeDigraph:
    """A `graphviz.Digraph` whose labels and attribute values are text from data, never DOT
    or HTML-like labels: each passes `escape.dot_text`, marked `nohtml` (every graph we draw
    is built through this)."""

    def __init__(self, name: str, rankdir: str, **node_attrs: str) -> None:
        import graphviz

        self._nohtml = graphviz.nohtml
        self._graph = graphviz.Digraph(name, graph_attr={"rankdir": rankdir, "fontsize": "10"})
        self._graph.attr("node", fontname="Helvetica", fontsize="10", **node_attrs)
        self._graph.attr("edge", fontname="Helvetica", fontsize="8", color="#555555")

    def _text(self, value: object) -> Any:
        return self._nohtml(dot_text(value))

    def _attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {key: self._text(value) for key, value in attrs.items()}

    def attr(self, **attrs: Any) -> None:
        self._graph.attr(**self._attrs(attrs))

    def node(self, name: str, label: object, **attrs: Any) -> None:
        self._graph.node(self._text(name), self._text(label), **self._attrs(attrs))

    def edge(self, tail: str, head: str, **attrs: Any) -> None:
        self._graph.edge(self._text(tail), self._text(head), **self._attrs(attrs))

    @property
    def source(self) -> str:
        return str(self._graph.source)


def new_digraph(name: str, rankdir: str, **node_attrs: str) -> SafeDigraph:
    """An empty graph in the house style."""
    return SafeDigraph(name, rankdir, **node_attrs)


def dot_source(doc: ProvDocument, title: str | None = None) -> str:
    """The DOT text of a PROV document's graph."""
    from jupyter_prov4ml.provmodel import graph_elements

    nodes, edges = graph_elements(doc)
    graph = new_digraph("provenance", "BT")
    if title:
        graph.attr(label=title, labelloc="t")
    # Graphviz reads "a:b" as node a, port b, and PROV ids are all prefixed: use plain ids.
    ids = {node.node_id: f"n{index}" for index, node in enumerate(nodes)}
    for node in nodes:
        graph.node(
            ids[node.node_id],
            node.label,
            tooltip=node.tooltip or node.node_id,
            id=node.node_id,
            **_STYLE[node.kind],
        )
    for edge in edges:
        if edge.source in ids and edge.target in ids:
            graph.edge(ids[edge.source], ids[edge.target], label=edge.relation)
    return str(graph.source)


def readable_dot_source(doc: ProvDocument, title: str | None = None) -> str:
    """The DOT text of a run's graph folded to be read in a notebook cell: loop steps,
    parameters, variables, data files, metrics, processes and workers grouped (their details
    in hover text), laid out left to right within about `FIT_WIDTH_IN` inches."""
    from jupyter_prov4ml.provmodel import graph_elements
    from jupyter_prov4ml.views.graph_groups import fold

    return folded_dot_source(fold(*graph_elements(doc)), title)


def folded_dot_source(folded: FoldedGraph, title: str | None = None) -> str:
    """DOT of a folded graph (`readable_dot_source`)."""
    from jupyter_prov4ml.views.graph_groups import wrap

    graph = new_digraph("provenance", "LR")
    # `size` with `!` unset only ever scales a drawing down; the folded graph is small enough
    # that it seldom does, and then not below a readable text size (see the browser test).
    graph.attr(size=f"{FIT_WIDTH_IN:g},{FIT_HEIGHT_IN:g}", ranksep="0.35", nodesep="0.15")
    if title:
        graph.attr(label=wrap(title, 60), labelloc="t")
    ids = {node.node_id: f"n{index}" for index, node in enumerate(folded.nodes)}
    for node in folded.nodes:
        graph.node(
            ids[node.node_id],
            node.label,
            tooltip=node.tooltip or node.node_id,
            id=node.node_id,
            **_STYLE[node.kind],
        )
    for edge in folded.edges:
        if edge.source in ids and edge.target in ids:
            graph.edge(ids[edge.source], ids[edge.target], tooltip=edge.relation)
    return str(graph.source)


# The readable graph's bounds: JupyterLab's output area is about 1,000 px wide at its default
# width; 9.5 in is 684 pt, i.e. 912 CSS px.
FIT_WIDTH_IN = 9.5
FIT_HEIGHT_IN = 40.0
# The most bytes of SVG a notebook gets inline; larger drawings lose their hover text.
MAX_INLINE_SVG_BYTES = 150_000


def render_svg(source: str) -> str:
    """Lay out DOT text with the `dot` program; raises `DotUnavailable` when it cannot run."""
    import graphviz

    try:
        return str(graphviz.Source(source).pipe(format="svg", encoding="utf-8"))
    except graphviz.ExecutableNotFound as error:
        raise DotUnavailable(INSTALL_HINT) from error
    except (graphviz.CalledProcessError, OSError) as error:
        raise DotUnavailable(f"Graphviz `dot` failed ({error}); showing DOT text.") from error


def render_png(source: str) -> bytes:
    """Rasterise a drawing whose positions are pinned (`svg_plot.scene_dot`) with
    `neato -n2`; raises `DotUnavailable` when Graphviz cannot run."""
    import graphviz

    try:
        return bytes(graphviz.Source(source, engine="neato").pipe(format="png", neato_no_op=2))
    except graphviz.ExecutableNotFound as error:
        raise DotUnavailable(INSTALL_HINT) from error
    except (graphviz.CalledProcessError, OSError) as error:
        raise DotUnavailable(f"Graphviz `neato` failed ({error}).") from error


class DotUnavailable(RuntimeError):
    """The `dot` program is missing or failed."""


@dataclass(frozen=True)
class ProvGraph:
    """A rendered provenance graph for notebooks: inline SVG in HTML, DOT text as fallback."""

    dot: str
    svg: str | None
    note: str | None = None
    caption: str | None = None  # a line under the drawing (how to see the full graph)

    @classmethod
    def of(cls, doc: ProvDocument, title: str | None = None) -> ProvGraph:
        return cls.from_dot(dot_source(doc, title))

    @classmethod
    def readable(
        cls, doc: ProvDocument, title: str | None = None, run_id: str | None = None
    ) -> ProvGraph:
        """The folded graph shown inline (`readable_dot_source`), with a caption saying how
        much was folded and how to see it all."""
        from jupyter_prov4ml.provmodel import graph_elements
        from jupyter_prov4ml.views.graph_groups import fold

        folded = fold(*graph_elements(doc))
        graph = cls.from_dot(folded_dot_source(folded, title))
        if len(folded.nodes) == folded.elements:
            return graph
        caption = (
            f"{len(folded.nodes)} of {folded.elements:,} nodes shown (hover a node for what "
            f"it holds); all of them: %prov show {run_id or 'RUN'} --full"
        )
        return replace(graph, caption=caption)

    @classmethod
    def from_dot(cls, source: str) -> ProvGraph:
        try:
            return cls(source, render_svg(source))
        except DotUnavailable as missing:
            return cls(source, None, str(missing))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        # Inline <svg> inside HTML (not image/svg+xml, which JupyterLab shows as an <img>)
        # keeps node tooltips.
        if self.svg is not None:
            body = self.svg[self.svg.find("<svg") :] if "<svg" in self.svg else self.svg
            caption = (
                f'<p class="jp-prov4ml-graph-caption"><small>{html_text(self.caption)}</small></p>'
                if self.caption
                else ""
            )
            return {
                "text/html": f'<div class="jp-prov4ml-graph">{body}{caption}</div>',
                "text/plain": repr(self),
            }
        return {
            "text/html": f"<p>{html_text(self.note or '')}</p><pre>{html_text(self.dot)}</pre>",
            "text/plain": f"{self.note}\n{self.dot}",
        }

    def __repr__(self) -> str:
        if self.svg is None:
            return f"{self.note}\n{self.dot}"
        return f"<ProvGraph: {self.dot.count('->')} edges, SVG {len(self.svg)} bytes>"
