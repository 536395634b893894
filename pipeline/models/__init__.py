"""Models: the pooling registry, Keras layers and metrics, and model building.

Importing this package loads nothing heavy: `registry` is plain Python (layers are
imported when a variant's factory runs); `layers`, `metrics` and `build` need Keras.
Knows nothing of MLflow or files.
"""
