"""Dataflow of cells (AST) and the lineage links between executions."""
