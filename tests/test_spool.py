"""The artifact spool (pipeline.tracking.spool): jobs drawn and uploaded by a worker
process on a real SQLite store, the jobs a dead process left finished by the next spool,
and a job that cannot be done kept (not lost) with one line saying so. The kill -9 of a
real search mid-upload is tests/test_lifecycle.py's."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.diagnostics.renders import RENDERERS, RENDERERS_PATH
from pipeline.tracking import open_tracker
from pipeline.tracking.spool import ArtifactJob, ArtifactSpool, SpoolTarget, write_job

PNG_END = b"IEND\xaeB`\x82"
PANEL = {
    "kind": "attention",
    "title": "trial 1",
    "step": 3,
    "max_tokens": 40,
    "examples": [
        {
            "tokens": ["good", "flight", "crew"],
            "weights": [0.2, 0.7, 0.1],
            "true_label": "positive",
            "predicted_label": "positive",
            "padding_mass": 0.0,
            "key_positions": [1],
            "head_weights": [],
        }
    ],
}


def open_runs(store, n: int) -> list[str]:
    tracker = open_tracker(store.compose().tracking)
    ids = []
    for i in range(n):
        with tracker.run(f"run {i}") as run:
            ids.append(run.info.run_id)
    return ids


def job_for(run_id: str, model_dir: Path | None = None) -> ArtifactJob:
    job = ArtifactJob(run_id)
    job.add_json("attention/final_attention.json", PANEL)
    job.add_render(
        "attention/final_attention.png", "attention_png", "attention/final_attention.json"
    )
    job.add_render(
        "attention/final_attention.html", "attention_html", "attention/final_attention.json"
    )
    if model_dir is not None:
        job.files["model"] = model_dir
    return job


def artifacts(store, run_id: str) -> Path:
    return store.path / "artifacts" / run_id / "artifacts"


def test_a_worker_uploads_jobs_and_the_next_spool_finishes_what_a_dead_one_left(
    store, tmp_path, capfd
):
    left_behind, submitted, broken = open_runs(store, 3)
    target = SpoolTarget(store.uri, RENDERERS_PATH)
    folder = tmp_path / "spool"
    folder.mkdir()
    # What a process killed mid-job leaves: a job with a drawing cut short (a `.part`),
    # and a submit cut short before its rename (not a job: never uploaded).
    old = write_job(job_for(left_behind), folder / f"000000-{left_behind}")
    (old / "files" / "attention" / ".final_attention.png.part").write_bytes(b"\x89PNG half")
    write_job(job_for(broken), folder / f".tmp-000001-{broken}")
    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "data" / "weights.bin").write_bytes(b"\x00" * 1000)

    spool = ArtifactSpool(folder, target, upload=None)
    assert "1 job(s) a stopped process left" in capfd.readouterr().out
    spool.submit(job_for(submitted, model))
    bad = ArtifactJob(broken)
    bad.add_render("oops.png", "attention_png", "missing.json")
    spool.submit(bad)
    spool.close()

    for run_id in (left_behind, submitted):
        folder_of = artifacts(store, run_id)
        png = (folder_of / "attention" / "final_attention.png").read_bytes()
        assert png.endswith(PNG_END) and png[16:24] == RENDERERS["attention_png"](PANEL)[16:24]
        assert json.loads((folder_of / "attention" / "final_attention.json").read_text()) == PANEL
        assert "flight" in (folder_of / "attention" / "final_attention.html").read_text()
        assert not list(folder_of.rglob(".*"))  # no temporary file uploaded
    copied = artifacts(store, submitted) / "model"
    assert (copied / "data" / "weights.bin").read_bytes() == b"\x00" * 1000
    # The job it cannot do is kept, with one line, and nothing of it uploaded.
    out = capfd.readouterr().out
    assert "kept in the spool" in out and "missing.json" in out
    assert "1 upload job(s) kept" in out
    jobs = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert jobs == [f"000002-{broken}"]
    assert not artifacts(store, broken).exists()


def test_without_a_folder_a_job_is_done_inline(store, tmp_path):
    (run_id,) = open_runs(store, 1)
    tracker = open_tracker(store.compose().tracking)
    spool = ArtifactSpool(None, SpoolTarget(store.uri, RENDERERS_PATH), tracker.log_artifacts_to)
    spool.submit(job_for(run_id))  # returns once uploaded
    png = (artifacts(store, run_id) / "attention" / "final_attention.png").read_bytes()
    assert png.endswith(PNG_END)
    spool.close()
