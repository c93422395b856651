"""The API user code calls inside a notebook: parameters, metrics, tracked loops, artifacts.

Calls attach to the running `%%provrun` run, or else to the running cell. They never raise
into user code because of us: what cannot be recorded gets one warning line and is skipped.
The extension is found on the IPython shell that loaded it (no module-level state here).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_prov4ml.notation import utf8_safe

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.child_metrics import ChildSpool
    from jupyter_prov4ml.kernel.extension import ProvExtension
    from jupyter_prov4ml.records import Artifact, DataInput, ModelSummary

T = TypeVar("T")


def _extension() -> ProvExtension | None:
    # get_ipython() costs ~2.5 µs (traitlets checks): too much for a 1 µs log_metric. This
    # reads the same singleton slot directly, without importing IPython if nobody has.
    module = sys.modules.get("IPython.core.interactiveshell")
    if module is None:
        return None
    shell = module.InteractiveShell._instance
    return getattr(shell, "_jupyter_prov4ml", None) if shell is not None else None


def _not_loaded(what: str) -> None:
    warnings.warn(
        f"jupyter_prov4ml is not loaded (run %load_ext jupyter_prov4ml): {what} records nothing",
        RuntimeWarning,
        stacklevel=3,
    )


def _in_child(record: Callable[[ChildSpool], None]) -> bool:
    """In a child process of a running %%provrun (no extension here, the run's spool in the
    environment): `record` into this process's spool file, and True. A value that cannot be
    kept is one warning, never an exception in the child."""
    from jupyter_prov4ml.capture.child_metrics import child_spool

    spool = child_spool()
    if spool is None:
        return False
    try:
        record(spool)
    # The user's values (and mappings) run their own code here; whatever it raises, or a
    # full disk, costs the child one warning, never its loop.
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"jupyter_prov4ml: {error}; not recorded", RuntimeWarning, stacklevel=3)
    return True


def _each(record: Callable[[Any, Any], None], items: Iterable[tuple[Any, Any]]) -> None:
    for name, value in items:
        record(_plain(name), value)


def _plain(name: Any) -> Any:
    """A str subclass as the plain str it holds (its own __repr__, __hash__ or __eq__ may
    raise where we report a problem with it); anything else as it is."""
    return str.__str__(name) if isinstance(name, str) else name


def _param_name(extension: ProvExtension, name: Any) -> str | None:
    """`name` as plain text; None, after one warning, when it is not text (its repr, which
    a warning would show, is the user's code and may raise)."""
    if isinstance(name, str):
        return str.__str__(name)
    extension.notices.warn(
        f"param-name:{type(name).__name__}",
        f"log_param: a parameter name must be a string, not {type(name).__name__}; skipped",
    )
    return None


def log_param(name: str, value: Any) -> None:
    """Record a parameter of the current run (numbers and strings as they are, other values
    as a short text)."""
    extension = _extension()
    if extension is None:
        if not _in_child(lambda spool: spool.param(_plain(name), value)):
            _not_loaded("log_param")
        return
    text = _param_name(extension, name)
    if text is not None:
        extension.api_log_param(text, value)


def log_params(params: Mapping[str, Any]) -> None:
    """Record several parameters at once."""
    extension = _extension()
    if extension is None:
        if not _in_child(lambda spool: _each(spool.param, params.items())):
            _not_loaded("log_params")
        return
    try:
        items = list(params.items())
    # Not a mapping, or one whose own `items` raises: the user's code, not ours, failed.
    except Exception:  # noqa: BLE001
        extension.notices.warn("log_params", "log_params expects a mapping; nothing recorded")
        return
    for name, value in items:
        text = _param_name(extension, name)
        if text is not None:
            extension.api_log_param(text, value)


def log_metric(name: str, value: Any, step: int | None = None, context: str = "training") -> None:
    """Record one point of a metric, e.g. `log_metric("loss", loss, step=epoch)`.

    Values may be Python numbers, numpy scalars or 0-d arrays, or one-element framework
    tensors; NaN and infinities are kept as such. Without `step`, points are numbered 0, 1, …
    per metric. `context` separates e.g. `training`, `validation` and `testing`.
    """
    # The hot path of training loops: _extension() and api_log_metric inlined (each call
    # frame costs ~0.2 µs, as much as storing the point).
    module = sys.modules.get("IPython.core.interactiveshell")
    shell = module.InteractiveShell._instance if module is not None else None
    extension = getattr(shell, "_jupyter_prov4ml", None) if shell is not None else None
    if extension is None:
        if not _in_child(lambda spool: spool.metric(_plain(name), value, step, _plain(context))):
            _not_loaded("log_metric")
        return
    window = extension.recorder.current
    capture = window.capture if window is not None else None
    if capture is None:
        extension.api_log_metric(_plain(name), value, step, _plain(context))
        return
    try:
        capture.metrics.log(name, value, step, context)
    except Exception as error:  # noqa: BLE001 - reported once, never raised into the loop
        extension.metric_failed(_plain(name), error)


def log_metrics(
    metrics: Mapping[str, Any], step: int | None = None, context: str = "training"
) -> None:
    """Record one point of several metrics at the same step."""
    extension = _extension()
    if extension is None:
        if not _in_child(
            lambda spool: _each(
                lambda name, value: spool.metric(name, value, step, _plain(context)),
                metrics.items(),
            )
        ):
            _not_loaded("log_metrics")
        return
    try:
        items = list(metrics.items())
    except Exception:  # noqa: BLE001 - see log_params
        extension.notices.warn("log_metrics", "log_metrics expects a mapping; nothing recorded")
        return
    for name, value in items:
        extension.api_log_metric(_plain(name), value, step, _plain(context))


def track(iterable: Iterable[T], name: str = "epoch", total: int | None = None) -> Iterator[T]:
    """Wrap a training loop: each iteration of the outermost tracked loop becomes a step with
    its own time, CPU, energy and metrics; tracked loops inside it are counted into it.

        for epoch in track(range(epochs)):
            for batch in track(loader, name="batch"):
                ...
    """
    extension = _extension()
    if extension is None:
        _not_loaded("track")
        return iter(iterable)
    if isinstance(name, str) and not str.isascii(name):
        # A lone surrogate cannot be written to the steps file (UTF-8): keep it as an escape.
        name = utf8_safe(str.__str__(name))
    return extension.api_track(iterable, name, total)


def log_artifact(
    path: str | PathLike[str], name: str | None = None, copy: bool = False
) -> Artifact | None:
    """Record a file the run produced (checkpoint, plot, dataset) by its sha256 and size.

    Nothing is copied unless `copy=True`, which copies it into the run's folder in the store.
    """
    extension = _extension()
    if extension is None:
        _not_loaded("log_artifact")
        return None
    return extension.api_log_artifact(path, name, copy)


def log_model(model: Any, name: str | None = None, save: bool = False) -> ModelSummary | None:
    """Record a model the run made or trained, as a PROV entity generated by the run: class,
    total and trainable parameters, parameter and buffer bytes, dtypes, devices, top-level
    layers and a sha256 over its weights (skipped, and flagged, above 512 MiB).

    Works by duck typing (PyTorch modules, Keras models; other objects by their class);
    imports no framework. `save=True` also writes the weights into the run's folder in the
    store (a torch state dict, or a `.keras` file) as an artifact of the run.
    """
    extension = _extension()
    if extension is None:
        _not_loaded("log_model")
        return None
    return extension.api_log_model(model, name, bool(save))


def log_input(obj: Any, name: str | None = None) -> DataInput | None:
    """Record a data input of the run, as a PROV entity the run `used`: a file path (size,
    sha256; a sampled hash above 256 MiB, flagged), a pandas DataFrame (rows, columns,
    dtypes, content digest), a numpy array or torch tensor (shape, dtype, hash), a torch
    DataLoader (batches, batch size, workers, shuffle, samples in its dataset), a dataset.
    """
    extension = _extension()
    if extension is None:
        _not_loaded("log_input")
        return None
    return extension.api_log_input(obj, name)


def read_metrics(run_id: str | None = None, store: str | PathLike[str] | None = None) -> Any:
    """A run's metric points: a pandas DataFrame where pandas is installed, else a dict of
    columns. Columns: name, context, step, value (float64, as logged), time_s, and the process
    that logged each point: pid, rank and local_rank (RANK/LOCAL_RANK; None where not set,
    and everywhere in files written before processes were recorded).

    Without `run_id`, the most recent run that logged metrics (in this kernel's session when
    the extension is loaded)."""
    from jupyter_prov4ml.settings import resolve_store_root
    from jupyter_prov4ml.store.layout import Store, UnsafeStorePath
    from jupyter_prov4ml.store.series_files import MetricsFileError, read_metrics_file

    extension = _extension()
    if store is not None:
        root = Path(store)
    elif extension is not None:
        extension.writer.flush()
        root = extension.store.root
    else:
        import os

        root = resolve_store_root(os.environ, Path.cwd())
    if run_id is None:
        session = extension.session.session_id if extension is not None else None
        with_metrics = [
            s
            for s in Store(root).runs()
            if any(f.role == "metrics" for f in s.run.data_files)
            and (session is None or s.run.session_id == session)
        ]
        if not with_metrics:
            raise LookupError(f"no run with metrics in {root}")
        stored = with_metrics[-1]
    else:
        stored = Store(root).find(run_id)
    files = [f for f in stored.run.data_files if f.role == "metrics"]
    columns: dict[str, list[Any]] = {
        column: []
        for column in ("name", "context", "step", "value", "time_s", "pid", "rank", "local_rank")
    }
    if files:
        try:
            columns = read_metrics_file(Store(root).resolve(files[0].relpath))
        except (MetricsFileError, UnsafeStorePath) as error:
            warnings.warn(
                f"jupyter_prov4ml: {error}; no metric points read", RuntimeWarning, stacklevel=2
            )
    try:
        import pandas
    except ImportError:
        return columns
    return pandas.DataFrame(columns)
