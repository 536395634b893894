"""Overrides that do what they say: an explicit value for a searched knob pins it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.config import compose_config, search_space_dims
from pipeline.config.pins import explicit_knobs, pin_knobs
from pipeline.errors import SearchError
from tests.conftest import PROJECT_ROOT, assert_nothing_running


def space_of(*overrides: str) -> dict:
    return search_space_dims(compose_config(list(overrides)).search_space)


def test_a_command_line_value_takes_its_knob_out_of_the_search():
    assert "units" in space_of()
    cfg = compose_config(["model.units=128", "train.learning_rate=0.01"])
    space = search_space_dims(cfg.search_space)
    assert "units" not in space and "learning_rate" not in space
    assert cfg.model.units == 128 and cfg.train.learning_rate == 0.01
    assert {"pooling", "dropout", "embedding_dim"} <= set(space)  # the rest still searched
    assert "dropout" not in space_of("model.dropout=0.1") and "units" in space_of(
        "model.dropout=0.1"
    )


def test_conditional_knobs_follow_their_pinned_parent():
    assert "attention_activation" not in space_of("model.pooling=mean")  # inactive for mean
    kept = space_of("model.pooling=attention")["attention_activation"]
    assert "when" not in kept and kept["values"] == ["tanh", "none"]  # active, unconditional
    cfg = compose_config(["model.pooling=mean"])
    pins = pin_knobs(cfg, {"pooling": "override"})
    assert pins == []  # already pinned by compose_config: nothing left to take out


def test_pins_say_what_they_did():
    cfg = compose_config()
    (pin,) = pin_knobs(cfg, {"pooling": "override"})
    assert pin.describe() == (f"pooling fixed at {cfg.model.pooling} by override; not searched")
    cfg = compose_config()
    cfg.model.pooling = "max"
    (pin,) = pin_knobs(cfg, {"pooling": "override"})
    assert pin.dropped == ("attention_activation", "attention_normalizer")
    assert "attention_activation, attention_normalizer dropped" in pin.describe()


def test_a_preset_pins_what_it_sets_and_the_command_line_wins():
    sources = explicit_knobs(["+experiment=units_sweep", "model.embedding_dim=16"])
    assert sources["pooling"] == "experiment=units_sweep"
    assert sources["embedding_dim"] == "override"
    # units_sweep fixes pooling=attention/tanh; with the default space they are pinned.
    space = space_of("+experiment=units_sweep", "search_space=default")
    assert "pooling" not in space and "attention_activation" not in space
    assert "units" in space


def test_resume_with_a_newly_pinned_knob_is_refused(store):
    from pipeline.search import run_search

    base = [
        "+experiment=quick",
        "data.synthetic.n_examples=240",
        "tuner.max_trials=1",
        "search.name=pinned",
        "tracking.log_model=false",
        "attention.enabled=false",
        "search.evaluate_test=false",
    ]
    run_search(store.compose(*base))
    with pytest.raises(SearchError, match="not be comparable"):
        run_search(store.compose(*base, "model.dropout=0.2"))
    assert_nothing_running(store.runs())


@pytest.mark.e2e
def test_multirun_over_a_searched_knob_trains_each_job_with_its_value(store, run_cli):
    result = run_cli(
        "search",
        "-m",
        "+experiment=quick",
        "data.synthetic.n_examples=240",
        "tuner.max_trials=1",
        "model.units=8,16",
        "tracking.log_model=false",
        "attention.enabled=false",
        "search.evaluate_test=false",
        f"tracking.uri={store.uri}",
        f"tracking.artifact_root={store.path}/artifacts",
        f"tuner.directory={store.path}/tuner",
        f"hydra.sweep.dir={store.path}/multirun",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "units fixed at 8 by override; not searched" in result.stdout
    assert "units fixed at 16 by override; not searched" in result.stdout
    runs = store.runs()
    parents = {r.info.run_id: r for r in runs if r.data.tags["kind"] == "search"}
    assert sorted(p.data.params["model.units"] for p in parents.values()) == ["16", "8"]
    client = store.client()
    by_units = {}
    for child in (r for r in runs if r.data.tags["kind"] == "trial"):
        parent = parents[child.data.tags["mlflow.parentRunId"]]
        # not a searched hyperparameter any more, and every trial trained the pinned size
        assert "model.units" not in child.data.tags["searched"].split(",")
        assert child.data.params["model.units"] == parent.data.params["model.units"]
        by_units[parent.data.params["model.units"]] = child.data.metrics["param_count"]
        space = client.download_artifacts(parent.info.run_id, "search_space.json", str(store.path))
        assert "units" not in open(space).read()
    # The LSTM really had 8 and 16 units: 4 gates x units x (inputs + units + 1) differ.
    assert by_units["16"] > by_units["8"]


HEAVY_CHECK = """
import atexit, runpy, sys
heavy = ("tensorflow", "keras_tuner", "mlflow", "keras")
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules)))
sys.argv = ["pipeline.search", *sys.argv[1:]]
runpy.run_module("pipeline.search", run_name="__main__")
"""


def test_cfg_job_shows_the_effective_space_without_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_CHECK, "--cfg", "job", "model.units=16", "model.pooling=mean"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("HEAVY=")
    space = result.stdout.split("search_space:")[1].split("\ntuner:")[0]
    assert "units:" not in space and "pooling:" not in space
    assert "attention_activation" not in space and "learning_rate:" in space
    assert "  units: 16" in result.stdout


def read_only_mount(path) -> bool:
    """`path` bind-mounted read-only (root only); False when this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if mounted.returncode != 0:
        return False
    ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", str(path)])
        return False
    return True


def test_a_read_only_store_gets_one_line_and_exit_2(tmp_path, run_cli):
    mlruns = tmp_path / "mlruns"
    if not read_only_mount(mlruns):
        pytest.skip("needs root and mount to make a read-only filesystem")
    try:
        result = run_cli(
            "search",
            "+experiment=quick",
            f"tracking.uri=sqlite:///{mlruns}/mlflow.db",
            f"tracking.artifact_root={mlruns}/artifacts",
            f"tuner.directory={mlruns}/tuner",
            f"hydra.run.dir={mlruns}/hydra/run",
            timeout=120,
        )
    finally:
        subprocess.run(["umount", str(mlruns)])
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: hydra.run.dir: cannot write to {mlruns}/hydra/run (Read-only file system)"
    ]
