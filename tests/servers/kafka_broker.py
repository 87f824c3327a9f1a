"""Apache Kafka 4.x (KRaft) brokers for the tests: one node, or a three-node cluster.

Test code only (the worker and the demo never import it; they use Tansu from
:mod:`streams.dev.embedded`). The servers are Apache Kafka's own jars, fetched from Maven Central by
``make kafka-jars`` (the dependencies of ``tests/servers/kafka/pom.xml``) into
``.cache/kafka-<version>/``; :func:`kafka_jars` runs that target itself when the cache is missing.
``$STREAMDRIFT_KAFKA_JARS`` points at another directory of jars (e.g. a Kafka download's
``libs/``).

Every node is a combined KRaft controller and broker (``process.roles=broker,controller``) on
two free 127.0.0.1 ports (client and controller listeners, both PLAINTEXT), with a static voter
set (``controller.quorum.voters``: every node of the cluster) and its data in its own directory
(``<workdir>/node-<id>/data``), formatted once by ``kafka.tools.StorageTool format`` before its
first start and kept by restarts. Like the servers of :mod:`streams.dev.embedded` each node logs to
a file in its directory, leads its own process group, is signalled only through the PID recorded
when it was started, and is SIGKILLed by the kernel if the Python process that started it dies.

The JVM is kept small (``-Xmx256m``, serial GC, C1 only: a node settles at ~200-300 MB resident)
and the broker is set up for fast tests: no topic auto-creation, no initial rebalance delay,
4-partition internal topics, 0.5 s broker heartbeats.

With a :class:`KafkaSecurity` a node also listens on SASL_SSL (SCRAM-SHA-512, users created when
the storage is formatted) and on SSL with client certificates required (mutual TLS), from PEM key
and trust stores (``tests/servers/kafka_tls.py`` makes them), and authorizes every request with
KRaft's ``StandardAuthorizer`` (nothing is allowed without an ACL). The PLAINTEXT client listener
(``bootstrap``) and the controller listener stay: their principal, ``User:ANONYMOUS``, is a super
user, so the test harness (topics, ACLs, producing and reading) and the node itself are never
refused. Only loopback listens, as always.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from confluent_kafka import KafkaException

from streamdrift.streams.dev.embedded import (
    LOOPBACK,
    EmbeddedServerError,
    ManagedProcess,
    free_port,
    tcp_open,
)
from streamdrift.streams.kafka.admin import admin_client, create_topics

__all__ = [
    "KafkaBroker", "KafkaCluster", "KafkaNode", "KafkaSecurity", "kafka_jars", "kafka_version",
]  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"

#: JVM options of every node (and of the storage tool): a small heap, the serial collector, and
#: only the C1 compiler (faster start, less CPU spent compiling on a 2-core machine).
JVM_OPTIONS = (
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xss512k",
    "-Djava.awt.headless=true",
)
#: Environment variables the ``java`` launcher reads; scrubbed so a developer's shell cannot
#: change the test brokers' JVM.
_JAVA_ENV_VARS = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "CLASSPATH")
_POLL_S = 0.1

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# Per-request and per-segment chatter: warnings only.
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
logger.coordinator.name = org.apache.kafka.coordinator
logger.coordinator.level = warn
logger.logs.name = org.apache.kafka.storage.internals.log
logger.logs.level = warn
logger.unified.name = kafka.log.UnifiedLog
logger.unified.level = warn
logger.partition.name = kafka.cluster.Partition
logger.partition.level = warn
logger.replica.name = kafka.server.ReplicaFetcherManager
logger.replica.level = warn
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = warn
"""


def kafka_version() -> str:
    """The Kafka version the pom asks for (``<kafka.version>``)."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if found is None:
        raise EmbeddedServerError(f"No <kafka.version> in {POM}.")
    return found.group(1).strip()


def kafka_jars() -> Path:
    """The directory of Apache Kafka's jars: ``$STREAMDRIFT_KAFKA_JARS``, else the cache that
    ``make kafka-jars`` fills (run here if the cache is missing or incomplete)."""
    override = os.environ.get("STREAMDRIFT_KAFKA_JARS")
    if override:
        folder = Path(override)
        if not any(folder.glob("kafka_2.13-*.jar")):
            raise EmbeddedServerError(
                f"STREAMDRIFT_KAFKA_JARS={override} holds no kafka_2.13-*.jar."
            )
        return folder
    folder = REPO_ROOT / ".cache" / f"kafka-{kafka_version()}"
    if not (folder / ".complete").is_file():
        try:
            made = subprocess.run(
                ["make", "--no-print-directory", "kafka-jars"],
                check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(f"`make kafka-jars` could not run: {exc}") from exc
        if made.returncode != 0 or not (folder / ".complete").is_file():
            raise EmbeddedServerError(
                f"`make kafka-jars` failed (status {made.returncode}); it needs Maven, Java >= 17 "
                f"and Maven Central.\n{made.stdout[-3000:]}{made.stderr[-3000:]}"
            )
    return folder


def java_binary() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java")] if home else []
    candidates += [shutil.which("java") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServerError(
        "The Apache Kafka test brokers need Java >= 17: apt-get install openjdk-17-jre-headless "
        "(or set JAVA_HOME)."
    )


def new_cluster_id() -> str:
    """A random KRaft cluster id (Kafka's Uuid: 16 bytes, URL-safe base64 without padding),
    never starting with ``-`` (the storage tool would read that as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _broker_ids(bootstrap: str, timeout: float) -> set[int] | None:
    """Ids of the brokers a metadata request to ``bootstrap`` lists, or None without an answer."""
    try:
        return set(admin_client(bootstrap).list_topics(timeout=timeout).brokers)
    except KafkaException:
        return None


#: SCRAM user names and passwords are passed to the storage tool inside ``[name=...,password=...]``.
_SCRAM_TEXT = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class KafkaSecurity:
    """Secured listeners and ACLs of every node of a :class:`KafkaCluster`.

    ``keystore``: PEM file with the broker's unencrypted PKCS#8 private key and its certificate
    chain (for 127.0.0.1); ``truststore``: PEM file of the CA certificates whose client
    certificates the mutual-TLS listener accepts. ``scram_users`` (name -> password) are
    created as SCRAM-SHA-512 credentials when the storage is formatted. ``sasl_ssl`` / ``mtls``
    choose the listeners; ``acls`` turns the authorizer on (``allow.everyone.if.no.acl.found``
    false; super users: ``User:ANONYMOUS`` of the PLAINTEXT and controller listeners, plus
    ``super_users``). A client certificate ``CN=name,...`` maps to the principal ``User:name``.
    """

    keystore: Path
    truststore: Path
    scram_users: Mapping[str, str] = field(default_factory=dict)
    sasl_ssl: bool = True
    mtls: bool = True
    acls: bool = True
    super_users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, password in self.scram_users.items():
            if not (_SCRAM_TEXT.fullmatch(name) and _SCRAM_TEXT.fullmatch(password)):
                raise ValueError(f"SCRAM user {name!r}: names and passwords of [A-Za-z0-9._-] only")

    def listeners(self, sasl_ssl_port: int, ssl_port: int) -> dict[str, int]:
        """Listener name -> port of the secured listeners this configuration asks for."""
        return {
            **({"SASL_SSL": sasl_ssl_port} if self.sasl_ssl else {}),
            **({"SSL": ssl_port} if self.mtls else {}),
        }

    def properties(self) -> dict[str, str]:
        """``server.properties`` entries of the secured listeners and the authorizer."""
        tls = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore),
            "ssl.endpoint.identification.algorithm": "https",
            # RFC 2253 subject "CN=worker,O=..." -> User:worker (else the whole subject).
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        }
        properties = dict(tls)
        if self.sasl_ssl:
            properties |= {
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.client.auth": "none",
            }  # fmt: skip
        if self.mtls:
            properties["listener.name.ssl.ssl.client.auth"] = "required"
        if self.acls:
            properties |= {
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found": "false",
                "super.users": ";".join(("User:ANONYMOUS", *self.super_users)),
            }
        return properties

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM users."""
        return [
            argument
            for name, password in self.scram_users.items()
            for argument in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]

    def redact(self, text: str) -> str:
        """``text`` without the SCRAM passwords (error messages quote the format command)."""
        for password in self.scram_users.values():
            text = text.replace(password, "***")
        return text


class _PortTaken(Exception):
    """A node exited because another process took one of its freshly chosen ports."""


class KafkaNode(ManagedProcess):
    """One combined KRaft controller + broker JVM of a :class:`KafkaCluster`.

    Its ports and data directory are kept by :meth:`restart`; :meth:`kill` is a crash (SIGKILL),
    ``terminate()`` a clean shutdown (SIGTERM: controlled shutdown, SIGKILL after the timeout).
    """

    name = "kafka"

    def __init__(self, cluster: KafkaCluster, node_id: int, workdir: Path) -> None:
        self.node_id = node_id
        self.workdir = workdir
        super().__init__(workdir / "kafka.log")
        self._cluster = cluster
        self.port = 0  # the client (PLAINTEXT) listener
        self.controller_port = 0
        self.sasl_ssl_port = 0  # the secured listeners (with the cluster's KafkaSecurity)
        self.ssl_port = 0

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` of this node alone."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` of this node's SASL_SSL (SCRAM-SHA-512) listener."""
        return f"{LOOPBACK}:{self.sasl_ssl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` of this node's mutual-TLS listener."""
        return f"{LOOPBACK}:{self.ssl_port}"

    @property
    def data_dir(self) -> Path:
        """``log.dirs`` (topic partitions and the metadata log)."""
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    def properties(self) -> dict[str, str]:
        """The node's ``server.properties``."""
        security = self._cluster.security
        secured = security.listeners(self.sasl_ssl_port, self.ssl_port) if security else {}
        advertised = ",".join(
            f"{name}://{LOOPBACK}:{port}"
            for name, port in {"PLAINTEXT": self.port, **secured}.items()
        )
        protocols = ",".join(f"{name}:{name}" for name in ("PLAINTEXT", *secured))
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self._cluster.voters,
            "listeners": f"{advertised},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": advertised,
            "listener.security.protocol.map": f"{protocols},CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **(security.properties() if security else {}),
            **self._cluster.settings,
        }

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def format_command(self) -> list[str]:
        """``kafka-storage format``: writes meta.properties and the bootstrap metadata."""
        security = self._cluster.security
        return [
            *self._java(), "kafka.tools.StorageTool", "format",
            "--cluster-id", self._cluster.cluster_id, "--config", str(self.config_path),
            *(security.format_arguments() if security else ()),
        ]  # fmt: skip

    def start(self) -> Self:
        """Write the config and launch the JVM (returns at once; see :meth:`wait_ready`).

        The data directory must be formatted (:meth:`KafkaCluster.start` does it)."""
        if not self.formatted:
            raise EmbeddedServerError(
                f"kafka node {self.node_id}: {self.data_dir} is not formatted."
            )
        self.write_config()
        self._spawn(
            [*self._java(), "kafka.Kafka", str(self.config_path)], env=_java_env(), cwd=self.workdir
        )
        return self

    def answers(self, timeout: float) -> bool:
        """True if this node's client listener answers metadata listing this node."""
        if not tcp_open(self.port, timeout):  # else librdkafka logs each refused connection
            return False
        ids = _broker_ids(self.bootstrap, timeout)
        return ids is not None and self.node_id in ids

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Wait until :meth:`answers`; raise with the log tail if the JVM exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive_named()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedServerError(
                    f"kafka node {self.node_id} (pid {self.pid}) did not answer metadata on "
                    f"{self.bootstrap} within {timeout:g} s.\n{self._log_report()}"
                )
            if self.answers(min(2.0, remaining)) and self.running:
                return self
            time.sleep(_POLL_S)

    def _check_alive_named(self) -> None:
        try:
            self.check_alive()
        except _PortTaken:
            raise EmbeddedServerError(
                f"kafka node {self.node_id}: one of its ports {self._ports()} was taken by another "
                f"process.\n{self._log_report()}"
            ) from None

    def check_alive(self) -> None:
        """Raise (``_PortTaken`` if a port was taken) when the JVM has exited."""
        if self.running:
            return
        if "address already in use" in self._log_since_spawn().lower():
            raise _PortTaken
        raise EmbeddedServerError(
            f"kafka node {self.node_id} exited with status {self.returncode}.\n{self._log_report()}"
        )

    def restart(self, timeout: float = 60.0) -> Self:
        """Stop cleanly (if running) and start again with the same ports and data; wait ready."""
        self.terminate(timeout=30.0)
        return self.start().wait_ready(timeout)

    def _ports(self) -> list[int]:
        return [
            p for p in (self.port, self.controller_port, self.sasl_ssl_port, self.ssl_port) if p
        ]

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the node's process group (no-op once it has exited)."""
        self._signal(sig)

    def _java(self) -> list[str]:
        return [
            java_binary(), *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", f"{self._cluster.jars}/*",
        ]  # fmt: skip


def _java_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _JAVA_ENV_VARS}


class KafkaCluster:
    """``size`` combined controller+broker nodes forming one KRaft cluster on 127.0.0.1.

    Replication follows the size: ``default.replication.factor`` and the internal topics'
    replication are ``min(size, 3)``, ``min.insync.replicas`` 2 from three nodes on (1 below).
    ``settings`` override or add ``server.properties`` entries of every node; ``security`` adds
    the secured listeners and the authorizer (:class:`KafkaSecurity`).

    >>> with KafkaCluster(3) as cluster:  # doctest: +SKIP
    ...     cluster.create_topics({"predictions": 4})  # replicated 3 times
    ...     cluster.node(2).kill()
    ...     cluster.node(2).restart()
    """

    name = "kafka-cluster"
    _PORT_ATTEMPTS = 3

    def __init__(
        self,
        size: int = 3,
        *,
        workdir: Path | str | None = None,
        jars: Path | str | None = None,
        settings: Mapping[str, object] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"streamdrift-{self.name}-"))
            if workdir is None
            else Path(workdir).resolve()
        )
        self._jars = Path(jars) if jars is not None else None
        self.security = security
        self.cluster_id = new_cluster_id()
        replication = min(size, 3)
        min_isr = 2 if size >= 3 else 1
        self.settings: dict[str, str] = {
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "share.coordinator.state.topic.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # Fast registration and unfencing at start; a dead node is fenced after 3 s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            # A dead follower leaves the ISR after 10 s (default 30 s), so acks=all writes resume.
            "replica.lag.time.max.ms": "10000",
            # A small machine: few threads, a small compaction buffer (default 128 MB of a 256 MB
            # heap).
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            **{key: str(value) for key, value in (settings or {}).items()},
        }
        self.nodes = [
            KafkaNode(self, node_id, self.workdir / f"node-{node_id}")
            for node_id in range(1, size + 1)
        ]
        #: Seconds the last start() took: storage format (all nodes at once) and until ready.
        self.format_seconds: float | None = None
        self.start_seconds: float | None = None

    # --- addresses ---------------------------------------------------------------------------

    @property
    def jars(self) -> Path:
        if self._jars is None:
            self._jars = kafka_jars()
        return self._jars

    @property
    def voters(self) -> str:
        """``controller.quorum.voters``: ``id@127.0.0.1:controller-port`` of every node."""
        return ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in self.nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's ``127.0.0.1:PORT``, comma-separated (``bootstrap.servers``)."""
        if not self.nodes[0].port:
            raise EmbeddedServerError(f"{self.name} has no ports yet; call start() first.")
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """Every node's SASL_SSL (SCRAM-SHA-512) listener, comma-separated."""
        return self._secured_bootstrap("sasl_ssl")

    @property
    def ssl_bootstrap(self) -> str:
        """Every node's mutual-TLS listener, comma-separated."""
        return self._secured_bootstrap("mtls")

    def _secured_bootstrap(self, listener: str) -> str:
        if self.security is None or not getattr(self.security, listener):
            raise EmbeddedServerError(
                f"{self.name} has no {listener} listener (see KafkaSecurity)."
            )
        self.bootstrap  # noqa: B018 - raises before start()
        attribute = "sasl_ssl_bootstrap" if listener == "sasl_ssl" else "ssl_bootstrap"
        return ",".join(getattr(node, attribute) for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        """The node with this ``node.id`` (1-based, as Kafka's metadata reports it)."""
        return self.nodes[node_id - 1]

    @property
    def running(self) -> bool:
        """True while every node runs."""
        return all(node.running for node in self.nodes)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Self:
        """Format (first time), start every node and wait until each answers and metadata lists
        them all; no-op if all run. On a port clash at the first start, retries on new ports."""
        if self.running:
            return self
        began = time.monotonic()
        for attempt in range(self._PORT_ATTEMPTS):
            first = not all(node.formatted for node in self.nodes)
            if first:
                self._choose_ports()
                self._format()
            try:
                for node in self.nodes:
                    if not node.running:
                        node.start()
                self.wait_ready(timeout - (time.monotonic() - began))
                self.start_seconds = time.monotonic() - began
                return self
            except _PortTaken:
                self._kill_all()
                if not first or attempt == self._PORT_ATTEMPTS - 1:
                    raise EmbeddedServerError(
                        f"{self.name}: a node's port was taken by another process; something is "
                        f"grabbing ports on {LOOPBACK}."
                    ) from None
                for node in self.nodes:  # a fresh cluster: new ports, new storage
                    shutil.rmtree(node.data_dir, ignore_errors=True)
            except BaseException:
                self._kill_all()
                raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Wait until every running node answers and a metadata request lists every node."""
        deadline = time.monotonic() + timeout
        waiting = {node.node_id for node in self.nodes}
        everyone = set(waiting)
        while True:
            for node in self.nodes:
                node.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logs = "\n".join(self.node(i)._log_report() for i in sorted(waiting) or everyone)
                raise EmbeddedServerError(
                    f"{self.name}: nodes {sorted(waiting)} not ready within {timeout:g} s.\n{logs}"
                )
            for node_id in sorted(waiting):
                if self.node(node_id).answers(min(2.0, remaining)):
                    waiting.discard(node_id)
            if not waiting and _broker_ids(self.bootstrap, min(2.0, remaining)) == everyone:
                return self
            time.sleep(_POLL_S)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every node at once, SIGKILL those left after ``timeout`` s; delete a temporary
        workdir. A single node stops cleanly in ~0.5 s; the nodes of a cluster stopping together
        wait for controlled shutdowns that a departing quorum cannot grant (measured: > 15 s),
        hence the short timeout (what they wrote is on disk either way)."""
        for node in self.nodes:
            node.send_signal(signal.SIGTERM)
            node.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.running and time.monotonic() < deadline:
                time.sleep(_POLL_S)
        self._kill_all()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a crash)."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = 60.0) -> KafkaNode:
        """Restart one node (cleanly if running) with its ports and data; wait until it answers."""
        return self.node(node_id).restart(timeout)

    def _choose_ports(self) -> None:
        taken: set[int] = set()
        for node in self.nodes:
            node.port, node.controller_port = (self._new_port(taken) for _ in range(2))
            if self.security is not None:
                node.sasl_ssl_port, node.ssl_port = (self._new_port(taken) for _ in range(2))

    @staticmethod
    def _new_port(taken: set[int]) -> int:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    def _format(self) -> None:
        began = time.monotonic()
        running: list[tuple[KafkaNode, subprocess.Popen[str]]] = []
        for node in self.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
            node.write_config()
            running.append((node, subprocess.Popen(
                node.format_command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=_java_env(), cwd=node.workdir,
            )))  # fmt: skip
        for node, process in running:
            try:
                output, _ = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            if process.returncode != 0 or not node.formatted:
                report = f"{' '.join(node.format_command())}\n{output[-4000:]}"
                if self.security:
                    report = self.security.redact(report)
                raise EmbeddedServerError(
                    f"Formatting kafka node {node.node_id}'s storage failed (status "
                    f"{process.returncode}):\n{report}"
                )
        self.format_seconds = time.monotonic() - began

    def _kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    # --- topics ------------------------------------------------------------------------------

    def create_topics(
        self, topics: Mapping[str, int], *, replication_factor: int = -1, timeout: float = 30.0
    ) -> None:
        """Create ``{name: partitions}`` topics replicated ``replication_factor`` times (-1: the
        cluster's default) and wait until metadata shows every partition with a leader.

        (On a three-node cluster with ``min.insync.replicas=2`` an ``acks=all`` write to an
        unreplicated topic fails: hence the cluster default here.)"""
        create_topics(
            self.bootstrap, topics, replication_factor=replication_factor, timeout=timeout
        )

    def leader(self, topic: str, partition: int = 0, timeout: float = 10.0) -> int:
        """``node.id`` of the current leader of one partition (per the cluster's metadata)."""
        metadata = admin_client(self.bootstrap).list_topics(topic, timeout=timeout)
        return int(metadata.topics[topic].partitions[partition].leader)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class KafkaBroker(KafkaCluster):
    """A single-node Apache Kafka (KRaft, combined controller+broker) on 127.0.0.1.

    The same interface as :class:`streams.dev.embedded.EmbeddedBroker` (``bootstrap``, ``port``,
    ``start``, ``stop``, ``kill``, ``pause``/``resume``, ``log_path``) plus :meth:`restart`,
    which keeps the log directory: topics, committed offsets and groups survive it.

    >>> with KafkaBroker() as broker:  # doctest: +SKIP
    ...     create_topics(broker.bootstrap, {"predictions": 4})

    Secured (``sasl_ssl_bootstrap``, ``ssl_bootstrap``; ``bootstrap`` stays PLAINTEXT, super user):

    >>> ca = CertificateAuthority(folder)  # tests/servers/kafka_tls.py  # doctest: +SKIP
    >>> security = KafkaSecurity(  # doctest: +SKIP
    ...     keystore=ca.issue("broker", server=True).keystore,
    ...     truststore=ca.cert,
    ...     scram_users={"worker": "s3cret"},
    ... )
    >>> with KafkaBroker(security=security) as broker:  # doctest: +SKIP
    ...     broker.sasl_ssl_bootstrap  # SCRAM-SHA-512 over TLS; broker.ssl_bootstrap: mutual TLS
    """

    name = "kafka"

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        jars: Path | str | None = None,
        settings: Mapping[str, object] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        super().__init__(1, workdir=workdir, jars=jars, settings=settings, security=security)

    @property
    def _node(self) -> KafkaNode:
        return self.nodes[0]

    @property
    def port(self) -> int:
        """The client listener's port on 127.0.0.1, kept by restarts."""
        if not self._node.port:
            raise EmbeddedServerError("kafka has no port yet; call start() first.")
        return self._node.port

    @property
    def pid(self) -> int | None:
        return self._node.pid

    @property
    def log_path(self) -> Path:
        return self._node.log_path

    @property
    def data_dir(self) -> Path:
        return self._node.data_dir

    def log_tail(self, lines: int = 40) -> str:
        return self._node.log_tail(lines)

    def kill(self, node_id: int = 1) -> None:
        """SIGKILL the broker (a crash); :meth:`restart` brings it back with its data."""
        super().kill(node_id)

    def restart(self, node_id: int = 1, timeout: float = 60.0) -> KafkaNode:
        """Stop cleanly (if running) and start again on the same port with the same log dir."""
        return super().restart(node_id, timeout)

    def pause(self) -> None:
        """Freeze the JVM with SIGSTOP (a hung broker)."""
        self._node.pause()

    def resume(self) -> None:
        self._node.resume()
