"""What installing streamdrift puts into a user's environment: one import name, ``streamdrift``.

The repository keeps ``streams/`` and ``detectors/`` at its top level; pyproject.toml maps them to
``streamdrift.streams`` and ``streamdrift.detectors`` (docs/architecture.md#import-names). These
tests build the wheel as pip would and look inside it, and import it from a plain directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _configured_packages() -> dict[str, str]:
    """Import name -> folder of every package the distribution installs."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    found = {}
    for name in setuptools["packages"]:
        top = next(prefix for prefix in mapping if name == prefix or name.startswith(prefix + "."))
        found[name] = mapping[top] + name.removeprefix(top).replace(".", "/")
    return found


def test_every_package_folder_is_installed_under_streamdrift() -> None:
    folders = {
        path.parent.relative_to(ROOT).as_posix()
        for top in ("streams", "detectors")
        for path in (ROOT / top).rglob("__init__.py")
    }
    configured = _configured_packages()
    assert set(configured.values()) == folders, "pyproject.toml's packages miss or add a folder"
    assert all(name.startswith("streamdrift.") for name in configured)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("streamdrift-*.whl")
    return found


def test_the_wheel_claims_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"streamdrift"}
    assert "streamdrift/streams/schemas/drift-alert.schema.json" in names
    assert "streamdrift/detectors/adwin.py" in names
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)
    metadata = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "streamdrift = streamdrift.streams.ops.cli:main" in entry_points


def test_the_installed_wheel_imports_by_its_name_only(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-t", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import importlib.util, streamdrift.streams.ops.cli as cli, streamdrift.detectors as d\n"
        "print(cli.__file__); print(d.__file__)\n"
        "print(importlib.util.find_spec('streams'), importlib.util.find_spec('detectors'))\n"
    )
    # From an empty directory, the wheel's copy first on the path (the venv's other packages serve
    # its dependencies).
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    cli_file, detectors_file, generic = result.stdout.splitlines()
    assert cli_file.startswith(str(target)) and detectors_file.startswith(str(target))
    assert generic == "None None", "installing streamdrift claims a generic import name"
