"""integrations.run_link without any framework: metric contexts from names, nested
hyperparameters flattened, and a link that records nothing (and says so once) where the
extension is not loaded."""

from __future__ import annotations

import sys
import warnings

import pytest

from jupyter_prov4ml.integrations.run_link import RunLink, context_of, flatten


@pytest.mark.parametrize(
    ("name", "context"),
    [
        ("val_loss", "validation"),
        ("val/acc", "validation"),
        ("eval_loss", "validation"),
        ("eval", "validation"),
        ("validation_0-logloss", "validation"),
        ("valid-auc", "validation"),
        ("test_acc", "test"),
        ("test-rmse", "test"),
        ("train_loss_step", "training"),
        ("loss", "training"),
        ("value_x", "training"),
        ("evaluator_score", "training"),
        ("testing_mode", "training"),
    ],
)
def test_context_of(name: str, context: str) -> None:
    """The context a metric's name says: prefixes followed by a separator, digit or nothing."""
    assert context_of(name) == context


def test_flatten_nested_hyperparameters() -> None:
    """Nested mappings become dotted names; other values stay as they are."""
    assert flatten({"lr": 0.1, "optimizer": {"name": "sgd", "betas": (0.9, 0.99)}, "e": {}}) == {
        "lr": 0.1,
        "optimizer.name": "sgd",
        "optimizer.betas": (0.9, 0.99),
        "e": {},
    }


def test_without_the_extension_nothing_is_recorded_and_it_is_said_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No shell with the extension: each call returns quietly after one warning in all."""
    monkeypatch.delitem(sys.modules, "IPython.core.interactiveshell", raising=False)
    link = RunLink("demo", "1.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        link.params({"lr": 0.1})
        link.metrics([("loss", 0.5)], 1)
        link.begin_step("epoch", 0)
        link.end_step("epoch")
        link.count_inner("batch")
        link.status("failed", "x")
    assert len(caught) == 1 and "not loaded" in str(caught[0].message)
    assert link.run_id() is None


def test_a_failing_hook_never_raises_into_the_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    """A callback method of ours that fails is one warning, and returns normally."""
    from jupyter_prov4ml.integrations.run_link import hook

    monkeypatch.delitem(sys.modules, "IPython.core.interactiveshell", raising=False)

    class Callback:
        def __init__(self) -> None:
            self._link = RunLink("demo", None)

        @hook
        def on_epoch_end(self, epoch: int) -> None:
            raise KeyError(epoch)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Callback().on_epoch_end(3)
    assert len(caught) == 1 and "on_epoch_end" in str(caught[0].message)


def test_a_link_pickles_without_its_runs() -> None:
    """A callback sent to another process (pickled with a trainer) carries its framework and
    version, not what it knew of this process's runs (weak references do not pickle)."""
    import pickle

    link = RunLink("demo", "1.0")
    link._seen_files["/x"] = (1, 2)
    copy = pickle.loads(pickle.dumps(link))
    assert (copy.framework, copy.version, copy._seen_files) == ("demo", "1.0", {})
