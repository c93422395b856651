"""Line and scatter charts drawn by hand as SVG (and as Graphviz input for PNG).

Why not matplotlib: it is not a dependency, and where installed its import alone costs about
0.5 s (measured in benchmarks/bench_plot.py) — more than drawing 3 × 100,000 points here. A
chart is a small `Scene` of lines, polylines, bands, dots and texts in pixel coordinates;
`scene_svg` writes it as inline SVG (hover text as `<title>`), `scene_dot` as a Graphviz
graph with pinned positions that `neato -n2 -Tpng` rasterises (the `dot` install we already
use, no new library). Every text passes `escape.html_text` / `escape.dot_text`.

Series are thinned for display only (`downsample`: first, min, max and last point of each
pixel-wide bucket, so spikes stay visible); the store keeps every point.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from jupyter_prov4ml.views.escape import html_text

# A colour-blind-safe palette (Okabe–Ito), cycled over series.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
FONT = "Helvetica, Arial, sans-serif"
FONT_PX = 12
# Points a series keeps for display: four per bucket, one bucket per horizontal pixel.
MAX_HOVER_POINTS = 40


@dataclass(frozen=True, slots=True)
class Series:
    """One named line: its points (non-finite ones are dropped when drawn), and optionally a
    band (low, high) around it at the same x."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


@dataclass(frozen=True, slots=True)
class Dot:
    """One point of a scatter chart with its hover text."""

    label: str  # its series (colour, legend)
    x: float
    y: float
    hover: str


@dataclass
class Scene:
    """What a chart draws, in pixels (y grows downwards, as in SVG)."""

    width: int
    height: int
    lines: list[tuple[float, float, float, float, str, float]] = field(default_factory=list)
    polylines: list[tuple[list[tuple[float, float]], str, str]] = field(default_factory=list)
    bands: list[tuple[list[tuple[float, float]], str, str]] = field(default_factory=list)
    dots: list[tuple[float, float, str, str, float]] = field(default_factory=list)
    texts: list[tuple[float, float, str, str, str, int]] = field(default_factory=list)


def downsample(
    xs: Sequence[float], ys: Sequence[float], buckets: int
) -> tuple[list[float], list[float]]:
    """At most ~4 points per bucket of equal x width: each bucket's first, lowest, highest
    and last point, in their order; non-finite points dropped. Lossy, for display only."""
    isfinite = math.isfinite
    px, py = list(xs), list(ys)
    if len(px) != len(py) or not (all(map(isfinite, px)) and all(map(isfinite, py))):
        pairs = [(x, y) for x, y in zip(px, py, strict=False) if _finite(x) and _finite(y)]
        px, py = [p[0] for p in pairs], [p[1] for p in pairs]
    count = len(px)
    if count <= 4 * buckets or buckets < 1:
        return px, py
    x0 = min(px)
    scale = buckets / ((max(px) - x0) or 1.0)
    index = [int((x - x0) * scale) for x in px]
    starts = [0, *(i for i in range(1, count) if index[i] != index[i - 1]), count]
    out_x: list[float] = []
    out_y: list[float] = []
    for start, end in itertools.pairwise(starts):
        segment = py[start:end]
        low = start + segment.index(min(segment))
        high = start + segment.index(max(segment))
        for i in sorted({start, low, high, end - 1}):
            out_x.append(px[i])
            out_y.append(py[i])
    return out_x, out_y


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not (_finite(low) and _finite(high)):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks: list[float] = []
    value = start
    while value <= high + step * 1e-9 and len(ticks) < 50:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def number(value: float) -> str:
    """A number short enough for an axis or a hover text."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e7 or magnitude < 1e-3:
        return f"{value:.3g}"
    return f"{value:,.0f}" if magnitude >= 1000 else f"{value:.4g}"


class _Axes:
    """The mapping from data to pixels, and the frame, ticks and labels it draws."""

    def __init__(
        self,
        scene: Scene,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        legend_rows: int,
    ) -> None:
        self.left, self.right = 70.0, scene.width - 16.0
        self.top = 34.0
        self.bottom = scene.height - 44.0 - 16.0 * legend_rows
        x0, x1 = x_range
        y0, y1 = y_range
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if y1 <= y0:
            y0, y1 = y0 - (abs(y0) * 0.05 or 0.5), y1 + (abs(y1) * 0.05 or 0.5)
        pad = (y1 - y0) * 0.04
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0 - pad, y1 + pad

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def draw(self, scene: Scene, title: str, x_label: str, y_label: str) -> None:
        grid, ink = "#e4e4e4", "#333333"
        for tick in nice_ticks(self.y0, self.y1):
            y = self.py(tick)
            scene.lines.append((self.left, y, self.right, y, grid, 1.0))
            scene.texts.append((self.left - 6, y + 4, number(tick), "end", ink, FONT_PX))
        for tick in nice_ticks(self.x0, self.x1, 6):
            x = self.px(tick)
            scene.lines.append((x, self.top, x, self.bottom, grid, 1.0))
            scene.texts.append((x, self.bottom + 16, number(tick), "middle", ink, FONT_PX))
        scene.lines.append((self.left, self.bottom, self.right, self.bottom, ink, 1.0))
        scene.lines.append((self.left, self.top, self.left, self.bottom, ink, 1.0))
        scene.texts.append((scene.width / 2, 20, title, "middle", ink, FONT_PX + 2))
        middle = (self.left + self.right) / 2
        scene.texts.append((middle, self.bottom + 32, x_label, "middle", ink, FONT_PX))
        scene.texts.append((8, self.top - 10, y_label, "start", ink, FONT_PX))


def _legend(scene: Scene, labels: Sequence[str], top: float) -> int:
    """Legend entries in rows under the chart; returns the number of rows."""
    x, row = 70.0, 0
    for index, label in enumerate(labels):
        text = label if len(label) <= 48 else label[:47] + "…"
        width = 28 + 7 * len(text)
        if x + width > scene.width - 10 and x > 70:
            x, row = 70.0, row + 1
        y = top + 16 * row
        colour = PALETTE[index % len(PALETTE)]
        scene.lines.append((x, y - 4, x + 18, y - 4, colour, 3.0))
        scene.texts.append((x + 22, y, text, "start", "#333333", FONT_PX))
        x += width
    return row + 1


def _legend_rows(scene_width: int, labels: Sequence[str]) -> int:
    probe = Scene(scene_width, 0)
    return _legend(probe, labels, 0) if labels else 0


def line_chart(
    series: Sequence[Series],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 760,
    height: int = 380,
) -> Scene:
    """Overlaid lines (with bands where given), axes, a legend naming each series, and the
    value of a few points per line on hover."""
    # One bucket per two pixels of plot width: as sharp as a screen shows, and ~35 KB of SVG
    # per line however long the series.
    buckets = max(1, (width - 90) // 2)
    thinned = []
    for s in series:
        xs, ys = downsample(s.xs, s.ys, buckets)
        thinned.append((s, xs, ys))
    xs_all = [x for _, xs, _ in thinned for x in (xs[:1] + xs[-1:])]
    ys_all = [y for _, _, ys in thinned for y in ys]
    for s, _, _ in thinned:
        for edge in (s.low, s.high):
            if edge is not None:
                ys_all += [v for v in edge if _finite(v)]
    labels = [s.label for s in series]
    rows = _legend_rows(width, labels)
    height += 16 * max(0, rows - 1)
    scene = Scene(width, height)
    x_range = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    y_range = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
    axes = _Axes(scene, x_range, y_range, rows)
    axes.draw(scene, title, x_label, y_label)
    for index, (s, xs, ys) in enumerate(thinned):
        colour = PALETTE[index % len(PALETTE)]
        if s.low is not None and s.high is not None:
            band = [
                (x, lo, hi)
                for x, lo, hi in zip(s.xs, s.low, s.high, strict=False)
                if _finite(x) and _finite(lo) and _finite(hi)
            ]
            bx, blo = downsample([b[0] for b in band], [b[1] for b in band], buckets // 4)
            hx, bhi = downsample([b[0] for b in band], [b[2] for b in band], buckets // 4)
            outline = [(axes.px(x), axes.py(y)) for x, y in zip(bx, blo, strict=False)]
            outline += [
                (axes.px(x), axes.py(y)) for x, y in reversed(list(zip(hx, bhi, strict=False)))
            ]
            if outline:
                scene.bands.append((outline, colour, f"{s.label}: spread"))
        points = [(axes.px(x), axes.py(y)) for x, y in zip(xs, ys, strict=False)]
        if points:
            scene.polylines.append((points, colour, s.label))
        stride = max(1, len(xs) // MAX_HOVER_POINTS)
        for i in range(0, len(xs), stride):
            hover = f"{s.label}\n{x_label} {number(xs[i])}: {y_label} {number(ys[i])}"
            scene.dots.append((points[i][0], points[i][1], colour, hover, 2.5))
    _legend(scene, labels, axes.bottom + 50)
    return scene


def scatter_chart(
    dots: Sequence[Dot],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 520,
    height: int = 360,
) -> Scene:
    """Points coloured by series, hover text on each, a legend naming the series."""
    labels = list(dict.fromkeys(d.label for d in dots))
    shown = [d for d in dots if _finite(d.x) and _finite(d.y)]
    rows = _legend_rows(width, labels)
    scene = Scene(width, height + 16 * max(0, rows - 1))
    xs = [d.x for d in shown] or [0.0, 1.0]
    ys = [d.y for d in shown] or [0.0, 1.0]
    spread = (max(xs) - min(xs)) * 0.05 or 0.5
    axes = _Axes(scene, (min(xs) - spread, max(xs) + spread), (min(ys), max(ys)), rows)
    axes.draw(scene, title, x_label, y_label)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    for d in shown:
        scene.dots.append((axes.px(d.x), axes.py(d.y), colours[d.label], d.hover, 5.0))
    _legend(scene, labels, axes.bottom + 50)
    return scene


def sparkline(ys: Sequence[float], width: int = 120, height: int = 22) -> str:
    """A small inline SVG curve (no axes) of a series, its last value on hover."""
    xs_raw = list(range(len(ys)))
    xs, vs = downsample(xs_raw, ys, width)
    if not vs:
        return ""
    low, high = min(vs), max(vs)
    span_x = (xs[-1] - xs[0]) or 1
    span_y = (high - low) or 1.0
    points = " ".join(
        f"{2 + (x - xs[0]) / span_x * (width - 4):.1f},"
        f"{height - 2 - (v - low) / span_y * (height - 4):.1f}"
        for x, v in zip(xs, vs, strict=False)
    )
    hover = html_text(f"{len(ys):,} points, min {number(low)}, max {number(high)}")
    return (
        f'<svg class="jp-prov4ml-sparkline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="vertical-align:middle">'
        f"<title>{hover}</title>"
        f'<polyline points="{points}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>'
        "</svg>"
    )


def scene_svg(scene: Scene, css_class: str = "jp-prov4ml-plot") -> str:
    """The scene as an `<svg>` element for inline HTML (its size in CSS pixels, scaled down
    only by a narrower output area, via `max-width`)."""
    out = [
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{scene.width}" '
        f'height="{scene.height}" viewBox="0 0 {scene.width} {scene.height}" '
        f'style="max-width:100%;height:auto;background:#fff" font-family="{FONT}">'
    ]
    for x1, y1, x2, y2, colour, stroke in scene.lines:
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{colour}" stroke-width="{stroke:g}"/>'
        )
    for outline, colour, hover in scene.bands:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in outline)
        out.append(
            f'<polygon points="{points}" fill="{colour}" fill-opacity="0.18" stroke="none">'
            f"<title>{html_text(hover)}</title></polygon>"
        )
    for points_list, colour, hover in scene.polylines:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in points_list)
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6" '
            f'stroke-linejoin="round"><title>{html_text(hover)}</title></polyline>'
        )
    for x, y, colour, hover, radius in scene.dots:
        # Small points on lines are only hover targets; scatter points are seen.
        opacity = "0.9" if radius >= 4 else "0"
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:g}" fill="{colour}" '
            f'fill-opacity="{opacity}" stroke="{colour}" stroke-opacity="{opacity}">'
            f"<title>{html_text(hover)}</title></circle>"
        )
    for x, y, text, anchor, colour, size in scene.texts:
        out.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{colour}" '
            f'font-size="{size}">{html_text(text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def scene_dot(scene: Scene) -> str:
    """The scene as Graphviz input for `neato -n2` (positions pinned, in points): lines and
    curves as edges between invisible points, texts as plain-text nodes. Bands are drawn as
    their outline; hover texts are left out (a PNG has none)."""
    from jupyter_prov4ml.views.prov_graph import new_digraph

    graph = new_digraph("plot", "LR", shape="point", width="0", height="0", label="")
    graph.attr(
        bb=f"0,0,{scene.width * 0.75:.1f},{scene.height * 0.75:.1f}",
        splines="true",
        pad="0.1",
        bgcolor="white",
        dpi="96",
    )
    counter = 0

    def pinned(x: float, y: float) -> str:
        nonlocal counter
        counter += 1
        name = f"p{counter}"
        graph.node(name, "", pos=_pos(scene, x, y), style="invis")
        return name

    def segment(points: Sequence[tuple[float, float]], colour: str, stroke: float) -> None:
        # One edge per few dozen points: an attribute's text is capped (escape.MAX_DOT_CHARS).
        for start in range(0, max(1, len(points) - 1), _EDGE_POINTS):
            _edge(points[start : start + _EDGE_POINTS + 1], colour, stroke)

    def _edge(points: Sequence[tuple[float, float]], colour: str, stroke: float) -> None:
        if len(points) < 2:
            return
        head, tail = pinned(*points[0]), pinned(*points[-1])
        # A cubic B-spline through each segment with control points on its ends is straight.
        controls = [points[0]]
        for a, b in itertools.pairwise(points):
            controls += [a, b, b]
        spline = " ".join(_pos(scene, x, y).rstrip("!") for x, y in controls)
        graph.edge(head, tail, pos=spline, color=colour, penwidth=f"{stroke:g}", arrowhead="none")

    for x1, y1, x2, y2, colour, stroke in scene.lines:
        segment([(x1, y1), (x2, y2)], colour, stroke)
    for outline, colour, _ in scene.bands:
        segment([*outline, outline[0]], colour, 0.6)
    for points, colour, _ in scene.polylines:
        segment(points, colour, 1.4)
    for x, y, colour, _, radius in scene.dots:
        if radius >= 4:
            counter += 1
            graph.node(
                f"d{counter}",
                "",
                pos=_pos(scene, x, y),
                shape="circle",
                width=f"{radius * 2 / 96:.3f}",
                style="filled",
                fillcolor=colour,
                color=colour,
            )
    for x, y, text, anchor, colour, size in scene.texts:
        counter += 1
        # neato centres a label on its node: shift it by half its estimated width.
        shift = {"start": 1, "end": -1}.get(anchor, 0) * len(text) * size * 0.28
        graph.node(
            f"t{counter}",
            text,
            pos=_pos(scene, x + shift, y - size * 0.35),
            shape="plaintext",
            fontsize=f"{size * 0.75:g}",
            fontcolor=colour,
            width="0",
            height="0",
            margin="0",
        )
    return graph.source


# Points per Graphviz edge: 3 control points each, about 30 characters, well under the cap.
_EDGE_POINTS = 20


def _pos(scene: Scene, x: float, y: float) -> str:
    """A pinned Graphviz position in points (y grows upwards there)."""
    return f"{x * 0.75:.1f},{(scene.height - y) * 0.75:.1f}!"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def stack(scenes: Sequence[Scene]) -> Scene:
    """Scenes one under the other, as one scene (a file with several charts)."""
    if len(scenes) == 1:
        return scenes[0]
    out = Scene(max((s.width for s in scenes), default=1), sum(s.height for s in scenes))
    top = 0.0
    for s in scenes:
        out.lines += [(a, b + top, c, d + top, e, f) for a, b, c, d, e, f in s.lines]
        out.polylines += [([(x, y + top) for x, y in p], c, h) for p, c, h in s.polylines]
        out.bands += [([(x, y + top) for x, y in p], c, h) for p, c, h in s.bands]
        out.dots += [(x, y + top, c, h, r) for x, y, c, h, r in s.dots]
        out.texts += [(x, y + top, t, a, c, z) for x, y, t, a, c, z in s.texts]
        top += s.height
    return out
