"""Runs: the spec, the run directory, its schema and read-side view, and the item loop."""
