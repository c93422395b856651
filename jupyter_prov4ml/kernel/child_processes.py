"""What a `%%provrun` does for the kernel's child processes: reads the process tree at the
run's edges (its CPU time, exact; the sampler reads it in between for the series), and lends
children a spool for their metrics, merged into the run when it ends.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jupyter_prov4ml.capture.child_metrics import SPOOL_ENV, forget_kernel_in_child, merge_spool
from jupyter_prov4ml.hardware.process_tree import (
    TreeReader,
    TreeReading,
    TreeSampler,
    children_cpu_between,
    open_tree_reader,
)
from jupyter_prov4ml.store.files import make_private_dirs

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.kernel.extension import ProvExtension

# A forked child keeps a copy of the kernel's extension: without it, the API in the child
# writes to the run's spool (capture/child_metrics.py). Registered once, at first import.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_kernel_in_child)


@dataclass
class ChildProcesses:
    """The children's side of one run: begun before its body, finished after it."""

    reader: TreeReader | None
    start: TreeReading | None
    spool: Path | None = None
    previous_spool_env: str | None = None
    finished: bool = False

    @classmethod
    def begin(cls, ext: ProvExtension, run_id: str) -> ChildProcesses:
        """Read the tree (the run's CPU counts from here) and make the spool folder; each
        part that fails is told in one line and left out."""
        reader: TreeReader | None = None
        start = None
        try:
            reader = open_tree_reader()
            start = reader.read()
        except Exception as error:  # noqa: BLE001 - the run goes on without its children
            ext.notices.warn(
                "process-tree", f"child processes are not measured ({error!r}); the kernel is"
            )
            reader = None
        spool = None
        try:
            spool = ext.store.session_dir(ext.session.session_id) / "runs" / f"{run_id}.spool"
            make_private_dirs(spool, ext.store.modes)
        except Exception as error:  # noqa: BLE001
            ext.notices.warn(
                "child-spool", f"metrics logged in child processes are not kept ({error!r})"
            )
            spool = None
        return cls(reader, start, spool)

    def sampler(self) -> TreeSampler | None:
        """What the sampler thread reads the tree with (None: the tree is not read)."""
        return TreeSampler(self.reader) if self.reader is not None else None

    def lend_spool(self, ext: ProvExtension) -> None:
        """Export the spool to the processes the body starts (the last step before it runs,
        so nothing can fail between this and `finish`)."""
        if self.spool is not None:
            self.previous_spool_env = os.environ.get(SPOOL_ENV)
            os.environ[SPOOL_ENV] = str(self.spool)

    def finish(self, ext: ProvExtension, capture: RunCapture) -> float | None:
        """Stop lending the spool, merge what children logged into `capture`, close; the
        CPU time the kernel's descendants spent since `begin` (None: not measured). Once;
        never raises (each failure is one line)."""
        if self.finished:
            return None
        self.finished = True
        if os.environ.get(SPOOL_ENV) == str(self.spool):
            if self.previous_spool_env is None:
                os.environ.pop(SPOOL_ENV, None)
            else:
                os.environ[SPOOL_ENV] = self.previous_spool_env
        children_cpu_s = None
        if self.reader is not None and self.start is not None:
            try:
                children_cpu_s = children_cpu_between(self.start, self.reader.read())
            except Exception as error:  # noqa: BLE001
                ext.notices.warn("process-tree", f"child processes not measured ({error!r})")
            self.reader.close()
        if self.spool is not None:
            try:
                merged = merge_spool(self.spool, capture.metrics)
                capture.params.extend(merged.params)
                problem = merged.problems()
                if problem is not None:
                    ext.notices.warn("child-spool-damage", problem)
            except Exception as error:  # noqa: BLE001
                ext.notices.warn(
                    "child-spool", f"metrics logged in child processes were lost ({error!r})"
                )
            # Merged into the run's metric log (its metrics file once saved).
            shutil.rmtree(self.spool, ignore_errors=True)
        return children_cpu_s
