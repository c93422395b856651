"""Main-thread capture of a cell: recorder, run capture, metrics, loops, parameters,
environment, progress slices.

Never imports store/, views/, prov, pyarrow or sqlite3 (an import-linter contract)."""
