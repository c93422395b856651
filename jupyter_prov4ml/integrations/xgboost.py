"""XGBoost: `ProvCallback`, a `xgboost.callback.TrainingCallback` recording each boosting
round's evaluation metrics into the running cell's run. Importing this module imports XGBoost.

    from jupyter_prov4ml.integrations.xgboost import ProvCallback
    model = xgboost.XGBClassifier(n_estimators=50, callbacks=[ProvCallback()])
    model.fit(x, y, eval_set=[(x_val, y_val)])

Each round is a loop step `round` with its time and energy; its metrics are points named as
XGBoost names them (`validation_0-logloss`, `train-rmse`) at step = round, in the context
their data set's name says (`validation_*`, `val*`, `eval*` → validation; `test*` → test;
else training). `xgboost.cv`'s (mean, std) pairs give `<name>-mean` and `<name>-std`. The
scikit-learn wrapper copies its callbacks for each fit: a copy records just the same.
"""

from __future__ import annotations

from typing import Any

import xgboost
from xgboost.callback import TrainingCallback

from jupyter_prov4ml.integrations.run_link import RunLink, context_of

__all__ = ["ProvCallback"]


class ProvCallback(TrainingCallback):  # type: ignore[misc]
    """Records an XGBoost training (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._link = RunLink("xgboost", str(xgboost.__version__))

    def before_training(self, model: Any) -> Any:
        self._link.capture()  # the version, even if no round is ever evaluated
        return model

    def before_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self._link.begin_step("round", epoch)
        return False

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        for data, metrics in (evals_log or {}).items():
            points: list[tuple[str, Any]] = []
            for metric, history in metrics.items():
                if not history:
                    continue
                last, name = history[-1], f"{data}-{metric}"
                if isinstance(last, tuple) and len(last) == 2:
                    points += [(f"{name}-mean", last[0]), (f"{name}-std", last[1])]
                else:
                    points.append((name, last))
            self._link.metrics(points, epoch, context_of(str(data)))
        self._link.end_step("round")
        return False

    def after_training(self, model: Any) -> Any:
        self._link.end_all_steps(completed=False)
        return model
