"""Analysis: attention numbers, figures (returned, never logged), replicate statistics
and the report. Report and statistics never import TensorFlow."""
