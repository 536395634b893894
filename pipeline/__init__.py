"""attention-search: hyperparameter search and tracking for attention text classifiers."""

__version__ = "0.1.0"
