"""Per-trial attention artifacts: heatmap PNG, HTML and JSON of a fixed panel, plus metrics.

Attention-bearing poolings (attention, classic) log their weights; mean/max/last log
occlusion saliency in the same layout, labelled as saliency. Only this module decides
what goes where; figures and numbers come from `plots` and `attention`, and the
tracker does the logging.
"""

from __future__ import annotations

from dataclasses import asdict

import keras
import numpy as np
from omegaconf import DictConfig

from pipeline.attention import attention_metrics, choose_panel, occlusion_saliency, panel_rows
from pipeline.data import PreparedData
from pipeline.model import attention_and_probs, has_attention
from pipeline.plots import heatmap_figure, panel_html
from pipeline.tracking import Tracker


def variant_name(model_settings: dict) -> str:
    """'attention-tanh', 'attention-none', 'mean', ... (how reports group trials)."""
    if model_settings["pooling"] == "attention":
        return f"attention-{model_settings['attention_activation']}"
    return str(model_settings["pooling"])


class AttentionReporter:
    def __init__(self, cfg: DictConfig, data: PreparedData, tracker: Tracker):
        self.cfg = cfg
        self.data = data
        self.tracker = tracker
        self.panel = choose_panel(data.y["val"], data.n_classes, cfg.panel_size, cfg.panel_seed)

    def log(
        self,
        model: keras.Model,
        label: str,
        probs: np.ndarray | None = None,
        name: str = "final",
        step: int | None = None,
    ) -> dict[str, float]:
        """Log the panel's figure/HTML/JSON under attention/<name>_*; return the metrics."""
        data = self.data
        x_val = data.x["val"]
        keys = data.key_masks["val"] if data.key_masks else None
        metrics: dict[str, float] = {}
        panel_ids = x_val[self.panel]
        if has_attention(model):  # one pass gives the weights and the predictions
            kind = "attention"
            all_probs, full = attention_and_probs(model, x_val)
            metrics = attention_metrics(full, x_val, keys)
            weights = full[self.panel]
            probs = all_probs if probs is None else probs
            panel_probs = probs[self.panel]
        else:
            kind = "saliency"
            weights = occlusion_saliency(model, panel_ids)
            panel_probs = (
                np.asarray(model.predict(panel_ids, verbose=0))
                if probs is None
                else probs[self.panel]
            )
        rows = panel_rows(
            weights,
            panel_ids,
            data.vocab,
            data.y["val"][self.panel],
            panel_probs.argmax(axis=1),
            data.class_names,
            keys[self.panel] if keys is not None else None,
        )
        title = f"{label}: {kind}" + (
            " (occlusion saliency, not attention)" if kind == "saliency" else ""
        )
        base = f"attention/{name}_{kind}"
        self.tracker.log_figure(
            heatmap_figure(rows, title, kind=kind, max_tokens=self.cfg.max_tokens), f"{base}.png"
        )
        self.tracker.log_text(panel_html(rows, title, kind=kind), f"{base}.html")
        self.tracker.log_dict(
            {"kind": kind, "title": title, "step": step, "examples": [asdict(r) for r in rows]},
            f"{base}.json",
        )
        return metrics


class AttentionEpochLogger(keras.callbacks.Callback):
    """Every `every` epochs, log the panel and attention metrics with step=epoch."""

    def __init__(self, reporter: AttentionReporter, label: str, every: int):
        super().__init__()
        self.reporter, self.label, self.every = reporter, label, every

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            metrics = self.reporter.log(
                self.model,
                f"{self.label} epoch {epoch + 1}",
                name=f"epoch_{epoch + 1:03d}",
                step=epoch,
            )
            self.reporter.tracker.log_metrics(metrics, step=epoch)
