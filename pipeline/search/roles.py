"""What a process the cluster launcher started runs: keras-tuner's chief serves the
oracle over gRPC (until the space or max_trials is used up); a worker trains the trials
the chief hands out, as children of the launcher's parent run; a racer, started after
them, trains a race's assignments (`pipeline.search.seed_race`)."""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline import progress
from pipeline.config import ClusterRole
from pipeline.data import PreparedData
from pipeline.search.driver import drive, make_tuner
from pipeline.tracking.protocol import TrackingStore
from pipeline.training.fit import enable_determinism


def silence_condition_proto_print() -> None:
    """keras-tuner 1.4 prints a conditional hyperparameter's first value every time it
    sends it over gRPC (a leftover `print` in `conditions.Parent.to_proto`)."""
    import contextlib
    import io

    from keras_tuner.src.engine import conditions

    original = conditions.Parent.to_proto
    if getattr(original, "silenced", False):
        return

    def to_proto(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto.silenced = True
    conditions.Parent.to_proto = to_proto


def limit_threads(threads: int) -> None:
    """TensorFlow intra/inter-op threads, before it runs any op (0: its own default)."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def serve_role(cfg: DictConfig, data: PreparedData, tracker: TrackingStore) -> None:
    """Run this process's part of a cluster search (`cluster.role`; the config checked by
    the command)."""
    from keras_tuner.src import config as kt_config

    kt_config.DEBUG = bool(cfg.search.verbose)
    name = cfg.search.name
    silence_condition_proto_print()
    if cfg.cluster.role != ClusterRole.chief:
        limit_threads(cfg.cluster.threads_per_worker)
    enable_determinism(cfg.train.deterministic)
    if cfg.cluster.role == ClusterRole.racer:  # after the trials: a race's assignments
        from pipeline.search.seed_race import serve_race_queue

        tracker.nest_under(cfg.cluster.parent_run_id)
        serve_race_queue(cfg, data, tracker)
        return
    if cfg.cluster.role == ClusterRole.chief:
        # Resumed: keras-tuner reloads the oracle (finished trials stay done; the ones that
        # were running go to its retry queue, so they run once more).
        tuner = make_tuner(cfg, data, tracker, name, overwrite=not cfg.cluster.resume)
        progress.say("chief: oracle serving" + (" (reloaded)" if cfg.cluster.resume else ""))
        drive(tuner, cfg)  # keras-tuner's chief: blocks until every worker is done
        return
    tracker.nest_under(cfg.cluster.parent_run_id)
    tuner = make_tuner(cfg, data, tracker, name, overwrite=False)
    tuner.worker_id = cfg.cluster.worker_id
    tuner.parent_run_id = cfg.cluster.parent_run_id
    drive(tuner, cfg)
