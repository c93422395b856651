"""Series (samples, later metrics) saved as compact, lossless Parquet files.

`pyarrow` is imported here only, lazily, and only from the store writer thread or the CLI.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def table_bytes(table: Any, **options: Any) -> bytes:
    """A pyarrow table as the bytes of a zstd-compressed Parquet file (every data file of a
    run is written this way; `options` go to `pyarrow.parquet.write_table`)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", **options)
    return sink.getvalue()


def parquet_bytes(columns: Mapping[str, Sequence[float]]) -> bytes:
    """Encode equal-length float columns as a Parquet file."""
    import pyarrow as pa

    return table_bytes(
        pa.table({name: pa.array(values, type=pa.float64()) for name, values in columns.items()})
    )


def read_parquet(path: Path) -> dict[str, list[float]]:
    """Read a file written by `parquet_bytes` back into plain lists."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_pylist() for name in table.column_names}
