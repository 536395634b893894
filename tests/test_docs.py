"""The documentation as the code is: the site builds strictly, every config key has its
description, a skipped code block names a test that exists, the README stays short.
(The code blocks themselves run through Sybil: conftest.py at the project's root.)"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r'<!-- skip: next "covered by (?P<tests>.+?): (?P<why>[^"]+)" -->')
TEST_ID = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def test_every_key_of_every_group_option_has_a_description():
    from pipeline.config.reference import collect, reference_markdown

    keys = collect()
    assert len(keys) > 150  # every group option's keys, not only the default composition's
    assert [k.path for k in keys if not k.description] == []
    paths = {k.path for k in keys}
    assert {"data.csv.sep", "train.xla.shards", "tuner.num_initial_points"} <= paths
    for key in keys:  # a mapping documented as a whole points at a file that exists
        if key.default.startswith("(a mapping: see "):
            where = key.default.removeprefix("(a mapping: see ").rstrip(")")
            assert (PROJECT_ROOT / where).exists(), (key.path, where)
    page = reference_markdown(keys)
    assert "| `data.csv.sep` |" in page and "`data=csv`" in page


def test_a_key_without_a_comment_is_found(tmp_path):
    from pipeline.config.reference import yaml_comments

    conf = tmp_path / "x.yaml"
    conf.write_text(
        "# opens the file\n"
        "a: 1   # the a\n"
        "       # and more of it\n"
        "b:\n"
        "  c: 2\n"
        "  # above d\n"
        "  d: '#not a comment'\n"
    )
    found = yaml_comments(conf, "grp")
    assert found["grp.a"] == "the a and more of it"
    assert found["grp.b.c"] == "" and found["grp.b.d"] == "above d"


def test_the_site_builds_with_strict_links_and_the_generated_reference(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "reference" / "index.html").read_text()
    assert "data.csv.sep" in reference and "train.early_stopping.patience" in reference


def test_every_skipped_block_names_a_test_that_exists():
    skipped = 0
    for doc in DOCS:
        text = doc.read_text()
        directives = re.findall(r"<!-- skip:.*?-->", text)
        for directive in directives:
            found = SKIP.fullmatch(directive)
            assert found, f"{doc.name}: a skip must say 'covered by tests/...::test_...: why'"
            ids = TEST_ID.findall(found["tests"])
            assert ids, f"{doc.name}: {directive}"
            for file, name in ids:
                source = (PROJECT_ROOT / file).read_text()
                assert re.search(rf"^def {name}\(", source, re.M), f"{doc.name}: {file}::{name}"
            skipped += 1
    assert skipped >= 10


README = PROJECT_ROOT / "README.md"


def bash_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_the_first_search_here_is_the_readmes_which_runs():
    """getting-started's first block is skipped because the README's executed block runs
    the same lines: they must not drift apart."""

    def smoke(path):
        return next(b for b in bash_blocks(path.read_text()) if "+experiment=quick" in b[0])

    first, runs = smoke(PROJECT_ROOT / "docs" / "getting-started.md"), smoke(README)
    assert len(first) == 3 and first == runs[: len(first)]


def test_the_readme_is_short_and_carries_no_dated_figure():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", readme)
    for page in re.findall(r"\]\((docs/[\w-]+\.md)\)", readme):
        assert (PROJECT_ROOT / page).exists(), page


def test_a_report_names_project_paths_relative_to_the_project(tmp_path):
    from pipeline.reporting.markdown import portable

    inside = PROJECT_ROOT / "experiments" / "results" / "x"
    assert portable(["x", "--out", str(inside), f"--out={inside}", str(tmp_path)]) == [
        "x",
        "--out",
        "experiments/results/x",
        "--out=experiments/results/x",
        str(tmp_path),  # outside the project: as given
    ]


def test_no_committed_report_names_a_folder_of_the_machine_it_ran_on():
    for report in (PROJECT_ROOT / "experiments" / "results").glob("*/report.md"):
        text = report.read_text()
        assert str(PROJECT_ROOT) not in text and "/work/" not in text, report
