"""Train one configuration with one seed and log it on the active run.

Shared by the tuner and `pipeline.reproduce` through `pipeline.search.runner`, so a
reproduction trains and logs through exactly the code path the original run took:
`log_trial_inputs` writes the trial record, `train_and_log` fits, scores and logs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import flatten, to_plain, typed_data
from pipeline.config.schema import TrainConfig
from pipeline.data import PreparedData
from pipeline.data.loaders import LOADERS
from pipeline.diagnostics.attention import (
    AttentionView,
    FaithfulnessPlan,
    choose_panel,
    inspect_attention,
)
from pipeline.diagnostics.faithfulness import evaluation_subset
from pipeline.diagnostics.renders import RENDERERS_PATH
from pipeline.models.registry import PoolingVariant, variant_label, variant_of
from pipeline.search.space import param_key
from pipeline.tracking import Artifact, Metric, Predictions, Tag, TrialRecord
from pipeline.tracking.protocol import TrackingStore
from pipeline.tracking.spool import ArtifactJob, ArtifactSpool, SpoolTarget
from pipeline.training.batching import Forward
from pipeline.training.callbacks import EpochPrinter, ValidationConfusion
from pipeline.training.evaluation import evaluate
from pipeline.training.fit import best_epoch, final_epoch, fit, validation_metrics


class MetricsLogger(keras.callbacks.Callback):
    """Per-epoch train/val metrics on the active run, with step=epoch; the objective
    first, then the other validation metrics: MLflow keeps a run's metrics in the order
    they were first logged, and its compare page plots the first one by default."""

    def __init__(self, tracker: TrackingStore, objective: str):
        super().__init__()
        self.tracker = tracker
        self.objective = objective

    def on_epoch_end(self, epoch, logs=None):
        finite = {k: v for k, v in (logs or {}).items() if np.isfinite(v)}
        order = sorted(finite, key=lambda k: (k != self.objective, not k.startswith("val_")))
        self.tracker.log_metrics({k: finite[k] for k in order}, step=epoch)


def artifact_spool(cfg: DictConfig, tracker: TrackingStore, folder: Path | None) -> ArtifactSpool:
    """Trial artifacts drawn and uploaded by a worker process from `folder` (None: inline)."""
    t = cfg.tracking
    target = SpoolTarget(
        tracker.uri, RENDERERS_PATH, float(t.outage_budget_s), float(t.outage_backoff_max_s)
    )
    return ArtifactSpool(folder, target, tracker.log_artifacts_to)


@dataclass
class TrialLogging:
    """What every trial of a search logs the same way: where, which panel, and the spool
    its artifacts go through."""

    cfg: DictConfig
    data: PreparedData
    tracker: TrackingStore
    panel: np.ndarray  # validation examples of the heatmaps, the same for every trial
    faithfulness: FaithfulnessPlan | None = None  # the same subset for every trial
    spool: ArtifactSpool | None = None  # the tuner's; None: drawn and uploaded inline

    def __post_init__(self) -> None:
        if self.spool is None:
            self.spool = artifact_spool(self.cfg, self.tracker, None)

    @classmethod
    def for_search(
        cls, cfg: DictConfig, data: PreparedData, tracker: TrackingStore
    ) -> TrialLogging:
        a = cfg.attention
        panel = choose_panel(data.y["val"], data.n_classes, a.panel_size, a.panel_seed)
        plan = None
        f = a.faithfulness
        if f.enabled:
            subset = evaluation_subset(
                data.x["val"], data.y["val"], f.max_examples, f.max_occlusions, f.seed
            )
            plan = FaithfulnessPlan(subset, tuple(float(x) for x in f.fractions), int(f.seed))
        return cls(cfg, data, tracker, panel, plan)

    def submit(self, job: ArtifactJob) -> None:
        assert self.spool is not None
        self.spool.submit(job)

    def log_attention(
        self,
        model: keras.Model,
        variant: PoolingVariant,
        label: str,
        name: str,
        step: int,
        train: TrainConfig,
        final: bool = False,
        job: ArtifactJob | None = None,
    ) -> AttentionView:
        """The panel's heatmap, HTML and JSON under attention/<name>_*, and the metrics;
        for the final model also the faithfulness metrics. The files go into `job` (else
        a job of their own); the figures are drawn by the spool, from the JSON."""
        bucketing = train.bucketing
        n_buckets = bucketing.n_buckets if bucketing.enabled else 1
        batch, trims = self.cfg.attention.batch_size, variant.trims_padding
        view: AttentionView = inspect_attention(
            model,
            variant,
            self.data,
            self.panel,
            label,
            Forward(model, batch, n_buckets, trims),
            self.faithfulness if final else None,
            lambda probe: Forward(probe, batch, n_buckets, trims).outputs,
        )
        log = self.tracker
        if final and self.faithfulness is not None:
            log.set_tags({Tag.FAITH_RANKING: view.kind})
        own = job is None
        job = job or ArtifactJob(log.active_run_id())
        source = Artifact.attention(name, view.kind, "json")
        job.add_json(
            source,
            {
                "kind": view.kind,
                "title": view.title,
                "step": step,
                "max_tokens": int(self.cfg.attention.max_tokens),
                "examples": [asdict(r) for r in view.rows],
            },
        )
        job.add_render(Artifact.attention(name, view.kind, "png"), "attention_png", source)
        job.add_render(Artifact.attention(name, view.kind, "html"), "attention_html", source)
        log.log_metrics(view.metrics, step=step)
        if own:
            self.submit(job)
        return view


class AttentionEpochLogger(keras.callbacks.Callback):
    """Every `every` epochs, log the panel and attention metrics with step=epoch."""

    def __init__(
        self,
        logging: TrialLogging,
        variant: PoolingVariant,
        label: str,
        every: int,
        train: TrainConfig,
    ):
        super().__init__()
        self.logging, self.variant, self.label, self.every = logging, variant, label, every
        self.train = train

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            self.logging.log_attention(
                self.model,
                self.variant,
                f"{self.label} epoch {epoch + 1}",
                name=f"epoch_{epoch + 1:03d}",
                step=epoch,
                train=self.train,
            )


def trial_params(
    cfg: DictConfig, record: TrialRecord, model_settings: dict, train: TrainConfig
) -> tuple[dict[str, Any], list[str]]:
    """(params, searched keys): a run's whole effective configuration under the same dotted
    keys on every run of every search (`model.units`, `train.learning_rate`, `data.name`,
    ...), so MLflow's filters and plots work across searches; keras-tuner's `tuner/*`
    values keep their names. The searched keys say which of them the tuner chose."""
    plain = to_plain(cfg.data)
    data = {k: v for k, v in plain.items() if k not in LOADERS}  # other loaders': unused
    data[cfg.data.loader] = plain.get(cfg.data.loader)
    if record.split_seed is not None:
        data["split_seed"] = record.split_seed
    params = flatten(
        {
            "model": {**model_settings, "variant": variant_label(model_settings)},
            "train": {**to_plain(train), "seed": record.seed},
            "data": data,
        }
    )
    searched = []
    for name, value in record.hyperparameters.items():
        key = param_key(cfg, name)
        if key is None:
            params[name] = value
        else:
            searched.append(key)
    return params, searched


def log_trial_inputs(
    tracker: TrackingStore,
    cfg: DictConfig,
    record: TrialRecord,
    model_settings: dict,
    train: TrainConfig,
) -> None:
    """A trial run's full configuration (params, `searched` tag) and its `trial.json`,
    before training."""
    params, searched = trial_params(cfg, record, model_settings, train)
    tracker.log_params(params)
    tracker.set_tags({Tag.SEARCHED: ",".join(searched)})
    tracker.log_trial_record(record)


def log_datasets(data: PreparedData, tracker: TrackingStore) -> None:
    """The train/val splits as MLflow datasets, so the UI shows what a run used."""
    for split, context in (("train", "training"), ("val", "validation")):
        tracker.log_dataset(
            data.x[split],
            data.y[split],
            f"{data.name}-{split}",
            context,
            source=data.name,
            digest=f"{data.fingerprint[:28]}-{split}",
        )


def log_text_model(
    logging: TrialLogging,
    model: keras.Model,
    variant: PoolingVariant,
    label: str,
    train: TrainConfig,
    job: ArtifactJob,
) -> None:
    """The trial's model as a text-in MLflow pyfunc (`pipeline.serving`), saved into `job`
    as `model/`: raw text in, label and probabilities out."""
    from pipeline.data.prepare import TextEncoder
    from pipeline.serving.text_model import save_text_model
    from pipeline.tracking.store import model_pip_requirements

    cfg, data, tracker = logging.cfg, logging.data, logging.tracker
    with tempfile.TemporaryDirectory() as tmp:
        keras_dir = tracker.save_keras_model(model, Path(tmp) / "keras_model")
        folder = save_text_model(
            Path(tmp) / "model",
            keras_dir,
            TextEncoder.of(typed_data(cfg.data), data.vocab),
            data.class_names,
            variant.name,
            label,
            int(train.batch_size) * 4,
            model_pip_requirements(),
            plugins=list(cfg.get("plugins") or []),
            limits={k: int(v) for k, v in cfg.serving.items()},
        )
        job.files[Artifact.MODEL_DIR] = folder
        logging.submit(job)  # copies the folder into the spool before it is deleted


@dataclass
class TrainedTrial:
    metrics: dict[str, float]
    model: keras.Model
    fit_seconds: float  # the part a bare model.fit would cost too
    diagnostics_seconds: float = 0.0  # the final model's heatmaps and faithfulness


def train_and_log(
    logging: TrialLogging,
    model_settings: dict[str, Any],
    train: TrainConfig,
    model: keras.Model,
    label: str,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainedTrial:
    """Fit `model` (built on seed `train.seed`: `TrialRunner.trained`), log its curves and
    final metrics, a confusion matrix and the attention artifacts on the active run."""
    cfg, data, tracker = logging.cfg, logging.data, logging.tracker
    variant = variant_of(model_settings)
    if cfg.tracking.log_datasets:
        log_datasets(data, tracker)
    confusion = ValidationConfusion()
    callbacks = [EpochPrinter(train.epochs), confusion, *extra_callbacks]
    callbacks.append(MetricsLogger(tracker, cfg.tuner.objective))
    if cfg.attention.enabled and cfg.attention.plot_every:
        callbacks.append(
            AttentionEpochLogger(logging, variant, label, cfg.attention.plot_every, train)
        )
    started = time.perf_counter()
    history = fit(
        model,
        data,
        train,
        trim_padding=variant.trims_padding,
        callbacks=callbacks,
        announce=lambda line: progress.say(f"    {line}"),
    )
    tracker.set_tags(
        {Tag.XLA: "on", Tag.XLA_SHARDS: history.xla.shards} if history.xla.on else {Tag.XLA: "off"}
    )
    fit_seconds = time.perf_counter() - started
    # fit's own validation pass already scored the weights the model ends with.
    kept = final_epoch(history, train)
    final = validation_metrics(history, kept)
    best = best_epoch(history, train.early_stopping.monitor)
    # The final model (best weights restored) is scored one step after the last epoch,
    # so the last point of each val_* curve is the score the tuner ranks by.
    tracker.log_metrics(final, step=len(history.epoch))
    tracker.log_metrics(
        {
            Metric.BEST_EPOCH: best,
            Metric.EPOCHS_TRAINED: len(history.epoch),
            **{
                f"{Metric.BEST_VAL_PREFIX}{k}": v[best]
                for k, v in history.history.items()
                if k.startswith("val_")
            },
            Metric.PARAM_COUNT: model.count_params(),
            Metric.TRAIN_SECONDS: fit_seconds,
        }
    )
    # The final artifacts: one spool job, drawn and uploaded while the next trial trains.
    job = ArtifactJob(tracker.active_run_id())
    job.add_json(
        Artifact.CONFUSION_DATA,
        {
            "split": "validation",
            "class_names": list(data.class_names),
            "counts": np.asarray(confusion.by_epoch[kept]).tolist(),
        },
    )
    job.add_render(Artifact.CONFUSION, "confusion_png", Artifact.CONFUSION_DATA)
    # A trial the pruner stopped is hopeless by its judgment: its heatmaps and faithfulness
    # would cost what a finished trial's do, for a model nobody uses.
    pruned = any(getattr(c, "pruned_at", None) is not None for c in extra_callbacks)
    diagnostics_seconds = log_final_model(logging, model, variant, label, train, final, job,
                                          step=len(history.epoch), diagnose=not pruned)  # fmt: skip
    return TrainedTrial(final, model, fit_seconds, diagnostics_seconds)


def log_final_model(
    logging: TrialLogging,
    model: keras.Model,
    variant: PoolingVariant,
    label: str,
    train: TrainConfig,
    final: dict[str, float],
    job: ArtifactJob,
    step: int,
    diagnose: bool = True,
) -> float:
    """The final model's attention artifacts and metrics (added to `final`, unless not
    `diagnose`), its validation predictions and the model itself, into `job`; the seconds
    the diagnostics took."""
    cfg, data, tracker = logging.cfg, logging.data, logging.tracker
    probs = None
    diagnostics_seconds = 0.0
    if cfg.attention.enabled and diagnose:
        started = time.perf_counter()
        view = logging.log_attention(
            model, variant, label, name="final", step=step, train=train, final=True, job=job
        )
        diagnostics_seconds = time.perf_counter() - started
        tracker.log_metrics({Metric.DIAGNOSTICS_SECONDS: diagnostics_seconds})
        final.update(view.metrics)
        probs = view.probs
    if cfg.tracking.log_predictions:
        if probs is None:
            _, probs = evaluate(
                model, data, "val", train, trim_padding=variant.trims_padding, prefix="val_"
            )
        tracker.log_predictions(Predictions(data.indices["val"], data.y["val"], probs))
    if cfg.tracking.log_model:
        log_text_model(logging, model, variant, label, train, job)
    else:
        logging.submit(job)
    return diagnostics_seconds
