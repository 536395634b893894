"""The validation metrics a trial reports come from fit's own validation pass: they must
equal scoring the final model with a separate prediction pass (what the pipeline did before)."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from pipeline.config import compose_config, typed_data
from pipeline.data import prepare
from pipeline.models.build import build_model
from pipeline.models.metrics import MacroF1
from pipeline.models.registry import variant_of
from pipeline.search.space import trial_settings
from pipeline.training.callbacks import ValidationConfusion
from pipeline.training.evaluation import confusion_matrix, evaluate
from pipeline.training.fit import batches as fit_batches
from pipeline.training.fit import final_epoch, fit, validation_metrics


@pytest.mark.parametrize(
    ("pooling", "restore", "exact"),
    [
        ("attention", True, False),
        ("classic", True, False),
        ("mean", False, False),
        ("attention", True, True),  # trained and validated on exact-length batches
    ],
)
def test_fit_validation_metrics_equal_a_separate_prediction_pass(pooling, restore, exact):
    cfg = compose_config(
        [
            f"train.bucketing.exact={str(exact).lower()}",
            "data.synthetic.n_examples=400",
            "train.epochs=3",
            f"model.pooling={pooling}",
            "model.units=8",
            "model.embedding_dim=8",
            "train.early_stopping.patience=1",
            f"train.early_stopping.restore_best_weights={str(restore).lower()}",
            "train.class_weight=balanced",  # weights the loss, not the val metrics
        ]
    )
    data = prepare(typed_data(cfg.data))
    settings, train = trial_settings(cfg, {})
    keras.utils.set_random_seed(0)
    model = build_model(
        settings, len(data.vocab), data.n_classes, 0.02, 1.0, train.steps_per_execution
    )
    confusion = ValidationConfusion()
    trim = variant_of(settings).trims_padding
    history = fit(model, data, train, trim_padding=trim, callbacks=[confusion])
    kept = final_epoch(history, train)
    from_fit = validation_metrics(history, kept)
    separate, probs = evaluate(model, data, "val", train, trim_padding=trim, prefix="val_")
    assert from_fit["val_accuracy"] == pytest.approx(separate["val_accuracy"], abs=1e-6)
    assert from_fit["val_macro_f1"] == pytest.approx(separate["val_macro_f1"], abs=1e-6)
    assert from_fit["val_loss"] == pytest.approx(separate["val_loss"], abs=1e-5)
    expected = confusion_matrix(data.y["val"], probs.argmax(axis=1), data.n_classes)
    np.testing.assert_array_equal(confusion.by_epoch[kept], expected)


def test_several_steps_per_execution_train_on_every_batch_once():
    """Keras runs `steps_per_execution` steps per call; a last, partial call must still train
    on the remaining batches, every epoch (the dataset's length is unknown to Keras)."""
    cfg = compose_config(["data.synthetic.n_examples=400"])
    data = prepare(typed_data(cfg.data))
    settings, train = trial_settings(cfg, {})
    plan_size = len(fit_batches(data, "train", train, trim_padding=True, shuffle=True))
    steps = plan_size // 2 + 1  # more than one call per epoch, the last one partial
    assert plan_size % steps != 0 and plan_size > steps > 1
    keras.utils.set_random_seed(0)
    model = build_model(settings, len(data.vocab), data.n_classes, 0.01, 1.0, steps)
    fit(model, data, replace(train, steps_per_execution=steps), trim_padding=True, epochs=3)
    assert int(model.optimizer.iterations.numpy()) == 3 * plan_size


def test_macro_f1_metric_matches_numpy_including_absent_classes():
    from pipeline.training.evaluation import macro_f1

    y_true = np.array([0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 0])  # class 2 never present nor predicted
    probs = np.eye(3)[y_pred].astype("float32")
    metric = MacroF1(3)
    metric.update_state(y_true[:3], probs[:3])
    metric.update_state(y_true[3:], probs[3:])
    assert float(metric.result()) == pytest.approx(macro_f1(y_true, y_pred, 3))
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_exact_length_batches_compute_what_padded_ones_do(bidirectional):
    """Every variant that trims padding: the model on exact-length batches (no padding at
    all) gives its outputs on the full padded batch."""
    from pipeline.config import to_plain
    from pipeline.models.registry import labelled_settings
    from pipeline.training.batching import BucketedBatches

    base = to_plain(compose_config([]).model)
    rng = np.random.default_rng(0)
    x = np.zeros((40, 12), dtype="int32")
    for row in x:
        n = rng.integers(1, 13)
        row[:n] = rng.integers(2, 50, n)
    plan = BucketedBatches(x, None, 8, exact=True)
    assert all((xb != 0).all() for (xb,) in plan)  # no padding in any batch
    assert sorted(plan.order) == list(range(len(x)))
    checked = 0
    for label, overrides in labelled_settings():
        settings = {**base, **overrides, "units": 8, "bidirectional": bidirectional}
        if not variant_of(settings).trims_padding:
            continue
        if bidirectional and label not in ("attn-tanh", "spdot2", "mean", "max", "last"):
            continue  # both directions: one of each kind is enough
        keras.utils.set_random_seed(0)
        model = build_model(settings, 50, 3, learning_rate=0.003)
        padded = np.asarray(model(x, training=False))
        parts = [np.asarray(model(xb, training=False)) for (xb,) in plan]
        exact = np.empty_like(padded)
        exact[plan.order] = np.concatenate(parts)
        np.testing.assert_allclose(exact, padded, atol=1e-5, err_msg=label)
        checked += 1
    assert checked >= (5 if bidirectional else 18)


def test_fit_traces_the_train_step_once():
    """Keras creates the optimizer's and metrics' variables in the first trace of its train
    step unless they exist, and TensorFlow then traces the step a second time: `fit`
    builds them first, so the step (the LSTM and its gradient) is traced once (and the
    test step once)."""
    cfg = compose_config(["+experiment=quick", "train.epochs=2"])
    data = prepare(typed_data(cfg.data))
    settings, train = trial_settings(cfg, {})
    keras.utils.set_random_seed(0)
    model = build_model(settings, len(data.vocab), data.n_classes, 0.01, 1.0, 4)
    traced = {"train": 0, "test": 0}
    train_step, test_step = model.train_step, model.test_step

    def counted_train_step(batch):
        traced["train"] += 1  # Python runs only while TensorFlow traces the step
        return train_step(batch)

    def counted_test_step(batch):
        traced["test"] += 1
        return test_step(batch)

    model.train_step, model.test_step = counted_train_step, counted_test_step
    fit(model, data, train, trim_padding=True)
    assert traced == {"train": 1, "test": 1}
    assert len(model.optimizer.variables) > 1  # the slots exist: Adam's, not a stand-in


@pytest.mark.parametrize(("pooling", "trims"), [("attention", True), ("classic", False)])
def test_predict_proba_gives_keras_predicts_numbers(pooling, trims):
    """`predict_proba` (test metrics, logged predictions) runs the model through one
    `tf.function` instead of Keras' `predict`: the same probabilities bit for bit, in the
    examples' order, on bucketed (trimmed) and full-width batches."""
    from pipeline.training.batching import BucketedBatches, predict_proba

    cfg = compose_config(["+experiment=quick", f"model.pooling={pooling}"])
    data = prepare(typed_data(cfg.data))
    settings, _ = trial_settings(cfg, {})
    keras.utils.set_random_seed(0)
    model = build_model(settings, len(data.vocab), data.n_classes, 0.01, 1.0, 1)
    x = data.x["val"]
    plan = BucketedBatches(x, None, 16, 3, enabled=trims)
    expected = np.empty((len(x), data.n_classes), dtype="float32")
    expected[plan.order] = model.predict(plan.dataset(), verbose=0)
    np.testing.assert_array_equal(predict_proba(model, x, 16, 3, enabled=trims), expected)
