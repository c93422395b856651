"""Series (samples, later metrics) saved as compact, lossless Parquet files.

`pyarrow` is imported here only, lazily, and only from the store writer thread or the CLI.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path


def parquet_bytes(columns: Mapping[str, Sequence[float]]) -> bytes:
    """Encode equal-length columns as a zstd-compressed Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {name: pa.array(values, type=pa.float64()) for name, values in columns.items()}
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_parquet(path: Path) -> dict[str, list[float]]:
    """Read a file written by `parquet_bytes` back into plain lists."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_pylist() for name in table.column_names}
