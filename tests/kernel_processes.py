"""Real ipykernel processes for tests, talked to with jupyter_client as a front end would."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from jupyter_prov4ml.settings import STORE_ENV


class Kernel:
    """One running kernel and its client."""

    def __init__(self, manager: KernelManager, client: Any) -> None:
        self.manager = manager
        self.client = client

    def execute(self, code: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Run `code`; its iopub messages, once the kernel is idle again."""
        msg_id = self.client.execute(code)
        messages = []
        while True:
            message = self.client.get_iopub_msg(timeout=timeout)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(message)
            content = message["content"]
            if message["msg_type"] == "status" and content["execution_state"] == "idle":
                return messages

    def stream_text(self, code: str) -> str:
        return "".join(
            m["content"].get("text", "") for m in self.execute(code) if m["msg_type"] == "stream"
        )

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a batch scheduler would."""
        process = self.manager.provisioner.process  # type: ignore[union-attr]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[Any]:
    """`kernels(store)` starts a kernel whose store is `store` (working directory tmp_path)."""
    started: list[KernelManager] = []

    def start(store: Path) -> Kernel:
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(cwd=str(tmp_path), env={**os.environ, STORE_ENV: str(store)})
        started.append(manager)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return Kernel(manager, client)

    yield start
    for manager in started:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
