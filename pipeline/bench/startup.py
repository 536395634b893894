"""Wall time of `python -m pipeline.search --help` and `--cfg job` vs a bare interpreter."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from pipeline.config import PROJECT_ROOT

GOAL_SECONDS = 1.5


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def run(args) -> None:
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "search --help": [sys.executable, "-m", "pipeline.search", "--help"],
        "search --cfg job": [sys.executable, "-m", "pipeline.search", "--cfg", "job"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # alternate so drift hits every command alike
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<20}{'median s':>10}{'vs python':>11}{'vs goal':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<20}{med:>10.3f}{med / base:>10.1f}x{med / GOAL_SECONDS:>8.2f}x")
    print(f"goal: < {GOAL_SECONDS} s for --help and --cfg job ({args.repeats} runs each)")
