"""Reporting: what runs after a search to answer its question (replicate statistics,
paired comparisons, knob importance, the search's figures and the report). Never imports
TensorFlow."""
