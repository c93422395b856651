"""ProvExtension: the one object that owns the extension's state in a kernel.

It owns the recorder, the store writer and the host/GPU probes, registers the magics and
cell hooks on load, and removes exactly those on unload.
"""

from __future__ import annotations

import atexit
import dataclasses
import getpass
import os
import secrets
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_prov4ml.capture.data_inputs import describe_input
from jupyter_prov4ml.capture.environment import captured_environment
from jupyter_prov4ml.capture.injected import InjectedParameters
from jupyter_prov4ml.capture.metrics import MetricError
from jupyter_prov4ml.capture.models import ModelError, describe_model, save_model
from jupyter_prov4ml.capture.progress import CHECKPOINT_PERIOD_S
from jupyter_prov4ml.capture.recorder import Recorder
from jupyter_prov4ml.capture.run_capture import RunCapture, artifact_name_ok
from jupyter_prov4ml.hardware.energy import RaplReader
from jupyter_prov4ml.hardware.gpu import open_gpu_probe
from jupyter_prov4ml.hardware.host import host_facts, open_host_reader
from jupyter_prov4ml.hardware.meter import EnergyMeter
from jupyter_prov4ml.identity import notebook_path
from jupyter_prov4ml.kernel.context_probe import ContextProbe
from jupyter_prov4ml.kernel.monitor_client import MonitorHandle
from jupyter_prov4ml.kernel.shutdown_hook import KernelShutdownHook
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import RunContext, SessionInfo
from jupyter_prov4ml.redaction import is_secret_name
from jupyter_prov4ml.settings import EnergyConfig, Settings
from jupyter_prov4ml.store.files import make_private_dirs
from jupyter_prov4ml.store.guard import private_fallback, store_problems
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.recovery import recover_store
from jupyter_prov4ml.store.writer import StoreWriter
from jupyter_prov4ml.views.lineage_graph import SessionLineage

if TYPE_CHECKING:
    from jupyter_prov4ml.cluster.cluster_capture import ClusterCapture
    from jupyter_prov4ml.records import Artifact, DataInput, ModelSummary, Param

T = TypeVar("T")

# After this many consecutive failures inside our own hook, recording turns itself off
# rather than costing the user a warning on every cell.
MAX_HOOK_FAILURES = 3
# The longest a cell waits at its start for the previous cell's close to be written.
CLOSE_WAIT_S = 0.1
_SOFTWARE = ("jupyter_prov4ml", "ipython", "ipykernel", "prov", "psutil", "nvidia-ml-py")


def new_session_id() -> str:
    """Sortable and unique across kernels sharing a store: time, then 48 random bits."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def package_versions(names: tuple[str, ...] = _SOFTWARE) -> tuple[tuple[str, str], ...]:
    found = [("python", sys.version.split()[0])]
    for name in names:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(found)


class ProvExtension:
    """Everything `%load_ext jupyter_prov4ml` sets up in one kernel."""

    def __init__(self, shell: Any, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.shell = shell
        self.notices = Notices()
        self.host = host_facts()
        self.host_reader = open_host_reader()
        self.gpu = open_gpu_probe()
        self.settings = Settings.from_environ(environ, Path.cwd(), self.notices.warn)
        self.meter = EnergyMeter(self.gpu, RaplReader(), self.settings.energy)
        self.notebook_path = notebook_path(getattr(shell, "user_ns", {}))
        self.session = SessionInfo(
            session_id=new_session_id(),
            user=_user_name(),
            started_at_unix_s=time.time(),
            software=package_versions(),
            hostname=self.host.hostname,
            platform=self.host.platform,
            cpu_model=self.host.cpu_model,
            cpu_count_logical=self.host.cpu_count_logical,
            memory_total_bytes=self.host.memory_total_bytes,
            gpus=tuple(info.name for info in self.gpu.devices),
            notebook_path=self.notebook_path,
            environment=captured_environment(environ),
        )
        self.store, self.writer = self._open_store(self.settings.store_root, environ)
        self.recorder = Recorder(
            self.session.session_id,
            self.writer,
            self.notebook_path,
            self.meter.config,
            namespace=getattr(shell, "user_ns", None),
            on_error=self._lineage_failed,
        )
        self.writer.take_from(self.recorder)
        # How many levels of nested `track` loops become step activities (the rest are counted).
        self.step_depth = 1
        # How often a running %%provrun journals its progress (the most a killed kernel loses).
        self.checkpoint_period_s = CHECKPOINT_PERIOD_S
        # How many %%provrun cells are running (a body may hold another one).
        self.provrun_depth = 0
        # The running %%provrun's Dask capture, which a Client created in its body finds
        # through the client preload (cluster/client_preload.py).
        self.cluster_capture: ClusterCapture | None = None
        # The monitor process outside the kernel (kernel/monitor_client.py), started by the
        # first %%provrun; None before, or where it cannot run (then the sampler thread alone).
        self.monitor: MonitorHandle | None = None
        self._monitor_unavailable = False
        self._hook_failures = 0
        self._begin_ok = True
        self._probe_to_start = True
        self._shutdown_hook = KernelShutdownHook(shell, self.close_writer)
        self._magics: Any = None
        # papermill's injected parameters, read from the session's input history.
        self.injected = InjectedParameters()
        # The package list and git state, read once in the background: started when the
        # cell that loaded us has ended (started during the load, it made it ~80 ms slower).
        self.context_probe = ContextProbe(
            self.session.session_id, _notebook_folder(self.notebook_path), self.notices
        )

    # -- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        from jupyter_prov4ml.kernel.magics import ProvMagics

        self.writer.start()
        self._magics = ProvMagics(self.shell, self)
        self.shell.register_magics(self._magics)
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        self.recorder.trees.attach(self.shell.compile)
        self._shutdown_hook.install()
        atexit.register(self.close_writer)

    def unload(self) -> None:
        """Undo exactly what `load` did, after writing what is pending."""
        self._unregister_hooks()
        self.recorder.trees.detach()
        if self._magics is not None:
            _unregister_magics(self.shell, self._magics)
            self._magics = None
        self._shutdown_hook.remove()
        atexit.unregister(self.close_writer)
        self.close_writer()
        self.gpu.close()
        self.host_reader.close()

    def close_writer(self) -> None:
        self.stop_monitor()
        if not self.writer.close():
            self.notices.warn("unwritten", self.unwritten_message())
        self.notices.flush_to_stderr()

    def flush(self) -> str:
        """Write what is queued; what `%prov flush` says about it, truthfully."""
        if self.writer.flush():
            return f"jupyter_prov4ml: everything recorded is written to {self.store.root}"
        return self.unwritten_message()

    def unwritten_message(self) -> str:
        pending = self.writer.pending_count
        return (
            f"jupyter_prov4ml: {pending} record(s) not yet written to {self.store.root}"
            " (see the warning above); kept in memory and retried"
            if pending
            else f"jupyter_prov4ml: the store {self.store.root} did not answer in time"
        )

    def store_for_reading(self) -> Store:
        """The store, with what this kernel has queued written first, so a listing or a
        lookup sees this session's own latest runs."""
        self.writer.flush()
        return self.store

    def banner(self) -> str:
        gpus = self.gpu.describe()
        return (
            f"jupyter_prov4ml: recording to {self.store.root} · "
            f"CPU: {self.host.describe()} · GPU: {gpus}"
        )

    def set_energy_config(self, config: EnergyConfig) -> None:
        self.meter = EnergyMeter(self.gpu, self.meter.rapl, config)
        self.recorder.energy_config = config

    def _open_store(self, root: Path, environ: Mapping[str, str]) -> tuple[Store, StoreWriter]:
        """The store at `root` (or the user's private one, when `root` is not safe to record
        into) and a writer for this session into it (not started)."""
        store = Store(
            self._safe_root(root, environ), self.settings.store_modes, self._store_damaged
        )
        return store, StoreWriter(store, self.session, self.notices, recover=recover_store)

    def _safe_root(self, root: Path, environ: Mapping[str, str]) -> Path:
        """`root`, or the user's private store when `root` is not safe to record into."""
        problems = store_problems(root, self.settings.store_modes)
        if not problems:
            return root
        fallback = private_fallback(environ)
        self.notices.warn(
            "store-unsafe",
            f"NOT recording into {root}: {'; '.join(problems)}. Anyone who can write there "
            f"could read or change your provenance. Recording into {fallback} instead.",
        )
        return fallback

    def _store_damaged(self, message: str) -> None:
        self.notices.warn("store-damaged", message)

    def set_store(self, root: Path) -> None:
        """Switch to another store: what is pending goes to the old one first."""
        self.stop_monitor()  # it records into the old store; the next %%provrun starts one
        self.writer.close()
        self.store, self.writer = self._open_store(root, os.environ)
        self.recorder.rebind(self.writer)
        self.writer.take_from(self.recorder)
        self.writer.start()

    def monitor_for_run(self) -> MonitorHandle | None:
        """The session's monitor process, started on first use (or again, should it have
        died); None where it cannot run, said once: the sampler thread alone remains."""
        if self._monitor_unavailable:
            return None
        if self.monitor is not None and self.monitor.alive():
            return self.monitor
        try:
            self.monitor = MonitorHandle.start(self.store, self.session.session_id)
        except Exception as error:  # noqa: BLE001 - the run goes on with the sampler thread
            self._monitor_unavailable = True
            self.notices.warn(
                "monitor",
                f"no monitor process ({error}); runs are sampled in the kernel only, so a C "
                "call holding the GIL pauses sampling and a crash is found later",
            )
            return None
        return self.monitor

    def stop_monitor(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.stop()

    # -- display -----------------------------------------------------------------------------

    def status_line(self) -> str:
        pending = self.writer.pending_count + self.recorder.unsettled
        return f"jupyter_prov4ml: session {self.session.session_id}, store {self.store.root}" + (
            f", {pending} records waiting to be written" if pending else ""
        )

    def session_lineage(self) -> SessionLineage:
        """This session's lineage, from the kernel's own (live) record of it."""
        store = self.store_for_reading()
        runs = [s.run for s in store.runs(session_id=self.session.session_id)]
        return SessionLineage.of(runs, self.recorder.lineage, self.notebook_path)

    # -- the public API (jupyter_prov4ml.log_metric, ...): never raises into user code ------

    def new_capture(self) -> RunCapture:
        return RunCapture(time.perf_counter_ns(), self.step_depth)

    def current_capture(self) -> RunCapture | None:
        """The running cell's capture, created on first use; None outside any cell."""
        window = self.recorder.current
        if window is None or window.closed:
            return None
        if window.capture is None:
            window.capture = self.new_capture()
            self.writer.prepare_for_runs()
        return window.capture

    def api_log_metric(self, name: Any, value: Any, step: Any, context: Any) -> None:
        window = self.recorder.current
        capture = window.capture if window is not None else None
        if capture is None and (capture := self._capture_or_warn("log_metric")) is None:
            return
        try:
            capture.metrics.log(name, value, step, context)
        except Exception as error:  # noqa: BLE001 - reported once, never raised into the loop
            self.metric_failed(name, error)

    def metric_failed(self, name: Any, error: Exception) -> None:
        """One line per metric and kind of problem; our own bugs are one line too."""
        if isinstance(error, MetricError):
            shown = _shown(name)
            self.notices.warn(
                f"metric:{shown}:{error.problem}",
                f"log_metric({shown}): {error}; point skipped",
            )
        else:
            self.notices.warn("metric-bug", f"log_metric failed ({error!r}); point skipped")

    def api_log_param(self, name: Any, value: Any) -> None:
        capture = self._capture_or_warn("log_param")
        if capture is None:
            return
        try:
            capture.log_param(name, value)
        except Exception as error:  # noqa: BLE001 - see api_log_metric
            self.notices.warn(f"param:{_shown(name)}", f"log_param: {error}; skipped")

    def api_track(self, iterable: Iterable[T], name: Any, total: Any) -> Iterator[T]:
        capture = self._capture_or_warn("track")
        if capture is None:
            return iter(iterable)
        if not isinstance(name, str) or not name or len(name) > 200:
            self.notices.warn("track-name", f"track: bad loop name {_shown(name)}; using 'loop'")
            name = "loop"
        if total is not None and not isinstance(total, int):
            total = None
        return capture.loops.track(iterable, name, total)

    def api_log_artifact(self, path: Any, name: Any, copy: bool) -> Artifact | None:
        capture = self._capture_or_warn("log_artifact")
        window = self.recorder.current
        if capture is None or window is None:
            return None
        if not artifact_name_ok(name):
            self.notices.warn("artifact-name", f"log_artifact: bad name {name!r:.60}; skipped")
            return None
        try:
            source = Path(os.fspath(path))
            copied = None
            if copy:
                folder = self.store.session_dir(self.session.session_id) / "runs"
                copied = folder / f"{window.run_id}.artifacts" / (name or source.name)
                self.store.copy_in(source, copied)
            return capture.log_artifact(source, name, copied)
        except (OSError, TypeError, ValueError) as error:
            self.notices.warn(f"artifact:{path!r:.60}", f"log_artifact({path!r:.60}): {error}")
        return None

    def api_log_model(self, model: Any, name: Any, save: bool) -> ModelSummary | None:
        capture = self._capture_or_warn("log_model")
        window = self.recorder.current
        if capture is None or window is None:
            return None
        if not artifact_name_ok(name):
            self.notices.warn("model-name", f"log_model: bad name {_shown(name)}; skipped")
            return None
        taken = [m.name for m in capture.models]
        chosen = capture.unique_name(name or type(model).__name__, taken)
        try:
            summary = describe_model(model, chosen)
            if save:
                folder = self.store.session_dir(self.session.session_id) / "runs"
                folder = folder / f"{window.run_id}.artifacts"
                make_private_dirs(folder, self.store.modes)
                path = save_model(model, folder, safe_file_name(chosen))
                # The framework's saver honours the umask; the store's files are private.
                os.chmod(path, self.store.modes.file)
                artifact = capture.log_artifact(path, path.name, path)
                summary = dataclasses.replace(summary, artifact_sha256=artifact.sha256)
        # The user's model (its own methods), a framework's saver, or the disk: one line.
        except (ModelError, OSError) as error:
            self.notices.warn(f"model:{chosen}", f"log_model({chosen!r}): {error}; skipped")
            return None
        except Exception as error:  # noqa: BLE001
            self.notices.warn(f"model:{chosen}", f"log_model({chosen!r}) failed ({error!r})")
            return None
        capture.models.append(summary)
        return summary

    def api_log_input(self, obj: Any, name: Any) -> DataInput | None:
        capture = self._capture_or_warn("log_input")
        if capture is None:
            return None
        if not artifact_name_ok(name):
            self.notices.warn("input-name", f"log_input: bad name {_shown(name)}; skipped")
            return None
        try:
            summary = describe_input(obj, name)
        except OSError as error:
            self.notices.warn(f"input:{_shown(obj)}", f"log_input({_shown(obj)}): {error}")
            return None
        except Exception as error:  # noqa: BLE001 - the user's object's own methods
            self.notices.warn(f"input:{_shown(obj)}", f"log_input failed ({error!r}); skipped")
            return None
        taken = [i.name for i in capture.inputs]
        summary = dataclasses.replace(summary, name=capture.unique_name(summary.name, taken))
        if is_secret_name(summary.name):
            # A credential's file (`api_key.txt`) leaves no hash behind, as redaction says.
            summary = dataclasses.replace(summary, sha256=None, hash_method="redacted")
        capture.inputs.append(summary)
        return summary

    def injected_params(self) -> tuple[Param, ...]:
        """papermill's injected parameters in this session so far (none outside papermill)."""
        history = getattr(getattr(self.shell, "history_manager", None), "input_hist_raw", None)
        return self.injected.update(history) if isinstance(history, list) else ()

    def run_context(self) -> RunContext:
        """The context of a run ending now: packages, imported versions, git, CUDA."""
        drivers = [(gpu.driver_version, gpu.cuda_driver_version) for gpu in self.gpu.devices]
        if not self.context_probe.started:  # loaded outside a cell, no cell ended since
            self.context_probe.start()
        return self.context_probe.context(self.store, sys.modules, drivers)

    def _capture_or_warn(self, what: str) -> RunCapture | None:
        capture = self.current_capture()
        if capture is None:
            self.notices.warn(
                f"outside:{what}", f"{what} was called outside a running cell; not recorded"
            )
        return capture

    # -- cell hooks: the hot path ------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        try:
            # A finished run's record is written before the next cell runs (and shows output):
            # a kernel killed right after a run the user saw end `ok` keeps it `ok`. Normally
            # already done (the writer is woken when a run ends); the wait is bounded.
            self.writer.wait_for_closes(CLOSE_WAIT_S)
            self.recorder.begin(info)
            self._begin_ok = True
        except Exception as error:  # noqa: BLE001 - IPython would print a traceback per cell
            self._begin_ok = False
            self._hook_failed(error)

    def post_run_cell(self, result: Any) -> None:
        try:
            if self._probe_to_start:  # once: when the `%load_ext` cell ends
                self._probe_to_start = False
                self.context_probe.start()
            self.recorder.end(result)
            if self._begin_ok:
                self._hook_failures = 0
        except Exception as error:  # noqa: BLE001 - see pre_run_cell
            self._hook_failed(error)
        if self.notices.has_pending():
            self.notices.flush_to_stderr()

    def _unregister_hooks(self) -> None:
        for event, callback in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_run_cell", self.post_run_cell),
        ):
            if callback in self.shell.events.callbacks[event]:
                self.shell.events.unregister(event, callback)

    def _lineage_failed(self, part: str, error: Exception) -> None:
        self.notices.warn(part, f"cell lineage not recorded ({error!r})")

    def _hook_failed(self, error: Exception) -> None:
        self._hook_failures += 1
        self.recorder.reset_depth()
        if self._hook_failures >= MAX_HOOK_FAILURES:
            self.notices.warn("hooks-off", f"cell recording turned off after errors ({error!r})")
            self._unregister_hooks()
        else:
            self.notices.warn("hook", f"a cell was not recorded ({error!r})")


def _notebook_folder(path: str | None) -> Path:
    """Where the notebook lives (for git): its folder, else the working directory."""
    if path:
        folder = (Path.cwd() / path).parent
        if folder.is_dir():
            return folder
    return Path.cwd()


def safe_file_name(name: str) -> str:
    """`name` as a file name in the store: no separators, no leading dot."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return cleaned[:100] or "model"


def _unregister_magics(shell: Any, magics: Any) -> None:
    """IPython has no public unregister; remove the names this object registered."""
    manager = shell.magics_manager
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)


def _shown(name: object) -> str:
    """A user's name for a message: its repr, or its type when even that fails."""
    try:
        return f"{name!r:.60}"
    except Exception:  # noqa: BLE001 - any object can reach the API
        return f"<{type(name).__name__}>"


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
