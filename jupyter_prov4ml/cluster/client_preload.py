"""Called by the client preload (see `cluster_capture.PRELOAD_SOURCE`) when a Client is
created: finds the running `%%provrun`'s cluster capture on the extension of the current
IPython shell, if any. Does nothing elsewhere (a worker, a plain script, no run running)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any


def client_started(client: Any) -> Awaitable[None] | None:
    """The awaitable that attaches `client` to the running capture, or None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    extension = getattr(get_ipython(), "_jupyter_prov4ml", None)
    capture = getattr(extension, "cluster_capture", None)
    if capture is None:
        return None
    try:
        result: Awaitable[None] | None = capture.client_started(client)
    except Exception:  # noqa: BLE001 - the user's client must start whatever happens to us
        return None
    return result
