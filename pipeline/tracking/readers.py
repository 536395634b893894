"""Typed reads of the store: the readers part of `Tracker`.

Searches, trial runs, metric curves and artifacts come back as the records of
`records.py` (never MLflow column strings); a missing or unreadable artifact is a
`TrackingError` naming it, an outage stays an outage.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping

import mlflow

from pipeline.errors import one_line
from pipeline.tracking import connection
from pipeline.tracking.connection import CorruptArtifact, TrackingError
from pipeline.tracking.outage import TrackingOutage
from pipeline.tracking.records import Predictions, SearchRun, TrialRecord, TrialRun
from pipeline.tracking.schema import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT,
    Artifact,
    Kind,
    Param,
    Status,
    Tag,
)


class StoreReaders:
    """Reads of this experiment's runs and artifacts (state: `experiment_id`)."""

    def _search(self, filter_string: str, ascending: bool = False) -> list:
        """Every run of this experiment matching the filter (all pages)."""
        order = "ASC" if ascending else "DESC"
        runs, token = [], None
        while True:
            page = self._call(
                connection.client().search_runs,
                [self.experiment_id],
                filter_string=filter_string,
                max_results=5000,
                order_by=[f"attributes.start_time {order}"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def live_searches(self) -> list[SearchRun]:
        """Parent runs of every search not superseded by a restart (newest first)."""
        runs = (_search_run(r) for r in self._search(f"tags.{Tag.KIND} = '{Kind.SEARCH}'"))
        return [r for r in runs if not r.superseded]

    def find_search(self, name: str | None) -> SearchRun | None:
        """The latest live parent run of search `name` (found by tag), or of any search."""
        runs = [r for r in self.live_searches() if name is None or r.name == name]
        return runs[0] if runs else None

    def trial_runs(
        self,
        parent_ids: str | list[str],
        status: str | None = None,
        kind: str = Kind.TRIAL,
        ended_since_ms: int | None = None,
    ) -> list[TrialRun]:
        """Trial runs (or other children: `kind=reference`) of these searches (parent run
        ids), oldest first; with `ended_since_ms`, only runs that ended at or after it (an
        incremental read: the pruning mirror asks only for what is new)."""
        wanted = {parent_ids} if isinstance(parent_ids, str) else set(parent_ids)
        query = f"tags.{Tag.KIND} = '{kind}'"
        if isinstance(parent_ids, str):
            query += f" and tags.{MLFLOW_PARENT} = '{parent_ids}'"
        if status:
            query += f" and attributes.status = '{status}'"
        if ended_since_ms is not None:
            query += f" and attributes.end_time >= {int(ended_since_ms)}"
        runs = (_trial_run(r) for r in self._search(query, ascending=True))
        return [r for r in runs if r.parent_id in wanted]

    def finished_replicate(self, parent_id: str, config_hash: str) -> TrialRun | None:
        """The latest FINISHED trial run of one replicate (tag `config_hash`) under a
        search's parent, or None: one filtered query, so a trial can ask before training."""
        query = (
            f"tags.{Tag.KIND} = '{Kind.TRIAL}' and tags.{MLFLOW_PARENT} = '{parent_id}' "
            f"and tags.{Tag.CONFIG_HASH} = '{config_hash}' "
            f"and attributes.status = '{Status.FINISHED}'"
        )
        runs = [_trial_run(r) for r in self._search(query)]
        return runs[0] if runs else None

    def metric_history(self, run_id: str, key: str) -> dict[int, float]:
        """A run's values of one metric by step (the per-epoch curves: step = epoch)."""
        return {
            m.step: m.value for m in self._call(connection.client().get_metric_history, run_id, key)
        }

    def get_trial_run(self, run_id: str) -> TrialRun:
        """Any run by id, or TrackingError naming the id (wrong id, other store). An
        outage stays an outage (retried within the budget, then `TrackingOutage`)."""
        try:
            return _trial_run(self._call(connection.client().get_run, run_id))
        except TrackingOutage:
            raise
        except mlflow.exceptions.MlflowException as err:
            what = "not found in this store" if connection.not_found(err) else "cannot be read"
            raise TrackingError(f"run {run_id}: {what} ({one_line(err)})") from None

    def read_text(self, run_id: str, path: str) -> str:
        """The text of one logged artifact, or TrackingError naming it."""
        import mlflow.artifacts

        try:
            return self._call(mlflow.artifacts.load_text, f"runs:/{run_id}/{path}")
        except TrackingOutage:
            raise
        except (mlflow.exceptions.MlflowException, OSError, UnicodeDecodeError) as err:
            raise TrackingError(
                f"run {run_id}: cannot read artifact '{path}' ({one_line(err)})"
            ) from None

    def read_trial_record(self, run_id: str) -> TrialRecord:
        return TrialRecord.from_json(json.loads(self.read_text(run_id, Artifact.TRIAL_RECORD)))

    def read_predictions(self, run_id: str) -> Predictions | None:
        """A trial's validation predictions, or None when it logged none (older runs,
        `tracking.log_predictions=false`). A file that is there but cannot be read raises
        `CorruptArtifact`; a refused permission or any other store error is a
        TrackingError, an outage `TrackingOutage`: never "no predictions"."""
        import zipfile

        import numpy as np

        folder, name = Artifact.PREDICTIONS.rsplit("/", 1)
        try:
            listed = self._call(connection.client().list_artifacts, run_id, folder)
            if Artifact.PREDICTIONS not in {f.path for f in listed}:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                path = self._call(
                    connection.client().download_artifacts, run_id, Artifact.PREDICTIONS, tmp
                )
                try:
                    with np.load(path) as saved:
                        return Predictions(saved["index"], saved["y"], saved["probs"])
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                    raise CorruptArtifact(
                        f"run {run_id}: {Artifact.PREDICTIONS} is unreadable ({one_line(err)})"
                    ) from None
        except (TrackingOutage, CorruptArtifact):
            raise
        except mlflow.exceptions.MlflowException as err:
            raise TrackingError(
                f"run {run_id}: cannot read {Artifact.PREDICTIONS} ({one_line(err)})"
            ) from None

    def download_artifact(self, run_id: str, path: str, folder: str) -> str:
        return self._call(connection.client().download_artifacts, run_id, path, folder)


def _prefixed(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def float_tag(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def int_tag(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _param(run, name: str) -> str | None:
    value = run.data.params.get(name)
    return None if value in (None, "", "None") else value


def _search_run(run) -> SearchRun:
    tags = run.data.tags
    return SearchRun(
        run_id=run.info.run_id,
        name=tags.get(Tag.SEARCH_ID, run.info.run_name),
        status=run.info.status,
        start_time=run.info.start_time,
        comparable_hash=tags.get(Tag.COMPARABLE_HASH),
        objective=tags.get(Tag.OBJECTIVE),
        command=tags.get(Tag.COMMAND),
        superseded=tags.get(Tag.SUPERSEDED) == "true",
        best_run_id=tags.get(Tag.BEST_RUN_ID),
        baseline=_param(run, Param.BASELINE),
        vary_split=_param(run, Param.VARY_SPLIT) == "True",
        versions=_prefixed(tags, Tag.VERSION_PREFIX),
        machine=_prefixed(tags, Tag.MACHINE_PREFIX),
        git_commit=tags.get(MLFLOW_GIT_COMMIT),
    )


def _trial_run(run) -> TrialRun:
    tags = run.data.tags
    return TrialRun(
        run_id=run.info.run_id,
        name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        parent_id=tags.get(MLFLOW_PARENT),
        kind=tags.get(Tag.KIND),
        search_id=tags.get(Tag.SEARCH_ID),
        trial_id=tags.get(Tag.TRIAL_ID),
        trial_number=int_tag(tags.get(Tag.TRIAL_NUMBER)),
        config_hash=tags.get(Tag.CONFIG_HASH),
        group=tags.get(Tag.GROUP),
        seed=int_tag(tags.get(Tag.SEED)),
        variant=tags.get(Tag.VARIANT),
        data=tags.get(Tag.DATA),
        data_fingerprint=tags.get(Tag.DATA_FINGERPRINT),
        worker=tags.get(Tag.WORKER),
        interrupted=tags.get(Tag.INTERRUPTED) == "true",
        pruned=tags.get(Tag.PRUNED) == "true",
        pruned_epoch=int_tag(tags.get(Tag.PRUNED_EPOCH)),
        xla=tags.get(Tag.XLA) == "on",
        xla_shards=int_tag(tags.get(Tag.XLA_SHARDS)) or 1,
        error=tags.get(Tag.ERROR),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        searched=tuple(tags[Tag.SEARCHED].split(",")) if Tag.SEARCHED in tags else None,
    )
