"""integrations.lightning.ProvLogger with the real Lightning on CPU, through `%%provrun` and a
plain cell of a real IPython shell: what Lightning logged is what is stored (values as floats,
steps, contexts), checkpoints by sha256, hyperparameters redacted, epochs as loop steps,
`finalize(status)` as the run's status."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import cli, closed_runs


@pytest.fixture(autouse=True)
def lightning() -> Any:
    """Lightning, imported when a test of this module runs (not when tests are collected)."""
    pytest.importorskip("torch", reason="torch cannot be imported: the Lightning tests need it")
    return pytest.importorskip(
        "lightning", reason="Lightning cannot be imported: nothing to integrate with"
    )


# A tiny regression model and a logger that keeps what Lightning hands its loggers: the
# framework's own values, to compare the store with.
MODEL = """
import torch, lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from lightning.pytorch.loggers import Logger
from jupyter_prov4ml.integrations.lightning import ProvLogger

class Seen(Logger):
    def __init__(self):
        super().__init__()
        self.points, self.hparams = [], {}
    name = property(lambda self: "seen")
    version = property(lambda self: "0")
    def log_hyperparams(self, params, *args, **kwargs):
        self.hparams.update(params)
    def log_metrics(self, metrics, step=None):
        self.points += [(name, float(value), step) for name, value in metrics.items()]

class Tiny(pl.LightningModule):
    def __init__(self, lr=0.05, hidden=4, api_key="sk-live-abcdefghijklmnopqrstuv"):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Linear(hidden, 1))
    def step(self, batch):
        return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
    def training_step(self, batch, index):
        loss = self.step(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss
    def validation_step(self, batch, index):
        self.log("val_loss", self.step(batch))
    def test_step(self, batch, index):
        self.log("test_loss", self.step(batch))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

torch.manual_seed(0)
x = torch.randn(24, 3)
data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)

def trainer(root, loggers, **options):
    return pl.Trainer(max_epochs=2, logger=loggers, log_every_n_steps=1, accelerator="cpu",
                      enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=root, **options)
"""


def run(shell: Any, source: str) -> Any:
    """Run a cell, then write everything."""
    result = shell.run_cell(source, store_history=True)
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=60)
    return result


def stored_points(run_id: str, store: Path) -> list[tuple[str, str, int, float]]:
    """The run's metric points as read back through the public `read_metrics`."""
    from jupyter_prov4ml import read_metrics

    frame = read_metrics(run_id, store=store)
    return sorted(zip(frame["name"], frame["context"], frame["step"], frame["value"], strict=True))


def expected_points(seen: list[tuple[str, float, int]]) -> list[tuple[str, str, int, float]]:
    """What Lightning logged, with the context its name says."""
    from jupyter_prov4ml.integrations.run_link import context_of

    return sorted((name, context_of(name), step, value) for name, value, step in seen)


def test_fit_and_test_inside_provrun(
    loaded: Any, store_dir: Path, tmp_path: Path, lightning: Any
) -> None:
    """Every point Lightning logged (train steps and epochs, validation, test) is stored with
    its value as a float, its step and its context; hyperparameters are parameters (the
    credential redacted), with Lightning's version; each epoch is a completed loop step with
    its batches, time and energy; each checkpoint is an artifact whose sha256 is the file's;
    the run is `ok` (finalize("success"))."""
    loaded.user_ns["root"] = str(tmp_path / "lightning")
    result = run(
        loaded,
        "%%provrun --no-graph --name lit\n" + MODEL + "seen = Seen()\n"
        "checkpoints = pl.callbacks.ModelCheckpoint(save_top_k=-1)\n"
        "fit = trainer(root, [ProvLogger(), seen], callbacks=[checkpoints])\n"
        "fit.fit(Tiny(), data, data)\n"
        "fit.test(Tiny(), data, verbose=False)\n",
    )
    assert result.success, result.error_in_exec
    (record,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert record["status"] == "ok"
    seen = loaded.user_ns["seen"]
    names = {name for name, _, _ in seen.points}
    assert {"train_loss_step", "train_loss_epoch", "val_loss", "test_loss"} <= names
    assert stored_points(record["run_id"], store_dir) == expected_points(seen.points)

    params = {p["name"]: p for p in record["params"]}
    assert params["lr"]["value"] == 0.05 and params["hidden"]["value"] == 4
    assert params["lr"]["source"] == "lightning"
    assert params["api_key"]["value"] == "<redacted>"
    assert params["lightning.version"]["value"] == lightning.__version__

    (loop,) = record["loops"]
    assert (loop["loop"], loop["steps"], loop["completed"], loop["length"]) == ("epoch", 2, 2, 2)
    steps = sorted(record["steps"], key=lambda s: s["index"])
    assert [s["index"] for s in steps] == [0, 1]
    for step in steps:
        assert step["wall_time_s"] > 0
        assert dict(step["inner_iterations"]) == {"batch": 3}
        assert step["energy"]["readings"], "each epoch has its own energy"

    saved = sorted(Path(checkpoints_dir(loaded)).glob("*.ckpt"))
    assert len(saved) == 2
    artifacts = {a["path"]: a for a in record["artifacts"]}
    assert set(artifacts) == {str(path.resolve()) for path in saved}
    for path in saved:
        data = path.read_bytes()
        assert artifacts[str(path.resolve())]["sha256"] == hashlib.sha256(data).hexdigest()
        assert artifacts[str(path.resolve())]["size_bytes"] == len(data)
    # The default checkpoint folder is named by the run.
    assert record["run_id"] in str(saved[0])

    listing = cli("list", "--store", str(store_dir), "--json", "--kind", "provrun", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (listed,) = json.loads(listing.stdout)
    assert listed["params"]["lr"] == 0.05 and listed["params"]["api_key"] == "<redacted>"


def checkpoints_dir(shell: Any) -> str:
    return str(shell.user_ns["checkpoints"].dirpath)


def test_plain_cell_attaches_to_its_record(loaded: Any, store_dir: Path, tmp_path: Path) -> None:
    """Without `%%provrun`, the logger records into the cell's own record, as the API does:
    the same points, parameters (once each, though Lightning logs them for `fit` and again
    for `test`) and epochs."""
    loaded.user_ns["root"] = str(tmp_path / "lightning")
    assert run(loaded, MODEL).success
    result = run(
        loaded,
        "seen = Seen()\n"
        "fit = trainer(root, [ProvLogger(), seen])\n"
        "fit.fit(Tiny(), data, data)\n"
        "fit.test(Tiny(), data, verbose=False)\n",
    )
    assert result.success, result.error_in_exec
    record = closed_runs(store_dir)[-1]
    assert record["kind"] == "cell" and record["status"] == "ok"
    seen = loaded.user_ns["seen"]
    assert stored_points(record["run_id"], store_dir) == expected_points(seen.points)
    names = [p["name"] for p in record["params"]]
    assert set(names) >= {"lr", "hidden", "lightning.version"}
    assert len(names) == len(set(names))
    assert [s["index"] for s in record["steps"]] == [0, 1]


def test_a_failure_lightning_reports_is_the_runs_status(
    loaded: Any, store_dir: Path, tmp_path: Path
) -> None:
    """A fit that failed is a failed run even when the cell catches the error and ends `ok`
    (Lightning's finalize("failed")); the epoch it failed in is an uncompleted step."""
    loaded.user_ns["root"] = str(tmp_path / "lightning")
    result = run(
        loaded,
        "%%provrun --no-graph\n" + MODEL + "class Broken(Tiny):\n"
        "    def training_step(self, batch, index):\n"
        "        if self.current_epoch == 1:\n"
        "            raise ArithmeticError('diverged')\n"
        "        return super().training_step(batch, index)\n"
        "try:\n"
        "    trainer(root, [ProvLogger()]).fit(Broken(), data)\n"
        "except ArithmeticError:\n"
        "    pass\n",
    )
    assert result.success, result.error_in_exec
    record = closed_runs(store_dir)[-1]
    assert record["status"] == "failed"
    assert record["error_type"] == "lightning:failed"
    steps = sorted(record["steps"], key=lambda s: s["index"])
    assert [(s["index"], s["completed"]) for s in steps] == [(0, True), (1, False)]


def test_pytorch_lightning_package(loaded: Any, store_dir: Path, tmp_path: Path) -> None:
    """`integrations.pytorch_lightning.ProvLogger` records a `pytorch_lightning.Trainer`."""
    pytorch_lightning = pytest.importorskip(
        "pytorch_lightning", reason="the pytorch_lightning package cannot be imported"
    )
    loaded.user_ns["root"] = str(tmp_path / "pl")
    source = (
        MODEL.replace(
            "import torch, lightning.pytorch as pl", "import torch, pytorch_lightning as pl"
        )
        .replace("from lightning.pytorch.loggers", "from pytorch_lightning.loggers")
        .replace("integrations.lightning import", "integrations.pytorch_lightning import")
    )
    result = run(
        loaded,
        "%%provrun --no-graph\n" + source + "seen = Seen()\n"
        "trainer(root, [ProvLogger(), seen]).fit(Tiny(), data, data)\n",
    )
    assert result.success, result.error_in_exec
    record = closed_runs(store_dir)[-1]
    seen = loaded.user_ns["seen"]
    assert stored_points(record["run_id"], store_dir) == expected_points(seen.points)
    params = {p["name"]: p["value"] for p in record["params"]}
    assert params["pytorch_lightning.version"] == pytorch_lightning.__version__
    assert len(record["steps"]) == 2
