"""A plugin that brings its own config, the way a user would add one from outside `pipeline/`.

A JSON-lines data loader `review_lines` with its own `data.review_lines` section (file,
keys, a minimum text length; the built-in `jsonl` loader has no minimum),
and a pooling variant `scaled_mean` with its own `model.scaled_mean` section (a factor the
masked mean is multiplied by). Listed in a config's `plugins`, the sections are typed and
filled with the dataclasses' defaults like any section of `conf/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import ops

from pipeline.data import DataError, RawData, register_loader
from pipeline.models.layers import MaskedMeanPooling
from pipeline.models.registry import PoolingVariant, register_pooling


@dataclass
class ReviewLinesConfig:
    path: str = ""
    text_key: str = "text"
    label_key: str = "label"
    min_chars: int = 1  # shorter texts are dropped (noted on the data line)


@register_loader("review_lines", config=ReviewLinesConfig)
def load_review_lines(cfg, encoding_errors: str) -> RawData:  # the typed data section
    c = cfg.review_lines
    path = Path(c.path)
    if not path.is_file():
        raise DataError(f"data.review_lines.path: no such file: {path}")
    texts, labels, short = [], [], 0
    with path.open(encoding="utf-8", errors=encoding_errors) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = str(row[c.text_key]), str(row[c.label_key])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(
                    f"{path}:{number}: not a JSON object with the keys ({err})"
                ) from None
            if len(text) < c.min_chars:
                short += 1
                continue
            texts.append(text)
            labels.append(label)
    notes = [f"dropped {short} texts shorter than {c.min_chars} characters"] if short else []
    return RawData(texts=texts, labels=labels, source=str(path), notes=notes)


@dataclass
class ScaledMeanConfig:
    scale: float = 1.0


@keras.saving.register_keras_serializable(package="tests_plugins")
class ScaledMeanPooling(MaskedMeanPooling):
    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs, mask=None):
        return ops.multiply(super().call(inputs, mask=mask), self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


register_pooling(
    PoolingVariant(
        "scaled_mean",
        lambda settings, name: ScaledMeanPooling(
            scale=float(settings["scaled_mean"]["scale"]), name=name
        ),
        config=ScaledMeanConfig,
        description="masked mean times model.scaled_mean.scale (a test plugin)",
    ),
    replace=True,  # imported again by a second config in the same process
)
