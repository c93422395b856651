"""Where a run's work runs beyond the kernel: Dask clusters (workers, task groups, energy).

Imports `distributed` only in `dask_client`, and only once the user's session has imported it.
"""
