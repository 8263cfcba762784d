"""Stage 6, publishing: model cards, grouped-model folders and PVI-dataset pushes.

This is the only package that writes to the Hub; no other stage imports it (the pipeline and the CLI do).
"""
