"""RunLink: what every framework integration records through, into the run of the cell that
is running when the framework calls back.

A callback object is often made in one cell and used by `fit` in another, so the run is looked
up at each call, never kept. A link never raises into the framework's loop (and so into the
user's cell): what cannot be recorded is told once, in one line, and skipped. It holds no
strong reference to the extension or a run, so a framework may copy it (XGBoost's
scikit-learn wrapper deep-copies its callbacks).
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from os import PathLike, fspath
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.loops import OpenStep
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.kernel.extension import ProvExtension
    from jupyter_prov4ml.records import Status

P = ParamSpec("P")
R = TypeVar("R")
Hook = TypeVar("Hook", bound=Callable[..., None])

# Metric names that say which part of training they measure (what frameworks prefix them with).
_VALIDATION_PREFIXES = ("val", "valid", "validation", "eval")
_TEST_PREFIXES = ("test",)
_SEPARATORS = ("_", "/", "-", ".")
# Nested hyperparameters are flattened this deep (`optimizer.lr`); deeper ones are kept as text.
_MAX_FLATTEN_DEPTH = 4


def context_of(name: str) -> str:
    """`validation` for `val_loss`, `eval_loss`, `val/acc`, `validation_0-logloss`, `eval`;
    `test` for `test_acc`, `test`; else `training` (`value_x`, `evaluator` are training)."""
    lowered = name.lower()
    for context, prefixes in (("validation", _VALIDATION_PREFIXES), ("test", _TEST_PREFIXES)):
        for prefix in prefixes:
            rest = lowered[len(prefix) :] if lowered.startswith(prefix) else None
            if rest is not None and (not rest or rest[0] in _SEPARATORS or rest[0].isdigit()):
                return context
    return "training"


def flatten(params: Mapping[Any, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Nested mappings as dotted names: `{"optimizer": {"lr": 0.1}}` → `optimizer.lr`."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and depth < _MAX_FLATTEN_DEPTH:
            flat.update(flatten(value, f"{name}.", depth + 1))
        else:
            flat[name] = value
    return flat


def current_extension() -> ProvExtension | None:
    """The extension loaded in this process's IPython shell, without importing IPython when
    nobody has (as `api._extension`; the integrations sit beside the API, not above it)."""
    module = sys.modules.get("IPython.core.interactiveshell")
    if module is None:
        return None
    shell = module.InteractiveShell._instance
    return getattr(shell, "_jupyter_prov4ml", None) if shell is not None else None


def _guarded(method: Callable[P, R | None]) -> Callable[P, R | None]:
    """Our failure inside a framework's callback is one line, never an exception in `fit`."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return method(*args, **kwargs)
        except Exception as bug:  # noqa: BLE001 - the user's training must go on
            link = args[0]
            assert isinstance(link, RunLink)
            link.failed(method.__name__, bug)
            return None

    return guarded


def hook(method: Hook) -> Hook:
    """A framework's callback method (of an object holding its RunLink as `_link`) that never
    raises into the framework: our failure there is one line, and training goes on."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as bug:  # noqa: BLE001 - the user's training must go on
            self._link.failed(method.__name__, bug)

    return cast(Hook, guarded)


class RunLink:
    """One integration object's way into the current run (main thread)."""

    def __init__(self, framework: str, version: str | None) -> None:
        self.framework = framework
        self.version = version
        # The run whose parameters already hold the framework's version (a weak reference:
        # a finished run must not be kept alive, nor copied with the callback).
        self._versioned: weakref.ref[RunCapture] | None = None
        self._steps: dict[str, tuple[weakref.ref[RunCapture], OpenStep]] = {}
        self._seen_files: dict[str, tuple[int, int]] = {}
        # Each metric name's context, worked out once (a framework logs the same names again).
        self._contexts: dict[str, str] = {}
        self._told_unloaded = False

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with its callback (a trainer sent to another process): what it knows of
        # this process's runs stays here.
        return {"framework": self.framework, "version": self.version}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["framework"], state["version"])  # type: ignore[misc]

    # -- where to record ---------------------------------------------------------------------

    @_guarded
    def capture(self) -> RunCapture | None:
        """The running cell's capture (created on first use); None, told once, when the
        extension is not loaded or no cell is running."""
        extension = current_extension()
        if extension is None:
            if not self._told_unloaded:
                self._told_unloaded = True
                warnings.warn(
                    f"jupyter_prov4ml is not loaded (run %load_ext jupyter_prov4ml): the "
                    f"{self.framework} integration records nothing",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return None
        capture = extension.current_capture()
        if capture is None:
            extension.notices.warn(
                f"outside:{self.framework}",
                f"{self.framework} called back outside a running cell; not recorded",
            )
            return None
        if self._versioned is None or self._versioned() is not capture:
            self._versioned = weakref.ref(capture)
            if self.version is not None:
                capture.log_param(f"{self.framework}.version", self.version, self.framework)
        return capture

    def run_id(self) -> str | None:
        """The id of the run being recorded now, if a cell is running."""
        extension = current_extension()
        window = extension.recorder.current if extension is not None else None
        return window.run_id if window is not None and not window.closed else None

    def failed(self, what: str, error: Exception) -> None:
        """One line for our own failure in `what`; the framework goes on."""
        extension = current_extension()
        message = f"the {self.framework} integration could not record {what} ({error!r})"
        if extension is not None:
            extension.notices.warn(f"integration:{self.framework}:{what}", message)
        else:
            warnings.warn(f"jupyter_prov4ml: {message}", RuntimeWarning, stacklevel=4)

    # -- what to record ----------------------------------------------------------------------

    @_guarded
    def params(self, params: Mapping[Any, Any], prefix: str = "") -> None:
        """Hyperparameters as run parameters, nested ones flattened (`optimizer.lr`), each
        redacted as every parameter is (credential names and values). A parameter the run
        already holds as it is now (Lightning logs them again for `test` after `fit`) is not
        added twice."""
        capture = self.capture()
        if capture is None:
            return
        for name, value in flatten(params, prefix).items():
            count = len(capture.params)
            try:
                capture.log_param(name, value, self.framework)
            except ValueError as error:  # an empty name: that one is skipped
                self.failed(f"parameter {name!r:.60}", error)
                continue
            if len(capture.params) > count and capture.params[-1] in capture.params[:-1]:
                capture.params.pop()

    @_guarded
    def metrics(
        self,
        metrics: Iterable[tuple[str, Any]],
        step: int | None,
        context: str | None = None,
    ) -> None:
        """Metric points at the framework's `step`, in `context` (by default from each name:
        `context_of`). None values are skipped (a framework's "not computed")."""
        capture = self.capture()
        if capture is None:
            return
        log, contexts = capture.metrics.log, self._contexts
        for name, value in metrics:
            if value is None:
                continue
            text = name if type(name) is str else str(name)
            if context is None:
                found = contexts.get(text)
                if found is None:
                    found = contexts[text] = context_of(text)
            else:
                found = context
            try:
                log(text, value, step, found)
            except Exception as error:  # noqa: BLE001 - one line per metric and problem
                extension = current_extension()
                if extension is not None:
                    extension.metric_failed(text, error)

    @_guarded
    def begin_step(self, loop: str, index: int, total: int | None = None) -> None:
        """Open the loop step `index` of `loop` (an epoch began); one open step per loop: a
        step still open (its end was never called back) ends here, not completed."""
        capture = self.capture()
        if capture is None:
            return
        self.end_step(loop, completed=False)
        step = capture.loops.begin_step(loop, int(index), total)
        self._steps[loop] = (weakref.ref(capture), step)

    @_guarded
    def end_step(self, loop: str, completed: bool = True) -> None:
        """Close the open step of `loop` (in the run it was opened in), if there is one."""
        opened = self._steps.pop(loop, None)
        if opened is None:
            return
        capture = opened[0]()
        if capture is not None:
            capture.loops.end_step(opened[1], completed)

    def end_all_steps(self, completed: bool) -> None:
        for loop in list(self._steps):
            self.end_step(loop, completed)

    def count_inner(self, name: str) -> None:
        """Count an inner iteration (a batch) into the open step (cheap: no run lookup)."""
        opened = next(iter(self._steps.values()), None)
        capture = opened[0]() if opened is not None else None
        if capture is not None:
            capture.loops.count_inner(name)

    @_guarded
    def artifact(self, path: str | PathLike[str], name: str | None = None) -> None:
        """A file or a folder (hashed as a whole) the framework wrote, by sha256; recorded
        once per content (a file saved again unchanged is not recorded twice)."""
        capture = self.capture()
        if capture is None:
            return
        location = Path(fspath(path))
        if location.is_dir():
            capture.log_folder_artifact(location, name)
        elif location.is_file():
            capture.log_artifact(location, name, None)

    @_guarded
    def new_files(self, paths: Iterable[str | PathLike[str] | None]) -> None:
        """Record those of `paths` that are files not yet recorded as they are now (by
        modification time and size): the checkpoints a framework just saved."""
        # The same file is often named several ways (last, best, top-k): looked at once.
        for key in dict.fromkeys(os.path.abspath(fspath(path)) for path in paths if path):
            try:
                status = os.stat(key)
            except OSError:
                continue
            signature = (status.st_mtime_ns, status.st_size)
            if stat.S_ISREG(status.st_mode) and self._seen_files.get(key) != signature:
                self._seen_files[key] = signature
                self.artifact(key)

    @_guarded
    def status(self, status: Status, error_type: str | None = None) -> None:
        """How the framework says training ended: the run's status (`RunCapture.outcome`)."""
        capture = self.capture()
        if capture is not None:
            capture.report_status(status, error_type)
