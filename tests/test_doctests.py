"""Every docstring example runs: the packages' examples are documentation that must stay true.

The modules are imported by their installed names (``streamdrift.detectors.adwin``, not the folder
``detectors/adwin.py``, which pytest's ``--doctest-modules`` would import as a second module
``detectors.adwin``).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = (
    "streamdrift.detectors",
    "streamdrift.streams",
    "streamdrift.client",
    "bench",
    "tests.servers",
)


def module_names() -> list[str]:
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if not info.name.endswith("__main__"):  # running it would start the CLI
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", module_names())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
