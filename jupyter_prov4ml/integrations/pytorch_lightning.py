"""PyTorch Lightning under its older package name: `ProvLogger`, a
`pytorch_lightning.loggers.Logger`, for trainers made from `pytorch_lightning` (what it records:
integrations/lightning_logger.py).

    from jupyter_prov4ml.integrations.pytorch_lightning import ProvLogger
    trainer = pytorch_lightning.Trainer(max_epochs=3, logger=ProvLogger())
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning

from jupyter_prov4ml.integrations.lightning_logger import lightning_classes

__all__ = ["ProvLogger"]

_classes = lightning_classes(
    __name__,
    "pytorch_lightning",
    str(getattr(pytorch_lightning, "__version__", "")) or None,
    pytorch_lightning.loggers.Logger,
    pytorch_lightning.callbacks.Callback,
    pytorch_lightning.utilities.rank_zero_only,
)
ProvLogger: Any = _classes[0]
EpochSteps: Any = _classes[1]
