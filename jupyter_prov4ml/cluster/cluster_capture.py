"""A `%%provrun`'s view of the Dask cluster its work runs on: begun before the body, finished
after it, never raising into the user's cell.

`distributed` is touched only when the user's session has imported it (`sys.modules`); then a
client existing at the start is attached and the body runs inside a `distributed.span`. A
client the body creates is attached by the client preload (`distributed.client.preload`),
installed for the cell's duration: in dask's config when dask is imported, else through its
environment variable, which dask reads when it is first imported.
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.cluster.cluster_figures import ClusterResult, cluster_result
from jupyter_prov4ml.settings import EnergyConfig

if TYPE_CHECKING:
    from jupyter_prov4ml.cluster.dask_client import ClientWatch

PRELOAD_ENV = "DASK_DISTRIBUTED__CLIENT__PRELOAD"
# The preload is the text of a tiny module, not our module's name: a Client created where
# this package is not installed (a task's `get_client()` on a remote worker that inherited
# the variable) then simply finds nothing to do, instead of failing to import.
PRELOAD_SOURCE = '''
def dask_setup(client):
    """jupyter_prov4ml: a Client created during a %%provrun cell is watched for the run."""
    try:
        from jupyter_prov4ml.cluster.client_preload import client_started
    except ImportError:
        return None
    return client_started(client)
'''


class PreloadInstalled:
    """Our client preload, added for one cell and removed after, leaving others' in place."""

    def __init__(self) -> None:
        self._config: Any = None
        self._env_before: str | None = None
        self._env_set = False

    def install(self) -> None:
        dask = sys.modules.get("dask")
        config = getattr(dask, "config", None)
        if config is not None:
            current = list(config.get("distributed.client.preload", []) or [])
            self._config = config.set({"distributed.client.preload": [*current, PRELOAD_SOURCE]})
            return
        before = os.environ.get(PRELOAD_ENV)
        try:
            existing = list(ast.literal_eval(before)) if before else []
        except (ValueError, SyntaxError, TypeError):
            return  # someone's own setting we cannot read: left alone
        self._env_before, self._env_set = before, True
        os.environ[PRELOAD_ENV] = repr([*existing, PRELOAD_SOURCE])

    def remove(self) -> None:
        if self._config is not None:
            self._config.__exit__(None, None, None)
            self._config = None
        if self._env_set:
            if self._env_before is None:
                os.environ.pop(PRELOAD_ENV, None)
            else:
                os.environ[PRELOAD_ENV] = self._env_before
            self._env_set = False
            # Dask imported during the cell read the variable into its config: taken out
            # there too, so that later clients outside a run are left alone.
            config = getattr(sys.modules.get("dask"), "config", None)
            if config is not None:
                current = list(config.get("distributed.client.preload", []) or [])
                if PRELOAD_SOURCE in current:
                    kept = [entry for entry in current if entry != PRELOAD_SOURCE]
                    config.set({"distributed.client.preload": kept})


class ClusterCapture:
    """The Dask side of one run (kernel thread, except `client_started`)."""

    def __init__(self, run_id: str, warn: Callable[[str, str], None]) -> None:
        self.run_id = run_id
        self.warn = warn
        self.started_unix_s = time.time()
        self.preload = PreloadInstalled()
        self.span: contextlib.AbstractContextManager[str] | None = None
        self.span_id: str | None = None
        self.watches: list[ClientWatch] = []

    @classmethod
    def begin(cls, run_id: str, warn: Callable[[str, str], None]) -> ClusterCapture:
        """Start watching: the preload for clients to come, and the current client if the
        session uses `distributed` already. Failures are told in one line, never raised."""
        capture = cls(run_id, warn)
        try:
            capture.preload.install()
            if "distributed" in sys.modules:
                from jupyter_prov4ml.cluster import dask_client

                capture.span, capture.span_id = dask_client.enter_span(run_id)
                client = dask_client.current_client()
                if client is not None:
                    capture._attach_now(client)
        except Exception as error:  # noqa: BLE001 - the cell runs without cluster capture
            warn("dask", f"Dask cluster capture unavailable ({error!r})")
        return capture

    def _attach_now(self, client: Any) -> None:
        from jupyter_prov4ml.cluster import dask_client

        watch = dask_client.ClientWatch(client, self.run_id, self.span_id, self.started_unix_s)
        if watch.is_async:
            self.warn("dask", "an asynchronous Dask client is not captured by %%provrun")
            return
        self.watches.append(watch)
        watch.attach_sync()

    def client_started(self, client: Any) -> Awaitable[None] | None:
        """A Client was created during the run (the preload, on the client's loop): attach
        before its constructor returns, so its first tasks are seen."""
        if any(watch.client is client for watch in self.watches):
            return None
        from jupyter_prov4ml.cluster import dask_client

        watch = dask_client.ClientWatch(client, self.run_id, self.span_id, self.started_unix_s)
        if watch.is_async:
            self.warn("dask", "an asynchronous Dask client is not captured by %%provrun")
            return None
        self.watches.append(watch)
        return self._attach_quietly(watch)

    async def _attach_quietly(self, watch: ClientWatch) -> None:
        try:
            await watch.attach()
        except Exception as error:  # noqa: BLE001 - the client works on without us
            watch.problems.append(f"attach: {error!r}"[:200])

    def finish(self, energy: EnergyConfig) -> ClusterResult:
        """Collect every watched cluster (the first one is the run's), remove what was
        installed, and turn the figures into records. Never raises."""
        results: list[ClusterResult] = []
        try:
            for watch in self.watches:
                raw = self._collect(watch)
                for problem in watch.problems[:3]:
                    self.warn("dask", f"Dask capture: {problem}")
                if raw is not None and raw.scheduler_id:
                    result = cluster_result(raw, energy)
                    # A cell that ran nothing on the cluster (a client merely connected)
                    # records no cluster.
                    if result.task_groups or any(w.status == "lost" for w in result.workers):
                        results.append(result)
        except Exception as error:  # noqa: BLE001 - the run is saved without its cluster
            self.warn("dask", f"Dask figures incomplete ({error!r})")
        finally:
            self.close()
        return results[0] if results else ClusterResult()

    def _collect(self, watch: ClientWatch) -> Any:
        if watch.collected:
            return watch.raw
        if watch.client.status in ("closing", "closed"):
            watch.problems.append("the client closed during the run: streamed samples only")
            watch.collected = True
            watch.raw.ended_unix_s = time.time()
            return watch.raw
        return watch.collect_sync()

    def latest_samples(self) -> list[tuple[dict[str, Any], str]]:
        """Each worker incarnation's latest figures and state (`running`; after the end `ok`
        or `lost`), for the live view (sampler thread: the dicts are copied first)."""
        latest: list[tuple[dict[str, Any], str]] = []
        for watch in list(self.watches):
            try:
                samples = dict(watch.raw.samples)
                finals = list(watch.raw.finals)
            except RuntimeError:  # changed while copied (the client's IO thread): next time
                continue
            for sample in finals:
                samples[(str(sample.get("name")), int(sample.get("pid", 0)))] = sample
            for _, sample in sorted(samples.items(), key=lambda item: item[0]):
                if not watch.collected:
                    state = "running"
                elif sample.get("final") is True:
                    state = "ok"
                else:
                    state = "lost"
                latest.append((sample, state))
        return latest

    def close(self) -> None:
        """Leave the span and remove the preload (also after a failed finish)."""
        if self.span is not None:
            with contextlib.suppress(Exception):
                self.span.__exit__(None, None, None)
            self.span = None
        self.preload.remove()
