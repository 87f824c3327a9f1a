"""Choosing the kernels' backend: ``auto`` where the compiled kernels (native/, a Rust
extension) are missing or of another interface version, and where they must be present."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from streamdrift.detectors import kernels

# Runs the monitors with the extension made unimportable (or replaced by one of another
# interface version), as on a machine where `make` found no Rust toolchain.
WITHOUT_EXTENSION = """
import sys
{hide}
import numpy as np
from streamdrift.detectors import kernels
assert kernels.active() == "reference", kernels.active()
try:
    kernels.use("compiled")
except kernels.KernelsUnavailable as error:
    print(error.problem)
from streamdrift.detectors import CategoricalMonitor, NumericMonitor
rng = np.random.default_rng(0)
numeric, categorical = NumericMonitor(), CategoricalMonitor()
values = rng.normal(size=12_000)
values[::50] = np.nan
values[9_000:] += 3.0
changes = numeric.update(values, np.arange(12_000))
categorical.update(list(rng.choice(["a", "b", "c"], 7_000)), list(range(7_000)))
assert numeric.windows.evaluated and categorical.windows.evaluated
assert [change.event for change in changes] == ["detected"], changes
"""

HIDDEN = {
    "not installed": 'sys.modules["streamdrift_kernels"] = None',
    "another version": (
        'import types\nsys.modules["streamdrift_kernels"] = types.SimpleNamespace(API_VERSION=0)'
    ),
}


@pytest.mark.parametrize("case", HIDDEN)
def test_auto_runs_the_reference_kernels_where_the_compiled_ones_cannot_load(case):
    code = WITHOUT_EXTENSION.format(hide=HIDDEN[case])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = "not installed" if case == "not installed" else "interface version 0"
    assert expected in done.stdout


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="one of auto, compiled, reference"):
        kernels.use("fortran")  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("cargo") is None, reason="no Rust toolchain: nothing was built")
def test_the_compiled_kernels_are_installed_where_rust_is():
    """`make` builds native/ wherever cargo is on PATH (CI's machines among them): a build that
    failed or was skipped there must fail the suite, not let the kernels' tests skip."""
    assert kernels.unavailable() is None, (
        f"{kernels.unavailable()}: run make (or {sys.executable} -m pip install ./native)"
    )
    assert kernels.active() == "compiled"  # what auto takes, before any test chose a backend
