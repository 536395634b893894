"""Training: length-bucketed batches, fit, evaluation and the callbacks every trial uses.

Knows models and data; never MLflow (callbacks that log live with the search).
`evaluation`'s metrics are NumPy only.
"""
