"""Data as it comes, each loaded by overrides alone: a CSV with empty extra columns, a
header-less TSV with numeric labels and a file of class names, JSON Lines, Parquet; and
the one-line refusals (a separator that splits nothing, a label without a name; a
DataError is the search command's one line and exit 2, tests/test_search_e2e.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.config import compose_config, typed_data
from pipeline.data import DataError, prepare

CLASSES = [f"topic{i}" for i in range(10)]


def rows(n: int = 200) -> list[tuple[int, str]]:
    """(label 0..9, a text whose words name its class)."""
    return [(i % 10, f"story {i} about topic{i % 10} and word{i % 10} here") for i in range(n)]


def loaded(*overrides: str):
    return prepare(typed_data(compose_config(list(overrides)).data))


def test_a_headerless_tsv_with_numeric_labels_and_a_names_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows()))
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    data = loaded("data=csv", f"data.csv.path={path}", "data.csv.header=false",
                  "data.csv.label_column=0", "data.csv.text_column=1",
                  f"data.csv.label_names={names}")  # fmt: skip
    assert data.class_names == CLASSES and data.n_classes == 10
    assert sum(len(y) for y in data.y.values()) == 200  # the first line is data too
    listed = loaded("data=csv", f"data.csv.path={path}", "data.csv.header=false",
                    "data.csv.label_column=0", "data.csv.text_column=1",
                    f"data.csv.label_names=[{','.join(CLASSES)}]")  # fmt: skip
    assert listed.class_names == CLASSES and (listed.x["train"] == data.x["train"]).all()


def test_a_csv_with_empty_extra_columns_and_a_tsv_with_a_header(tmp_path):
    frame = pd.DataFrame(rows(), columns=["label", "text"]).assign(note="", other=None)
    frame.to_csv(tmp_path / "wide.csv", index=False)
    frame.to_csv(tmp_path / "named.tsv", index=False, sep="\t")
    wide = loaded("data=csv", f"data.csv.path={tmp_path / 'wide.csv'}")
    tsv = loaded("data=csv", f"data.csv.path={tmp_path / 'named.tsv'}")  # sep from the suffix
    assert wide.n_classes == tsv.n_classes == 10 and (wide.x["train"] == tsv.x["train"]).all()
    semi = tmp_path / "semi.txt"
    frame.to_csv(semi, index=False, sep=";")
    assert loaded("data=csv", f"data.csv.path={semi}", "data.csv.sep=semicolon").n_classes == 10


def test_json_lines_and_parquet_by_overrides(tmp_path):
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t, "stars": lab}) + "\n" for lab, t in rows()))
    names = f"data.jsonl.label_names=[{','.join(CLASSES)}]"
    data = loaded("data=jsonl", f"data.jsonl.path={jsonl}", "data.jsonl.text_column=body",
                  "data.jsonl.label_column=stars", names)  # fmt: skip
    assert data.class_names == CLASSES
    table = tmp_path / "train.parquet"
    pd.DataFrame(rows(), columns=["label", "text"]).to_parquet(table)
    parquet = loaded("data=parquet", f"data.parquet.path={table}")
    assert parquet.class_names == [str(i) for i in range(10)]
    assert sum(len(y) for y in parquet.y.values()) == 200


@pytest.mark.parametrize(
    ("shape", "overrides", "message"),
    [
        ("tsv", ["data.csv.sep=comma"], "data.csv.sep: ',' splits no line of "),
        ("csv", ["data.csv.sep=tab"], "data.csv.sep: tab splits no line of "),
        ("tsv", ["data.csv.sep=ab"], "data.csv.sep: 'ab' is not one character"),
        (
            "tsv",
            ["data.csv.header=false", "data.csv.label_column=0", "data.csv.text_column=1",
             "data.csv.label_names=[a,b,c]"],
            "data.csv.label_names: label 3 in ",
        ),
        (
            "csv",
            ["data.csv.header=false", "data.csv.label_column=1", "data.csv.text_column=0",
             "data.csv.label_names=[a,b]"],
            "data.csv.label_names: label 'story 0 about topic0 and word0 here' in ",
        ),
        ("jsonl", ["data=jsonl", "data.jsonl.text_column=body"], "data.jsonl.text_column: column"),
    ],
)  # fmt: skip
def test_bad_shapes_are_one_line(tmp_path, shape, overrides, message):
    path = tmp_path / f"train.{shape}"
    if shape == "jsonl":
        path.write_text('{"text": "a b", "label": "x"}\n')
    else:
        sep = "\t" if shape == "tsv" else ","
        path.write_text("".join(f"{label}{sep}{text}\n" for label, text in rows(20)))
    section = "jsonl" if shape == "jsonl" else "csv"
    group = [] if shape == "jsonl" else ["data=csv"]
    with pytest.raises(DataError) as err:
        loaded(*group, *overrides, f"data.{section}.path={path}")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
