"""`%%provrun`: run a cell body as a normal cell would, with full capture around it."""

from __future__ import annotations

import html
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .params import literal_assignments, merge_params
from .records import CellRun, Param
from .recorder import result_error, status_of
from .sampling import DEFAULT_INTERVAL_S, Sampler

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from ._extension import ProvExtension


@dataclass(frozen=True, slots=True)
class ProvrunOptions:
    """What the `%%provrun` line asked for."""

    name: str | None = None
    params: tuple[Param, ...] = ()
    interval_s: float = DEFAULT_INTERVAL_S
    graph: bool = True
    live: bool = True


@dataclass(frozen=True, slots=True)
class CapturedRun:
    run: CellRun
    document: Future[ProvDocument]


def run_captured(ext: ProvExtension, options: ProvrunOptions, body: str) -> CapturedRun:
    """Run `body` in the user's namespace with the sampler on, and record it as one run.

    The body goes through `shell.run_cell`, so it behaves exactly like a cell (magics, display
    of the last expression, IPython's own traceback). Its error is handed to the enclosing
    cell's result, so the front end and nbclient see the cell fail as they would without us.
    """
    shell = ext.shell
    window = ext.recorder.current
    if window is None or window.closed:
        window = ext.recorder.open_detached(f"%%provrun\n{body}")
    params = merge_params(list(options.params), literal_assignments(body))
    ext.writer.opened(window.run_id, "provrun", window.sha256, window.cell_id, window.started_unix_s)
    sampler = Sampler(ext.host_reader, ext.notices, options.interval_s)
    sampler.start()
    outer = getattr(shell.displayhook, "exec_result", None)
    error: BaseException | None = None
    try:
        nested = shell.run_cell(body, store_history=False)
        error = result_error(nested)
    except BaseException as raised:  # KeyboardInterrupt arriving outside the body
        error = raised
        raise
    finally:
        shell.displayhook.exec_result = outer
        samples = sampler.stop()
        status, error_type = status_of(error)
        if error is not None and outer is not None and result_error(outer) is None:
            outer.error_in_exec = error
        count = getattr(outer, "execution_count", None) or shell.execution_count
        run = ext.recorder.close(
            window,
            "provrun",
            status,
            error_type,
            count,
            name=options.name,
            params=params,
            host=samples.summary(sampler.interval_s),
        )
        future = ext.writer.submit_run(run, {"host_samples": samples.columns})
    return CapturedRun(run, future)


@dataclass(frozen=True)
class RunSummary:
    """The few lines shown under a `%%provrun` cell."""

    run: CellRun

    def facts(self) -> list[tuple[str, str]]:
        run = self.run
        facts = [
            ("run", f"{run.name or 'provrun'} · {run.run_id}"),
            ("status", run.status + (f" ({run.error_type})" if run.error_type else "")),
            ("duration", f"{run.wall_time_s:.3f} s wall, {run.cpu_time_s:.3f} s CPU"),
        ]
        host = run.host
        if host and host.process_rss_bytes:
            facts.append(("peak RSS", f"{host.process_rss_bytes.max / 2**20:.1f} MiB"))
        if host and host.process_cpu_percent:
            cpu = host.process_cpu_percent
            facts.append(("process CPU", f"mean {cpu.mean:.0f} %, max {cpu.max:.0f} %"))
        if host:
            facts.append(("samples", f"{host.sample_count} at {1 / host.interval_s:g} Hz"))
        if run.params:
            facts.append(("params", ", ".join(f"{p.name}={p.value!r}" for p in run.params)))
        return facts

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self.facts()
        )
        return f"<table class='jp-prov4ml-summary'>{rows}</table>"

    def __repr__(self) -> str:
        return "\n".join(f"{k:>12}: {v}" for k, v in self.facts())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
