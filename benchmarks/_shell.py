"""An isolated, real IPython shell for in-process benchmarks, and the extension's handles on it.

Built the way tests/conftest.py builds it: a fresh `InteractiveShell` singleton, history in an
in-memory SQLite database, displays captured, the store and working directory in a temp folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _report import BenchmarkError
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

STORE_ENV = "JUPYTER_PROV4ML_STORE"  # the documented variable; not imported, so a broken
EXTENSION_ATTR = "_jupyter_prov4ml"  # package still gets as far as a readable error
WRITER_THREAD = "jupyter-prov4ml-writer"


@contextlib.contextmanager
def isolated_shell() -> Iterator[Any]:
    """A brand-new shell singleton; the extension is unloaded and everything restored after."""
    old_cwd = os.getcwd()
    old_store = os.environ.get(STORE_ENV)
    with tempfile.TemporaryDirectory(prefix="prov4ml-bench-") as tmp:
        os.environ[STORE_ENV] = str(Path(tmp) / "store")
        os.chdir(tmp)
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        InteractiveShell.clear_instance()
        shell = InteractiveShell.instance(
            config=config, display_pub_class=CapturingDisplayPublisher
        )
        try:
            yield shell
        finally:
            if getattr(shell, EXTENSION_ATTR, None) is not None:
                unload_extension(shell)
            shell.history_manager.end_session()
            InteractiveShell.clear_instance()
            os.chdir(old_cwd)
            if old_store is None:
                os.environ.pop(STORE_ENV, None)
            else:
                os.environ[STORE_ENV] = old_store


def _run_quietly(shell: Any, source: str) -> tuple[Any, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = shell.run_cell(source)
    return result, out.getvalue()


def load_extension(shell: Any) -> Any:
    """`%load_ext jupyter_prov4ml` from a cell, as a user does; returns the extension object."""
    result, printed = _run_quietly(shell, "%load_ext jupyter_prov4ml")
    extension = getattr(shell, EXTENSION_ATTR, None)
    if not result.success or extension is None:
        raise BenchmarkError(
            f"%load_ext jupyter_prov4ml failed: {result.error_in_exec!r}\n{printed[-2000:]}"
        )
    return extension


def unload_extension(shell: Any) -> float:
    """`%unload_ext jupyter_prov4ml` from a cell; returns how long it took in seconds."""
    start = time.perf_counter()
    result, printed = _run_quietly(shell, "%unload_ext jupyter_prov4ml")
    elapsed = time.perf_counter() - start
    if not result.success:
        raise BenchmarkError(f"%unload_ext failed: {result.error_in_exec!r}\n{printed[-2000:]}")
    return elapsed


def run_cells(shell: Any, source: str, count: int, store_history: bool) -> float:
    """Run `source` `count` times back to back; seconds per cell (the mean)."""
    run_cell = shell.run_cell
    start = time.perf_counter()
    for _ in range(count):
        run_cell(source, store_history=store_history)
    return (time.perf_counter() - start) / count


def time_cells(shell: Any, source: str, count: int, store_history: bool) -> list[float]:
    """Run `source` `count` times back to back; the seconds each cell took.

    Per-cell times let a median drop the multi-millisecond stalls a shared VM throws in.
    """
    run_cell = shell.run_cell
    clock = time.perf_counter
    times = []
    for _ in range(count):
        start = clock()
        run_cell(source, store_history=store_history)
        times.append(clock() - start)
    return times


def set_hooks(shell: Any, extension: Any, on: bool) -> None:
    """Register or unregister the extension's two cell hooks, leaving all its other state (its
    session, its writer) as is: a bare-cell baseline at any session length."""
    for event, callback in (
        ("pre_run_cell", extension.pre_run_cell),
        ("post_run_cell", extension.post_run_cell),
    ):
        registered = callback in shell.events.callbacks[event]
        if on and not registered:
            shell.events.register(event, callback)
        elif not on and registered:
            shell.events.unregister(event, callback)


def drain_writer(extension: Any) -> float:
    """Wait until the store writer thread has written everything queued; seconds waited.

    Uses the writer's own flush without the session PROV document, so the wait is the cost of
    what the recorded cells queued, not of re-deriving the whole session.
    """
    start = time.perf_counter()
    if not extension.writer.flush(timeout_s=60.0):
        raise BenchmarkError("the store writer did not drain within 60 s")
    return time.perf_counter() - start


def writer_thread_cpu_s() -> float | None:
    """CPU seconds used so far by the live store writer thread (None if there is none)."""
    for thread in threading.enumerate():
        if thread.name == WRITER_THREAD and thread.ident is not None:
            try:
                return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, AttributeError):  # not Linux, or the thread just ended
                return None
    return None
