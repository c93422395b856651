"""Keras 3: `ProvCallback`, a `keras.callbacks.Callback` recording `model.fit` into the
running cell's run (any backend). Importing this module imports Keras.

    from jupyter_prov4ml.integrations.keras import ProvCallback
    prov = ProvCallback()
    model.fit(x, y, epochs=3, validation_split=0.2,
              callbacks=[prov, prov.watch(keras.callbacks.ModelCheckpoint("best.keras"))])

Recorded: the model's parameter count, `fit`'s epochs and steps, and the optimizer's settings
(as `optimizer.*`) as parameters, redacted; each epoch a loop step `epoch` with its `logs` as
metric points at step = epoch (`val_*` → validation); each training batch's logs as
`batch_<name>` points at the global batch step (Keras 3 reports running means over the
epoch); the files a watched `ModelCheckpoint` saves, by sha256.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import keras

from jupyter_prov4ml.integrations.run_link import RunLink, hook

__all__ = ["ProvCallback"]


class ProvCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Records a Keras `fit` (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._link = RunLink("keras", str(keras.__version__))
        self._batch_step = 0
        self._steps_per_epoch: int | None = None

    def watch(self, checkpoint: Any) -> Any:
        """`checkpoint` (a `keras.callbacks.ModelCheckpoint`), with each file it saves
        recorded by sha256 right after it saved it, whatever order the callbacks are in.
        Returns it, to go in `callbacks=[...]`."""
        link = self._link
        filepath = getattr(checkpoint, "filepath", None)
        if filepath is None:
            link.failed("checkpoints", TypeError(f"{type(checkpoint).__name__} has no filepath"))
            return checkpoint
        target = Path(str(filepath))
        # What it saves: the files of its folder with its name's extension (`.keras`,
        # `.weights.h5`), as its name may be a template (`m-{epoch:02d}.keras`).
        weights = ".weights.h5"
        suffix = weights if target.name.endswith(weights) else target.suffix
        folder = target.parent

        def saved_files() -> None:
            link.new_files(path for path in sorted(folder.glob("*")) if path.name.endswith(suffix))

        def after(hook: Any) -> Any:
            def observed(*args: Any, **kwargs: Any) -> Any:
                result = hook(*args, **kwargs)
                saved_files()
                return result

            return observed

        # Instance attributes shadow the class's hooks: the checkpoint saves, then we look.
        checkpoint.on_epoch_end = after(checkpoint.on_epoch_end)
        checkpoint.on_train_end = after(checkpoint.on_train_end)
        if getattr(checkpoint, "save_freq", "epoch") != "epoch":
            checkpoint.on_train_batch_end = after(checkpoint.on_train_batch_end)
        return checkpoint

    @hook
    def on_train_begin(self, logs: Any = None) -> None:
        params = dict(self.params or {})
        self._steps_per_epoch = (
            params.get("steps") if isinstance(params.get("steps"), int) else None
        )
        self._batch_step = 0
        settings: dict[str, Any] = {
            "epochs": params.get("epochs"),
            "steps_per_epoch": self._steps_per_epoch,
        }
        model = self.model
        with contextlib.suppress(Exception):  # an unbuilt model has no count yet
            settings["parameter_count"] = int(model.count_params())
        self._link.params(settings)
        optimizer = getattr(model, "optimizer", None)
        get_config = getattr(optimizer, "get_config", None)
        if callable(get_config):
            self._link.params(get_config(), prefix="optimizer.")

    @hook
    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        total = (self.params or {}).get("epochs")
        self._link.begin_step("epoch", epoch, total if isinstance(total, int) else None)
        if self._steps_per_epoch is not None:
            self._batch_step = epoch * self._steps_per_epoch

    @hook
    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if logs:
            self._link.metrics(
                [(f"batch_{name}", value) for name, value in logs.items()],
                self._batch_step,
                "training",
            )
        self._link.count_inner("batch")
        self._batch_step += 1

    @hook
    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if logs:
            self._link.metrics(logs.items(), epoch)
        self._link.end_step("epoch")

    @hook
    def on_train_end(self, logs: Any = None) -> None:
        self._link.end_all_steps(completed=False)
