"""The shell face: `jupyter-prov4ml` commands, the headless runner and the RO-Crate export."""
