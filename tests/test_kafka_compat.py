"""The worker's start-up check of the libraries whose internals it relies on: the installed
versions pass; an untested version or a missing internal stops the worker with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamdrift.streams.kafka import compat
from streamdrift.streams.kafka.compat import INTERNALS, TESTED, IncompatibleLibrary, Internal

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_libraries_are_the_tested_ones_with_every_internal() -> None:
    assert compat.untested_versions() == []
    assert compat.missing_internals() == []
    compat.check(allow_untested=False)


def test_the_tested_ranges_are_the_pins_of_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name, (low, high) in TESTED.items():
        assert f'"{name}' in pyproject and f">={low},<{high}" in pyproject, name


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        (
            {"faust-streaming": "0.16.0"},
            "faust-streaming 0.16.0 is installed; streamdrift is tested with >=0.15.3,<0.16",
        ),
        (
            {"aiokafka": "0.12.0"},
            "aiokafka 0.12.0 is installed; streamdrift is tested with >=0.13,<0.15",
        ),
        ({"river": None}, "river is not installed"),
    ],
)
def test_a_version_outside_the_tested_range_is_named(
    installed: dict[str, str | None], expected: str
) -> None:
    versions = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "river": "0.26.1", **installed}
    (problem,) = compat.untested_versions(versions)
    assert problem.startswith(expected)


def test_a_missing_internal_stops_the_check_whatever_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone = Internal("faust-streaming", "Consumer._commit", lambda: False)
    monkeypatch.setattr(compat, "INTERNALS", (gone, *INTERNALS[1:]))
    assert compat.missing_internals(compat.INTERNALS) == ["faust-streaming: Consumer._commit"]
    with pytest.raises(
        IncompatibleLibrary,
        match=r"lack what the worker relies on \(faust-streaming: Consumer._commit\)",
    ):
        compat.check(allow_untested=True)


def test_an_internal_whose_probe_raises_counts_as_missing() -> None:
    def probe() -> bool:
        raise ImportError("no module named faust.transport.drivers.aiokafka")

    assert compat.missing_internals((Internal("faust-streaming", "X", probe),)) == [
        "faust-streaming: X"
    ]


def test_an_untested_version_is_a_warning_when_allowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(compat, "_installed", lambda name: "0.99.0")
    with pytest.raises(IncompatibleLibrary, match="STREAMDRIFT_ALLOW_UNTESTED_LIBRARIES=1"):
        compat.check(allow_untested=False)
    monkeypatch.setenv("STREAMDRIFT_ALLOW_UNTESTED_LIBRARIES", "1")
    compat.check()
    assert "untested library version: aiokafka 0.99.0" in caplog.text


def test_the_worker_command_stops_with_one_line_on_an_untested_library(tmp_path: Path) -> None:
    # A library of another version shadows the installed one: a sitecustomize reports 0.99.0.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda name: '0.99.0' if name == 'aiokafka' else real(name)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamdrift.streams",
            "worker",
            "--bootstrap",
            "127.0.0.1:9",
            "--redis-url",
            "redis://127.0.0.1:9/0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "aiokafka 0.99.0 is installed; streamdrift is tested with >=0.13,<0.15" in result.stderr
    assert "Traceback" not in result.stderr
