"""Framework integrations: callbacks and loggers that record a framework's training into the
running cell's run (a `%%provrun`, or a plain cell, as the API does).

Each framework has a module of its own, which imports that framework only when the user
imports it: `integrations.lightning` (and `integrations.pytorch_lightning`),
`integrations.transformers`, `integrations.keras`, `integrations.xgboost`; scikit-learn
estimators are recorded with `jupyter_prov4ml.log_estimator` (`integrations.sklearn`, no
import of scikit-learn at all). Nothing is imported here.
"""
