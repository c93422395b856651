"""`%%provrun`: run a cell body as a normal cell would, with full capture around it."""

from __future__ import annotations

import sys
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.capture.params import literal_assignments, merge_params
from jupyter_prov4ml.capture.progress import Checkpointer
from jupyter_prov4ml.capture.recorder import OpenWindow, link_fields, result_error, status_of
from jupyter_prov4ml.capture.run_capture import RunSeries, StepContext, finish_steps
from jupyter_prov4ml.capture.seeds import SeedWatch, randomness_of
from jupyter_prov4ml.cluster.cluster_capture import ClusterCapture
from jupyter_prov4ml.cluster.cluster_figures import ClusterResult
from jupyter_prov4ml.hardware.sampler import DEFAULT_INTERVAL_S, SampleColumns, Sampler
from jupyter_prov4ml.kernel.child_processes import ChildProcesses
from jupyter_prov4ml.kernel.monitor_client import MonitorHandle
from jupyter_prov4ml.records import CellRun, Param, Status
from jupyter_prov4ml.views.cluster_summary import live_worker_rows
from jupyter_prov4ml.views.live_monitor import LiveMonitor, live_view_supported
from jupyter_prov4ml.views.run_summary import summary_curves

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware.meter import WindowStart
    from jupyter_prov4ml.kernel.extension import ProvExtension


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
    latest_metrics: tuple[tuple[str, str, float], ...] = ()
    stale_inputs: tuple[str, ...] = ()
    # Each metric's points thinned for the summary's small curves (name, context, values).
    curves: tuple[tuple[str, str, tuple[float, ...]], ...] = ()


def run_captured(ext: ProvExtension, options: ProvrunOptions, body: str) -> CapturedRun | None:
    """Run `body` in the user's namespace with the sampler on, and record it as one run.

    The body goes through `shell.run_cell`, so it behaves exactly like a cell (magics, display
    of the last expression, IPython's own traceback). Its error is handed to the enclosing
    cell's result, so the front end and nbclient see the cell fail as they would without us.
    None when our own code failed around the body (told in one line; the body still ran and
    the cell is recorded as a plain cell, or as far as the capture got).
    """
    if ext.provrun_depth:
        # One run per cell: an inner %%provrun would share the outer one's window and id.
        ext.notices.warn(
            "provrun-nested",
            "a %%provrun inside a %%provrun is not recorded as a run of its own: "
            "its body ran, and is part of the outer run",
        )
        _run_body(ext.shell, body)
        return None
    ext.provrun_depth += 1
    try:
        window = ext.recorder.current
        if window is not None and not window.closed:
            return _run_in_window(ext, options, body, window)
        window = ext.recorder.open_detached(f"%%provrun\n{body}")
        with ext.recorder.detached(window):
            return _run_in_window(ext, options, body, window)
    finally:
        ext.provrun_depth -= 1


@dataclass
class _Capturing:
    """What is running around the body: made before it, finished after it."""

    params: tuple[Param, ...]
    capture: RunCapture
    energy_start: WindowStart
    sampler: Sampler
    monitor: LiveMonitor | None
    seeds: SeedWatch
    cluster: ClusterCapture | None = None
    children: ChildProcesses | None = None
    # The monitor process sampling the run from outside the kernel (None: the sampler alone).
    outside: MonitorHandle | None = None


def _run_in_window(
    ext: ProvExtension, options: ProvrunOptions, body: str, window: OpenWindow
) -> CapturedRun | None:
    shell = ext.shell
    # A fault boundary on each side of the body: our failure must neither keep the user's
    # code from running nor change how it ended.
    try:
        capturing: _Capturing | None = _start(ext, options, body, window)
    except Exception as bug:  # noqa: BLE001
        ext.notices.warn("provrun-start", f"%%provrun capture unavailable ({bug!r}); ran without")
        capturing = None
    outer = getattr(shell.displayhook, "exec_result", None)
    error: BaseException | None = None
    try:
        error = _run_body(shell, body)
    except BaseException as raised:  # KeyboardInterrupt arriving outside the body
        error = raised
        raise
    finally:
        finished = None
        if capturing is not None:
            try:
                finished = _finish(ext, options, window, capturing, error, outer)
            except Exception as bug:  # noqa: BLE001
                ext.notices.warn(
                    "provrun-finish",
                    f"%%provrun could not complete its record ({bug!r}); saved what it could",
                )
                finished = _finish_plainly(ext, options, window, capturing, error, outer)
    return finished


def _run_body(shell: Any, body: str) -> BaseException | None:
    """Run `body` as a cell would run, and hand its error (if any) to the enclosing cell's
    result, so the front end sees the cell fail as it would without us."""
    outer = getattr(shell.displayhook, "exec_result", None)
    error: BaseException | None = None
    try:
        error = result_error(shell.run_cell(body, store_history=False))
    finally:
        shell.displayhook.exec_result = outer
        if error is not None and outer is not None and result_error(outer) is None:
            outer.error_in_exec = error
    return error


def _start(
    ext: ProvExtension, options: ProvrunOptions, body: str, window: OpenWindow
) -> _Capturing:
    shell = ext.shell
    # papermill's injected values first: the line and the body say what this run changed.
    injected = ext.injected_params()
    params = merge_params(list(injected), list(options.params), literal_assignments(body))
    ext.writer.opened(
        window,
        "provrun",
        {
            "name": options.name,
            "params": [asdict(param) for param in params],
            "interval_s": options.interval_s,
            "execution_count": shell.execution_count,
        },
    )
    capture = window.capture = window.capture or ext.new_capture()
    energy_start = ext.meter.begin()
    children = ChildProcesses.begin(ext, window.run_id)
    sampler = Sampler(
        ext.host_reader, ext.gpu, ext.notices, options.interval_s, tree=children.sampler()
    )
    # Subscribed first: the journal matters more than the view, and is cheap.
    checkpointer = Checkpointer(
        window.run_id,
        lambda: sampler.samples,
        capture,
        ext.writer.progress,
        window.started_cpu_ns,
        ext.checkpoint_period_s,
    )
    sampler.subscribe(
        checkpointer.on_tick,
        "crash checkpoints stopped; the run is still saved when it ends",
    )
    monitor = _live_monitor(ext, options) if options.live else None
    if monitor is not None:
        monitor.watch(capture)
        sampler.subscribe(monitor.on_tick)
    sampler.start()
    outside = ext.monitor_for_run()
    if outside is not None and not outside.begin_run(
        window.run_id, options.interval_s, sampler.t0_ns / 1e9
    ):
        outside = None
    # Never raises: a Dask cluster's failure costs the run only its cluster figures.
    ext.cluster_capture = ClusterCapture.begin(window.run_id, ext.notices.warn)
    if monitor is not None:
        latest, watts = ext.cluster_capture.latest_samples, ext.meter.config.watts_per_core
        monitor.watch_cluster(lambda: live_worker_rows(latest, watts))
    children.lend_spool(ext)
    # Last: nothing after it can fail and leave the seeding functions wrapped.
    seeds = SeedWatch()
    seeds.start(sys.modules)
    return _Capturing(
        params,
        capture,
        energy_start,
        sampler,
        monitor,
        seeds,
        ext.cluster_capture,
        children,
        outside,
    )


def _finish(
    ext: ProvExtension,
    options: ProvrunOptions,
    window: OpenWindow,
    capturing: _Capturing,
    error: BaseException | None,
    outer: Any,
) -> CapturedRun:
    sampler, capture = capturing.sampler, capturing.capture
    capturing.seeds.stop()
    samples = sampler.stop()
    if capturing.outside is not None:
        # Where the sampler thread could not run (a C call holding the GIL), the monitor did.
        samples = capturing.outside.end_run(window.run_id, samples, sampler.interval_s)
    cluster = _cluster_result(ext, capturing)
    children = capturing.children
    children_cpu_s = children.finish(ext, capture) if children is not None else None
    energy = ext.meter.end(capturing.energy_start, samples, children_cpu_s or 0.0)
    steps = finish_steps(
        capture,
        StepContext(samples, sampler.t0_ns, len(ext.gpu.devices), ext.meter.config),
    )
    outcome = _Outcome.of(ext, error, outer, capture)
    links = ext.recorder.link(window, outcome.execution_count, outcome.status == "ok")
    run = _close(
        ext,
        options,
        window,
        capturing,
        outcome,
        hardware=samples.summary(sampler.interval_s),
        energy=energy,
        steps=steps.documented,
        steps_total=steps.total,
        loops=steps.loops,
        artifacts=tuple(capture.artifacts),
        **link_fields(links),
        **_context_fields(ext, capturing),
        **cluster.record_fields(),
    )
    if children_cpu_s is not None:
        # The run's CPU is its process tree's; the kernel's own share stays beside it.
        run = replace(
            run, cpu_time_s=run.cpu_time_s + children_cpu_s, kernel_cpu_time_s=run.cpu_time_s
        )
    watts = ext.meter.config.watts_per_core
    series = RunSeries(capture.metrics, samples, steps.raw, watts, cluster.task_columns)
    future = ext.writer.submit_run(run, series)
    if capturing.monitor is not None:
        capturing.monitor.freeze(run, sampler.latest)
    latest = tuple((name, context, last) for name, context, last, _ in capture.metrics.latest())
    stale = tuple(ext.recorder.lineage.stale_inputs(run.reads)) if links is not None else ()
    curves = summary_curves(capture.metrics)
    return CapturedRun(run, future, latest, stale, curves)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How the body ended, as the record states it."""

    status: Status
    error_type: str | None
    execution_count: int | None

    @classmethod
    def of(
        cls, ext: ProvExtension, error: BaseException | None, outer: Any, capture: RunCapture
    ) -> _Outcome:
        # A framework's own report (integrations/) can say more than the body's error.
        status, error_type = capture.outcome(*status_of(error))
        count = getattr(outer, "execution_count", None) or ext.shell.execution_count
        return cls(status, error_type, count)


def _close(
    ext: ProvExtension,
    options: ProvrunOptions,
    window: OpenWindow,
    capturing: _Capturing,
    outcome: _Outcome,
    **details: Any,
) -> CellRun:
    """The run's record (closing its window), with `details` beyond status and parameters."""
    return ext.recorder.close(
        window,
        "provrun",
        outcome.status,
        outcome.error_type,
        outcome.execution_count,
        name=options.name,
        params=merge_params(list(capturing.params), capturing.capture.params),
        **details,
    )


def _finish_plainly(
    ext: ProvExtension,
    options: ProvrunOptions,
    window: OpenWindow,
    capturing: _Capturing,
    error: BaseException | None,
    outer: Any,
) -> CapturedRun | None:
    """The run without what failed to finish (hardware, energy, steps, lineage): its status,
    parameters, samples and metrics as far as they go."""
    try:
        capturing.seeds.stop()
        capturing.sampler.stop()
        if capturing.outside is not None:
            capturing.outside.end_run(window.run_id, SampleColumns(), capturing.sampler.interval_s)
        if capturing.children is not None:
            capturing.children.finish(ext, capturing.capture)
        if capturing.cluster is not None:
            ext.cluster_capture = None
            capturing.cluster.close()
        outcome = _Outcome.of(ext, error, outer, capturing.capture)
        run = _close(ext, options, window, capturing, outcome)
        series = RunSeries(capturing.capture.metrics, capturing.sampler.samples)
        return CapturedRun(run, ext.writer.submit_run(run, series))
    except Exception:  # noqa: BLE001 - already told once; the cell stays a plain cell
        return None


def _cluster_result(ext: ProvExtension, capturing: _Capturing) -> ClusterResult:
    """The run's Dask cluster figures (empty without one); never raises."""
    cluster, ext.cluster_capture = capturing.cluster, None
    return cluster.finish(ext.meter.config) if cluster is not None else ClusterResult()


def _context_fields(ext: ProvExtension, capturing: _Capturing) -> dict[str, Any]:
    """The run's context, randomness, models and data inputs (each optional: what failed is
    told once and left out, the run is recorded all the same)."""
    fields: dict[str, Any] = {
        "models": tuple(capturing.capture.models),
        "inputs": tuple(capturing.capture.inputs),
    }
    try:
        fields["randomness"] = randomness_of(capturing.seeds.calls, sys.modules)
    except Exception as error:  # noqa: BLE001
        ext.notices.warn("randomness", f"the run's seeds were not recorded ({error!r})")
    try:
        fields["context"] = ext.run_context()
    except Exception as error:  # noqa: BLE001
        ext.notices.warn("context", f"the run's environment was not recorded ({error!r})")
    return fields


def _live_monitor(ext: ProvExtension, options: ProvrunOptions) -> LiveMonitor | None:
    """The dashboard, where a notebook front end can show it; a failure only loses the view."""
    if not live_view_supported(ext.shell):
        return None
    try:
        monitor = LiveMonitor(
            title=f"%%provrun {options.name or ''}".strip(),
            gpus=ext.gpu.devices,
            watts_per_core=ext.meter.config.watts_per_core,
            carbon_intensity_g_per_kwh=ext.meter.config.carbon_intensity_g_per_kwh,
            cpu_count=ext.host.cpu_count_logical,
        )
        monitor.show()
    except Exception as error:  # noqa: BLE001 - the dashboard is optional, the run is not
        ext.notices.warn("live", f"live dashboard unavailable ({error!r})")
        return None
    return monitor
