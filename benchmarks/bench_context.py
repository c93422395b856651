"""The cost of a run's context (issue 13, items 6, 7 and 9).

- `%load_ext` plus the next cell, in a fresh interpreter, with the context probe (package
  list and git, on a background thread) against the same with the probe switched off:
  the probe must not slow the load noticeably (target: +15 ms).
- The probe's own work (package list + git in a checkout), in-process.
- What a `%%provrun`'s end adds: the imported modules' versions and CUDA facts (target
  <= 5 ms), and the seed wrappers installed and removed (target <= 1 ms).
- `log_model` on a 9,794-parameter MLP (hash included).

Run alone: `python benchmarks/bench_context.py` (about 30 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report

ROUNDS = 7
ANSWER = "BENCH_S"
LOAD_SNIPPET = f"""
import sys, time
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
from jupyter_prov4ml.kernel import context_probe
if {{off}}:
    context_probe.ContextProbe.start = lambda self: None
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
start = time.perf_counter()
shell.run_cell("%load_ext jupyter_prov4ml")
shell.run_cell("x = sum(range(10_000))")
print("{ANSWER}", time.perf_counter() - start)
"""


def _load_s(off: bool, workdir: str) -> float:
    env = {**os.environ, "JUPYTER_PROV4ML_STORE": str(Path(workdir) / "store")}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET.format(off=off)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(ANSWER):
            return float(line.split()[1])
    raise BenchmarkError(f"child failed: {done.stderr[-1500:]}")


def _best_ms(action: object, repeats: int = 20) -> float:
    """Median wall time of `action()` in ms."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1e3)
    return median(samples)


def main() -> list[Result]:
    from jupyter_prov4ml.capture.context import (
        accelerator_versions,
        imported_versions,
        installed_packages,
        read_git,
    )
    from jupyter_prov4ml.capture.seeds import SeedWatch

    with tempfile.TemporaryDirectory(prefix="prov4ml-bench-") as workdir:
        _load_s(False, workdir)  # warm caches
        samples = interleave(
            {
                "probe on": lambda: _load_s(False, workdir) * 1e3,
                "probe off": lambda: _load_s(True, workdir) * 1e3,
            },
            ROUNDS,
        )
    repo = Path(__file__).resolve().parent.parent
    packages = installed_packages()
    probe_ms = _best_ms(lambda: (installed_packages(), read_git(repo)), 5)
    end_ms = _best_ms(
        lambda: (
            imported_versions(sys.modules, packages.versions),
            accelerator_versions(sys.modules),
        )
    )

    def seeds() -> None:
        watch = SeedWatch()
        watch.start(sys.modules)
        watch.stop()

    seeds_ms = _best_ms(seeds)
    results = [
        checked(
            "%load_ext + next cell, context probe on",
            median(samples["probe on"]),
            "ms",
            median(samples["probe off"]),
            15.0,
            note=f"fresh interpreters, median of {ROUNDS}; baseline: the probe switched off",
        ),
        checked(
            "context probe (packages + git)",
            probe_ms,
            "ms",
            None,
            None,
            note=f"{len(packages.versions)} distributions; off the cell path",
        ),
        checked(
            "run end: imported versions + CUDA",
            end_ms,
            "ms",
            None,
            5.0,
            target_is_overhead=False,
            note=f"{len(sys.modules)} modules in sys.modules",
        ),
        checked("seed wrappers on + off", seeds_ms, "ms", None, 1.0, target_is_overhead=False),
    ]
    try:
        import torch
    except ImportError:
        return results
    from jupyter_prov4ml.capture.models import describe_model

    net = torch.nn.Sequential(
        torch.nn.Linear(32, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 40),
        torch.nn.ReLU(),
        torch.nn.Linear(40, 10),
    )
    count = sum(p.numel() for p in net.parameters())
    results.append(
        checked(
            "log_model summary + weights sha256",
            _best_ms(lambda: describe_model(net, "m")),
            "ms",
            None,
            None,
            note=f"{count:,}-parameter MLP",
        )
    )
    return results


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
