"""Training data files: CSV type inference and missing tokens, JSONL rows and events, Parquet."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamdrift.detectors import BaselineBuilder
from streamdrift.streams.ops.datafiles import DataFileError, read_columns


def build(path, **options):
    builder = BaselineBuilder()
    for rows, columns in read_columns(path, batch_rows=4, **options):
        builder.add_columns(columns, rows)
    return builder.build("m", None, source=path.name)


def test_csv_columns_are_typed_and_missing_tokens_are_missing(tmp_path):
    path = tmp_path / "train.csv"
    rows = ["amount,channel,id,score"] + [
        f"{i}.5,{'web' if i % 2 else 'app'},{i},0.{i}" for i in range(10)
    ]
    rows += [",NA,10,0.5", "NaN,null,11,0.5"]
    path.write_text("\n".join(rows))
    baseline = build(path, exclude=frozenset({"id"}), prediction="score")
    assert sorted(baseline.features) == ["amount", "channel", "prediction"] and baseline.rows == 12
    amount = baseline.features["amount"]
    assert (amount.stats.count, amount.missing, amount.stats.mean) == (10, 2, 5.0)
    assert baseline.features["channel"].counts.counts == {"app": 5, "web": 5}


def test_csv_reports_a_non_number_in_a_numeric_column_with_its_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("x\n" + "\n".join(["1"] * 5 + ["oops"]))
    with pytest.raises(
        DataFileError, match=r"bad.csv:7: column 'x' is numeric but has a non-number"
    ):
        build(path)


def test_jsonl_reads_flat_rows_and_prediction_events(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [
        {"x": 1.0, "flag": True},
        {"x": None},
        {"model": "m", "features": {"x": 3.0}, "prediction": "yes"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    baseline = build(path)
    x = baseline.features["x"]
    assert (x.stats.count, x.missing, baseline.rows) == (2, 1, 3)
    assert baseline.features["flag"].counts.counts == {"true": 1}  # absent elsewhere: not missing
    assert baseline.features["prediction"].counts.counts == {"yes": 1}
    (tmp_path / "nested.jsonl").write_text('{"x": {"a": 1}}\n')
    with pytest.raises(DataFileError, match=r"nested.jsonl:1: 'x' is nested"):
        build(tmp_path / "nested.jsonl")


def test_parquet_keeps_the_file_types(tmp_path):
    path = tmp_path / "train.parquet"
    table = pa.table(
        {"x": [1.5, None, 2.5, 3.5, 4.5], "n": [1, 2, 3, 4, 5], "c": ["a", "b", None, "a", "a"]}
    )
    pq.write_table(table, path)
    baseline = build(path)
    assert baseline.features["x"].stats.count == 4 and baseline.features["x"].missing == 1
    assert baseline.features["n"].stats.mean == 3.0
    assert (
        baseline.features["c"].counts.counts == {"a": 3, "b": 1}
        and baseline.features["c"].missing == 1
    )
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataFileError, match="not a readable Parquet file"):
        build(tmp_path / "fake.parquet")


def test_an_unknown_format_names_the_known_ones(tmp_path):
    with pytest.raises(
        DataFileError, match=r"unknown format '.xlsx'; use one of .csv, .jsonl, .parquet"
    ):
        list(read_columns(tmp_path / "train.xlsx"))
