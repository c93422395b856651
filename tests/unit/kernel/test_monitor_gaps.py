"""The monitor's samples fill the gaps of the kernel's own series (a C call holding the GIL)
and nothing else."""

from __future__ import annotations

import math

from jupyter_prov4ml.hardware.sampler import SampleColumns
from jupyter_prov4ml.kernel.monitor_client import fill_gaps, has_gaps
from jupyter_prov4ml.store.monitor_files import MonitorRow


def _kernel_samples(times: list[float]) -> SampleColumns:
    samples = SampleColumns()
    for at in times:
        samples.append({"elapsed_s": at, "process_cpu_percent": 1.0, "gpu0_power_w": 5.0})
    return samples


def _rows(times: list[float]) -> list[MonitorRow]:
    return [MonitorRow(at, at, {"elapsed_s": at, "tree_cpu_percent": 99.0}) for at in times]


def test_no_gap_no_change() -> None:
    samples = _kernel_samples([0.1, 0.2, 0.3])
    assert not has_gaps(samples, 0.1)
    assert fill_gaps(samples, _rows([0.15, 0.25]), 0.1) is samples


def test_rows_inside_a_gap_are_merged_in_time_order() -> None:
    """The kernel sampled 0.1, 0.2, then nothing until 1.0 (the GIL held); the monitor's rows
    in between are merged, those beside the kernel's own samples are not."""
    samples = _kernel_samples([0.1, 0.2, 1.0, 1.1])
    assert has_gaps(samples, 0.1)
    merged = fill_gaps(samples, _rows([0.15, 0.4, 0.6, 0.8, 1.05, 2.0]), 0.1)
    assert merged.column("elapsed_s") == [0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.1]
    cpu = merged.column("tree_cpu_percent")
    assert [math.isnan(v) for v in cpu] == [True, True, False, False, False, True, True]
    assert math.isnan(merged.column("gpu0_power_w")[3]), "the monitor reads no GPU"
    assert len({len(column) for column in merged.columns.values()}) == 1, "columns aligned"


def test_a_gap_at_the_start_is_filled() -> None:
    """A body that blocked at once: the kernel's first sample comes late, after the gap."""
    samples = _kernel_samples([1.0, 1.001])
    assert has_gaps(samples, 0.1)
    merged = fill_gaps(samples, _rows([0.05, 0.5, 0.95]), 0.1)
    assert merged.column("elapsed_s") == [0.05, 0.5, 0.95, 1.0, 1.001]
