"""How a trial's figures are drawn from the JSON logged beside them.

The artifact spool's worker process (`pipeline.tracking.spool`) imports this by name and
draws attention/<name>_<kind>.{png,html} and the confusion matrix off the training path,
and again after a kill. Light: matplotlib and numpy, no TensorFlow.
"""

from __future__ import annotations

import numpy as np

from pipeline.diagnostics.attention import PanelRow
from pipeline.diagnostics.figures import (
    confusion_matrix_figure,
    heatmap_figure,
    panel_html,
    png_bytes,
)

RENDERERS_PATH = "pipeline.diagnostics.renders:RENDERERS"


def _rows(payload: dict) -> list[PanelRow]:
    return [PanelRow(**row) for row in payload["examples"]]


def attention_png(payload: dict) -> bytes:
    rows, title, kind = _rows(payload), payload["title"], payload["kind"]
    return png_bytes(heatmap_figure(rows, title, kind=kind, max_tokens=payload["max_tokens"]))


def attention_html(payload: dict) -> str:
    return panel_html(_rows(payload), payload["title"], kind=payload["kind"])


def confusion_png(payload: dict) -> bytes:
    counts = np.array(payload["counts"])
    return png_bytes(confusion_matrix_figure(counts, payload["class_names"], payload["split"]))


RENDERERS = {
    "attention_png": attention_png,
    "attention_html": attention_html,
    "confusion_png": confusion_png,
}
