"""A run's provenance graph folded so that a person can read it in a notebook cell.

Loop steps become one node per loop ("epoch × 2,000 · 41 s · 1.2 kJ"), parameters one node,
variables, data files, metric series, processes and Dask workers one node per kind; each
group's hover text lists what it holds (the per-step figures for a loop). The graph keeps at
most `MAX_NODES` nodes whatever the run; the full graph stays one command away
(`%prov show RUN --full`, `export --format svg --full`).

Pure data in, pure data out: `prov_graph.py` turns the result into DOT.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_prov4ml.provmodel import GraphEdge, GraphNode

# The inline graph never has more nodes than this (the bound is 60).
MAX_NODES = 40
# Types folded into one node as soon as there are two of them (per loop for steps).
ALWAYS_GROUPED = frozenset(
    {
        "LoopStep",
        "Parameter",
        "Variable",
        "DataFile",
        "MetricSeries",
        "Artifact",
        "DaskWorker",
        "DaskWorkerRun",
        "DaskTaskGroup",
        "DataInput",
        "Model",
        "Process",
        "ChildProcess",
    }
)
# Any other type is folded once it has more than this many nodes.
GROUP_OVER = 3
# Lines of hover text per group (a tooltip is not a table of 2,000 rows).
TOOLTIP_LINES = 24
# Characters of hover text per group (under escape.MAX_DOT_CHARS, with the group's header).
TOOLTIP_CHARS = 1_500
# Characters per line of a node's label: a narrow node keeps the graph within a cell.
LABEL_WIDTH = 30
# How groups are named in labels.
_PLURAL = {
    "Parameter": "parameters",
    "Variable": "variables",
    "DataFile": "data files",
    "MetricSeries": "metrics",
    "Artifact": "artifacts",
    "DaskWorker": "Dask workers",
    "DaskWorkerRun": "Dask worker runs",
    "DataInput": "data inputs",
    "Model": "models",
    "DaskTaskGroup": "Dask task groups",
    "Process": "processes",
    "ChildProcess": "child processes",
}


@dataclass(frozen=True, slots=True)
class FoldedGraph:
    """Nodes and edges after folding, and how many elements the full graph has."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    elements: int


def fold(nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> FoldedGraph:
    """Group the nodes of a run's graph (see the module's docstring) and rewire the edges."""
    groups: dict[tuple[str, str], list[GraphNode]] = {}
    for node in nodes:
        groups.setdefault(_group_key(node), []).append(node)
    run_values = _run_values(nodes)
    kept: list[GraphNode] = []
    merged: dict[str, str] = {}
    for (prov_type, sub), members in groups.items():
        foldable = prov_type and (
            (prov_type in ALWAYS_GROUPED and len(members) > 1) or len(members) > GROUP_OVER
        )
        if not foldable:
            kept.extend(_wrapped(node) for node in members)
            continue
        group_id = f"group:{prov_type}:{sub}"
        merged.update(dict.fromkeys((m.node_id for m in members), group_id))
        kept.append(_group_node(group_id, prov_type, sub, members, run_values))
    if len(kept) > MAX_NODES:
        kept, merged = _fold_by_kind(kept, merged)
    seen: set[tuple[str, str, str]] = set()
    rewired: list[GraphEdge] = []
    for edge in edges:
        key = (
            merged.get(edge.source, edge.source),
            merged.get(edge.target, edge.target),
            edge.relation,
        )
        if key[0] != key[1] and key not in seen:
            seen.add(key)
            rewired.append(GraphEdge(*key))
    return FoldedGraph(tuple(kept), tuple(rewired), len(nodes))


def wrap(text: str, width: int = LABEL_WIDTH, lines: int = 3) -> str:
    """`text` broken into lines of at most `width` characters (at most `lines` of them per
    paragraph): a long name makes a tall node, never a wide one."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        chunk: list[str] = []
        rest = paragraph
        while rest and len(chunk) < lines:
            if len(rest) <= width:
                chunk.append(rest)
                rest = ""
                break
            cut = rest.rfind(" ", 0, width + 1)
            cut = cut if cut > width // 2 else width
            chunk.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip()
        if rest:
            chunk[-1] = chunk[-1][: width - 1] + "…"
        out.extend(chunk or [""])
    return "\n".join(out)


def _group_key(node: GraphNode) -> tuple[str, str]:
    if node.prov_type == "LoopStep":
        return node.prov_type, str(_value(node, "loop") or "")
    return node.prov_type, ""


def _value(node: GraphNode, key: str) -> Any:
    for name, value in node.values:
        if name == key:
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _run_values(nodes: Iterable[GraphNode]) -> dict[str, Any]:
    """The attributes of the run's own activity (its step counts)."""
    for node in nodes:
        if node.prov_type in ("ProvRun", "CellExecution"):
            return dict(node.values)
    return {}


def _wrapped(node: GraphNode) -> GraphNode:
    return GraphNode(
        node.node_id, node.kind, wrap(node.label), node.tooltip, node.prov_type, node.values
    )


def _group_node(
    group_id: str,
    prov_type: str,
    sub: str,
    members: Sequence[GraphNode],
    run_values: dict[str, Any],
) -> GraphNode:
    kind = members[0].kind
    if prov_type == "LoopStep":
        label, tooltip = _steps_text(sub, members, run_values)
    else:
        # A member's label's first line names it (a data file's role, a variable's name).
        names = sorted(m.label.split("\n", 1)[0] for m in members)
        plural = _PLURAL.get(prov_type, prov_type)
        label = wrap(f"{plural} ({len(members)})\n" + ", ".join(names), lines=2)
        details = sorted(_member_line(prov_type, m) for m in members)
        tooltip = f"{plural} ({len(members)})\n" + _lines(details)
    return GraphNode(group_id, kind, label, tooltip, prov_type)


def _member_line(prov_type: str, node: GraphNode) -> str:
    """One line of a group's hover text about one of its members."""
    if prov_type == "MetricSeries":
        parts = [f"{_value(node, 'name')} [{_value(node, 'context')}]:"]
        for key in ("last", "min", "max", "count"):
            value = _value(node, key)
            number = _number(value)
            parts.append(f"{key} {number:.4g}" if number is not None else f"{key} {value}")
        return " ".join(parts)
    if prov_type == "Parameter":
        value = str(_value(node, "value"))
        return f"{_value(node, 'name')} = {value if len(value) <= 200 else value[:199] + '…'}"
    return " ".join(node.label.split())


def _lines(lines: Sequence[str], budget: int = TOOLTIP_CHARS) -> str:
    """The first and last lines, as many as fit `TOOLTIP_LINES` and `budget` characters
    (Graphviz text is capped, and the ends of a loop are what people look for)."""
    head = min(len(lines), TOOLTIP_LINES) // 2 or 1
    while True:
        if len(lines) <= 2 * head:
            shown = list(lines)
        else:
            shown = [*lines[:head], f"… {len(lines) - 2 * head:,} more …", *lines[-head:]]
        text = "\n".join(shown)
        if len(text) <= budget or head <= 1:
            return text[:budget]
        head -= 1


def _steps_text(
    loop: str, members: Sequence[GraphNode], run_values: dict[str, Any]
) -> tuple[str, str]:
    """A loop's steps: the label with their count, total time and energy; the hover text with
    the per-step figures (spread, and the first and last steps)."""
    steps = sorted(members, key=lambda m: _number(_value(m, "index")) or 0.0)
    walls = [w for m in steps if (w := _number(_value(m, "wall_time_s"))) is not None]
    energies = [e for m in steps if (e := _number(_value(m, "energy_total_j"))) is not None]
    described = len(steps)
    total = int(_number(run_values.get("loop_steps_total")) or 0)
    documented = int(_number(run_values.get("loop_steps_documented")) or 0)
    # The run's count covers every loop; it is this loop's own only when all its steps are here.
    count = total if documented == described and total > described else described
    # Described steps are evenly spaced over the loop: their sums scaled up estimate the
    # loop's own (marked ≈); all steps' figures are in the run's steps file.
    scale, about = (count / described, "≈") if count > described else (1.0, "")
    figures = [f"{about}{_seconds(sum(walls) * scale)}"] if walls else []
    if energies:
        figures.append(about + _joules(sum(energies) * scale))
    label = wrap(f"{loop or 'loop'} × {count:,}" + ("\n" + " · ".join(figures) if figures else ""))
    partial = f" ({described:,} described here, all in the steps file)" if about else ""
    header = [f"{loop} × {count:,} steps" + partial]
    if walls:
        header.append(
            f"wall time per step: min {min(walls):.3g} s, mean {sum(walls) / len(walls):.3g} s, "
            f"max {max(walls):.3g} s"
        )
    if energies:
        header.append(f"energy per step: mean {_joules(sum(energies) / len(energies))}")
    rows = [_step_line(m) for m in steps]
    return label, "\n".join(header) + "\n" + _lines(rows)


def _step_line(node: GraphNode) -> str:
    parts = [f"step {_value(node, 'index')}"]
    if (wall := _number(_value(node, "wall_time_s"))) is not None:
        parts.append(f"{wall:.3g} s")
    if (energy := _number(_value(node, "energy_total_j"))) is not None:
        parts.append(_joules(energy))
    for name, value in node.values:
        if name.startswith("metric_") and name.endswith("_last"):
            number = _number(value)
            shown = f"{number:.4g}" if number is not None else str(value)
            parts.append(f"{name[7:-5]} {shown}")
    if _value(node, "completed") is False:
        parts.append("interrupted")
    return ", ".join(parts)


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


def _joules(value: float) -> str:
    for unit, scale in (("MJ", 1e6), ("kJ", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} J"


def _fold_by_kind(
    kept: list[GraphNode], merged: dict[str, str]
) -> tuple[list[GraphNode], dict[str, str]]:
    """Still too many nodes (many types of a few each): the smallest types go into one node
    per PROV kind until the bound holds."""
    first = kept[: MAX_NODES - 3]
    rest = kept[MAX_NODES - 3 :]
    by_kind: dict[str, list[GraphNode]] = {}
    for node in rest:
        by_kind.setdefault(node.kind, []).append(node)
    remap = dict(merged)
    for kind, members in by_kind.items():
        group_id = f"group:other:{kind}"
        for member in members:
            remap[member.node_id] = group_id
            for source, target in merged.items():
                if target == member.node_id:
                    remap[source] = group_id
        names = sorted(" ".join(m.label.split()) for m in members)
        label = wrap(f"{len(members)} more ({kind})\n" + ", ".join(names), lines=2)
        first.append(GraphNode(group_id, kind, label, _lines(names)))
    return first, remap
