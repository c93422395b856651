"""Hugging Face transformers: `ProvCallback`, a `TrainerCallback` recording a `Trainer`'s
training into the running cell's run. Importing this module imports transformers.

    from jupyter_prov4ml.integrations.transformers import ProvCallback
    trainer = Trainer(model, args, train_dataset=train, callbacks=[ProvCallback()])

Recorded: `TrainingArguments` and the model's config (as `config.*`) as parameters, redacted
(`hub_token` is a credential's name); each `on_log` point with the trainer's `global_step` and
its context (`eval_*` → validation, `test_*` → test); each epoch a loop step `epoch`, its
optimizer steps counted into it; each `checkpoint-N` folder saved, by sha256 as a whole; the
trainer's `total_flos` as the parameter `transformers.total_flos_estimate` (Hugging Face's
own estimate, not a measurement). Only the main process (`state.is_world_process_zero`)
records. `transformers` accepts only its own names in `report_to`: pass the callback in
`callbacks=[...]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers
from transformers import TrainerCallback

from jupyter_prov4ml.integrations.run_link import RunLink, hook

__all__ = ["ProvCallback"]

# The estimate Hugging Face logs at the end of training: kept as a flagged parameter (from
# the trainer's state, at `on_train_end`), not as a metric point.
_FLOS = "total_flos"


class ProvCallback(TrainerCallback):  # type: ignore[misc]
    """Records a `transformers.Trainer`'s training (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._link = RunLink("transformers", str(transformers.__version__))

    @hook
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._link.params(args.to_dict())
        config = getattr(kwargs.get("model"), "config", None)
        to_dict = getattr(config, "to_dict", None)
        if callable(to_dict):
            self._link.params(to_dict(), prefix="config.")

    @hook
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            total = getattr(args, "num_train_epochs", None)
            epochs = int(total) if isinstance(total, int | float) and total > 0 else None
            self._link.begin_step("epoch", int(state.epoch or 0), epochs)

    @hook
    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._link.count_inner("step")

    @hook
    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._link.end_step("epoch")

    @hook
    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        # `evaluate()` logs its metrics here too (before `on_evaluate`), so evaluation points
        # are recorded once, from here.
        if not state.is_world_process_zero or not logs:
            return
        points = [(name, value) for name, value in logs.items() if name != _FLOS]
        self._link.metrics(points, state.global_step)

    @hook
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and args.output_dir:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self._link.artifact(folder)

    @hook
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._link.end_all_steps(completed=False)
            flos = getattr(state, _FLOS, None)
            if flos:
                self._link.params({f"transformers.{_FLOS}_estimate": flos})
