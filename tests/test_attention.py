"""Attention metrics on hand-made weights, panel choice, saliency, figures (no MLflow)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from pipeline.diagnostics.attention import (
    PanelRow,
    attention_metrics,
    choose_panel,
    panel_rows,
)
from pipeline.diagnostics.faithfulness import occlusion_saliency
from pipeline.diagnostics.figures import heatmap_figure, panel_html, token_window
from pipeline.reporting.figures import comparison_figure

IDS = np.array([[5, 6, 7, 8, 0, 0, 0, 0]])  # 4 real tokens, 4 padding
KEYS = np.array([[False, False, True, False, False, False, False, False]])


def test_uniform_weights_have_entropy_one_and_no_key_focus():
    w = np.array([[0.25, 0.25, 0.25, 0.25, 0, 0, 0, 0]])
    m = attention_metrics(w, IDS, KEYS)
    assert m["attention_entropy"] == pytest.approx(1.0)
    assert m["attention_on_padding"] == 0.0
    assert m["attention_on_keys"] == pytest.approx(0.25)
    assert m["attention_top1_key_hit"] == 0.0  # argmax of a tie is the first token


def test_one_hot_on_key_has_entropy_zero_and_full_hit():
    w = np.array([[0, 0, 1.0, 0, 0, 0, 0, 0]])
    m = attention_metrics(w, IDS, KEYS)
    assert m["attention_entropy"] == 0.0
    assert m["attention_on_keys"] == 1.0
    assert m["attention_top1_key_hit"] == 1.0


def test_mass_on_padding_is_measured_like_the_classic_recipe():
    w = np.full((1, 8), 1 / 8)  # softmax over all steps: half the mass on padding
    m = attention_metrics(w, IDS, None)
    assert m["attention_on_padding"] == pytest.approx(0.5)
    assert m["attention_entropy"] == pytest.approx(1.0)  # uniform over real tokens
    assert "attention_on_keys" not in m


def test_metrics_average_over_examples():
    ids = np.array([[5, 6, 0], [5, 6, 7]])
    w = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    keys = np.array([[True, False, False], [False, True, False]])
    m = attention_metrics(w, ids, keys)
    assert m["attention_on_keys"] == pytest.approx(0.5)
    assert m["attention_top1_key_hit"] == pytest.approx(0.5)


def test_panel_is_seeded_and_covers_every_class():
    y = np.repeat([0, 1, 2], [50, 5, 30])
    a, b = choose_panel(y, 3, 6, seed=0), choose_panel(y, 3, 6, seed=0)
    np.testing.assert_array_equal(a, b)
    assert set(y[a]) == {0, 1, 2} and len(a) == 6
    assert not np.array_equal(a, choose_panel(y, 3, 6, seed=1))


class KeyTokenModel:
    """Predicts class 1 with probability 0.9 when token 9 is present, else 0.5."""

    def predict(self, ids, batch_size=None, verbose=0):
        p1 = np.where((ids == 9).any(axis=1), 0.9, 0.5)
        return np.stack([1 - p1, p1], axis=1)


def test_occlusion_saliency_points_at_the_decisive_token():
    ids = np.array([[3, 9, 4, 0, 0]])
    s = occlusion_saliency(KeyTokenModel().predict, ids)
    assert s[0].tolist() == pytest.approx([0, 1, 0, 0, 0])


def rows(n=3, length=12):
    w = np.random.default_rng(0).dirichlet(np.ones(length), size=n)
    ids = np.arange(2, 2 + length)[None, :].repeat(n, axis=0)
    vocab = [f"tok{i}" for i in range(2 + length)]
    return panel_rows(w, ids, vocab, np.array([0, 1, 0]), np.array([0, 0, 0]), ["neg", "pos"])


def test_heatmap_returns_a_figure_with_one_axis_per_example_and_labels():
    fig = heatmap_figure(rows(), "trial 1: attention", kind="attention")
    assert isinstance(fig, Figure)
    example_axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert len(example_axes) == 3
    assert "predicted: neg (WRONG)" in example_axes[1].get_title(loc="left")
    assert [t.get_text() for t in example_axes[0].texts][:2] == ["tok2", "tok3"]


def test_long_texts_show_a_window_around_the_top_weight():
    weights = [0.0] * 100
    weights[70] = 1.0
    start, end = token_window(weights, 20)
    assert end - start == 20 and start <= 70 < end
    assert token_window([0.5, 0.5], 20) == (0, 2)
    row = PanelRow([f"t{i}" for i in range(100)], weights, "a", "a", 0.0, [70])
    fig = heatmap_figure([row], "long", max_tokens=20)
    ax = [a for a in fig.axes if a.get_title(loc="left")][0]
    assert len(ax.texts) == 20 and "tokens" in ax.get_title(loc="left")
    shown = {t.get_text(): t for t in ax.texts}
    assert shown["t70"].get_fontweight() == "bold" and shown["t69"].get_fontweight() == "normal"


def test_classic_padding_mass_is_annotated():
    row = PanelRow(["a", "b"], [0.3, 0.2], "x", "x", 0.5, [])
    fig = heatmap_figure([row], "classic")
    assert "attention on padding: 50%" in [a for a in fig.axes if a.get_title(loc="left")][
        0
    ].get_title(loc="left")


def test_html_is_self_contained_and_escapes_tokens():
    row = PanelRow(["<b>", "ok"], [0.9, 0.1], "x", "y", 0.0, [0])
    html = panel_html([row], "t", kind="saliency")
    assert "&lt;b&gt;" in html and "<b>" not in html.replace("<body>", "")
    assert "http" not in html and "<link" not in html and "<script" not in html
    assert "saliency" in html


def test_panel_rows_are_json_serialisable():
    from dataclasses import asdict

    text = json.dumps([asdict(r) for r in rows()])
    assert json.loads(text)[0]["tokens"][0] == "tok2"


def test_comparison_figure_has_a_panel_per_metric():
    frame = pd.DataFrame(
        {
            "variant": ["mean", "mean", "attention-tanh"],
            "val_accuracy": [0.5, 0.6, 0.9],
            "attention_on_keys": [np.nan, np.nan, 0.7],
        }
    )
    fig = comparison_figure(frame, "val_accuracy")
    assert [ax.get_title() for ax in fig.axes] == ["val_accuracy", "attention_on_keys"]
