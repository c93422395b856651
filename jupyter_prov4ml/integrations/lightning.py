"""PyTorch Lightning: `ProvLogger`, a `lightning.pytorch.loggers.Logger` (see
integrations/lightning_logger.py for what it records). Importing this module imports
Lightning; where only the older `pytorch_lightning` package is installed, it is used instead
(`integrations.pytorch_lightning` always uses that one).

    from jupyter_prov4ml.integrations.lightning import ProvLogger
    trainer = lightning.pytorch.Trainer(max_epochs=3, logger=ProvLogger())
"""

from __future__ import annotations

from typing import Any

from jupyter_prov4ml.integrations.lightning_logger import lightning_classes

try:
    import lightning.pytorch as _package

    _FRAMEWORK = "lightning"
except ImportError:
    import pytorch_lightning as _package  # type: ignore[no-redef]

    _FRAMEWORK = "pytorch_lightning"

__all__ = ["ProvLogger"]

_classes = lightning_classes(
    __name__,
    _FRAMEWORK,
    str(getattr(_package, "__version__", "")) or None,
    _package.loggers.Logger,
    _package.callbacks.Callback,
    _package.utilities.rank_zero_only,
)
ProvLogger: Any = _classes[0]
EpochSteps: Any = _classes[1]
