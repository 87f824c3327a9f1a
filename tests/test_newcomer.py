"""What a newcomer meets first: the package's licence, and the demo (what it leaves behind and
what it says to try next)."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_declared_as_pep_639_and_shipped():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # a string: no setuptools deprecation warning
    assert project["project"]["license"] == "Apache-2.0"
    assert project["project"]["license-files"] == ["LICENSE"]
    requires = project["build-system"]["requires"]
    assert "setuptools>=77" in requires, "PEP 639 license fields need setuptools 77"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def _demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path, Path]:
    """``streamdrift demo ARGS`` with an empty working directory and its own TMPDIR."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}
    env.update(COLUMNS="300", PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamdrift.streams",
            "demo",
            "--rate",
            "1000",
            "--duration",
            "3",
            *args,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, cwd, tmp


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _until(
    lines: queue.Queue[str | None], text: str, seen: list[str], timeout: float = 150.0
) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in seen):
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
        assert line is not None, f"the demo ended before printing {text!r}:\n{''.join(seen)}"
        seen.append(line)


def _workdir(output: str) -> Path:
    (path,) = re.findall(r"logs and data in (\S+)", output)[:1]
    return Path(path)


@pytest.mark.e2e
def test_the_demo_leaves_nothing_behind_and_says_what_to_try_next(tmp_path):
    process, cwd, tmp = _demo(tmp_path)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output
    # e.g. streamdrift-data/
    assert list(cwd.iterdir()) == [], "the demo left files in the working directory"
    assert not _workdir(output).exists() and list(tmp.iterdir()) == []
    assert "streamdrift demo --keep" in output and "status, alerts and report" in output
    assert "docs/own-kafka.md" in output and (ROOT / "docs" / "own-kafka.md").is_file()


@pytest.mark.e2e
def test_the_demo_with_keep_prints_commands_that_work_against_its_running_stack(tmp_path):
    process, cwd, _ = _demo(tmp_path, "--keep")
    seen: list[str] = []
    workdir = None
    try:
        lines = _lines(process)
        _until(lines, "Ctrl-C here stops them", seen)
        output = "".join(seen)
        workdir = _workdir(output)
        commands = {
            words[1]: words
            for line in output.splitlines()
            if (words := shlex.split(line.split("#")[0]))[:1] == ["streamdrift"]
        }
        assert {"status", "alerts", "report"} <= set(commands), output
        assert "--redis-url" in commands["status"] and "--bootstrap" in commands["alerts"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMDRIFT_")}

        def run(words: list[str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "streamdrift.streams", *words[1:]],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        status = run(commands["status"])
        assert status.returncode == 0 and "fraud" in status.stdout, status.stdout + status.stderr
        report = run(commands["report"])
        assert report.returncode == 0 and (cwd / "report.html").is_file(), (
            report.stdout + report.stderr
        )
        (cwd / "report.html").unlink()

        process.send_signal(signal.SIGTERM)  # as Ctrl-C
        _until(lines, "Stopped.", seen, timeout=60)
        assert process.wait(timeout=60) == 0
        assert workdir.is_dir() and (workdir / "worker.log").is_file(), (
            "--keep keeps the demo's directory"
        )
        assert list(cwd.iterdir()) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
