"""A real Schema Registry on loopback for the tests: Apicurio Registry (its Quarkus distribution,
fetched from Maven Central by ``make schema-registry``) with its Confluent-compatible API at
``/apis/ccompat/v7``, in-memory storage, started as a subprocess on free 127.0.0.1 ports and
stopped by PID.

It needs Java >= 21 (its classes are Java 21 bytecode): ``$STREAMDRIFT_REGISTRY_JAVA``, else
``$JAVA_HOME``'s, else the newest under /usr/lib/jvm, else ``java`` on PATH, whichever is 21 or
later. Its management interface (health) would listen on 0.0.0.0:9000 unless told otherwise: it
is bound to 127.0.0.1 on a port of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from streamdrift.streams.dev.embedded import EmbeddedServerError, ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(  # the Makefile's, so the two never disagree
    r"^REGISTRY_VERSION\s*:=\s*(\S+)", (REPO_ROOT / "Makefile").read_text(), re.M
)
DIST = REPO_ROOT / ".cache" / f"apicurio-registry-{VERSION.group(1) if VERSION else 'unknown'}"
JVM_OPTIONS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]  # ~2-3 s to ready
_POLL_S = 0.1


def registry_dist() -> Path:
    """The unpacked distribution (``make schema-registry`` run here if it is missing)."""
    if not (DIST / ".complete").is_file():
        made = subprocess.run(
            ["make", "--no-print-directory", "schema-registry"],
            check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if made.returncode != 0 or not (DIST / ".complete").is_file():
            raise EmbeddedServerError(
                f"`make schema-registry` failed (status {made.returncode}); it needs Maven and "
                f"Maven Central.\n{made.stdout[-3000:]}{made.stderr[-3000:]}"
            )
    return DIST


def _major(java: str) -> int:
    try:
        shown = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except OSError:
        return 0
    found = re.search(r"java\.specification\.version = (\d+)", shown.stderr)
    return int(found.group(1)) if found else 0


def registry_java() -> str:
    """A Java >= 21 (see the module)."""
    candidates = [os.environ.get("STREAMDRIFT_REGISTRY_JAVA", "")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates += [str(p) for p in sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)]
    candidates.append(shutil.which("java") or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and _major(candidate) >= 21:
            return candidate
    raise EmbeddedServerError(
        "The Schema Registry tests need Java >= 21 (Apicurio Registry 3): install one (e.g. "
        "Debian's openjdk-21-jre-headless) or set STREAMDRIFT_REGISTRY_JAVA to its java."
    )


class SchemaRegistry(ManagedProcess):
    """Apicurio Registry on two free loopback ports (API, management)."""

    name = "schema-registry"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir / "schema-registry.log")
        self.workdir = workdir
        self.port = free_port()
        self.management_port = free_port()

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def start(self) -> Self:
        dist = registry_dist()
        command = [registry_java(), *JVM_OPTIONS]
        command += ["-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.port}"]
        command += [
            "-Dquarkus.management.host=127.0.0.1",
            f"-Dquarkus.management.port={self.management_port}",
            "-Dquarkus.http.access-log.enabled=false",
            "-Dapicurio.storage.kind=sql",
            "-Dapicurio.storage.sql.kind=h2",
        ]
        self._spawn([*command, "-jar", str(dist / "quarkus-run.jar")], cwd=self.workdir)
        return self.wait_ready()

    def ready(self, timeout: float = 2.0) -> bool:
        health = f"http://127.0.0.1:{self.management_port}/health/ready"
        try:
            with urllib.request.urlopen(health, timeout=timeout) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 90.0) -> Self:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.running:
                raise EmbeddedServerError(
                    f"the schema registry exited with status {self.returncode}.\n"
                    f"{self._log_report()}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the schema registry (pid {self.pid}) was not ready within {timeout:g} s.\n"
                    f"{self._log_report()}"
                )
            time.sleep(_POLL_S)
        return self
