"""What people see: provenance and lineage graphs, live monitor, run summary, run table,
run diff. Every string from data reaches markup through one escaping module."""
