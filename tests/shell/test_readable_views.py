"""Views a person can read, through the magics in a real InteractiveShell: the folded graph of
a long `%%provrun` (and `--full`), `%prov plot` / `compare` / `energy`, the summary's small
curves, the session graph of many cells folded, and hostile names kept as text."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from conftest import displayed, extension_of, have_dot

requires_dot = pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")

HOSTILE_METRIC = "<script>window.__pwned=1</script>\"q'];n0 -> n1 [label=<b>x</b>]"
HOSTILE_PARAM = "<img src=x onerror=alert(1)>"

TRAIN = """\
%%provrun --name {name} --param seed={seed} --param lr=0.1
import jupyter_prov4ml as p4m
for epoch in p4m.track(range({steps}), name="epoch"):
    p4m.log_metric("loss", 1.0 / (epoch + 1) + {seed} * 0.01, step=epoch)
    p4m.log_metric("acc", 1.0 - 1.0 / (epoch + 2), step=epoch, context="val")
"""


def run_ids(shell: Any) -> list[str]:
    """The ids of the %%provrun runs recorded so far (flushed first)."""
    extension = extension_of(shell)
    assert extension.writer.flush(timeout_s=60)
    store = extension.store_for_reading()
    return [s.run.run_id for s in store.runs() if s.run.kind == "provrun"]


def train(shell: Any, name: str, seed: int, steps: int) -> None:
    result = shell.run_cell(TRAIN.format(name=name, seed=seed, steps=steps))
    assert result.success, result.error_in_exec


def html_of(shell: Any, start: int = 0) -> str:
    """The HTML displayed since output number `start`."""
    return "\n".join(b.get("text/html", "") for b in displayed(shell)[start:])


@requires_dot
def test_long_run_graph_is_folded_and_full_one_command_away(loaded: Any) -> None:
    """A 2,000-step %%provrun shows a graph of a few nodes (its loop one node named
    "epoch × 2,000", parameters one node, hover text with per-step figures), well under 60
    nodes and 150 KB; `%prov show RUN --full` draws every element."""
    train(loaded, "long", 0, 2000)
    page = html_of(loaded)
    svg = page[page.index('<div class="jp-prov4ml-graph">') :]
    svg = svg[: svg.index("</svg>") + 6]
    assert svg.count('class="node"') <= 60
    assert len(svg.encode()) <= 150_000
    assert "epoch × 2,000" in html.unescape(svg)
    assert "step 1999" in html.unescape(svg)  # the last step's figures, in hover text
    assert "parameters (2)" in html.unescape(svg)
    assert "%prov show" in page  # the caption saying how to see it all
    (run_id,) = run_ids(loaded)
    before = len(displayed(loaded))
    loaded.run_line_magic("prov", f"show {run_id} --full")
    full = html_of(loaded, before)
    assert full.count('class="node"') > 1000  # every described step is a node


def test_summary_draws_each_metric_as_a_small_curve(loaded: Any) -> None:
    """The %%provrun summary holds one small SVG curve per metric series."""
    train(loaded, "curvy", 1, 50)
    summary = next(
        b["text/html"] for b in displayed(loaded) if "jp-prov4ml-summary" in b.get("text/html", "")
    )
    assert summary.count('class="jp-prov4ml-sparkline"') == 2
    assert "loss (training)" in summary and "acc (val)" in summary


def test_plot_overlays_runs_with_legend_and_hover(loaded: Any) -> None:
    """`%prov plot A B --metric loss` draws one SVG chart with both runs in the legend,
    axes, and values on hover; `--x time` and `--context` work; a missing metric is a one-line
    usage error naming the metrics there are."""
    train(loaded, "a", 0, 30)
    train(loaded, "b", 1, 30)
    first, second = run_ids(loaded)
    view = loaded.run_line_magic("prov", f"plot {first} {second} --metric loss")
    page = view._repr_html_()
    assert page.count("<svg") == 1 and "<polyline" in page
    assert f"a ({first.rsplit('-', 1)[-1]})" in page and f"b ({second.rsplit('-', 1)[-1]})" in page
    assert "<title>" in page and "step 0: loss 1" in page
    timed = loaded.run_line_magic("prov", f"plot {first} --x time --context val")
    assert "time (s)" in timed._repr_html_() and "acc [val]" in timed._repr_html_()
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="loss"):
        loaded.run_line_magic("prov", f"plot {first} --metric nope")


def test_group_by_seed_draws_mean_and_spread(loaded: Any) -> None:
    """`--group-by seed` turns three seeds of one configuration into one line with a band."""
    for seed in (1, 2, 3):
        train(loaded, "s", seed, 20)
    ids = run_ids(loaded)
    view = loaded.run_line_magic("prov", f"plot {' '.join(ids)} --metric loss --group-by seed")
    page = view._repr_html_()
    assert page.count("<polygon") == 1 and page.count("<polyline") == 1
    assert "mean ± sd over seed (3 runs" in html.unescape(page)


def test_compare_three_runs(loaded: Any) -> None:
    """`%prov compare A B C`: changed parameters highlighted, final and best metrics,
    duration, energy, and the curves overlaid in the same view."""
    for seed in (1, 2, 3):
        train(loaded, "cmp", seed, 10)
    ids = run_ids(loaded)
    view = loaded.run_line_magic("prov", f"compare {' '.join(ids)}")
    page = view._repr_html_()
    seed_row = re.search(r"<tr class='jp-prov4ml-(\w+)'[^>]*><td>seed</td>", page)
    lr_row = re.search(r"<tr class='jp-prov4ml-(\w+)'[^>]*><td>lr</td>", page)
    assert seed_row and seed_row.group(1) == "changed"
    assert lr_row and lr_row.group(1) == "same"
    for row in ("loss [training] final", "loss [training] best (min)", "acc [val] best (max)"):
        assert row in page
    assert "duration" in page and "energy" in page and "CO2" in page
    assert "<svg" in page and "<polyline" in page
    assert "seed" in repr(view)


def test_energy_against_quality(loaded: Any) -> None:
    """`%prov energy --metric loss --name e*`: one point per run against energy and time."""
    for seed in (1, 2):
        train(loaded, f"e{seed}", seed, 10)
    view = loaded.run_line_magic("prov", "energy --metric loss --name e*")
    page = view._repr_html_()
    assert page.count("<svg") == 2
    assert "loss against energy" in page and "loss against time" in page
    assert page.count("<circle") >= 4


def test_diff_code_is_coloured_and_escaped(loaded: Any) -> None:
    """`%prov diff A B` shows the code difference as coloured HTML, markup in code as text."""
    loaded.run_cell("%%provrun --name d1\nx = '<b>old</b>'")
    loaded.run_cell("%%provrun --name d2\nx = '<b>new</b>'")
    first, second = run_ids(loaded)
    page = loaded.run_line_magic("prov", f"diff {first} {second}")._repr_html_()
    assert "background:#e2f5e2" in page and "background:#fbe0e0" in page
    assert "&lt;b&gt;new&lt;/b&gt;" in page and "<b>new</b>" not in page


def test_hostile_metric_and_param_names_stay_text(loaded: Any) -> None:
    """Metric and parameter names shaped as scripts, quotes and DOT syntax are text in the
    plot, the comparison, the summary and the graph (the energy view: tests/cli)."""
    cell = (
        f"%%provrun --name h\nimport jupyter_prov4ml as p4m\n"
        f"p4m.log_param({HOSTILE_PARAM!r}, {HOSTILE_PARAM!r})\n"
        f"for i in range(5):\n    p4m.log_metric({HOSTILE_METRIC!r}, i, step=i)\n"
    )
    assert loaded.run_cell(cell).success
    assert loaded.run_cell(cell).success
    first, second = run_ids(loaded)
    pages = [
        loaded.run_line_magic("prov", f"plot {first} {second}")._repr_html_(),
        loaded.run_line_magic("prov", f"compare {first} {second}")._repr_html_(),
        html_of(loaded),
    ]
    for page in pages:
        assert "<script>" not in page and "<img src=x" not in page
        assert "<b>x</b>" not in page
    assert (
        html.escape(HOSTILE_METRIC) in pages[0]
        or html.escape(HOSTILE_METRIC, quote=True) in pages[0]
    )


@requires_dot
def test_session_graph_of_many_cells_is_folded(loaded: Any) -> None:
    """`%prov graph` of 320 executions of 160 cells has at most 60 nodes; `--full` has all."""
    for index in range(320):
        cell = index % 160
        source = f"v{cell} = {index}" + (f" + v{cell - 1}" if cell and index >= 160 else "")
        loaded.run_cell(source, store_history=True, cell_id=f"cell-{cell:03d}")
    graph = loaded.run_line_magic("prov", "graph")
    assert graph.svg is not None and 1 < graph.svg.count('class="node"') <= 60
    assert len(graph.svg.encode()) <= 150_000
    full = loaded.run_line_magic("prov", "graph --full")
    assert full.svg is not None and full.svg.count('class="node"') >= 160
