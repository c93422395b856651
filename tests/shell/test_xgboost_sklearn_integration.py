"""integrations.xgboost.ProvCallback and `log_estimator` with the real XGBoost and
scikit-learn, through `%%provrun` in a real IPython shell: each round's evaluation metrics
as XGBoost recorded them (its `evals_result`), rounds as loop steps, and an estimator's
parameters, class, version and fitted attributes as parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs


def run(shell: Any, source: str) -> dict[str, Any]:
    """Run a cell that must succeed; the run it recorded."""
    result = shell.run_cell(source, store_history=True)
    assert result.success, result.error_in_exec
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=60)
    return closed_runs(shell._jupyter_prov4ml.store.root)[-1]


def stored_points(run_id: str, store: Path) -> list[tuple[str, str, int, float]]:
    from jupyter_prov4ml import read_metrics

    frame = read_metrics(run_id, store=store)
    return sorted(zip(frame["name"], frame["context"], frame["step"], frame["value"], strict=True))


def test_xgboost_rounds(loaded: Any, store_dir: Path) -> None:
    """The scikit-learn wrapper (which copies its callbacks) and `xgboost.train` with named
    evaluation sets: every round's value of every metric, at step = round, in the context
    of its data set (`train` → training, `validation_0`/`eval` → validation, `test` → test);
    each round a completed loop step; XGBoost's version a parameter."""
    xgboost = pytest.importorskip("xgboost", reason="XGBoost cannot be imported")
    record = run(
        loaded,
        "%%provrun --no-graph\n"
        "import numpy as np, xgboost\n"
        "from jupyter_prov4ml.integrations.xgboost import ProvCallback\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.random((40, 3)); y = (x[:, 0] > 0.5).astype(int)\n"
        "model = xgboost.XGBClassifier(n_estimators=4, max_depth=2, eval_metric='logloss',\n"
        "                              callbacks=[ProvCallback()])\n"
        "model.fit(x, y, eval_set=[(x, y)], verbose=False)\n",
    )
    evals = loaded.user_ns["model"].evals_result()
    assert list(evals) == ["validation_0"]
    expected = [
        (f"validation_0-{metric}", "validation", step, float(value))
        for metric, values in evals["validation_0"].items()
        for step, value in enumerate(values)
    ]
    assert len(expected) == 4
    assert stored_points(record["run_id"], store_dir) == sorted(expected)
    assert [(s["loop"], s["index"], s["completed"]) for s in record["steps"]] == [
        ("round", i, True) for i in range(4)
    ]
    params = {p["name"]: p["value"] for p in record["params"]}
    assert params["xgboost.version"] == xgboost.__version__

    record = run(
        loaded,
        "%%provrun --no-graph\n"
        "data = xgboost.DMatrix(x, label=y)\n"
        "evals = {}\n"
        "booster = xgboost.train({'max_depth': 2, 'eval_metric': ['rmse', 'mae']}, data, 3,\n"
        "                        evals=[(data, 'train'), (data, 'eval'), (data, 'test')],\n"
        "                        evals_result=evals, verbose_eval=False,\n"
        "                        callbacks=[ProvCallback()])\n",
    )
    evals = loaded.user_ns["evals"]
    contexts = {"train": "training", "eval": "validation", "test": "test"}
    expected = [
        (f"{data}-{metric}", contexts[data], step, float(value))
        for data, metrics in evals.items()
        for metric, values in metrics.items()
        for step, value in enumerate(values)
    ]
    assert len(expected) == 3 * 2 * 3
    assert stored_points(record["run_id"], store_dir) == sorted(expected)


def test_log_estimator(loaded: Any, store_dir: Path) -> None:
    """`log_estimator` records `get_params(deep=True)` (a credential-named one redacted), the
    class, scikit-learn's version and the fitted attributes' shapes, under the class's name
    (or `name=`), fitted or not."""
    sklearn = pytest.importorskip("sklearn", reason="scikit-learn cannot be imported")
    record = run(
        loaded,
        "%%provrun --no-graph\n"
        "import numpy as np\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n"
        "from jupyter_prov4ml import log_estimator\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.random((30, 4)); y = (x[:, 0] > 0.5).astype(int)\n"
        "model = LogisticRegression(C=0.5, max_iter=50).fit(x, y)\n"
        "log_estimator(model)\n"
        "log_estimator(make_pipeline(StandardScaler(), LogisticRegression()), name='pipe')\n",
    )
    params = {p["name"]: p["value"] for p in record["params"]}
    model = loaded.user_ns["model"]
    for name, value in model.get_params(deep=True).items():
        assert params[f"LogisticRegression.{name}"] == value, name
    assert params["LogisticRegression.class"] == (
        "sklearn.linear_model._logistic.LogisticRegression"
    )
    assert params["sklearn.version"] == sklearn.__version__
    assert params["LogisticRegression.coef_"] == "ndarray (1, 4) float64"
    assert params["LogisticRegression.intercept_"] == "ndarray (1,) float64"
    assert params["LogisticRegression.n_features_in_"] == 4
    assert params["LogisticRegression.fitted"] is True
    assert params["pipe.fitted"] is False
    assert params["pipe.logisticregression__C"] == 1.0
    assert params["pipe.class"] == "sklearn.pipeline.Pipeline"
