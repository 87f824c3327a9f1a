"""Training data files read in batches of columns, for ``streamdrift baseline build``.

=========== ==================================================================================
format      how it is read
=========== ==================================================================================
``.csv``    header row; a column is numeric when every present cell of its first batch parses
            as a number, else categorical; empty, ``NA``, ``N/A``, ``NaN``, ``null``, ``None``
            cells are missing
``.jsonl``  one JSON object per line: either a flat row (``{"amount": 12.5, "channel": "web"}``)
            or a prediction event of the input contract (``{"model": ..., "features": {...},
            "prediction": ...}``: its features, and the prediction as feature ``prediction``)
``.parquet`` column types from the file (needs ``pip install 'streamdrift[parquet]'``)
=========== ==================================================================================

Batches are ``batch_rows`` rows, so files of any size are read in bounded memory. A batch is
``(rows, columns)``: a column may be shorter than ``rows`` when some rows lack the feature.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["FORMATS", "MISSING_TOKENS", "Batch", "DataFileError", "read_columns"]

FORMATS = (".csv", ".jsonl", ".parquet")
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
Columns = dict[str, list[Any]]
Batch = tuple[int, Columns]


class DataFileError(ValueError):
    """A data file that cannot be read as training data; the message says where and why."""


def read_columns(
    path: Path,
    batch_rows: int = 10_000,
    exclude: frozenset[str] = frozenset(),
    prediction: str | None = None,
) -> Iterator[Batch]:
    """Batches of columns of ``path`` (by its extension), without the ``exclude`` columns;
    the ``prediction`` column, if named, is renamed ``prediction``."""
    suffix = path.suffix.lower()
    readers = {".csv": _csv, ".jsonl": _jsonl, ".parquet": _parquet}
    if suffix not in readers:
        raise DataFileError(f"{path}: unknown format {suffix!r}; use one of {', '.join(FORMATS)}")
    for rows, columns in readers[suffix](path, batch_rows):
        yield (
            rows,
            {
                ("prediction" if name == prediction else name): values
                for name, values in columns.items()
                if name not in exclude
            },
        )


def _csv(path: Path, batch_rows: int) -> Iterator[Batch]:
    numeric: dict[str, bool] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataFileError(f"{path}: empty file (a header row is needed)")
        batch: list[list[str]] = []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise DataFileError(
                    f"{path}:{line}: {len(row)} cells, the header has {len(header)}"
                )
            batch.append(row)
            if len(batch) == batch_rows:
                yield len(batch), _typed(path, header, batch, numeric, line - len(batch) + 1)
                batch = []
        if batch:
            yield len(batch), _typed(path, header, batch, numeric, line - len(batch) + 1)


def _typed(
    path: Path, header: list[str], rows: list[list[str]], numeric: dict[str, bool], first_line: int
) -> Columns:
    columns: Columns = {}
    for i, name in enumerate(header):
        cells = [None if row[i].strip() in MISSING_TOKENS else row[i] for row in rows]
        if name not in numeric:  # decided by the first batch that has a value
            present = [cell for cell in cells if cell is not None]
            if not present:
                columns[name] = cells
                continue
            numeric[name] = all(_is_number(cell) for cell in present)
        if numeric[name]:
            try:
                columns[name] = [None if cell is None else float(cell) for cell in cells]
            except ValueError:
                line = first_line + next(
                    j for j, c in enumerate(cells) if c is not None and not _is_number(c)
                )
                raise DataFileError(
                    f"{path}:{line}: column {name!r} is numeric but has a non-number"
                ) from None
        else:
            columns[name] = cells
    return columns


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


class _Event(msgspec.Struct):
    features: dict[str, Any]
    prediction: Any = None


def _jsonl(path: Path, batch_rows: int) -> Iterator[Batch]:
    rows: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise DataFileError(f"{path}:{line}: not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{path}:{line}: each line must be a JSON object")
            if isinstance(row.get("features"), dict):  # a prediction event of the input contract
                event = msgspec.convert(row, _Event)
                row = {
                    **event.features,
                    **({"prediction": event.prediction} if event.prediction is not None else {}),
                }
            for name, value in row.items():
                if isinstance(value, (dict, list)):
                    raise DataFileError(
                        f"{path}:{line}: {name!r} is nested; features are numbers or strings"
                    )
            rows.append(row)
            if len(rows) == batch_rows:
                yield len(rows), _columns(rows)
                rows = []
    if rows:
        yield len(rows), _columns(rows)


def _columns(rows: list[dict[str, Any]]) -> Columns:
    """Rows to columns; a feature absent from a row is not a value of it (as in the stream)."""
    names = dict.fromkeys(name for row in rows for name in row)
    return {name: [row[name] for row in rows if name in row] for name in names}


def _parquet(path: Path, batch_rows: int) -> Iterator[Batch]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFileError(
            f"{path}: reading Parquet needs pyarrow: pip install 'streamdrift[parquet]'"
        ) from None
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield batch.num_rows, batch.to_pydict()
    except (
        OSError,
        ValueError,
    ) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataFileError(f"{path}: not a readable Parquet file: {exc}") from None
