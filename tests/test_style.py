"""`make lint` as part of the suite: ruff (lint and format) and mypy pass.

The folders are the Makefile's ``LINT_PATHS`` (every folder with Python code) and, for mypy, its
``MYPY_TARGETS`` (the same code, streams/ and detectors/ read as streamdrift.* through
``make typecheck-tree``'s symlinks), so `make lint` and this test check the same; the tools are the
venv's, set up in pyproject.toml (mypy: strict for detectors/, relaxed for streams/ and bench/,
tests/ excluded but for tests/servers/). mypy keeps its cache in .mypy_cache/: the three take
~32 s on 2 cores without it (a fresh clone; mypy reads numpy's, river's, Faust's and redis'
types), ~2 s with it.

import-linter checks the layers' import rules of ``.importlinter`` (which names its packages
itself, by import name: it reads them through the editable install) in ~0.3 s, without a cache
(its cache folder would land in the repository root).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The executables installed next to the interpreter running the tests (.venv/bin).
BIN = Path(sys.executable).parent

CHECKS = {
    "ruff-check": ["ruff", "check"],
    "ruff-format": ["ruff", "format", "--check", "--diff"],
    "mypy": ["mypy"],
    "import-linter": ["lint-imports", "--no-cache", "--no-logo", ".importlinter"],
}
#: The Makefile's list of paths each tool checks (import-linter: none, .importlinter names them).
PATHS = {"ruff": "LINT_PATHS", "mypy": "MYPY_TARGETS"}


def makefile_list(variable: str) -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{variable}\s*:=(.*)$", makefile, re.MULTILINE)
    assert found and found.group(1).split(), f"the Makefile sets no {variable}"
    words = found.group(1).split()
    tree = re.search(r"^TYPECHECK_TREE\s*:=\s*(\S+)$", makefile, re.MULTILINE)
    return [tree.group(1) if tree and word == "$(TYPECHECK_TREE)" else word for word in words]


@pytest.mark.parametrize("check", CHECKS)
def test_lint_paths_pass(check: str) -> None:
    tool, *args = CHECKS[check]
    executable = BIN / tool
    assert executable.exists(), f"{executable} is missing: pip install -e '.[test]'"
    if tool == "mypy":
        subprocess.run(["make", "-s", "typecheck-tree"], cwd=ROOT, check=True, timeout=60)
    arguments = [*args, *(makefile_list(PATHS[tool]) if tool in PATHS else [])]
    result = subprocess.run(
        [executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"`{tool} {' '.join(arguments)}` reported problems:\n{result.stdout}{result.stderr}"
    )
