"""`log_model`: what a model is, by duck typing — PyTorch modules (`parameters()`,
`state_dict()`), Keras models (`count_params()`, `weights`) and anything else by its class.

No framework is imported here: a model's framework is already in `sys.modules` when the
user holds one of its models, and is taken from there.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jupyter_prov4ml.records import ModelSummary

# Weights larger than this are not hashed (about 0.4 s a GiB): the summary says so.
MAX_HASH_BYTES = 512 * 2**20
MAX_LAYERS = 100


class ModelError(ValueError):
    """A model that cannot be described or saved as asked; the message says why."""


def describe_model(model: Any, name: str, max_hash_bytes: int = MAX_HASH_BYTES) -> ModelSummary:
    """A summary of `model` (a torch module, a Keras model, or any object by its class)."""
    class_name = f"{type(model).__module__}.{type(model).__qualname__}"
    # Keras first: on its torch backend a Keras model is a torch module too, whose children
    # are Keras's internals rather than the user's layers.
    if _is_keras(model):
        return _keras_summary(model, name, class_name, max_hash_bytes)
    if callable(getattr(model, "state_dict", None)) and callable(
        getattr(model, "parameters", None)
    ):
        return _torch_summary(model, name, class_name, max_hash_bytes)
    framework = type(model).__module__.split(".", 1)[0] or None
    return ModelSummary(name=name, class_name=class_name, framework=framework)


def _is_keras(model: Any) -> bool:
    return callable(getattr(model, "count_params", None)) and hasattr(model, "weights")


def _torch_summary(model: Any, name: str, class_name: str, limit: int) -> ModelSummary:
    parameters = list(model.parameters())
    buffers = list(model.buffers()) if callable(getattr(model, "buffers", None)) else []
    total = sum(int(p.numel()) for p in parameters)
    trainable = sum(int(p.numel()) for p in parameters if getattr(p, "requires_grad", False))
    tensors = parameters + buffers
    size = sum(int(t.numel()) * int(t.element_size()) for t in tensors)
    children = getattr(model, "named_children", None)
    layers = (
        tuple(f"{n}:{type(c).__name__}" for n, c in children())[:MAX_LAYERS]
        if callable(children)
        else ()
    )
    digest = _torch_state_sha256(model.state_dict()) if size <= limit else None
    return ModelSummary(
        name=name,
        class_name=class_name,
        parameters_total=total,
        parameters_trainable=trainable,
        weights_bytes=size,
        dtypes=_distinct(str(t.dtype) for t in tensors),
        devices=_distinct(str(t.device) for t in tensors),
        layers=layers,
        weights_sha256=digest,
        weights_hash_skipped=size > limit,
        framework="torch",
    )


def _torch_state_sha256(state: Any) -> str:
    """sha256 over a state dict: each entry's name, dtype, shape and raw bytes, by name."""
    torch = sys.modules["torch"]
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(f"{key}\0".encode("utf-8", "surrogatepass"))
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}\0".encode())
            # Raw bytes of any dtype (bfloat16 has no numpy twin): viewed as bytes, not copied.
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        else:
            digest.update(repr(value).encode("utf-8", "replace"))
    return digest.hexdigest()


def _keras_summary(model: Any, name: str, class_name: str, limit: int) -> ModelSummary:
    weights = list(model.weights)
    trainable_weights = list(getattr(model, "trainable_weights", weights))
    total = int(model.count_params())
    trainable = sum(_count(w) for w in trainable_weights)
    arrays = [
        (getattr(w, "path", None) or getattr(w, "name", str(i)), w) for i, w in enumerate(weights)
    ]
    size = sum(_count(w) * _itemsize(w) for _, w in arrays)
    digest = None
    if size <= limit:
        hasher = hashlib.sha256()
        for key, weight in arrays:
            value = weight.numpy()
            hasher.update(f"{key}\0{value.dtype}{value.shape}\0".encode("utf-8", "replace"))
            hasher.update(value.tobytes())
        digest = hasher.hexdigest()
    layers = tuple(
        f"{getattr(layer, 'name', i)}:{type(layer).__name__}"
        for i, layer in enumerate(getattr(model, "layers", ()))
    )[:MAX_LAYERS]
    return ModelSummary(
        name=name,
        class_name=class_name,
        parameters_total=total,
        parameters_trainable=trainable,
        weights_bytes=size,
        dtypes=_distinct(str(getattr(w, "dtype", "?")) for _, w in arrays),
        devices=(),
        layers=layers,
        weights_sha256=digest,
        weights_hash_skipped=size > limit,
        framework="keras",
    )


def _count(weight: Any) -> int:
    count = 1
    for dimension in tuple(weight.shape):
        count *= int(dimension)
    return count


def _itemsize(weight: Any) -> int:
    numpy = sys.modules.get("numpy")
    try:
        return int(numpy.dtype(str(weight.dtype)).itemsize) if numpy is not None else 4
    except TypeError:
        return 4


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def save_model(model: Any, folder: Path, name: str) -> Path:
    """Write `model` into `folder` with its own framework's saver: a torch module's state
    dict (`NAME.pt`), a Keras model (`NAME.keras`); raises ModelError for others."""
    if _is_keras(model) and callable(getattr(model, "save", None)):
        path = folder / f"{name}.keras"
        model.save(path)
        return path
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        path = folder / f"{name}.pt"
        torch.save(model.state_dict(), path)
        return path
    raise ModelError(f"cannot save a {type(model).__name__}: only torch and Keras models")
