"""The text-in model, measured: a one-trial search on `--data` (airline tweets) registers
its model, then side by side in this process and against a real `mlflow models serve`:

- raw-text predictions on the validation texts vs the trial's own logged validation
  predictions (same labels, probabilities within 1e-6);
- batch scoring throughput (`pipeline.serving.batch.score` on raw text) vs the bare
  Keras model's `predict` on the already-tokenized ids of the same texts, alternated;
- served single-text latency over `--requests` sequential requests (p50, p99).
Goals: equal; throughput >= 0.8x; p50 <= 30 ms and p99 <= 100 ms.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import compose_config
from pipeline.progress import say

THROUGHPUT_GOAL = 0.8
P50_GOAL_MS, P99_GOAL_MS = 30.0, 100.0
MODEL = "bench-served"


def run(args) -> None:
    from pipeline.config import typed_data
    from pipeline.data import prepare
    from pipeline.search.run import run_search
    from pipeline.serving.batch import score
    from pipeline.serving.model_server import model_server
    from pipeline.serving.text_model import load_text_model
    from pipeline.tracking.store import open_tracker

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cfg = compose_config(
            [
                f"data={args.data}",
                f"tracking.uri={uri}",
                f"tracking.artifact_root={tmp}/artifacts",
                f"tuner.directory={tmp}/tuner",
                "search.name=serve",
                "search.reference=[]",
                "tuner.max_trials=1",
                "attention.enabled=false",
                f"train.epochs={args.epochs}",
                f"model.units={args.units}",
                "search_space.pooling.values=[attention]",
                "~search_space.units",
                f"tracking.register_best={MODEL}",
            ]
        )
        run_search(cfg)
        tracker = open_tracker(cfg.tracking)
        logged = tracker.read_predictions(tracker.find_search("serve").best_run_id)
        data = prepare(typed_data(cfg.data))
        model = load_text_model(f"models:/{MODEL}/latest", uri)
        keras_model = model.unwrap_python_model().keras_model
        texts = data.texts["val"]
        answer = score(model, texts, progress=False)
        probs = answer[[f"p_{c}" for c in data.class_names]].to_numpy()
        worst = float(np.abs(probs - logged.probs).max())
        same_labels = bool((probs.argmax(1) == logged.probs.argmax(1)).all())

        many = list(texts) * args.repeat_texts
        ids = np.concatenate([data.x["val"]] * args.repeat_texts)
        batch = int(cfg.train.batch_size) * 4
        text_rates, id_rates = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            score(model, many, progress=False)
            text_rates.append(len(many) / (time.perf_counter() - started))
            started = time.perf_counter()
            keras_model.predict(ids, batch_size=batch, verbose=0)
            id_rates.append(len(ids) / (time.perf_counter() - started))
        text_rate, id_rate = statistics.median(text_rates), statistics.median(id_rates)

        latencies = []
        with model_server(f"models:/{MODEL}/latest", uri, tmp, Path(tmp) / "serve.log") as base:
            for i in range(args.requests + 5):
                body = json.dumps({"inputs": [texts[i % len(texts)]]}).encode()
                request = urllib.request.Request(
                    f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}
                )
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as resp:
                    resp.read()
                if i >= 5:  # the first requests warm the server up
                    latencies.append((time.perf_counter() - started) * 1000)
        p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
    say(
        "\n".join(
            [
                "",
                f"raw text vs the trial's validation predictions ({len(texts)} texts): labels "
                f"{'equal' if same_labels else 'DIFFER'}, max |probability difference| "
                f"{worst:.2e} (goal <= 1e-6)",
                f"batch scoring of raw text: {text_rate:,.0f} texts/s vs the bare Keras "
                f"predict on token ids {id_rate:,.0f}/s = {text_rate / id_rate:.2f}x "
                f"(goal >= {THROUGHPUT_GOAL}x; median of {args.rounds}, {len(many)} texts)",
                f"served single-text latency over {len(latencies)} sequential requests: "
                f"p50 {p50:.1f} ms (goal <= {P50_GOAL_MS:.0f}), p99 {p99:.1f} ms "
                f"(goal <= {P99_GOAL_MS:.0f})",
                f"model: {data.name}, units {args.units}, {args.epochs} epoch(s); "
                f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC",
            ]
        )
    )
