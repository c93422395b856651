"""Start-up cost: `import jupyter_prov4ml` and `%load_ext jupyter_prov4ml`, each timed inside a
fresh interpreter (so nothing is already imported), several times, median.

Proves: the import takes <= 150 ms and the load (the `%load_ext` cell alone; creating the shell
is excluded) <= 300 ms. Baselines from the same run, for scale: `import IPython`, and loading
IPython's own `autoreload` extension the same way. `--verbose` adds the modules imported during
the load, from `python -X importtime`.

Bytecode caches are warm, as in an installed package: this environment sets
PYTHONDONTWRITEBYTECODE, so the children write theirs under a temp PYTHONPYCACHEPREFIX instead
(nothing is written into the repository).

What `--verbose` showed when this was written (-X importtime inflates times; cumulative ms):
`jupyter_prov4ml.kernel.extension` 161, of which probes.host 48 (psutil 40), pynvml 44 (imported
when the GPU probe opens), importlib.metadata 23 (for the software versions in the session
record), and 10-20 ms each for the dataclass-heavy records/provrun/journal modules. prov,
pyarrow and graphviz stay out of the load, as intended.

Run alone: `python benchmarks/bench_startup.py [--verbose]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, print_report

IMPORT_TARGET_MS = 150.0
LOAD_TARGET_MS = 300.0
ROUNDS = 7
MARK = "BENCH_MARK"
ANSWER = "BENCH_S"
PYCACHE = Path(tempfile.gettempdir()) / "prov4ml-bench-pycache"

IMPORT_SNIPPET = f"""
import time
start = time.perf_counter()
import {{module}}
print("{ANSWER}", time.perf_counter() - start)
"""

LOAD_SNIPPET = f"""
import sys, time
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
sys.stderr.write("{MARK}\\n")
sys.stderr.flush()
start = time.perf_counter()
result = shell.run_cell("%load_ext {{extension}}")
elapsed = time.perf_counter() - start
if not result.success:
    sys.exit(3)
print("{ANSWER}", elapsed)
"""


def _child_env(store: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["JUPYTER_PROV4ML_STORE"] = store
    return env


def _run(code: str, workdir: str, *flags: str) -> tuple[float, str]:
    """Run `code` in a fresh interpreter; the seconds it reported, and its stderr."""
    process = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=_child_env(str(Path(workdir) / "store")),
        timeout=120,
        check=False,
    )
    for line in process.stdout.splitlines():
        if line.startswith(ANSWER):
            return float(line.split()[1]), process.stderr
    raise BenchmarkError(
        f"child failed (exit {process.returncode}):\n{process.stdout[-1500:]}"
        f"\n{process.stderr[-1500:]}"
    )


def import_profile(workdir: str, top: int = 15) -> str:
    """The modules `%load_ext jupyter_prov4ml` imports, by cumulative time (-X importtime)."""
    _, stderr = _run(LOAD_SNIPPET.format(extension="jupyter_prov4ml"), workdir, "-X", "importtime")
    _, _, after = stderr.partition(MARK + "\n")
    rows = []
    for line in after.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        try:
            self_us, cumulative_us = int(fields[0]), int(fields[1])
        except ValueError:  # the header line
            continue
        rows.append((cumulative_us, self_us, fields[2].rstrip()))
    rows.sort(reverse=True)
    total_ms = sum(cum for cum, _, name in rows if not name.startswith("   ")) / 1e3
    lines = [
        f"imports during %load_ext jupyter_prov4ml: {len(rows)} modules, {total_ms:.0f} ms "
        f"top-level cumulative (python -X importtime); top {top}:",
        f"  {'cum ms':>8} {'self ms':>8}  module",
    ]
    lines += [
        f"  {cum / 1e3:8.1f} {own / 1e3:8.1f}  {name.strip()}" for cum, own, name in rows[:top]
    ]
    return "\n".join(lines)


def main(verbose: bool = False) -> list[Result]:
    PYCACHE.mkdir(exist_ok=True)
    arms = {
        "import jupyter_prov4ml": IMPORT_SNIPPET.format(module="jupyter_prov4ml"),
        "import IPython": IMPORT_SNIPPET.format(module="IPython"),
        "%load_ext jupyter_prov4ml": LOAD_SNIPPET.format(extension="jupyter_prov4ml"),
        "%load_ext autoreload": LOAD_SNIPPET.format(extension="autoreload"),
    }
    samples: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory(prefix="prov4ml-bench-") as workdir:
        for code in arms.values():  # warm-up: fills the bytecode cache and the page cache
            _run(code, workdir)
        names = list(arms)
        for index in range(ROUNDS):
            # Rotate the order each round so no arm always runs right after another.
            for name in names[index % len(names) :] + names[: index % len(names)]:
                samples[name].append(_run(arms[name], workdir)[0] * 1e3)
        profile = import_profile(workdir) if verbose else ""
    if profile:
        print(profile)

    def ms(name: str) -> float:
        return statistics.median(samples[name])

    return [
        checked(
            "import jupyter_prov4ml",
            ms("import jupyter_prov4ml"),
            "ms",
            ms("import IPython"),
            IMPORT_TARGET_MS,
            target_is_overhead=False,
            note=f"fresh interpreter, median of {ROUNDS}; baseline: `import IPython`",
        ),
        checked(
            "%load_ext jupyter_prov4ml",
            ms("%load_ext jupyter_prov4ml"),
            "ms",
            ms("%load_ext autoreload"),
            LOAD_TARGET_MS,
            target_is_overhead=False,
            note=(
                f"fresh interpreter, shell created untimed, median of {ROUNDS}; "
                "baseline: `%load_ext autoreload`"
            ),
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(verbose="--verbose" in sys.argv[1:]), started)
