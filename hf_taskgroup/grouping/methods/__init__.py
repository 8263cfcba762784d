"""Grouping methods, one module each; every method registers itself in :mod:`hf_taskgroup.grouping.registry`."""
