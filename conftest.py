"""The code blocks of README.md and docs/ as tests (Sybil).

Each `bash` block runs as written, with the virtual environment's `bin/` first on PATH
(as the docs say: the venv active), in a folder of its own that holds a link to the
project's `.venv`, so what it writes (`mlruns/`, reports) stays there, and is removed
once the block passed. Each `python` block runs in such a folder too. A block that
cannot run here is preceded by
`<!-- skip: next "covered by tests/<file>.py::<test>: why" -->`; tests/test_docs.py
checks that the named test exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import SkipTest

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

PROJECT_ROOT = Path(__file__).resolve().parent
BLOCK_TIMEOUT_S = 300
# Read from the block's own text, not from a separate example as Sybil's SkipParser does:
# pytest-xdist may run the directive and its block in different workers.
SKIP_BEFORE = re.compile(r'<!-- skip: next "(?P<reason>[^"]+)" -->\s*$')


def _sandbox() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="docs-block-"))
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    return env


def run_bash(example) -> None:
    """One shell block, as a user would paste it: stops at the first failing command."""
    folder = _sandbox()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example.parsed],
        cwd=folder,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    if done.returncode != 0:  # the folder stays, to look at
        raise AssertionError(
            f"exit {done.returncode} in {folder}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )
    shutil.rmtree(folder)


class _InSandbox:
    """Runs a Python block with the working directory in a folder of its own."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def __call__(self, example):
        before, folder = Path.cwd(), _sandbox()
        os.chdir(folder)
        try:
            result = self.evaluator(example)
        finally:
            os.chdir(before)
        shutil.rmtree(folder)
        return result


def _skipped(reason: str):
    def evaluate(example):
        raise SkipTest(reason)

    return evaluate


class Blocks:
    """A code-block parser whose regions run in a sandbox, or skip when the line before
    the block says so."""

    def __init__(self, parser, sandboxed_python: bool = False):
        self.parser = parser
        self.sandboxed_python = sandboxed_python

    def __call__(self, document):
        for region in self.parser(document):
            before = SKIP_BEFORE.search(document.text[: region.start])
            if before:
                region.evaluator = _skipped(before["reason"])
            elif self.sandboxed_python:
                region.evaluator = _InSandbox(region.evaluator)
            yield region


pytest_collect_file = Sybil(
    parsers=[
        Blocks(CodeBlockParser(language="bash", evaluator=run_bash)),
        Blocks(PythonCodeBlockParser(), sandboxed_python=True),
    ],
    patterns=["README.md", "docs/*.md"],
    path=str(PROJECT_ROOT),
).pytest()
