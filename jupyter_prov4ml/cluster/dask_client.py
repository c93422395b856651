"""The one module that imports `distributed`: imported only once the user's session has
(`cluster_capture` checks `sys.modules`), so importing it costs nothing.

Per run and per client it uses Dask's own machinery: a `distributed.span` around the body
(tags the run's tasks), a WorkerPlugin sampling each worker and streaming its samples with
`log_event` to a topic this client subscribes to (a dead worker's figures survive up to its
last sample), a SchedulerPlugin keeping one row per task of the span, and at the end one
`Client.run` (heartbeat + final figures) and one `run_on_scheduler` (span metrics and rows);
both plugins are removed after. The work is written once, as coroutines: a client that exists
at the cell's start is driven from the kernel's thread with `client.sync`; one the cell creates
is attached by the client preload, on the client's own loop, before its constructor returns.
(The public sync methods would deadlock on that loop, hence the client's async `_run`,
`_run_on_scheduler` and `_register_*_plugin`, guarded by the caller.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from jupyter_prov4ml.cluster import worker_probe
from jupyter_prov4ml.cluster.cluster_figures import RawClusterFigures

# Ship the probe by value: clusters need not have this package installed.
if worker_probe.__name__ not in cloudpickle.list_registry_pickle_by_value():
    cloudpickle.register_pickle_by_value(worker_probe)

_RunWorkerSampler = worker_probe.worker_plugin_class(WorkerPlugin)
_RunTaskLog = worker_probe.scheduler_plugin_class(SchedulerPlugin)
# The longest the start or the end of a run waits for one cluster to answer.
COLLECT_TIMEOUT_S = 10.0


def current_client() -> Any | None:
    """The client the user's code would use now (the default one), None when there is none
    or it is not connected."""
    try:
        client = distributed.Client.current(allow_global=True)
    except ValueError:
        return None
    # Only a connected one: a client reconnecting to a lost scheduler would hold the cell.
    return client if client.status == "running" else None


def enter_span(run_id: str) -> tuple[contextlib.AbstractContextManager[str], str]:
    """`distributed.span` for the run, entered (every graph submitted inside carries it),
    and its id."""
    manager = distributed.span("jupyter-prov4ml", run_id)
    return manager, manager.__enter__()


class ClientWatch:
    """One client's cluster watched during one run."""

    def __init__(self, client: Any, run_id: str, span_id: str | None, started_unix_s: float):
        self.client = client
        self.run_id = run_id
        self.span_id = span_id
        self.name = f"jupyter-prov4ml-{run_id}"
        self.topic = self.name
        self.raw = RawClusterFigures("", "", span_id, started_unix_s)
        self.plugins: list[str] = []
        self.problems: list[str] = []
        self.collected = False

    @property
    def is_async(self) -> bool:
        """An asynchronous client (`Client(asynchronous=True)`): not driven from the kernel's
        thread (its `sync` hands back coroutines)."""
        client = self.client
        return bool(getattr(client, "_asynchronous", getattr(client, "asynchronous", False)))

    def attach_sync(self) -> None:
        """Attach from the kernel's thread (a client that existed when the cell started),
        bounded in time: a cluster that does not answer must not hold the cell."""
        self.client.sync(self.attach, callback_timeout=COLLECT_TIMEOUT_S)

    def collect_sync(self) -> RawClusterFigures:
        """Collect from the kernel's thread, bounded in time."""
        result: RawClusterFigures = self.client.sync(
            self.collect, callback_timeout=COLLECT_TIMEOUT_S
        )
        return result

    async def attach(self) -> None:
        """Subscribe to the samples' topic, ask the scheduler who it is and register both
        plugins, all at once (one round trip's time)."""
        self.client.subscribe_topic(self.topic, self._on_sample)
        sampler = _RunWorkerSampler(self.run_id, self.topic, worker_probe.WORKER_SAMPLE_INTERVAL_S)
        answers: tuple[Any, ...] = await asyncio.gather(
            self.client.scheduler.identity(),
            self.client._register_scheduler_plugin(
                plugin=_RunTaskLog(self.span_id), name=self.name, idempotent=False
            ),
            self.client._register_worker_plugin(plugin=sampler, name=self.name, idempotent=False),
            return_exceptions=True,
        )
        identity, results = answers[0], answers[1:]
        for kind, result in zip(("scheduler", "worker"), results, strict=True):
            if isinstance(result, BaseException):
                self.problems.append(f"{kind} plugin: {result!r}"[:200])
                continue
            self.plugins.append(kind)
            if isinstance(result, dict):  # per worker: a setup that raised is reported
                for reply in result.values():
                    if isinstance(reply, dict) and reply.get("status") == "error":
                        self.problems.append(f"worker plugin setup: {reply.get('exception')}")
        if isinstance(identity, BaseException):
            raise identity
        self.raw.scheduler_id = str(identity.get("id", ""))
        self.raw.scheduler_address = str(identity.get("address", ""))
        for address, info in (identity.get("workers") or {}).items():
            self.raw.known[str(address)] = {
                key: info.get(key) for key in ("name", "host", "nthreads")
            }

    def _on_sample(self, event: Any) -> None:
        """On the client's IO thread: keep each incarnation's latest sample."""
        try:
            _, sample = event
            if isinstance(sample, dict) and sample.get("run_id") == self.run_id:
                self.raw.samples[(str(sample.get("name")), int(sample.get("pid", 0)))] = sample
        except (TypeError, ValueError):
            return

    async def collect(self) -> RawClusterFigures:
        """Final figures of the live workers, the span's metrics and task rows; the plugins
        and the subscription removed. What fails is noted; the rest is kept."""
        if self.collected:
            return self.raw
        self.collected = True
        raw = self.raw
        try:
            if "worker" in self.plugins:
                finals = await self.client._run(
                    worker_probe.final_snapshot, self.name, on_error="return"
                )
                raw.finals = [value for value in finals.values() if isinstance(value, dict)]
            # The scheduler removes its plugin as it answers; the workers' go meanwhile.
            removal = asyncio.ensure_future(self._detach_workers())
            figures = await self.client._run_on_scheduler(
                worker_probe.scheduler_figures, self.span_id, self.name
            )
            self.plugins = [kind for kind in self.plugins if kind != "scheduler"]
            await removal
            raw.metrics = list(figures.get("metrics", ()))
            raw.rows = list(figures.get("rows", ()))
            raw.tasks_dropped = int(figures.get("dropped", 0))
        except Exception as error:  # noqa: BLE001 - a cluster gone mid-run: keep the samples
            self.problems.append(f"collecting: {error!r}"[:200])
        finally:
            raw.ended_unix_s = time.time()
            await self._detach()
        return raw

    async def _detach_workers(self) -> None:
        if "worker" in self.plugins:
            self.plugins.remove("worker")
            with contextlib.suppress(Exception):  # a worker gone: its plugin went with it
                await self.client._unregister_worker_plugin(self.name)

    async def _detach(self) -> None:
        """Whatever is still installed (after a failure midway) removed, and the topic."""
        await self._detach_workers()
        if "scheduler" in self.plugins:
            self.plugins.remove("scheduler")
            with contextlib.suppress(Exception):
                await self.client.scheduler.unregister_scheduler_plugin(name=self.name)
        with contextlib.suppress(ValueError):  # already unsubscribed
            self.client.unsubscribe_topic(self.topic)
