"""Reference models: what a search's neural configurations must at least match.

A bag-of-words model is the honest yardstick for a text classifier: when a linear model
on TF-IDF features beats every configuration the search trains, comparing poolings
among them tells little. Each entry of the registry fits on the training split, picks
its few settings on the validation split (by the search's objective) and returns class
probabilities for validation and test. The search logs each one as a child run tagged
`reference=true` (`pipeline.search.references`); the tuner never sees it. scikit-learn
only (imported when a reference runs), no TensorFlow. Add one with
`register_reference(Reference(...))` from a plugin module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import is_better
from pipeline.training.evaluation import classification_metrics


@dataclass(frozen=True)
class ReferenceInputs:
    """One split of a data set, as texts: references bring their own features."""

    train_texts: Sequence[str]
    train_y: np.ndarray
    val_texts: Sequence[str]
    val_y: np.ndarray
    test_texts: Sequence[str]
    n_classes: int
    tokenize: Callable[[str], list[str]]  # the search's tokenizer: the same tokens
    class_weight: str | None  # "balanced" or None (the data config's class weighting)
    objective: str  # what the settings are chosen by on validation (val_accuracy, ...)
    cache_dir: Path | None = None  # where a reference may keep what it computed (embeddings)


@dataclass
class ReferenceFit:
    val_probs: np.ndarray
    test_probs: np.ndarray | None
    chosen: dict[str, Any]  # the settings validation picked
    seconds: float
    tried: list[dict[str, Any]] = field(default_factory=list)  # settings and their score


@dataclass(frozen=True)
class Reference:
    name: str  # its label in tables, tags and reports (the `variant` tag)
    fit: Callable[[ReferenceInputs, Mapping[str, Any]], ReferenceFit]
    description: str = ""


REFERENCES: dict[str, Reference] = {}


def register_reference(reference: Reference, replace: bool = False) -> Reference:
    if reference.name in REFERENCES and not replace:
        raise ValueError(f"reference '{reference.name}' is already registered")
    REFERENCES[reference.name] = reference
    return reference


def _full_probs(model, x, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class index, also for a class train lacked."""
    probs = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    probs[:, model.classes_.astype(int)] = model.predict_proba(x)
    return probs


def _logistic_over_c(
    inputs: ReferenceInputs, settings: Mapping[str, Any], x_train, x_val, fixed: dict
) -> tuple[float, dict, Any, list[dict]]:
    """Logistic regression for each C of `settings`, each starting from the last one's
    solution (fewer iterations): (best validation score, its settings, model, tried)."""
    from sklearn.linear_model import LogisticRegression

    best, tried, previous = None, [], None
    for c in sorted(settings["c_values"]):
        model = LogisticRegression(
            C=float(c),
            max_iter=int(settings["max_iter"]),
            class_weight=inputs.class_weight,
            warm_start=True,
        )
        if previous is not None:
            model.coef_, model.intercept_ = previous.coef_.copy(), previous.intercept_.copy()
        model.fit(x_train, inputs.train_y)
        previous = model
        probs = _full_probs(model, x_val, inputs.n_classes)
        score = classification_metrics(probs, inputs.val_y, "val_")[inputs.objective]
        chosen = {**fixed, "C": float(c)}
        tried.append({**chosen, inputs.objective: score})
        if best is None or is_better(score, best[0], inputs.objective):
            best = (score, chosen, model)
    assert best is not None, "a reference needs at least one C"
    return (*best, tried)


def fit_tfidf_lr(inputs: ReferenceInputs, settings: Mapping[str, Any]) -> ReferenceFit:
    """TF-IDF of word n-grams (the search's tokens) + multinomial logistic regression;
    the n-gram range and C that score best on validation are kept."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    started = time.perf_counter()
    best: tuple[float, dict, Any, Any] | None = None
    tried = []
    for ngram_max in settings["ngram_max"]:
        vectorizer = TfidfVectorizer(
            tokenizer=inputs.tokenize,
            lowercase=False,  # the tokenizer already did what data.lowercase says
            token_pattern=None,
            ngram_range=(1, int(ngram_max)),
            min_df=int(settings["min_df"]),
            sublinear_tf=True,
        )
        x_train = vectorizer.fit_transform(inputs.train_texts)
        x_val = vectorizer.transform(inputs.val_texts)
        score, chosen, model, more = _logistic_over_c(
            inputs, settings, x_train, x_val, {"ngram_max": int(ngram_max)}
        )
        tried += more
        if best is None or is_better(score, best[0], inputs.objective):
            best = (score, chosen, model, vectorizer)
    assert best is not None, "tfidf-lr needs at least one ngram_max"
    _, chosen, model, vectorizer = best
    val_probs = _full_probs(model, vectorizer.transform(inputs.val_texts), inputs.n_classes)
    test_probs = (
        _full_probs(model, vectorizer.transform(inputs.test_texts), inputs.n_classes)
        if len(inputs.test_texts)
        else None
    )
    return ReferenceFit(val_probs, test_probs, chosen, time.perf_counter() - started, tried)


def fit_minilm_lr(inputs: ReferenceInputs, settings: Mapping[str, Any]) -> ReferenceFit:
    """Frozen all-MiniLM-L6-v2 sentence embeddings + logistic regression, C chosen on
    validation (`pipeline.training.sentence_encoder`); the embeddings are cached."""
    from pipeline.training.sentence_encoder import embed

    started = time.perf_counter()
    texts = [*inputs.train_texts, *inputs.val_texts, *inputs.test_texts]
    vectors, encoding_s = embed("minilm-lr", texts, settings, inputs.cache_dir)
    n_train, n_val = len(inputs.train_texts), len(inputs.val_texts)
    x_train, x_val = vectors[:n_train], vectors[n_train : n_train + n_val]
    _, chosen, model, tried = _logistic_over_c(
        inputs, settings, x_train, x_val, {"encoding_s": round(encoding_s, 1)}
    )
    x_test = vectors[n_train + n_val :]
    test_probs = _full_probs(model, x_test, inputs.n_classes) if len(x_test) else None
    val_probs = _full_probs(model, x_val, inputs.n_classes)
    return ReferenceFit(val_probs, test_probs, chosen, time.perf_counter() - started, tried)


register_reference(
    Reference(
        "tfidf-lr",
        fit_tfidf_lr,
        "scikit-learn TfidfVectorizer (word 1..n-grams) + LogisticRegression, "
        "C and n chosen on validation",
    )
)
register_reference(
    Reference(
        "minilm-lr",
        fit_minilm_lr,
        "all-MiniLM-L6-v2 sentence embeddings (int8 ONNX, frozen, mean-pooled) + "
        "LogisticRegression, C chosen on validation",
    )
)
