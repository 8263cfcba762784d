"""hf-taskgroup: find which tasks to train together, train the grouped models and share them."""

__version__ = "0.1.0.dev0"
