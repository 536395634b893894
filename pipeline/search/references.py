"""The search's references (`search.reference`), each a child run beside the trials.

A reference (`pipeline.training.references`, e.g. `tfidf-lr`) is fitted on the search's
split (with `search.vary_split`, on each seed's split), logged as a child of the parent
run with `kind=reference`, `reference=true`, its name as `variant`, the same metric
names as a trial (`val_accuracy`, `val_loss`, `val_macro_f1`, `test_*`), its
validation predictions and its settings. The tuner never sees it, it is never the best
trial, and a resumed search finds it FINISHED and does not fit it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import flatten, to_plain
from pipeline.data import PreparedData
from pipeline.data.prepare import Tokenizer
from pipeline.errors import SearchError
from pipeline.search.replicates import replicate_data, seeds_of
from pipeline.tracking import Kind, Metric, Predictions, Status, Tag
from pipeline.training.evaluation import classification_metrics
from pipeline.training.references import REFERENCES, ReferenceInputs


@dataclass(frozen=True)
class ReferenceScore:
    """What the summary prints under the table."""

    name: str
    seed: int | None  # the split's seed with search.vary_split, else None
    metrics: dict[str, float]
    chosen: dict
    seconds: float
    run_id: str
    resumed: bool = False

    def line(self, objective: str) -> str:
        chosen = " ".join(f"{k}={v:g}" for k, v in self.chosen.items())
        split = f" split {self.seed}" if self.seed is not None else ""
        done = " (logged before; not refitted)" if self.resumed else f" ({self.seconds:.1f} s)"
        return (
            f"reference {self.name}{split}: {objective} {self.metrics[objective]:.4f}  "
            f"[{chosen}]{done}  run {self.run_id}"
        )


def check_references(names) -> None:
    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        raise SearchError(
            f"search.reference: unknown {unknown}; known: {', '.join(REFERENCES) or 'none'}"
        )


def inputs_of(cfg: DictConfig, data: PreparedData) -> ReferenceInputs:
    class_weight = "balanced" if str(cfg.train.class_weight) == "balanced" else None
    return ReferenceInputs(
        train_texts=data.texts["train"],
        train_y=data.y["train"],
        val_texts=data.texts["val"],
        val_y=data.y["val"],
        test_texts=data.texts.get("test", []),
        n_classes=data.n_classes,
        tokenize=Tokenizer(cfg.data.token_pattern, cfg.data.lowercase),
        class_weight=class_weight,
        objective=str(cfg.tuner.objective),
    )


def run_references(
    cfg: DictConfig, data: PreparedData, tracker, parent_id: str, search_id: str
) -> list[ReferenceScore]:
    """Fit and log every `search.reference` not yet FINISHED under this parent run."""
    names = list(cfg.search.reference or [])
    if not names:
        return []
    check_references(names)
    done = {
        (r.variant, r.seed if cfg.search.vary_split else None): r
        for r in tracker.trial_runs(parent_id, status=Status.FINISHED, kind=Kind.REFERENCE)
    }
    seeds = seeds_of(cfg, to_plain(cfg.train)) if cfg.search.vary_split else [None]
    scores = []
    for name in names:
        for seed in seeds:
            old = done.get((name, seed))
            if old is not None:
                chosen = {
                    k.removeprefix("chosen."): float(v)
                    for k, v in old.params.items()
                    if k.startswith("chosen.")
                }
                scores.append(
                    ReferenceScore(name, seed, old.metrics, chosen, 0.0, old.run_id, True)
                )
                continue
            split = data if seed is None else replicate_data(cfg, data, seed)
            scores.append(fit_and_log(cfg, split, tracker, name, seed, search_id))
    for score in scores:
        progress.say(score.line(cfg.tuner.objective))
    return scores


def fit_and_log(
    cfg: DictConfig, data: PreparedData, tracker, name: str, seed: int | None, search_id: str
) -> ReferenceScore:
    reference = REFERENCES[name]
    settings = to_plain(cfg.reference).get(name, {})
    tags = {
        Tag.KIND: Kind.REFERENCE,
        Tag.REFERENCE: "true",
        Tag.SEARCH_ID: search_id,
        Tag.VARIANT: name,
        Tag.DATA: data.name,
        Tag.DATA_FINGERPRINT: data.fingerprint,
        **({Tag.SEED: seed} if seed is not None else {}),
    }
    with tracker.run(f"reference {name}", tags=tags, nested=True) as run:
        fitted = reference.fit(inputs_of(cfg, data), settings)
        metrics = classification_metrics(fitted.val_probs, data.y["val"], "val_")
        if fitted.test_probs is not None:
            metrics.update(
                classification_metrics(fitted.test_probs, data.y["test"], Metric.TEST_PREFIX)
            )
        tracker.log_params(
            {
                **flatten({"reference": {name: settings}}),
                **{f"chosen.{k}": v for k, v in fitted.chosen.items()},
                "data.name": data.name,
            }
        )
        tracker.log_metrics({**metrics, Metric.TRAIN_SECONDS: fitted.seconds})
        tracker.log_dict({"chosen": fitted.chosen, "tried": fitted.tried}, "reference.json")
        tracker.log_predictions(Predictions(data.indices["val"], data.y["val"], fitted.val_probs))
        run_id = run.info.run_id
    return ReferenceScore(name, seed, metrics, fitted.chosen, fitted.seconds, run_id)
