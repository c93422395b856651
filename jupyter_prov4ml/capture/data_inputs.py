"""`log_input`: a data input described by what it is, by duck typing — a file, a pandas
DataFrame, a numpy array, a torch tensor, a torch `DataLoader`, a dataset — never by its
value. Libraries are taken from `sys.modules` (the user imported them), never imported.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from jupyter_prov4ml.identity import file_sha256
from jupyter_prov4ml.records import DataInput

# Files larger than this are hashed by samples (size + evenly spaced blocks), flagged
# `sampled`; arrays and tables larger than this are not hashed (`skipped`).
MAX_FULL_HASH_BYTES = 256 * 2**20
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 2**20
MAX_COLUMNS = 200


def describe_input(obj: Any, name: str | None, limit: int = MAX_FULL_HASH_BYTES) -> DataInput:
    """A summary of the data input `obj`."""
    class_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, str | os.PathLike):
        return describe_file(Path(os.fspath(obj)), name, limit)
    module = type(obj).__module__.split(".", 1)[0]
    if module == "pandas" and hasattr(obj, "dtypes") and hasattr(obj, "columns"):
        return _dataframe(obj, name or "dataframe", class_name, limit)
    if module == "numpy" and hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return _array(obj, name or "array", class_name, limit)
    if module == "torch" and callable(getattr(obj, "detach", None)):
        return _tensor(obj, name or "tensor", class_name, limit)
    if hasattr(obj, "batch_size") and hasattr(obj, "dataset") and hasattr(obj, "sampler"):
        return _loader(obj, name or "dataloader", class_name)
    fingerprint = getattr(obj, "_fingerprint", None)
    length = _length(obj)
    if isinstance(fingerprint, str) or callable(getattr(obj, "__getitem__", None)):
        columns = getattr(obj, "column_names", None)
        return DataInput(
            name=name or "dataset",
            kind="dataset",
            class_name=class_name,
            length=length,
            columns=tuple(str(c) for c in columns)[:MAX_COLUMNS]
            if isinstance(columns, list)
            else (),
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        )
    return DataInput(name=name or "input", kind="object", class_name=class_name, length=length)


def describe_file(path: Path, name: str | None, limit: int = MAX_FULL_HASH_BYTES) -> DataInput:
    """A file by path, size and sha256 (of samples above `limit`); raises OSError if it
    cannot be read."""
    size = path.stat().st_size
    if not path.is_file():
        raise IsADirectoryError(f"not a file: {path}")
    if size <= limit:
        digest, method = file_sha256(path), "full"
    else:
        digest, method = _sampled_sha256(path, size), "sampled"
    return DataInput(
        name=name or path.name,
        kind="file",
        class_name="file",
        path=str(path.resolve()),
        size_bytes=size,
        sha256=digest,
        hash_method=method,
    )


def _sampled_sha256(path: Path, size: int) -> str:
    """sha256 of the size and SAMPLE_BLOCKS blocks spread evenly, the first and last among
    them: cheap for a 100 GB file, and changes with most edits (not all: flagged)."""
    digest = hashlib.sha256(f"{size}\0".encode())
    last = max(0, size - SAMPLE_BLOCK_BYTES)
    with path.open("rb") as handle:
        for index in range(SAMPLE_BLOCKS):
            handle.seek(last * index // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def _dataframe(frame: Any, name: str, class_name: str, limit: int) -> DataInput:
    rows, width = (int(n) for n in frame.shape)
    columns = tuple(str(c) for c in frame.columns)[:MAX_COLUMNS]
    dtypes = tuple(str(t) for t in frame.dtypes)[:MAX_COLUMNS]
    digest, method = None, "skipped"
    pandas = sys.modules.get("pandas")
    if pandas is not None and int(frame.memory_usage(deep=False).sum()) <= limit:
        try:
            hashed = pandas.util.hash_pandas_object(frame, index=True)
        # Unhashable cells (lists, dicts) cannot be hashed by pandas: the summary says so.
        except TypeError:
            hashed = None
        if hashed is not None:
            header = "\0".join(f"{c}:{t}" for c, t in zip(columns, dtypes, strict=False))
            hasher = hashlib.sha256(header.encode("utf-8", "replace"))
            hasher.update(hashed.to_numpy().tobytes())
            digest, method = hasher.hexdigest(), "pandas.util.hash_pandas_object"
    return DataInput(
        name=name,
        kind="dataframe",
        class_name=class_name,
        rows=rows,
        columns=columns,
        dtypes=dtypes,
        shape=(rows, width),
        sha256=digest,
        hash_method=method,
    )


def _array(array: Any, name: str, class_name: str, limit: int) -> DataInput:
    numpy = sys.modules["numpy"]
    size = int(array.nbytes)
    digest, method = None, "skipped"
    if size <= limit and array.dtype != object:
        contiguous = numpy.ascontiguousarray(array)
        hasher = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}\0".encode())
        hasher.update(contiguous.reshape(-1).view(numpy.uint8))
        digest, method = hasher.hexdigest(), "full"
    return DataInput(
        name=name,
        kind="array",
        class_name=class_name,
        shape=tuple(int(n) for n in array.shape),
        dtypes=(str(array.dtype),),
        size_bytes=size,
        sha256=digest,
        hash_method=method,
    )


def _tensor(tensor: Any, name: str, class_name: str, limit: int) -> DataInput:
    torch = sys.modules["torch"]
    size = int(tensor.numel()) * int(tensor.element_size())
    digest, method = None, "skipped"
    if size <= limit:
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        hasher = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}\0".encode())
        hasher.update(flat.view(torch.uint8).numpy())
        digest, method = hasher.hexdigest(), "full"
    return DataInput(
        name=name,
        kind="tensor",
        class_name=class_name,
        shape=tuple(int(n) for n in tensor.shape),
        dtypes=(str(tensor.dtype),),
        size_bytes=size,
        sha256=digest,
        hash_method=method,
    )


def _loader(loader: Any, name: str, class_name: str) -> DataInput:
    """A torch DataLoader: its length in batches, and the samples it draws from (the
    dataset's length — not batches × batch size, which over-counts a last partial batch)."""
    batch_size = loader.batch_size
    if batch_size is None:  # a custom batch_sampler holds it
        batch_size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    sampler = type(getattr(loader, "sampler", None)).__name__
    shuffle = (
        True if sampler == "RandomSampler" else False if sampler == "SequentialSampler" else None
    )
    workers = getattr(loader, "num_workers", None)
    drop_last = getattr(loader, "drop_last", None)
    return DataInput(
        name=name,
        kind="dataloader",
        class_name=class_name,
        length=_length(loader),
        batch_size=batch_size if isinstance(batch_size, int) else None,
        num_workers=workers if isinstance(workers, int) else None,
        shuffle=shuffle,
        drop_last=drop_last if isinstance(drop_last, bool) else None,
        dataset_length=_length(loader.dataset),
    )


def _length(obj: Any) -> int | None:
    try:
        length = len(obj)
    # An IterableDataset, or a user's __len__ that raises: the length is unknown.
    except Exception:  # noqa: BLE001
        return None
    return length if isinstance(length, int) else None
