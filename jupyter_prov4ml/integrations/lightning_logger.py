"""The Lightning logger and its epoch callback, built on the base classes of one Lightning
package: `lightning.pytorch` (integrations/lightning.py) or `pytorch_lightning`
(integrations/pytorch_lightning.py). Nothing of Lightning is imported here: the package's
classes are given to `lightning_classes`.

A logger is told nothing about epochs, so `log_graph(model)` (which Lightning calls on every
logger at the start of each fit, validate and test, with the module attached to its trainer)
adds one callback of ours to `model.trainer.callbacks`: it opens and closes a loop step per
training epoch, counts batches into it, and sees a Ctrl-C as an interruption.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from jupyter_prov4ml.integrations.run_link import RunLink, hook

# How Lightning's `finalize(status)` reads as a run's status: `finished` is the end of a job
# killed by a signal (its SignalConnector), `failed` an error caught on the way out.
_STATUS = {"success": "ok", "failed": "failed", "finished": "interrupted"}


def lightning_classes(
    module: str,
    framework: str,
    version: str | None,
    logger_base: type,
    callback_base: type,
    rank_zero_only: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> tuple[type, type]:
    """(ProvLogger, its epoch callback), subclasses of the package's `Logger` and `Callback`,
    named as attributes `ProvLogger` and `EpochSteps` of `module` (so they pickle)."""

    class EpochSteps(callback_base):  # type: ignore[misc, valid-type]
        """Each training epoch a loop step `epoch` (with validation, which Lightning runs
        before the epoch ends); each training batch counted into it."""

        def __init__(self, link: RunLink) -> None:
            super().__init__()
            self._link = link
            # Set by a Ctrl-C, so the `finalize("failed")` that follows keeps "interrupted".
            self.interrupted = False

        @hook
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            max_epochs = getattr(trainer, "max_epochs", None)
            total = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None
            self._link.begin_step("epoch", trainer.current_epoch, total)

        @hook
        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self._link.count_inner("batch")

        @hook
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self._link.end_step("epoch")

        @hook
        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._link.end_all_steps(completed=False)
            if isinstance(exception, KeyboardInterrupt):
                # Lightning turns Ctrl-C into `sys.exit(1)`: the run was interrupted.
                self.interrupted = True
                self._link.status("interrupted", "KeyboardInterrupt")

    class ProvLogger(logger_base):  # type: ignore[misc, valid-type]
        """A Lightning logger recording into the running cell's run (`%%provrun`, or a plain
        cell): hyperparameters as parameters (redacted), each `log_metrics` point with the
        trainer's step and its context (`validation` for `val_*`, `test` for `test_*`, else
        `training`), each epoch as a loop step with its own time and energy, each saved
        checkpoint by sha256, and `finalize(status)` as the run's status.

            trainer = Trainer(max_epochs=3, logger=ProvLogger())
        """

        def __init__(self, name: str = "jupyter_prov4ml") -> None:
            super().__init__()
            self._name = name
            self._link = RunLink(framework, version)
            self._callback = EpochSteps(self._link)

        @property
        def name(self) -> str:
            return self._name

        @property
        def version(self) -> str:
            # Where Lightning puts checkpoints by default: <root>/<name>/<version>/checkpoints,
            # so each recorded run saves into a folder named by its run id.
            return self._link.run_id() or "version_0"

        @property
        def save_dir(self) -> str | None:
            return None

        @rank_zero_only
        @hook
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(params, argparse.Namespace):
                params = vars(params)
            if isinstance(params, Mapping):
                self._link.params(params)

        @rank_zero_only
        @hook
        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            self._link.metrics(metrics.items(), step)

        @rank_zero_only
        @hook
        def log_graph(self, model: Any, input_array: Any = None) -> None:
            try:
                callbacks = model.trainer.callbacks
            except RuntimeError:  # no trainer (Fabric): no epoch steps, metrics still
                return
            if not any(callback is self._callback for callback in callbacks):
                callbacks.append(self._callback)

        @rank_zero_only
        @hook
        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            # What was just saved: the callback's last save (private, so read defensively),
            # else what its public paths name; only files new or changed are recorded.
            candidates = [
                getattr(checkpoint_callback, "_last_checkpoint_saved", None),
                getattr(checkpoint_callback, "last_model_path", None),
                getattr(checkpoint_callback, "best_model_path", None),
                *dict(getattr(checkpoint_callback, "best_k_models", None) or {}),
            ]
            self._link.new_files(candidates)

        @rank_zero_only
        @hook
        def finalize(self, status: str) -> None:
            self._link.end_all_steps(completed=status == "success")
            if self._callback.interrupted:
                self._callback.interrupted = False
                return
            mapped = _STATUS.get(status)
            if mapped == "ok":
                self._link.status("ok")
            elif mapped is not None:
                self._link.status(mapped, f"{framework}:{status}")  # type: ignore[arg-type]

    for made in (ProvLogger, EpochSteps):
        made.__module__, made.__qualname__ = module, made.__name__
    return ProvLogger, EpochSteps
