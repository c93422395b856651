"""scikit-learn: `log_estimator(est)` records an estimator (fitted or not) as parameters of
the running cell's run. By duck typing: scikit-learn is never imported here, so any
estimator with `get_params` works (XGBoost's and LightGBM's wrappers too).

    from jupyter_prov4ml import log_estimator
    model = LogisticRegression(C=0.5).fit(x, y)
    log_estimator(model)

Under the prefix `name` (by default the class's name), it records: `get_params(deep=True)`,
redacted like every parameter (`LogisticRegression.C`); `.class`, the class's full name;
the version of the package it comes from (`sklearn.version`); and each fitted attribute (a
public name ending in `_`) as its shape and dtype for arrays (`ndarray (1, 4) float64`),
its value for numbers and short text, else its type's name; `.fitted` says whether it has any.
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_prov4ml.integrations.run_link import RunLink

__all__ = ["log_estimator"]


def log_estimator(estimator: Any, name: str | None = None) -> None:
    """Record an estimator's parameters, class, package version and fitted attributes as
    parameters of the current run (see the module's docstring)."""
    kind = type(estimator)
    package = kind.__module__.split(".")[0]
    module = sys.modules.get(package)
    version = getattr(module, "__version__", None)
    link = RunLink(package, str(version) if version is not None else None)
    prefix = f"{name or kind.__name__}."
    get_params = getattr(estimator, "get_params", None)
    if not callable(get_params):
        link.failed("an estimator", TypeError(f"{kind.__name__} has no get_params()"))
        return
    try:
        params = dict(get_params(deep=True))
    except Exception as error:  # noqa: BLE001 - the estimator's own code failed
        link.failed("an estimator's parameters", error)
        return
    fitted = _fitted_attributes(estimator)
    described = {
        "class": f"{kind.__module__}.{kind.__qualname__}",
        **params,
        **fitted,
        "fitted": bool(fitted),
    }
    link.params(described, prefix=prefix)


def _fitted_attributes(estimator: Any) -> dict[str, Any]:
    """Public instance attributes ending in `_` (scikit-learn's mark of what `fit` learned),
    each described without its (possibly large) value."""
    try:
        names = sorted(vars(estimator))
    except TypeError:  # no __dict__
        return {}
    found: dict[str, Any] = {}
    for attribute in names:
        if attribute.startswith("_") or not attribute.endswith("_"):
            continue
        value = vars(estimator)[attribute]
        found[attribute] = _described(value)
    return found


def _described(value: Any) -> Any:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        dtype = getattr(value, "dtype", None)
        return f"{type(value).__name__} {shape}" + (f" {dtype}" if dtype is not None else "")
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 200):
        return value
    if isinstance(value, list | tuple | dict | set):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__
