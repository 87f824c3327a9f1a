"""End to end with the real monitoring stack: Prometheus and Alertmanager (Debian packages
``prometheus`` and ``prometheus-alertmanager``; ``make test`` installs them) beside the session's
broker and Redis and one worker.

Prometheus scrapes the worker and evaluates the shipped rules; an injected drift makes the shipped
``StreamdriftDriftDetected`` rule fire; Alertmanager, configured from the shipped example, routes it
to the webhook receiver this test runs; every query of the shipped Grafana dashboard (template
variables resolved as Grafana would) returns data from that Prometheus; the worker's ``/metrics``
passes ``promtool check metrics`` and its label values come from bounded sets.

Test-only substitutions, everything else is the shipped configuration:

* ``deploy/prometheus/prometheus.yml``: 1 s scrape and evaluation intervals (1 s scrape timeout),
  the ``streamdrift`` job's target is the worker's loopback port, only that job is kept, the
  Alertmanager target is the test's, and ``rule_files`` names the rule variant below.
* ``deploy/prometheus/rules/streamdrift.rules.yml``: every ``for:`` becomes ``1s`` (the shipped ones
  are 1-10 minutes); groups, names, expressions, labels and annotations are unchanged (asserted).
* ``deploy/alertmanager/alertmanager.yml``: ``group_wait``/``group_interval`` of every route become
  1 s, and each receiver's webhook URL becomes ``http://127.0.0.1:<port>/<receiver name>`` (the
  test's receiver), so the path shows which route the alert took.
* Grafana's ``$__rate_interval`` becomes 15 s (= 4 x the 1 s scrape interval, as Grafana computes
  it), ``$__interval`` 5 s and ``$__range`` 5 m.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest
import yaml
from conftest import TOPIC_PARTITIONS, Topics, WorkerProcess, produce
from prometheus_client.parser import text_string_to_metric_families

from streamdrift.detectors.config import DETECTOR_NAMES
from streamdrift.detectors.multivariate import KIND as PCA_KIND
from streamdrift.streams.dev.embedded import EmbeddedServerError, ManagedProcess, free_port
from streamdrift.streams.pipeline.codec import Reason
from streamdrift.streams.state.partition import ERROR_SERIES, MULTIVARIATE_SERIES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "streamdrift.rules.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamdrift.json"

INTERVAL = "1s"
GRAFANA_BUILTINS = {"__rate_interval": "15s", "__interval": "5s", "__range": "5m"}
FEATURES = [f"f{i}" for i in range(5)]
DRIFTING = "f2"
MODEL = "m"
DRIFT_ALERT = "StreamdriftDriftDetected"
INCIDENT_ALERT = "StreamdriftIncidentOpened"
OWNER = "payments-ml"  # a receiver of its own in deploy/alertmanager/alertmanager.yml
RUNBOOK = "https://runbooks.example.com/m-drift"
SEGMENT = "region"  # models.<model>.segments
REGIONS = ["eu", "us"]
INSTALL_HINT = (
    "is required (Debian packages prometheus and prometheus-alertmanager): `make test` installs "
    "them, or run `make system-deps` as root"
)


def require_tool(*names: str) -> str:
    """Path of the first of ``names`` on PATH; fails (never skips) if none is installed."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{' / '.join(names)} {INSTALL_HINT}")


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


# --- the monitoring servers ------------------------------------------------------------------


class MonitoringServer(ManagedProcess):
    """Prometheus or Alertmanager on a free loopback port, ready once ``/-/ready`` answers 200."""

    def __init__(self, name: str, command: Callable[[int], list[str]], workdir: Path) -> None:
        super().__init__(workdir / f"{name}.log")
        self.name = name
        self._command = command
        self._workdir = workdir
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = free_port()
            self._spawn(self._command(self.port), cwd=self._workdir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.running:
                try:
                    with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                        if response.status == 200:
                            return self
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.1)
            if self.running:
                self.kill()
                raise EmbeddedServerError(
                    f"{self.name} not ready within {timeout:g} s.\n{self._log_report()}"
                )
            if "address already in use" not in self._log_since_spawn():
                break
        raise EmbeddedServerError(
            f"{self.name} exited with status {self.returncode}.\n{self._log_report()}"
        )


class Prometheus(MonitoringServer):
    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query (raises on a bad expression)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = http_json(url)
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"query {expr!r} failed: {exc.read().decode(errors='replace')}"
            ) from exc
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        url = f"{self.url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": match}
        )
        return http_json(url)["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]


class Webhook:
    """Alertmanager's webhook receiver: records (path, payload) of every POST."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        received, lock = self.received, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def monitoring_servers() -> Iterator[list[MonitoringServer]]:
    """Servers appended here are stopped (SIGTERM, then SIGKILL, by PID) at teardown."""
    servers: list[MonitoringServer] = []
    try:
        yield servers
    finally:
        for server in reversed(servers):
            server.terminate(timeout=10)


# --- test configurations derived from the shipped files --------------------------------------


def short_for_rules() -> dict[str, Any]:
    """The shipped rules with every ``for:`` at 1 s; nothing else changes."""
    shipped = yaml.safe_load(RULES.read_text())
    variant = copy.deepcopy(shipped)
    for group in variant["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = INTERVAL
    strip = [
        [{k: v for k, v in r.items() if k != "for"} for r in g["rules"]] for g in shipped["groups"]
    ]
    assert strip == [
        [{k: v for k, v in r.items() if k != "for"} for r in g["rules"]] for g in variant["groups"]
    ]
    return variant


def prometheus_config(worker_port: int, alertmanager_port: int, rules: Path) -> dict[str, Any]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamdrift"]
    job.update(
        scrape_interval=INTERVAL,
        scrape_timeout=INTERVAL,
        static_configs=[{"targets": [f"127.0.0.1:{worker_port}"]}],
    )
    config["global"].update(
        scrape_interval=INTERVAL, scrape_timeout=INTERVAL, evaluation_interval=INTERVAL
    )
    config["scrape_configs"] = [job]
    config["rule_files"] = [str(rules)]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    alertmanagers["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    return config


def alertmanager_config(webhook_port: int) -> dict[str, Any]:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())

    def fast(route: dict[str, Any], root: bool) -> None:
        for key in ("group_wait", "group_interval"):
            if root or key in route:
                route[key] = INTERVAL
        for child in route.get("routes", []):
            fast(child, root=False)

    fast(config["route"], root=True)
    for receiver in config["receivers"]:
        assert set(receiver) <= {"name", "webhook_configs"}, (
            f"{receiver['name']}: only webhooks can be tested here"
        )
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook_port}/{receiver['name']}"
    return config


def check(*command: str | Path) -> None:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


# --- the Grafana dashboard -------------------------------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target, rows' nested panels included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))

    walk(dashboard["panels"])
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's ``$name`` / ``${name}`` interpolation."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"unknown variable ${name} in {expr!r}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def resolve_variables(dashboard: dict[str, Any], prometheus: Prometheus) -> dict[str, str]:
    """Template variables in order, as Grafana resolves them: each query variable's
    ``label_values(metric, label)`` runs against Prometheus; "All" becomes ``allValue``, a
    multi-value selection the regex ``(a|b)``, a single value itself."""
    variables = dict(GRAFANA_BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var["type"] == "datasource":
            variables[var["name"]] = var["current"]["value"]
            continue
        assert var["type"] == "query", var
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(query, variables))
        assert match, f"variable {var['name']}: unsupported query {query!r}"
        values = prometheus.label_values(match.group(2), match.group(1))
        assert values, f"variable {var['name']}: {query!r} found no values"
        current = var["current"]["value"]
        if current in ("$__all", ["$__all"]):
            variables[var["name"]] = (
                var.get("allValue") or "(" + "|".join(map(re.escape, values)) + ")"
            )
        else:
            assert current in values, (
                f"variable {var['name']}: default {current!r} not among {values}"
            )
            variables[var["name"]] = current
    return variables


# --- the worker's /metrics -------------------------------------------------------------------


def unbounded_labels(text: str, topics: Topics) -> list[str]:
    """Label values of the worker's metrics outside their bounded sets."""
    input_topics = {
        topics.input: TOPIC_PARTITIONS["input"],
        topics.labels: TOPIC_PARTITIONS["labels"],
    }
    allowed: dict[str, set[str]] = {
        "topic": set(input_topics),
        "partition": {str(p) for p in range(max(input_topics.values()))},
        "reason": {reason.value for reason in Reason},
        "detector": set(DETECTOR_NAMES) | {PCA_KIND},
        "result": {"ok", "fenced", "lost", "error"},
        "model": {MODEL},  # bounded by max_models; here: the models produced
        "feature": {*FEATURES, SEGMENT}
        | {"prediction", ERROR_SERIES, MULTIVARIATE_SERIES},  # bounded by max_features_per_model
        "action": {"opened", "updated", "resolved"},
        "owner": {OWNER},  # bounded by the configuration
        "runbook_url": {RUNBOOK},
        "segment": {SEGMENT},  # the configured segment features, and their (bounded) values
        "value": set(REGIONS),
    }
    problems = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "le" and sample.name.endswith("_bucket"):
                    continue
                if value not in allowed.get(label, set()):
                    problems.append(f"{sample.name}{{{label}={value!r}}}")
    return problems


# --- the test --------------------------------------------------------------------------------


def stream(n: int, shift_at: int, seed: int = 7) -> list[bytes]:
    """``n`` events of N(0, 1) features; ``DRIFTING`` moves by 2 sigma from event ``shift_at``;
    a region (the segment feature) and a stationary prediction."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    values[shift_at:, FEATURES.index(DRIFTING)] += 2.0
    predictions = rng.random(n).tolist()
    now = time.time()
    return [
        json.dumps(
            {
                "model": MODEL,
                "event_id": f"e{i}",
                "timestamp": now,
                "features": {
                    **dict(zip(FEATURES, row.tolist(), strict=True)),
                    SEGMENT: REGIONS[i % len(REGIONS)],
                },
                "prediction": predictions[i],
            }
        ).encode()
        for i, row in enumerate(values)
    ]


def test_injected_drift_fires_the_shipped_alert_through_prometheus_and_alertmanager(
    broker,
    topics: Topics,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
    webhook: Webhook,
    monitoring_servers: list[MonitoringServer],
) -> None:
    promtool = require_tool("promtool")
    amtool = require_tool("amtool")
    prometheus_bin = require_tool("prometheus")
    # Debian's name first
    alertmanager_bin = require_tool("prometheus-alertmanager", "alertmanager")

    # the model's owner and runbook, as the shipped Alertmanager example routes incidents by owner
    config = tmp_path / "routing.yaml"
    config.write_text(
        f"models:\n  {MODEL}:\n    owner: {OWNER}\n    runbook_url: {RUNBOOK}\n"
        f"    segments: [{SEGMENT}]\n"  # the bias-indicator panel's data
    )
    worker = start_worker(config=config)

    # Alertmanager from the shipped example config
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(yaml.safe_dump(alertmanager_config(webhook.port)))
    check(amtool, "check-config", am_config)
    (tmp_path / "alertmanager-data").mkdir()
    alertmanager = MonitoringServer(
        "alertmanager",
        lambda port: [
            alertmanager_bin,
            f"--config.file={am_config}",
            f"--storage.path={tmp_path / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}/",
            # no clustering: nothing listens beyond the loopback web port
            "--cluster.listen-address=",
        ],
        tmp_path,
    )
    monitoring_servers.append(alertmanager)
    alertmanager.start()

    # Prometheus from the shipped config and rules
    worker.wait_ready()
    rules = tmp_path / "streamdrift.rules.yml"
    rules.write_text(yaml.safe_dump(short_for_rules()))
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(prometheus_config(worker.metrics_port, alertmanager.port, rules))
    )
    check(promtool, "check", "config", prom_config)  # also checks the rule file
    prometheus = Prometheus(
        "prometheus",
        lambda port: [
            prometheus_bin,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}/",
        ],
        tmp_path,
    )
    monitoring_servers.append(prometheus)
    prometheus.start()
    wait_for(
        lambda: prometheus.query('up{job="streamdrift"} == 1'), 20, "Prometheus scraping the worker"
    )

    # the drift, and a few dead letters for the dashboard's dead-letter panel
    produce(
        broker.bootstrap,
        topics.input,
        [b"{not json"] * 3 + stream(6_000, shift_at=3_000),
        key=MODEL,
    )

    try:
        firing = wait_for(
            lambda: [
                a
                for a in prometheus.alerts()
                if a["labels"]["alertname"] == DRIFT_ALERT and a["state"] == "firing"
            ],
            60,
            f"{DRIFT_ALERT} firing in Prometheus",
        )
    except AssertionError as exc:
        seen = {
            q: prometheus.query(q)
            for q in ("streamdrift_events_total", "streamdrift_alerts_total", "up")
        }
        raise AssertionError(
            f"{exc}\nPrometheus has: {seen}\nworker log:\n{worker.log_tail(60)}"
        ) from None
    assert {(a["labels"]["model"], a["labels"]["feature"]) for a in firing} == {
        (MODEL, DRIFTING)
    }, firing
    labels = firing[0]["labels"]
    assert labels["job"] == "streamdrift" and labels["severity"] == "warning"
    assert labels["detector"] in DETECTOR_NAMES
    assert firing[0]["annotations"]["summary"] == f"Drift detected on {MODEL}/{DRIFTING}"

    def delivered() -> list[tuple[str, dict[str, Any]]]:
        return [
            (path, alert)
            for path, payload in list(webhook.received)
            for alert in payload["alerts"]
            if alert["labels"]["alertname"] == DRIFT_ALERT and alert["status"] == "firing"
        ]

    notifications = wait_for(delivered, 30, f"Alertmanager delivering {DRIFT_ALERT} to the webhook")
    path, alert = notifications[0]
    assert path == "/ml-team", f"the drift route's receiver is ml-team, got {path}"
    assert alert["labels"]["model"] == MODEL and alert["labels"]["feature"] == DRIFTING
    assert alert["annotations"]["summary"] == f"Drift detected on {MODEL}/{DRIFTING}"

    # the model's incident: one alert labelled with its owner and runbook, routed to the owner
    def incident_delivered() -> list[tuple[str, dict[str, Any]]]:
        return [
            (path, alert)
            for path, payload in list(webhook.received)
            for alert in payload["alerts"]
            if alert["labels"]["alertname"] == INCIDENT_ALERT and alert["status"] == "firing"
        ]

    routed = wait_for(incident_delivered, 60, f"Alertmanager delivering {INCIDENT_ALERT}")
    path, alert = routed[0]
    assert path == f"/{OWNER}", f"incidents route by owner, got {path}"
    assert alert["labels"]["model"] == MODEL and alert["labels"]["owner"] == OWNER
    assert alert["annotations"]["runbook_url"] == RUNBOOK

    # every recording rule and every dashboard query returns data from this Prometheus
    records = [
        r["record"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    ]
    dashboard = json.loads(DASHBOARD.read_text())
    variables = resolve_variables(dashboard, prometheus)
    assert variables["job"] == "streamdrift"
    queries = [("recording rule", name) for name in records] + [
        (title, substitute(expr, variables)) for title, expr in dashboard_exprs(dashboard)
    ]
    assert len(queries) >= len(records) + 15

    def empty_queries() -> list[str] | bool:
        empty = [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]
        return empty or True

    # Counters born after the drift need two samples inside the 15 s rate window.
    deadline = time.monotonic() + 20
    while (empty := empty_queries()) is not True and time.monotonic() < deadline:
        time.sleep(1)
    assert empty is True, "queries without data:\n" + "\n".join(empty)  # type: ignore[arg-type]

    # the worker's metrics pass promtool's lint, with bounded label values
    text = worker.metrics_text()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("streamdrift_"), family.name
    assert unbounded_labels(text, topics) == []
    assert worker.running
