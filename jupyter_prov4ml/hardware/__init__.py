"""The only readers of /proc, psutil, NVML and RAPL: host and GPU probes, the sampler,
energy arithmetic.

Never imports store/, views/, prov, pyarrow or sqlite3 (an import-linter contract)."""
