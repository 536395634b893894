"""Serving: the text-in model a trial logs and registers (an MLflow pyfunc carrying the
tokenizer, vocabulary and class names), and batch prediction over files. The one place
besides `tracking/` that uses MLflow, through `mlflow.pyfunc` (and its signature types)."""
