"""integrations.keras.ProvCallback with the real Keras 3 on the torch backend (CPU), through
`%%provrun` and a plain cell of a real IPython shell: epoch logs and batch logs stored as Keras
gave them, epochs as loop steps, parameter count and optimizer settings as parameters, and
the files a watched ModelCheckpoint saved by sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs

# Keras picks its backend when first imported: the torch one (the CPU wheel the tests pin).
os.environ.setdefault("KERAS_BACKEND", "torch")


@pytest.fixture
def keras() -> Any:
    """Keras, imported when a test runs (not when tests are collected)."""
    pytest.importorskip("torch", reason="torch cannot be imported: Keras' torch backend needs it")
    return pytest.importorskip(
        "keras", reason="Keras cannot be imported: nothing to integrate with"
    )


FIT = """
import numpy as np, keras
from jupyter_prov4ml.integrations.keras import ProvCallback

class Batches(keras.callbacks.Callback):
    '''What Keras hands callbacks at each batch, at the global batch step.'''
    def __init__(self):
        super().__init__()
        self.points = []
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        step = self.epoch * self.params["steps"] + batch
        self.points += [(f"batch_{name}", float(value), step) for name, value in logs.items()]

keras.utils.set_random_seed(0)
x = np.random.rand(32, 3).astype("float32")
y = x.sum(axis=1)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse", metrics=["mae"])
prov, batches = ProvCallback(), Batches()
checkpoint = prov.watch(keras.callbacks.ModelCheckpoint(folder + "/m-{epoch:02d}.keras"))
history = model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0,
                    callbacks=[checkpoint, prov, batches])
"""


def stored_points(run_id: str, store: Path) -> list[tuple[str, str, int, float]]:
    from jupyter_prov4ml import read_metrics

    frame = read_metrics(run_id, store=store)
    return sorted(zip(frame["name"], frame["context"], frame["step"], frame["value"], strict=True))


@pytest.mark.parametrize("provrun", [True, False], ids=["provrun", "plain-cell"])
def test_fit_is_recorded(
    loaded: Any, store_dir: Path, tmp_path: Path, provrun: bool, keras: Any
) -> None:
    """The epoch logs (`history.history`) at step = epoch, `val_*` in validation, and every
    batch's logs as `batch_*` at the global batch step, exactly as Keras gave them; two
    completed epoch steps of 3 batches; the checkpoint files' sha256."""
    loaded.user_ns["folder"] = str(tmp_path / "checkpoints")
    source = ("%%provrun --no-graph\n" if provrun else "") + FIT
    result = loaded.run_cell(source, store_history=True)
    assert result.success, result.error_in_exec
    assert loaded._jupyter_prov4ml.writer.flush(timeout_s=60)
    record = closed_runs(store_dir)[-1]
    assert record["kind"] == ("provrun" if provrun else "cell")
    assert record["status"] == "ok"

    history = loaded.user_ns["history"].history
    assert set(history) == {"loss", "mae", "val_loss", "val_mae"}
    epochs = [
        (name, "validation" if name.startswith("val_") else "training", epoch, value)
        for name, values in history.items()
        for epoch, value in enumerate(values)
    ]
    batches = [
        (name, "training", step, value) for name, value, step in loaded.user_ns["batches"].points
    ]
    assert len(batches) == 2 * 3 * 2  # epochs × batches × (loss, mae)
    assert stored_points(record["run_id"], store_dir) == sorted(epochs + batches)

    params = {p["name"]: p["value"] for p in record["params"]}
    model = loaded.user_ns["model"]
    assert params["parameter_count"] == model.count_params() == 21
    assert params["epochs"] == 2 and params["steps_per_epoch"] == 3
    assert params["optimizer.learning_rate"] == model.optimizer.get_config()["learning_rate"]
    assert params["keras.version"] == keras.__version__

    steps = sorted(record["steps"], key=lambda s: s["index"])
    assert [(s["loop"], s["index"], s["completed"]) for s in steps] == [
        ("epoch", 0, True),
        ("epoch", 1, True),
    ]
    assert all(dict(s["inner_iterations"]) == {"batch": 3} for s in steps)

    saved = sorted((tmp_path / "checkpoints").glob("*.keras"))
    assert [p.name for p in saved] == ["m-01.keras", "m-02.keras"]
    artifacts = {a["path"]: a["sha256"] for a in record["artifacts"]}
    assert artifacts == {
        str(p.resolve()): hashlib.sha256(p.read_bytes()).hexdigest() for p in saved
    }
