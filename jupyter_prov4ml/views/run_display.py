"""What a notebook shows of a run: its summary, then its provenance graph.

Everything shown is rendered here, not by IPython's formatter (which would print a
traceback into the user's output if our repr failed): a failure costs one line.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

from IPython.display import display

from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.views.prov_graph import ProvGraph
from jupyter_prov4ml.views.run_summary import RunSummary

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from jupyter_prov4ml.store.layout import StoredRun

GRAPH_TIMEOUT_S = 60.0


def show_finished_run(
    summary: RunSummary,
    document: Future[ProvDocument] | None,
    notices: Notices,
) -> None:
    """A finished %%provrun: its summary, then (given the document's future) its graph."""
    try:
        display({"text/plain": repr(summary), "text/html": summary._repr_html_()}, raw=True)
    except Exception as error:  # noqa: BLE001 - the run is saved; only its summary is lost
        notices.warn("summary", f"could not show the run's summary ({error!r})")
    if document is None:
        return
    try:
        doc = document.result(timeout=GRAPH_TIMEOUT_S)
        display(ProvGraph.readable(doc, title=summary.run.name, run_id=summary.run.run_id))
    except (FutureTimeout, CancelledError):
        notices.warn("graph", "the provenance graph took too long to build; skipped")
    # A graph is a nicety: whatever goes wrong building it must not fail the user's cell.
    except Exception as error:  # noqa: BLE001
        notices.warn("graph", f"could not draw the provenance graph ({error!r})")
    notices.flush_to_stderr()


def show_stored_run(stored: StoredRun, full: bool = False) -> None:
    """A run read back from the store (`%prov show`): its summary and graph (folded to be
    read in a cell unless `full`)."""
    display(RunSummary(stored.run))
    run = stored.run
    if full:
        display(ProvGraph.of(stored.document(), title=run.name))
    else:
        display(ProvGraph.readable(stored.document(), title=run.name, run_id=run.run_id))
