"""What determined a run's random numbers: the seeds its code gave, torch's initial seed and
whether the deterministic switches were on.

While a `%%provrun` runs, `random.seed`, `numpy.random.seed`, `numpy.random.default_rng` and
`torch.manual_seed` (each only if its module is already imported) are replaced by wrappers
that note the seed and call the original; they are put back when the run ends (unless the
user replaced them meanwhile). Code calling them through the module — as Lightning's
`seed_everything` does — is seen; a `from random import seed` made before the run is not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from jupyter_prov4ml.records import Randomness, SeedCall

# A run that seeds in a loop keeps its first seeds (the rest are counted by nothing: rare).
MAX_SEED_CALLS = 100
_MAX_SEED_CHARS = 100
# (module in sys.modules, attribute holding the function, name recorded)
_SEEDERS = (
    ("random", "seed", "random.seed"),
    ("numpy.random", "seed", "numpy.random.seed"),
    ("numpy.random", "default_rng", "numpy.random.default_rng"),
    ("torch", "manual_seed", "torch.manual_seed"),
)


class SeedWatch:
    """Wraps the seeding functions of imported modules for the length of one run."""

    def __init__(self) -> None:
        self.calls: list[SeedCall] = []
        self._installed: list[tuple[Any, str, Callable[..., Any], Callable[..., Any]]] = []

    def start(self, modules: Mapping[str, Any]) -> None:
        for module_name, attribute, label in _SEEDERS:
            module = modules.get(module_name)
            original = getattr(module, attribute, None) if module is not None else None
            if original is None or not callable(original):
                continue
            wrapper = self._wrap(original, label)
            try:
                setattr(module, attribute, wrapper)
            except (AttributeError, TypeError):
                continue
            self._installed.append((module, attribute, original, wrapper))

    def _wrap(self, original: Callable[..., Any], label: str) -> Callable[..., Any]:
        calls = self.calls

        @functools.wraps(original)
        def seeding(*args: Any, **kwargs: Any) -> Any:
            if len(calls) < MAX_SEED_CALLS:
                value = args[0] if args else kwargs.get("seed", kwargs.get("a"))
                calls.append(SeedCall(label, seed_value(value)))
            return original(*args, **kwargs)

        return seeding

    def stop(self) -> None:
        """Put the originals back (idempotent); a function the user replaced meanwhile stays."""
        installed, self._installed = self._installed, []
        for module, attribute, original, wrapper in reversed(installed):
            if getattr(module, attribute, None) is wrapper:
                setattr(module, attribute, original)


def seed_value(value: object) -> int | str | None:
    """A seed as the record keeps it: an int within 64 bits, else a short text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return int(value)
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - the user's object; its type is enough
        text = f"<{type(value).__name__}>"
    return text[:_MAX_SEED_CHARS]


def randomness_of(calls: list[SeedCall], modules: Mapping[str, Any]) -> Randomness | None:
    """The run's randomness record: `calls` seen, and torch's state where torch is imported;
    None when there is nothing to say."""
    torch_seed = deterministic = cudnn_deterministic = cudnn_benchmark = None
    torch = modules.get("torch")
    if torch is not None:
        # A partial torch (import failed half-way) lacks some of these: each is optional.
        torch_seed = _call_int(getattr(torch, "initial_seed", None))
        deterministic = _call_bool(getattr(torch, "are_deterministic_algorithms_enabled", None))
        cudnn = getattr(getattr(torch, "backends", None), "cudnn", None)
        if cudnn is not None:
            cudnn_deterministic = _bool(getattr(cudnn, "deterministic", None))
            cudnn_benchmark = _bool(getattr(cudnn, "benchmark", None))
    if not calls and torch is None:
        return None
    return Randomness(
        seeds=tuple(calls),
        torch_initial_seed=torch_seed,
        torch_deterministic_algorithms=deterministic,
        cudnn_deterministic=cudnn_deterministic,
        cudnn_benchmark=cudnn_benchmark,
    )


def _call_int(function: Any) -> int | None:
    try:
        value = function() if callable(function) else None
    except Exception:  # noqa: BLE001 - see randomness_of
        return None
    return value if isinstance(value, int) and -(2**63) <= value < 2**64 else None


def _call_bool(function: Any) -> bool | None:
    try:
        return _bool(function() if callable(function) else None)
    except Exception:  # noqa: BLE001 - see randomness_of
        return None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None
