"""Cost of `integrations.lightning.ProvLogger` on a tiny Lightning training on CPU.

Proves: `trainer.fit` of a small MLP (4 epochs of 32 batches, a point logged at every step,
validation each epoch, a checkpoint each epoch) takes at most 2 % longer with
`logger=ProvLogger()` than with `logger=False`, in paired runs (the arms alternate, each a
cell of its own, the store writer drained between them), the extension loaded in all. The
logger's arm records a full run (metrics, epochs as loop steps, checkpoints by sha256). Also
reported, without a target: the same with a point logged at every step, the time spent in
our own code (timed inside the logger's calls into jupyter_prov4ml, free of the noise between
fits), and the writer's time to store the run afterwards (off the cell's path).

Run alone: `python benchmarks/bench_lightning.py` (needs torch and lightning; ~40 s).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import mean, quantiles
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report
from _shell import isolated_shell, load_extension

TARGET_RATIO = 1.02
ROUNDS = 25  # paired fits per arm
MS = 1e3

SETUP = """
import time, warnings, logging, torch, lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from jupyter_prov4ml.integrations.lightning import ProvLogger
warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

class Tiny(pl.LightningModule):
    def __init__(self, lr=0.05, hidden=64):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, 1))
    def training_step(self, batch, index):
        loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss
    def validation_step(self, batch, index):
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

torch.manual_seed(0)
torch.set_num_threads(1)  # two threads on a shared 2-core machine only add noise
x = torch.randn(1024, 16)
train = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)
val = DataLoader(TensorDataset(x[:128], x[:128].sum(1, keepdim=True)), batch_size=64)

def fit(logger, every=50):
    trainer = pl.Trainer(max_epochs=4, logger=logger, log_every_n_steps=every, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir="lightning")
    started = time.perf_counter()
    trainer.fit(Tiny(), train, val)
    return time.perf_counter() - started
"""
# Lightning's default cadence (a logged step point every 50 steps), and every step.
ARMS = {
    "with": "fit_s = fit(ProvLogger())\n",
    "without": "fit_s = fit(False)\n",
    "with, every step": "fit_s = fit(ProvLogger(), every=1)\n",
}
# Every call of the logger's into jupyter_prov4ml goes through these RunLink methods: timing
# them gives our own code's share of a fit, free of the machine's noise between fits.
LINK_METHODS = ("params", "metrics", "begin_step", "end_step", "count_inner", "new_files")


def drain_writer(extension: Any) -> float:
    """Wait until the store writer has written everything queued; seconds waited."""
    started = time.perf_counter()
    if not extension.writer.flush(timeout_s=60.0):
        raise BenchmarkError("the store writer did not drain within 60 s")
    return time.perf_counter() - started


@contextlib.contextmanager
def _time_link_methods() -> Iterator[list[float]]:
    """RunLink's methods wrapped, while the block runs, so that the seconds spent in them add
    up in the yielded one-item list (outermost calls only: `begin_step` calls `end_step`)."""
    from jupyter_prov4ml.integrations.run_link import RunLink

    total = [0.0]
    depth = [0]
    clock = time.perf_counter

    def timed(method: Any) -> Any:
        def wrapper(link: Any, *args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            started = clock()
            try:
                return method(link, *args, **kwargs)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    total[0] += clock() - started

        return wrapper

    originals = {name: getattr(RunLink, name) for name in LINK_METHODS}
    for name, method in originals.items():
        setattr(RunLink, name, timed(method))
    try:
        yield total
    finally:
        for name, method in originals.items():
            setattr(RunLink, name, method)


def main() -> list[Result]:
    try:
        import lightning  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise BenchmarkError(f"needs torch and lightning ({error})") from None
    with isolated_shell() as shell, _time_link_methods() as spent:
        extension = load_extension(shell)
        if not shell.run_cell(SETUP).success:
            raise BenchmarkError("the Lightning set-up cell failed")
        own: dict[str, list[float]] = {name: [] for name in ARMS}
        drains: list[float] = []

        def arm(name: str) -> float:
            drain_writer(extension)
            spent[0] = 0.0
            result = shell.run_cell(ARMS[name], store_history=True)
            if not result.success:
                raise BenchmarkError(f"{ARMS[name]!r} failed: {result.error_in_exec!r}")
            own[name].append(spent[0])
            if name == "with":
                drains.append(drain_writer(extension))
            return float(shell.user_ns["fit_s"])

        for _ in range(2):  # warm-up: first fits import and compile what later ones reuse
            for name in ARMS:
                arm(name)
        drains.clear()
        for times in own.values():
            times.clear()
        fits = interleave({name: lambda name=name: arm(name) for name in ARMS}, ROUNDS)

    def ratio(subject: str, baseline: str) -> float:
        """Median of the per-round ratios: each round's fits ran back to back, so a shared
        machine slowing down for a while slows both sides of a ratio alike."""
        pairs = zip(fits[subject], fits[baseline], strict=True)
        return median(a / b for a, b in pairs) * 100

    def quartile_ratio(subject: str, baseline: str) -> float:
        """The ratio of the arms' lower quartiles: noise only ever adds time, so the faster
        fits of each arm are the closest to what each costs."""
        return quantiles(fits[subject])[0] / quantiles(fits[baseline])[0] * 100

    def own_share(name: str) -> str:
        spent_s = mean(own[name])
        return f"{spent_s * MS:.2f} ms a fit ({100 * spent_s / median(fits[name]):.1f} %)"

    return [
        checked(
            "Lightning fit time, ProvLogger / logger=False",
            ratio("with", "without"),
            "%",
            100.0,
            (TARGET_RATIO - 1) * 100,
            note=f"median of {ROUNDS} per-round ratios of paired fits, Lightning's default "
            f"logging cadence; fits {median(fits['with']) * MS:.0f} vs "
            f"{median(fits['without']) * MS:.0f} ms; in our code: {own_share('with')}",
        ),
        checked(
            "same, lower quartiles' ratio",
            quartile_ratio("with", "without"),
            "%",
            100.0,
            None,
            note="the fastest quarter of each arm's fits compared (the noise of a shared "
            "machine is one-sided)",
        ),
        checked(
            "same, a point logged every step",
            ratio("with, every step", "without"),
            "%",
            100.0,
            None,
            note=f"log_every_n_steps=1; in our code: {own_share('with, every step')}",
        ),
        checked(
            "writer time to store the Lightning run",
            median(drains) * MS,
            "ms",
            None,
            None,
            target_is_overhead=False,
            note="after the cell, off its path (metrics Parquet, steps, PROV-JSON)",
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
