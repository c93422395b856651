"""jupyter_prov4ml: W3C PROV provenance of machine-learning work in Jupyter notebooks.

Load it in a notebook with ``%load_ext jupyter_prov4ml``. Importing this package is cheap:
everything heavy is imported when the extension loads, and prov/graphviz only when needed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "load_ipython_extension",
    "log_artifact",
    "log_estimator",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "read_metrics",
    "track",
    "unload_ipython_extension",
]
_API = frozenset(
    {
        "log_artifact",
        "log_input",
        "log_metric",
        "log_metrics",
        "log_model",
        "log_param",
        "log_params",
        "read_metrics",
        "track",
    }
)

# The attribute on the shell where the loaded extension lives: IPython's extension manager
# calls these functions with only the shell, so the shell is where our one object is kept.
_SHELL_ATTR = "_jupyter_prov4ml"


def __getattr__(name: str) -> Any:
    # The API lives in a module of its own, imported on first use, so `import jupyter_prov4ml`
    # stays cheap.
    if name in _API:
        from jupyter_prov4ml import api

        return getattr(api, name)
    if name == "log_estimator":
        from jupyter_prov4ml.integrations.sklearn import log_estimator

        return log_estimator
    raise AttributeError(f"module 'jupyter_prov4ml' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext jupyter_prov4ml``; loading twice is harmless."""
    if getattr(ipython, _SHELL_ATTR, None) is not None:
        return
    from jupyter_prov4ml.kernel.extension import ProvExtension

    extension = ProvExtension(ipython)
    extension.load()
    setattr(ipython, _SHELL_ATTR, extension)
    print(extension.banner())


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext jupyter_prov4ml``: stop recording, write what is pending."""
    extension = getattr(ipython, _SHELL_ATTR, None)
    if extension is None:
        return
    setattr(ipython, _SHELL_ATTR, None)
    extension.unload()
