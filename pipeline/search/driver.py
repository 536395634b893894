"""A search's tracked tuner made and driven: keras-tuner's project folder (its spooled
uploads finished first when keras-tuner would delete it), `tuner.search()` with its failure
limit as one clear line, and where a search writes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from omegaconf import DictConfig

from pipeline.data import PreparedData
from pipeline.errors import SearchError
from pipeline.search.oracles import make_oracle
from pipeline.search.space import SearchSpaceHyperModel
from pipeline.search.trial import artifact_spool
from pipeline.search.tuner import WEIGHTS_FILE, TrackedTuner
from pipeline.tracking.protocol import TrackingStore


def weights_path(directory: str, name: str, trial_id: str) -> Path:
    """Where a trial's weights live (keras-tuner's trial folder of project `name`)."""
    return Path(directory) / name / f"trial_{trial_id}" / WEIGHTS_FILE


def make_tuner(
    cfg: DictConfig, data: PreparedData, tracker: TrackingStore, name: str, overwrite: bool
) -> TrackedTuner:
    if overwrite:  # keras-tuner deletes the folder: its spooled uploads go first
        inline = artifact_spool(cfg, tracker, None)
        for folder in sorted((Path(cfg.tuner.directory) / name / "spool").glob("*")):
            inline.finish_left(folder)
    # keras-tuner prints "Reloading Tuner from ..." when it picks up an existing project;
    # the search's own line already says "resumed".
    with contextlib.redirect_stdout(io.StringIO()):
        tuner = TrackedTuner(
            make_oracle(cfg.tuner, cfg.search.stop.patience, len(data.y["val"])),
            SearchSpaceHyperModel(cfg, len(data.vocab), data.n_classes),
            cfg=cfg,
            data=data,
            tracker=tracker,
            search_id=name,
            directory=cfg.tuner.directory,
            project_name=name,
            overwrite=overwrite,
        )
    return tuner


def drive(tuner: TrackedTuner, cfg: DictConfig, close_spool: bool = True) -> None:
    """tuner.search(), with keras-tuner's failure limit turned into one clear line; returns
    (or raises) once every trial's artifacts are uploaded or kept in the spool
    (`close_spool=False`: the caller closes it, so the last uploads overlap its own work)."""
    tuner.spool()  # uploads first what a killed process on this spool left
    try:
        tuner.search(verbose=0)
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        last = tuner.rows[-1].get("error", "") if tuner.rows else ""
        raise SearchError(
            f"search stopped: {cfg.tuner.max_consecutive_failed_trials} consecutive trials "
            f"failed (tuner.max_consecutive_failed_trials); last error: {last}"
        ) from None
    finally:
        flush = getattr(tuner.oracle, "flush", None)  # a worker's oracle is the chief's
        if flush is not None:
            flush()
        if close_spool:
            tuner.close_spool()
