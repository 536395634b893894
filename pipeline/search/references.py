"""The search's references (`search.reference`), each a child run beside the trials.

A reference (`pipeline.training.references`, e.g. `tfidf-lr`) is fitted on the search's
split (with `search.vary_split`, on each seed's split), logged as a child of the parent
run with `kind=reference`, `reference=true`, its name as `variant`, the same metric
names as a trial (`val_accuracy`, `val_loss`, `val_macro_f1`, `test_*`), its
validation predictions and its settings. The tuner never sees it, it is never the best
trial, and a resumed search finds it FINISHED and does not fit it again.

`python -m pipeline.search` fits them ahead (`ReferencePrefit`), in a forked process
while its own process imports TensorFlow (its ~2 s fit off the main path; measured ~1.2 s
less wall on a one-trial search, docs/performance.md).
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import flatten, to_plain
from pipeline.data import PreparedData
from pipeline.data.prepare import Tokenizer
from pipeline.errors import SearchError
from pipeline.search.replicates import replicate_data, seeds_of
from pipeline.tracking import Kind, Metric, Predictions, Status, Tag
from pipeline.training.evaluation import classification_metrics
from pipeline.training.references import REFERENCES, ReferenceFit, ReferenceInputs


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
        cache_dir=Path(cfg.tuner.directory) / "embeddings",
    )


def reference_keys(cfg: DictConfig) -> list[tuple[str, int | None]]:
    """(reference name, split seed or None) for each reference fit a search makes."""
    seeds = seeds_of(cfg, to_plain(cfg.train)) if cfg.search.vary_split else [None]
    return [(name, seed) for name in list(cfg.search.reference or []) for seed in seeds]


def fit_reference(cfg: DictConfig, data: PreparedData, name: str, seed: int | None) -> ReferenceFit:
    """One reference on the search's split (or seed `seed`'s with search.vary_split), on
    one BLAS thread: a fit this size gains nothing from more, and an idle OpenBLAS thread
    spins, taking a core from the search's start-up beside it (~2.6 CPU-s of spinning
    next to the ahead fit's ~2 s, measured with perf)."""
    from threadpoolctl import threadpool_limits

    split = data if seed is None else replicate_data(cfg, data, seed)
    settings = to_plain(cfg.reference).get(name, {})
    with threadpool_limits(limits=1, user_api="blas"):
        return REFERENCES[name].fit(inputs_of(cfg, split), settings)


class ReferencePrefit:
    """Every reference fit of a search, started in a forked process before the caller
    imports TensorFlow (a fork then is safe: no TensorFlow thread exists yet) and done on
    the other core while it does. scikit-learn in a thread would share the interpreter
    lock with the import and with training: measured slower than in line. `take` hands a
    fit over; anything the process could not do (an error, a crash) is fitted in line
    by `run_references` again, which then fails or succeeds exactly as without it."""

    def __init__(self, cfg: DictConfig, data: PreparedData) -> None:
        self.keys = reference_keys(cfg)
        self._fits: dict[tuple[str, int | None], ReferenceFit] = {}
        self._process = None
        if not self.keys or any(name not in REFERENCES for name, _ in self.keys):
            return  # nothing to fit, or run_references says what is unknown
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_prefit_child, args=(cfg, data, self.keys, send), daemon=True
        )
        self._process.start()
        send.close()

    def take(self, name: str, seed: int | None) -> ReferenceFit | None:
        """The fit of (name, seed), waiting for the process if it is still fitting; None
        when it could not make it."""
        if self._process is not None:
            try:
                while True:
                    key, fitted = self._receive.recv()
                    if fitted is not None:
                        self._fits[key] = fitted
            except (EOFError, OSError):  # every fit sent (or the process died)
                pass
            self._receive.close()
            self._process.join()
            self._process = None
        return self._fits.pop((name, seed), None)

    def close(self) -> None:
        """Stop a process whose fits are no longer wanted (a resumed search had them)."""
        if self._process is not None:
            self._process.terminate()
            self._process.join()
            self._receive.close()
            self._process = None
        self._fits.clear()


def _prefit_child(cfg: DictConfig, data: PreparedData, keys, send) -> None:
    """The forked process: each fit sent as it is done (None for one that raised: the
    main process fits it again and reports the error itself). Ctrl-C is the parent's. The
    inherited heap is frozen: the fit's collections then never touch (and copy) its pages
    (and the collector is on, which the command keeps off through its imports)."""
    gc.freeze()
    gc.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for name, seed in keys:
            try:
                fitted = fit_reference(cfg, data, name, seed)
            except Exception:  # noqa: BLE001 - reported by the in-line fit
                fitted = None
            send.send(((name, seed), fitted))
    except (BrokenPipeError, OSError):  # the search is gone
        pass
    finally:
        send.close()


def run_references(
    cfg: DictConfig,
    data: PreparedData,
    tracker,
    parent_id: str,
    search_id: str,
    prefit: ReferencePrefit | None = None,
) -> list[ReferenceScore]:
    """Fit and log every `search.reference` not yet FINISHED under this parent run
    (`prefit`: fits made ahead, used where present)."""
    names = list(cfg.search.reference or [])
    if not names:
        return []
    try:
        return _fit_and_log_missing(cfg, data, tracker, parent_id, search_id, names, prefit)
    finally:
        if prefit is not None:
            prefit.close()


def _fit_and_log_missing(
    cfg: DictConfig,
    data: PreparedData,
    tracker,
    parent_id: str,
    search_id: str,
    names: list[str],
    prefit: ReferencePrefit | None,
) -> list[ReferenceScore]:
    check_references(names)
    done = {
        (r.variant, r.seed if cfg.search.vary_split else None): r
        for r in tracker.trial_runs(parent_id, status=Status.FINISHED, kind=Kind.REFERENCE)
    }
    scores = []
    for name, seed in reference_keys(cfg):
        old = done.get((name, seed))
        if old is not None:
            chosen = {
                k.removeprefix("chosen."): float(v)
                for k, v in old.params.items()
                if k.startswith("chosen.")
            }
            scores.append(ReferenceScore(name, seed, old.metrics, chosen, 0.0, old.run_id, True))
            continue
        ahead = prefit.take(name, seed) if prefit is not None else None
        scores.append(fit_and_log(cfg, data, tracker, name, seed, search_id, ahead))
    for score in scores:
        progress.say(score.line(cfg.tuner.objective))
    return scores


def fit_and_log(
    cfg: DictConfig,
    base: PreparedData,
    tracker,
    name: str,
    seed: int | None,
    search_id: str,
    fitted: ReferenceFit | None = None,
) -> ReferenceScore:
    """Fit (unless `fitted` was made ahead) and log one reference as a child run."""
    data = base if seed is None else replicate_data(cfg, base, seed)
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
        if fitted is None:
            fitted = fit_reference(cfg, base, name, seed)
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
