"""Cached group evaluators (text and tabular suites) and the Trainer-side affinity collection."""
