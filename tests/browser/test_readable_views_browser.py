"""In a real browser: a 2,000-step `%%provrun`'s graph and its metric curves are readable in
JupyterLab — every text of the inline graph, the `%prov plot` chart, the `%prov energy` view
and the summary's small curves renders at ≥ 10 CSS px, and each drawing fits the output area's
width (nothing is shrunk to fit, nothing overflows). Checked on the page, with the sizes the
browser computed; no check depends on how long anything takes.

Uses the JupyterLab and Chromium fixtures of test_jupyterlab.py (imported: a conftest.py here
would shadow tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from test_jupyterlab import (
    ARTIFACTS,
    Lab,
    check_ran_cleanly,
    lab,
    open_notebook,
    page,
    reported,
    run_all_cells,
    wait_for_run_all,
)

pytestmark = pytest.mark.browser

__all__ = ["lab", "page"]  # fixtures, used by name

NOTEBOOK = "readable_views.ipynb"
SCREENSHOT = ARTIFACTS / "jupyterlab-readable-views.png"
MIN_TEXT_PX = 10.0

TRAIN = """\
%%provrun --name long-run --param seed=1 --param lr=0.01
import math
import jupyter_prov4ml as p4m
for epoch in p4m.track(range(2000), name="epoch"):
    p4m.log_metric("loss", math.exp(-epoch / 400), step=epoch)
    p4m.log_metric("accuracy", 1 - math.exp(-epoch / 400), step=epoch, context="val")
"""
# The run's id, read from the store the Lab's kernels record to (after a flush).
RUN_ID = """\
%prov flush
import glob, os
run_id = sorted(glob.glob(os.environ["JUPYTER_PROV4ML_STORE"] + "/sessions/*/runs/*.prov.json"))[-1]
run_id = os.path.basename(run_id).split(".")[0]
"""

# For each drawing matched by `selector`: its width, the output area's width, and the smallest
# rendered size of its texts (the font size in user units times the screen scale of the text's
# coordinate system: what the reader sees, after any scaling of the SVG).
MEASURE = """(selector) => Array.from(document.querySelectorAll(selector)).map((svg) => {
    const area = svg.closest('.jp-OutputArea-output');
    const sizes = Array.from(svg.querySelectorAll('text')).map((t) => {
        const matrix = t.getScreenCTM();
        const size = parseFloat(t.getAttribute('font-size') || getComputedStyle(t).fontSize);
        return size * Math.hypot(matrix.a, matrix.b);
    });
    return {
        width: svg.getBoundingClientRect().width,
        area: area ? area.clientWidth : 0,
        texts: sizes.length,
        smallest: sizes.length ? Math.min(...sizes) : 0,
    };
})"""


def measured(page: Any, selector: str) -> list[dict[str, float]]:
    """The drawings matching `selector`, each scrolled into view and measured."""
    locator = page.locator(selector)
    assert locator.count() >= 1, f"nothing matches {selector} on the page"
    for index in range(locator.count()):
        locator.nth(index).scroll_into_view_if_needed()
    return list(page.evaluate(MEASURE, selector))


def check_readable(found: list[dict[str, float]], what: str) -> None:
    for drawing in found:
        assert drawing["texts"] > 0, f"{what}: no text drawn"
        assert drawing["smallest"] >= MIN_TEXT_PX, f"{what}: text renders at {drawing}"
        assert drawing["width"] <= drawing["area"] + 1, f"{what}: wider than its output {drawing}"


def test_long_run_graph_and_curves_are_readable(lab: Lab, page: Any) -> None:
    """A 2,000-step run: its inline graph (a handful of nodes, the loop as one), `%prov plot`
    of its curves, `%prov energy`, and the summary's small curves all render with text of at
    least 10 px, within the output area's width; no output shows a traceback."""
    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext jupyter_prov4ml"),
            new_code_cell(TRAIN),
            new_code_cell(RUN_ID),
            new_code_cell("%prov plot $run_id"),
            new_code_cell("%prov energy --metric loss"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(notebook, lab.root / NOTEBOOK)
    with reported(page, lab, SCREENSHOT):
        open_notebook(page, lab, NOTEBOOK)
        run_all_cells(page)
        wait_for_run_all(page)
        outputs = check_ran_cleanly(page)
        assert "Traceback" not in "\n".join(outputs)
        graphs = measured(page, ".jp-prov4ml-graph svg")
        check_readable(graphs, "the run's graph")
        assert page.locator(".jp-prov4ml-graph svg g.node").count() <= 60
        graph_text = page.locator(".jp-prov4ml-graph svg").first.text_content() or ""
        assert "epoch × 2,000" in graph_text, "the loop is not one node named with its steps"
        check_readable(measured(page, ".jp-prov4ml-plots svg"), "the metric curves")
        check_readable(measured(page, ".jp-prov4ml-energy svg"), "the energy view")
        sparks = page.locator(".jp-prov4ml-summary svg.jp-prov4ml-sparkline")
        assert sparks.count() == 2, "the summary does not draw each metric as a small curve"
