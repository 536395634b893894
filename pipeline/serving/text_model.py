"""The model a trial logs: raw text in, label, class probabilities and (on request) the
tokens' weights out.

An MLflow `pyfunc.PythonModel` around the trained Keras model, carrying what a user
would otherwise rebuild by hand: the vocabulary, tokenizer settings, `max_len`, class
names and pooling variant (`preprocessing.json`), with the `pipeline` package shipped
as `code_paths`, so `mlflow.pyfunc.load_model(uri)` and `mlflow models serve` work in a
fresh process. The Keras model itself sits inside as an MLflow Keras model
(`artifacts/keras_model`, for `mlflow.keras.load_model`).

MLflow is used here through `mlflow.pyfunc` (and its signature types) only; TensorFlow
is imported when a model loads, not with this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.data.prepare import TextEncoder
from pipeline.errors import UserFacingError, one_line

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # pipeline/, shipped as code_paths
KERAS_ARTIFACT = "keras_model"  # an MLflow Keras model folder
PREPROCESSING_ARTIFACT = "preprocessing"  # preprocessing.json
TEXT_COLUMN = "text"
EXPLAIN_PARAM = "explain"


class TextInputError(MlflowException, UserFacingError):
    """A request the model cannot answer: MLflow's scoring server answers HTTP 400 with
    this message, the commands print it as one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def probability_column(class_name: str) -> str:
    return f"p_{class_name}"


def texts_of(model_input: Any) -> list[str]:
    """The texts of a request: a DataFrame with a `text` column, a Series, a list of
    strings or one string. Anything else is refused in one line."""
    if isinstance(model_input, pd.DataFrame):
        columns = list(model_input.columns)
        if TEXT_COLUMN in columns:
            values = model_input[TEXT_COLUMN].tolist()
        elif columns == [0]:  # a plain list of strings, as MLflow hands it over
            values = model_input[0].tolist()
        else:
            got = ", ".join(map(str, columns)) or "none"
            raise TextInputError(f"input needs a '{TEXT_COLUMN}' column (got: {got})")
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        raw = model_input[TEXT_COLUMN]
        values = [raw] if isinstance(raw, str) else list(raw)
    elif isinstance(model_input, Sequence | np.ndarray):
        values = list(model_input)
    else:
        raise TextInputError(
            f"input must be texts in a '{TEXT_COLUMN}' column, got {type(model_input).__name__}"
        )
    if not values:
        raise TextInputError("input has no texts")
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise TextInputError(
            f"'{TEXT_COLUMN}' must hold strings: row {bad[0]} is {type(values[bad[0]]).__name__}"
            + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else "")
        )
    return values


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Raw texts -> one row each: `label`, `p_<class>` per class, `truncated`, `empty`;
    with params {"explain": true} also `tokens`, `weights` (attention, or occlusion
    saliency for poolings without weights: `explanation` says which)."""

    def load_context(self, context) -> None:
        import keras

        import pipeline.models.layers  # noqa: F401  (registers the custom layers)
        import pipeline.models.metrics  # noqa: F401

        with open(context.artifacts[PREPROCESSING_ARTIFACT]) as fh:
            self.meta = json.load(fh)
        for module in self.meta.get("plugins", []):  # their layers, shipped in code/
            importlib.import_module(module)
        self.encoder = TextEncoder(**self.meta["encoder"])
        self.class_names = list(self.meta["class_names"])
        self.keras_model = keras.saving.load_model(
            keras_file(context.artifacts[KERAS_ARTIFACT]), compile=False
        )
        self._probe = None

    # --------------------------------------------------------------- prediction

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        # The hint is what pyfunc serving passes (a frame with a `text` column; `texts_of`
        # also takes lists). A DataFrame hint is one MLflow infers nothing from, so it adds no
        # validation, and without a hint MLflow warns "Add type hints" on every import.
        texts = texts_of(model_input)
        explain = bool((params or {}).get(EXPLAIN_PARAM))
        self.check_bounds(texts, explain)
        ids, token_lists = self.encoder.encode(texts)
        probs = self.probabilities(ids)
        out = pd.DataFrame(
            {
                "label": [self.class_names[i] for i in probs.argmax(axis=1)],
                **{
                    probability_column(c): probs[:, i].astype(np.float64)
                    for i, c in enumerate(self.class_names)
                },
                "truncated": [len(t) > self.encoder.max_len for t in token_lists],
                "empty": [len(t) == 0 for t in token_lists],
            }
        )
        if explain:
            kind, weights = self.explanation(ids)
            shown = [toks[: self.encoder.max_len] for toks in token_lists]
            out["tokens"] = shown
            out["weights"] = [
                [round(float(w), 6) for w in row[: len(toks)]]
                for row, toks in zip(weights, shown, strict=True)
            ]
            out["explanation"] = kind
        return out

    def check_bounds(self, texts: list[str], explain: bool) -> None:
        """The request within the model's `serving` bounds (none for older models)."""
        rows = self.rows_per_call(explain)
        if rows and len(texts) > rows:
            what = "texts with explain=true" if explain else "texts"
            raise TextInputError(f"{len(texts)} {what} in one request; at most {rows}")
        chars = (self.meta.get("limits") or {}).get("max_chars")
        longest = max(range(len(texts)), key=lambda i: len(texts[i])) if chars else 0
        if chars and len(texts[longest]) > chars:
            raise TextInputError(
                f"text {longest} has {len(texts[longest])} characters; at most {chars}"
            )

    def rows_per_call(self, explain: bool) -> int | None:
        limits = self.meta.get("limits") or {}
        return limits.get("max_explain_rows" if explain else "max_rows")

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Class probabilities, in chunks of the trial's inference batch size, each chunk
        through the model's own predict step (traced once for the full width)."""
        size = int(self.meta.get("batch_size", 256))
        parts = [
            np.asarray(self.keras_model.predict_on_batch(ids[i : i + size]))
            for i in range(0, len(ids), size)
        ]
        return np.concatenate(parts)

    def explanation(self, ids: np.ndarray) -> tuple[str, np.ndarray]:
        """("attention", weights) from the pooling layer, or ("saliency", occlusion
        saliency) for poolings without weights: the numbers the trial's heatmaps draw."""
        from pipeline.models.registry import get_pooling

        variant = get_pooling(self.meta["pooling"])
        if variant.attention_weights:
            from pipeline.models.build import AttentionProbe

            if self._probe is None:
                self._probe = AttentionProbe(self.keras_model, variant, self.encoder.max_len)
            return "attention", self._probe.run(ids).weights.mean(axis=1)
        from pipeline.diagnostics.faithfulness import occlusion_saliency

        return "saliency", occlusion_saliency(self.probabilities, ids)


def keras_file(folder: str) -> str:
    """The .keras file inside an MLflow Keras model folder."""
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".keras"):
                return os.path.join(root, name)
    raise FileNotFoundError(f"no .keras file under {folder}")


def signature(class_names: Sequence[str]):
    """Strings in (a `text` column, records {"text": ...} or a plain list: the schema's
    one column is left unnamed so MLflow accepts all three, and `texts_of` insists on
    `text` when columns are named); label, probabilities and flags out; `explain` as a
    param."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = [ColSpec("string", "label")]
    outputs += [ColSpec("double", probability_column(c)) for c in class_names]
    outputs += [ColSpec("boolean", "truncated"), ColSpec("boolean", "empty")]
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec(EXPLAIN_PARAM, "boolean", False)]),
    )


def save_text_model(
    path: Path,
    keras_model_dir: Path,
    encoder: TextEncoder,
    class_names: Sequence[str],
    pooling: str,
    variant_label: str,
    batch_size: int,
    pip_requirements: list[str],
    input_texts: Sequence[str] = (),
    plugins: Sequence[str] = (),
    limits: dict[str, int] | None = None,
) -> Path:
    """Write the pyfunc folder at `path` (the trial logs it as its `model/`); the
    `plugins` modules (a pooling's layer) ship with it and are imported on load."""
    meta = {
        "encoder": encoder.to_dict(),
        "class_names": list(class_names),
        "pooling": pooling,
        "variant": variant_label,
        "batch_size": int(batch_size),
        "plugins": list(plugins),
        "limits": dict(limits or {}),  # serving.*: what one request may hold
    }
    preprocessing = path.parent / "preprocessing.json"
    preprocessing.write_text(json.dumps(meta))
    example = pd.DataFrame({TEXT_COLUMN: list(input_texts)}) if input_texts else None
    code = [str(PACKAGE_DIR), *plugin_code(plugins, path.parent / "plugin_code")]
    mlflow.pyfunc.save_model(
        str(path),
        python_model=TextClassifier(),
        artifacts={
            KERAS_ARTIFACT: str(keras_model_dir),
            PREPROCESSING_ARTIFACT: str(preprocessing),
        },
        code_paths=code,
        signature=signature(class_names),
        input_example=example,
        pip_requirements=pip_requirements,
    )
    return path


def plugin_code(plugins: Sequence[str], into: Path) -> list[str]:
    """Each plugin module copied under `into` at its import path (`a/b/mod.py` with the
    packages' `__init__.py` on the way, or a package whole); MLflow puts every code path
    on `sys.path` by its last name, so the top folders (or modules) are returned."""
    tops: dict[str, str] = {}
    for module in plugins:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ServingError(f"plugin '{module}': no source file to ship with the model")
        parts = module.split(".")
        source = Path(spec.origin)
        if spec.submodule_search_locations:  # a package: the whole folder
            shutil.copytree(source.parent, into.joinpath(*parts), dirs_exist_ok=True)
        else:
            target = into.joinpath(*parts[:-1], source.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        root = Path(importlib.util.find_spec(parts[0]).origin or "")
        for depth in range(1, len(parts)):  # the enclosing packages' own __init__.py
            init = root.parent.joinpath(*parts[1:depth], "__init__.py")
            if init.is_file():
                shutil.copy2(init, into.joinpath(*parts[:depth], "__init__.py"))
        package = len(parts) > 1 or spec.submodule_search_locations
        tops[parts[0]] = str(into / (parts[0] if package else source.name))
    return list(tops.values())


class ServingError(UserFacingError, RuntimeError):
    """A model that cannot be loaded or used; the message names it."""


def load_text_model(uri: str, tracking_uri: str | None = None):
    """The pyfunc at `uri` (runs:/..., models:/NAME/latest, a folder), or ServingError
    naming it; a model logged before text-in models existed is said to be one."""
    if tracking_uri:  # where models:/ and runs:/ URIs are looked up
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        raise ServingError(f"cannot load model '{uri}': {one_line(err)}") from None
    if not _is_python_model(model) or not isinstance(model.unwrap_python_model(), TextClassifier):
        raise ServingError(
            f"model '{uri}' takes token ids, not text (logged before text-in models); "
            "retrain it, or load it with mlflow.keras.load_model"
        )
    return model


def _is_python_model(model) -> bool:
    try:
        model.unwrap_python_model()
    except Exception:  # a flavor without a PythonModel (keras): MLflow raises its own
        return False
    return True
