"""What installing streamdrift puts into a user's environment: one import name, ``streamdrift``.

The repository keeps ``streams/`` and ``detectors/`` at its top level; pyproject.toml maps them to
``streamdrift.streams`` and ``streamdrift.detectors`` (docs/architecture.md#import-names). These
tests build the wheel as pip would and look inside it, and import it from a plain directory.

The producer client is a distribution of its own, ``streamdrift-client`` (``client/``, import
name ``streamdrift.client`` in the same namespace), which inference services install without the
worker: its wheel holds ``streamdrift/client/`` only, depends on confluent-kafka and msgspec only,
and imports with nothing else on the path.
"""

from __future__ import annotations

import email
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"


def _project(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())


def _configured_packages(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Import name -> folder (from the pyproject's folder) of every package it installs."""
    setuptools = _project(pyproject)["tool"]["setuptools"]
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


def _build_wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("*.whl")
    return found


def _requirements(wheel: Path) -> list[Requirement]:
    names = zipfile.ZipFile(wheel).namelist()
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    message = email.message_from_bytes(zipfile.ZipFile(wheel).read(metadata))
    return [Requirement(value) for value in message.get_all("Requires-Dist", [])]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The main wheel, built from a copy of what the distribution reads (setuptools builds in the
    source tree: the build leaves nothing behind in the working tree)."""
    copy = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, copy / name)
    for folder in ("streams", "detectors"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return _build_wheel(copy, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client's wheel, built from a copy of client/ next to a copy of the repository's LICENSE
    (client/LICENSE is a symlink to ../LICENSE, kept as one): the build leaves nothing behind in
    the working tree."""
    copy = tmp_path_factory.mktemp("client-source")
    shutil.copy(ROOT / "LICENSE", copy / "LICENSE")
    shutil.copytree(
        CLIENT,
        copy / "client",
        symlinks=True,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    assert (copy / "client" / "LICENSE").is_symlink()
    return _build_wheel(copy / "client", tmp_path_factory.mktemp("client-wheel"))


def test_the_wheel_claims_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"streamdrift"}
    assert "streamdrift/streams/schemas/drift-alert.schema.json" in names
    assert "streamdrift/detectors/adwin.py" in names
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)
    # the producer client is its own distribution, which this one depends on at its version
    assert not any(name.startswith("streamdrift/client") for name in names)
    client_version = _project(CLIENT / "pyproject.toml")["project"]["version"]
    assert f"streamdrift-client=={client_version}" in map(str, _requirements(wheel))
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


# --- the producer client's own distribution ------------------------------------------------------


def test_every_client_package_folder_is_installed_under_streamdrift_client() -> None:
    folders = {
        path.parent.relative_to(CLIENT).as_posix() for path in (CLIENT / "src").rglob("__init__.py")
    }
    configured = _configured_packages(CLIENT / "pyproject.toml")
    assert set(configured.values()) == folders
    assert all(name.split(".")[:2] == ["streamdrift", "client"] for name in configured)


def test_the_client_wheel_holds_streamdrift_client_only(client_wheel: Path) -> None:
    names = zipfile.ZipFile(client_wheel).namelist()
    files = [name for name in names if not name.split("/")[0].endswith(".dist-info")]
    assert files and all(name.startswith("streamdrift/client/") for name in files), files
    # no streamdrift/__init__.py: the namespace is shared with the worker's distribution
    assert "streamdrift/client/__init__.py" in files and "streamdrift/client/py.typed" in files
    license_file = next(name for name in names if name.endswith(".dist-info/licenses/LICENSE"))
    assert b"Apache License" in zipfile.ZipFile(client_wheel).read(license_file)


def test_the_client_wheel_depends_on_confluent_kafka_and_msgspec_only(client_wheel: Path) -> None:
    requirements = {r.name: r for r in _requirements(client_wheel)}
    assert set(requirements) == {"confluent-kafka", "msgspec"}
    # the same confluent-kafka pin as the worker's
    worker = {
        r.name: r
        for r in map(Requirement, _project(ROOT / "pyproject.toml")["project"]["dependencies"])
    }
    assert requirements["confluent-kafka"].specifier == worker["confluent-kafka"].specifier
    assert (
        _project(CLIENT / "pyproject.toml")["project"]["version"]
        == (_project(ROOT / "pyproject.toml")["project"]["version"])
    )


def test_the_installed_client_imports_with_its_dependencies_only(
    client_wheel: Path, tmp_path: Path
) -> None:
    """An inference service's environment: the client's wheel, confluent-kafka and msgspec, and
    nothing else (no site-packages: the worker, Faust, river, scipy, redis are not there)."""
    target = tmp_path / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("-t", str(target), str(client_wheel)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    dependencies = tmp_path / "dependencies"
    dependencies.mkdir()
    for name in ("confluent_kafka", "msgspec"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        package = Path(spec.origin).parent
        for path in (package, package.with_name(f"{name}.libs")):  # bundled shared libraries
            if path.exists():
                (dependencies / path.name).symlink_to(path)
    probe = (
        "import sys\n"
        "import streamdrift.client\n"
        "from streamdrift.client import DriftClient, produce_with_retry\n"
        "print(streamdrift.client.__file__)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        # -S: no site-packages (the venv's editable installs of streamdrift are not seen)
        [sys.executable, "-S", "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(dependencies)])},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    location, modules = result.stdout.splitlines()
    assert location.startswith(str(target))
    loaded = set(modules.split())
    forbidden = {"faust", "aiokafka", "river", "scipy", "redis", "numpy", "pydantic"}
    assert not {name.split(".")[0] for name in loaded} & forbidden
    worker = [m for m in loaded if m.startswith(("streamdrift.streams", "streamdrift.detectors"))]
    assert worker == []
