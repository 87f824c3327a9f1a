"""Recovery time after each injected fault, measured by the fault tests against real processes.

Run ``python -m bench.faults_report`` (extra arguments go to pytest, e.g. ``-k redis``). It runs
``tests/faults/test_faults.py`` with ``STREAMDRIFT_FAULT_REPORT`` set, so each test appends one
JSON line of figures per fault, and prints them as the table of docs/operations.md:

* ``ready_s`` — for worker faults, seconds from the fault until the replacement worker's
  ``/readyz`` answered 200 (it joined the group and claimed its partitions);
* ``resumed_s`` — seconds from the fault's end (worker faults: its injection) until the
  checkpointed offsets first moved again, i.e. the pipeline was processing;
* ``caught_up_s`` — seconds until every partition's checkpoint covered its last record;
* ``backlog`` — records the checkpoints still had to cover when the fault ended.

The figures are recorded, never asserted: they depend on the machine (and on the tests'
6 s session timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("ready_s", "resumed_s", "caught_up_s", "backlog")


def table(rows: list[dict]) -> str:
    """A Markdown table, one row per fault, ``–`` where a figure does not apply."""
    lines = ["| fault | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        cells = [f"{row[c]:g}" if row.get(c) is not None else "–" for c in COLUMNS]
        lines.append(f"| {row['fault']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(pytest_args: list[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "faults.jsonl"
        env = {**os.environ, "STREAMDRIFT_FAULT_REPORT": str(results)}
        command = [sys.executable, "-m", "pytest", "-q", "tests/faults", *pytest_args]
        status = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        rows = (
            [json.loads(line) for line in results.read_text().splitlines()]
            if results.exists()
            else []
        )
    print(table(rows))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
