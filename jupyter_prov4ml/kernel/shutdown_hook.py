"""Write what is pending before the kernel answers a shutdown request.

`atexit` alone is too late for a kernel: by then the interpreter is finalising, a thread that
imports anything fails ("can't register atexit after shutdown"), and a kernel manager that
asked for the shutdown may kill the process once it has its reply. ipykernel answers the
request on its control thread after calling `kernel.do_shutdown(restart)`; wrapping that
bound method on the kernel instance runs our `before` first. Headless runners (nbclient,
nbconvert, papermill) shut their kernels down this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


class KernelShutdownHook:
    """Runs `before()` when the kernel of `shell` is asked to shut down (or restart)."""

    def __init__(self, shell: Any, before: Callable[[], None]) -> None:
        self._kernel: Any = getattr(shell, "kernel", None)
        self._before = before
        self._installed: Callable[[bool], Any] | None = None

    def install(self) -> bool:
        """False where there is no ipykernel kernel (a terminal IPython: `atexit` only)."""
        kernel = self._kernel
        original = getattr(kernel, "do_shutdown", None)
        if original is None or self._installed is not None:
            return False
        before = self._before

        def do_shutdown(restart: bool) -> Any:
            # The kernel must shut down whatever we fail at (`before` says so in one line).
            with contextlib.suppress(Exception):
                before()
            return original(restart)

        kernel.do_shutdown = do_shutdown
        self._installed = do_shutdown
        return True

    def remove(self) -> None:
        """Give the kernel its own `do_shutdown` back (if nobody wrapped ours since)."""
        kernel = self._kernel
        if self._installed is not None and kernel.__dict__.get("do_shutdown") is self._installed:
            del kernel.do_shutdown
        self._installed = None
