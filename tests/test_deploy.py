"""Deployment files checked with the real tools: check-jsonschema (compose spec),
kubernetes-validate (Kubernetes OpenAPI schemas), yamllint, promtool (rules, rule unit tests,
Prometheus config, metrics lint, PromQL of the dashboard) and amtool (Alertmanager config, routes).

Each tool also gets a deliberately broken input, to prove the check can fail.

* The custom resources (KEDA ScaledObject, Prometheus Operator ServiceMonitor and PrometheusRule)
  have no schema in kubernetes-validate offline (it prints a warning and exits 0), so each is
  checked against a minimal schema written from its CRD, and its wiring is asserted: the
  ScaledObject to the Deployment, the ServiceMonitor to the metrics Service and the rules' job
  label, the PrometheusRule to the plain rule file it wraps.
* Kustomizations are not Kubernetes objects: their references are resolved here; when `kubectl`
  is on PATH the overlay is also rendered with `kubectl kustomize` and validated whole.
* promtool and amtool come with Debian's `prometheus` and `prometheus-alertmanager` packages,
  which `make test` installs (target `system-deps`): they are required, the tests fail without them.
* Grafana is not packaged here: its provisioning files are checked against minimal schemas from
  Grafana's provisioning documentation and wired to the compose file; every dashboard query is
  parsed by promtool here and run against a real Prometheus in tests/e2e/test_monitoring.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, generate_latest

from streamdrift.streams.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "streamdrift.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "streamdrift.rules.test.yml"
SYNC_PROMETHEUS_RULE = ROOT / "deploy" / "sync-prometheusrule.py"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
GRAFANA = ROOT / "deploy" / "grafana"
GRAFANA_DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "streamdrift.yml"
DASHBOARD = GRAFANA / "dashboards" / "streamdrift.json"
YAMLLINT_CONFIG = ROOT / ".yamllint.yaml"

INPUT_PARTITIONS = 8
WORKER_LABELS = {"app.kubernetes.io/name": "streamdrift", "app.kubernetes.io/component": "worker"}
CRD_API_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
# the scrape job the alert rules select (compose job_name, ServiceMonitor jobLabel)
JOB = "streamdrift"
EXPECTED_ALERTS = {
    "StreamdriftDriftDetected": "increase(streamdrift_alerts_total[5m]) > 0",
    "StreamdriftIncidentOpened": "job_model:streamdrift_incidents:opened5m",
    "StreamdriftWorkerDown": f'up{{job="{JOB}"}} == 0',
    "StreamdriftCheckpointStale": "streamdrift_checkpoint_age_seconds > 60",
    "StreamdriftDeadLettersHigh": "job_reason:streamdrift_dead_letters:rate5m > 1",
    "StreamdriftConsumerLagHigh": "job_topic:streamdrift_consumer_lag_messages:sum > 100000",
}
INSTALL_HINT = {
    "promtool": "Debian package prometheus",
    "amtool": "Debian package prometheus-alertmanager",
}


def tool(name: str) -> str:
    """Path of a command-line tool from this interpreter's environment (the venv), else PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if name in INSTALL_HINT:
        assert found, (
            f"{name} is required ({INSTALL_HINT[name]}): `make test` installs it, or `make "
            "system-deps` as root"
        )
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifests() -> list[Path]:
    """Every Kubernetes manifest under deploy/kubernetes (kustomizations excluded)."""
    files = sorted(
        p for p in K8S.rglob("*.y*ml") if p.name not in ("kustomization.yaml", "kustomization.yml")
    )
    assert files, "no manifests found"
    return files


def objects() -> dict[tuple[str, str], dict]:
    """The base's objects by (kind, name)."""
    found = {}
    for path in manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def is_crd(doc: dict) -> bool:
    return doc["apiVersion"].startswith(CRD_API_GROUPS)


# --- docker-compose.yml and Dockerfile -----------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_check_can_fail(tmp_path: Path) -> None:
    broken = load(COMPOSE)
    broken["services"]["worker-1"]["helthcheck"] = broken["services"]["worker-1"].pop("healthcheck")
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode != 0 and "helthcheck" in result.stdout


def _pinned(image: str) -> bool:
    _, _, tag = image.rpartition(":")
    return "@sha256:" in image or bool(re.fullmatch(r"v?\d+\.\d+\.\d+([.-][\w.-]+)?", tag))


def test_compose_stack() -> None:
    services = load(COMPOSE)["services"]
    expected = {
        "kafka",
        "redis",
        "worker-1",
        "worker-2",
        "simulator",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert expected <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    # KRaft, no ZooKeeper
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    for name, service in services.items():
        if "build" not in service:
            assert _pinned(service["image"]), (
                f"{name}: image {service['image']} is not pinned to a version"
            )
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["build"] == "."
        assert worker["command"] == ["worker"]
        assert worker["environment"]["STREAMDRIFT_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert worker["environment"]["STREAMDRIFT_REDIS_URL"] == "redis://redis:6379/0"
        assert "http://localhost:9464/healthz" in " ".join(worker["healthcheck"]["test"])
    assert services["simulator"]["command"] == ["simulate", "--bootstrap", "kafka:9092"]
    assert services["simulator"]["build"] == "."
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def _mounts(service: dict) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts of repository folders."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            assert (ROOT / source).exists(), f"{source} is mounted but does not exist"
            mounts[target] = ROOT / source
    return mounts


def _in_container(mounts: dict[str, Path], path: str) -> Path:
    """The repository file a container path points to, through the mounts."""
    for target, source in mounts.items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted from the repository ({mounts})")


def test_compose_monitoring_stack() -> None:
    """Prometheus -> Alertmanager -> Grafana wiring: every path and address points at a real file or
    service."""
    services = load(COMPOSE)["services"]
    # Prometheus sends alerts to the Alertmanager service, which loads the shipped config
    config = load(PROMETHEUS)
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert [t for s in alertmanagers["static_configs"] for t in s["targets"]] == [
        "alertmanager:9093"
    ]
    alertmanager = services["alertmanager"]
    am_mounts = _mounts(alertmanager)
    (config_flag,) = [c for c in alertmanager["command"] if c.startswith("--config.file=")]
    assert _in_container(am_mounts, config_flag.split("=", 1)[1]).resolve() == ALERTMANAGER
    assert "127.0.0.1:9093:9093" in alertmanager["ports"]
    # Grafana: provisioning folder, the dashboards folder where the provider looks, the data source
    # URL
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    assert (
        _in_container(mounts, "/etc/grafana/provisioning").resolve()
        == (GRAFANA / "provisioning").resolve()
    )
    (provider,) = load(GRAFANA_PROVIDER)["providers"]
    assert (
        _in_container(mounts, provider["options"]["path"]).resolve() == DASHBOARD.parent.resolve()
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _in_container(mounts, home).resolve() == DASHBOARD
    (datasource,) = load(GRAFANA_DATASOURCE)["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name in ("prometheus", "alertmanager", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


def test_dockerfile() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    # pinned official images: Python's, and Rust's for the stage that builds the compiled kernels
    assert bases and bases[-1].startswith("python:"), bases
    assert all(
        re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?|rust:\d+\.\d+\.\d+-slim(-\w+)?", base)
        for base in bases
    ), bases
    assert "COPY --from=kernels /wheels /wheels" in lines, "the image carries the compiled kernels"
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
    final_stage = lines[lines.index(final) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert any("pip install" in line for line in lines)
    assert 'ENTRYPOINT ["streamdrift"]' in final_stage
    assert 'CMD ["worker"]' in final_stage
    assert "EXPOSE 9464" in final_stage


# --- Kubernetes ----------------------------------------------------------------------------


def test_manifests_pass_kubernetes_validate_strict() -> None:
    core = [p for p in manifests() if not any(is_crd(d) for d in yaml.safe_load_all(p.read_text()))]
    assert len(core) >= 5
    result = run(tool("kubernetes-validate"), "--strict", *core)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # an unknown kind only warns (exit 0): make sure every file was really validated
    assert "Couldn't find schema" not in output, output
    for path in core:
        assert f"{path} passed" in output, output


def test_kubernetes_validate_can_fail(tmp_path: Path) -> None:
    deployment = load(BASE / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {
        "httpGet": {"path": "/healthz"}
    }
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run(tool("kubernetes-validate"), "--strict", path)
    assert result.returncode != 0, result.stdout


# Minimal schema from KEDA's ScaledObject CRD (keda.sh/v1alpha1): kubernetes-validate cannot fetch
# CRD schemas offline. Unknown fields fail, as a strict server-side apply would.
_INT = {"type": "integer", "minimum": 0}


def _custom_resource(api_version: str, kind: str, metadata: dict, spec: dict) -> dict:
    """The JSON Schema of a custom resource: its fixed envelope around ``spec``'s own schema."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
    }


SCALED_OBJECT_SCHEMA = _custom_resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {"type": "object", "required": ["name"]},
    {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    k: {"type": "string"}
                    for k in ("apiVersion", "kind", "name", "envSourceContainerName")
                },
            },
            "pollingInterval": _INT,
            "cooldownPeriod": _INT,
            "initialCooldownPeriod": _INT,
            "idleReplicaCount": _INT,
            "minReplicaCount": _INT,
            "maxReplicaCount": _INT,
            "advanced": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                    },
                    "scalingModifiers": {"type": "object"},
                },
            },
            "fallback": {
                "type": "object",
                "required": ["failureThreshold", "replicas"],
                "properties": {"failureThreshold": _INT, "replicas": _INT},
            },
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"type": "string"},
                        "name": {"type": "string"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "useCachedMetrics": {"type": "boolean"},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "authenticationRef": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
)


def test_custom_resources_have_their_schema_checks() -> None:
    kinds = sorted(doc["kind"] for doc in objects().values() if is_crd(doc))
    assert kinds == sorted(CRD_SCHEMAS), "a new custom resource needs its own schema and check"
    for doc in objects().values():
        if is_crd(doc):
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


def test_keda_scaled_object() -> None:
    found = objects()
    scaled = found[("ScaledObject", "streamdrift")]
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    assert (
        spec["scaleTargetRef"].get("kind", "Deployment"),
        spec["scaleTargetRef"]["name"],
    ) in found
    assert spec["maxReplicaCount"] == INPUT_PARTITIONS
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    config = found[("ConfigMap", "streamdrift-config")]["data"]
    assert trigger["metadata"]["consumerGroup"] == config["STREAMDRIFT_GROUP_ID"] == "streamdrift"
    assert trigger["metadata"]["topic"] == config["STREAMDRIFT_INPUT_TOPIC"] == "predictions"
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    # and the check can fail
    broken = {
        **scaled,
        "spec": {**spec, "triggers": [{**trigger, "metadata": {"lagThreshold": 10}}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT_SCHEMA)


def test_deployment_wiring() -> None:
    found = objects()
    deployment = found[("Deployment", "streamdrift")]
    pod = deployment["spec"]["template"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert deployment["spec"]["selector"]["matchLabels"] == WORKER_LABELS
    assert WORKER_LABELS.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9464}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert (
        security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    )
    assert security["capabilities"]["drop"] == ["ALL"]
    sources = [next(iter(source.items())) for source in container["envFrom"]]
    assert ("configMapRef", {"name": "streamdrift-config"}) in sources
    assert ("secretRef", {"name": "streamdrift-credentials"}) in sources
    assert "STREAMDRIFT_REDIS_URL" not in found[("ConfigMap", "streamdrift-config")]["data"], (
        "credentials go in the Secret"
    )
    # the writable paths are volumes (the root file system is read-only)
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/streamdrift"} <= mounted
    service = found[("Service", "streamdrift-metrics")]
    assert service["spec"]["selector"] == WORKER_LABELS
    assert service["spec"]["ports"][0]["port"] == 9464
    pdb = found[("PodDisruptionBudget", "streamdrift")]
    assert pdb["spec"]["selector"]["matchLabels"] == WORKER_LABELS


def _kustomize_refs(directory: Path) -> tuple[dict, list[Path]]:
    kustomization = load(directory / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    refs = [directory / entry for entry in kustomization.get("resources", [])]
    return kustomization, refs


def test_kustomizations_resolve() -> None:
    _, refs = _kustomize_refs(BASE)
    assert all(ref.is_file() for ref in refs), refs
    listed = {ref.resolve() for ref in refs}
    on_disk = {p.resolve() for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk, "every base manifest is listed once, and only existing files"

    overlay, refs = _kustomize_refs(OVERLAY)
    assert [ref.resolve() for ref in refs] == [BASE.resolve()]
    found = objects()
    for patch in overlay.get("patches", []):
        target = patch["target"]
        assert (target["kind"], target["name"]) in found, target
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] in ("add", "replace", "remove") and op["path"].startswith("/")
    secrets = {g["name"] for g in overlay.get("secretGenerator", [])}
    assert "streamdrift-credentials" in secrets
    images = {i["name"] for i in overlay.get("images", [])}
    deployment = found[("Deployment", "streamdrift")]
    assert {
        c["image"].split(":")[0] for c in deployment["spec"]["template"]["spec"]["containers"]
    } <= images

    kubectl = shutil.which("kubectl")
    if kubectl:  # render and validate the whole overlay as it would be applied
        rendered = run(kubectl, "kustomize", OVERLAY)
        assert rendered.returncode == 0, rendered.stderr
        validated = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "-"],
            input=rendered.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr


# --- yamllint ------------------------------------------------------------------------------


def test_yamllint_strict() -> None:
    listed = run(tool("yamllint"), "--list-files", "-c", YAMLLINT_CONFIG, ".")
    assert listed.returncode == 0, listed.stderr
    files = {(ROOT / line).resolve() for line in listed.stdout.split()}
    shipped = {
        COMPOSE,
        PROMETHEUS,
        RULES,
        RULE_TESTS,
        ALERTMANAGER,
        GRAFANA_DATASOURCE,
        GRAFANA_PROVIDER,
        BASE / "deployment.yaml",
        BASE / "servicemonitor.yaml",
        BASE / "prometheusrule.yaml",
        OVERLAY / "kustomization.yaml",
    }
    assert shipped <= files, shipped - files
    result = run(tool("yamllint"), "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("key: " + "x" * 130 + "\nkey: duplicate\n")
    result = run(tool("yamllint"), "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, path)
    assert result.returncode != 0
    assert "line-length" in result.stdout and "key-duplicates" in result.stdout


# --- Prometheus Operator custom resources ------------------------------------------------------

# Minimal schemas from the Prometheus Operator CRDs (monitoring.coreos.com/v1, operator 0.8x): the
# field names of the spec levels we use, their types and the CRDs' duration pattern.
_DURATION = {
    "type": "string",
    "pattern": (
        r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ),
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_OBJECT = {"type": "object"}
_ARRAY = {"type": "array"}
_METADATA = {"type": "object", "required": ["name"]}
SERVICE_MONITOR_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": _OBJECT,
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"},
        "relabelings": _ARRAY,
        "metricRelabelings": _ARRAY,
        "tlsConfig": _OBJECT,
        "bearerTokenFile": {"type": "string"},
        "bearerTokenSecret": _OBJECT,
        "authorization": _OBJECT,
        "basicAuth": _OBJECT,
        "oauth2": _OBJECT,
        "followRedirects": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "proxyUrl": {"type": "string"},
        "noProxy": {"type": "string"},
        "proxyFromEnvironment": {"type": "boolean"},
        "proxyConnectHeader": _OBJECT,
    },
}
_INT = {"type": "integer", "minimum": 0}
SERVICE_MONITOR_SCHEMA = _custom_resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    _METADATA,
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "endpoints": {"type": "array", "minItems": 1, "items": SERVICE_MONITOR_ENDPOINT},
            "selector": _LABEL_SELECTOR,
            "selectorMechanism": {"enum": ["RelabelConfig", "RoleSelector"]},
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "attachMetadata": _OBJECT,
            "scrapeClass": {"type": "string"},
            "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
            "fallbackScrapeProtocol": {"type": "string"},
            "scrapeClassicHistograms": {"type": "boolean"},
            "convertClassicHistogramsToNHCB": {"type": "boolean"},
            "nativeHistogramBucketLimit": _INT,
            "nativeHistogramMinBucketFactor": {"type": ["string", "integer"]},
            "bodySizeLimit": {"type": "string"},
            "sampleLimit": _INT,
            "targetLimit": _INT,
            "labelLimit": _INT,
            "labelNameLengthLimit": _INT,
            "labelValueLengthLimit": _INT,
            "keepDroppedTargets": _INT,
        },
    },
)
_RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
PROMETHEUS_RULE_SCHEMA = _custom_resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    _METADATA,
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "query_offset": _DURATION,
                        "limit": {"type": "integer"},
                        "labels": _STRING_MAP,
                        "partial_response_strategy": {
                            "enum": ["", "abort", "warn", "ABORT", "WARN"]
                        },
                        "rules": {"type": "array", "items": _RULE},
                    },
                },
            },
        },
    },
)
CRD_SCHEMAS = {
    "ScaledObject": SCALED_OBJECT_SCHEMA,
    "ServiceMonitor": SERVICE_MONITOR_SCHEMA,
    "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
}


def test_service_monitor_scrapes_the_metrics_service_as_job_streamdrift() -> None:
    found = objects()
    monitor = found[("ServiceMonitor", "streamdrift")]
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    service = found[("Service", "streamdrift-metrics")]
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "namespaceSelector" not in spec, "the Service lives in the ServiceMonitor's namespace"
    # the job label is the value of the Service label named by jobLabel: the job the rules select
    assert service["metadata"]["labels"][spec["jobLabel"]] == JOB
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    seconds = {k: int(endpoint[k].rstrip("s")) for k in ("interval", "scrapeTimeout")}
    assert seconds["scrapeTimeout"] <= seconds["interval"], (
        "Prometheus rejects a timeout above the interval"
    )
    # and the check can fail
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SERVICE_MONITOR_SCHEMA)


def test_prometheus_rule_wraps_exactly_the_rule_file() -> None:
    rule = objects()[("PrometheusRule", "streamdrift")]
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    assert rule["spec"]["groups"] == load(RULES)["groups"], (
        "out of date: run python deploy/sync-prometheusrule.py"
    )
    result = run(sys.executable, SYNC_PROMETHEUS_RULE, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check can fail
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][1]["rules"][1]["for"] = "1 minute"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, PROMETHEUS_RULE_SCHEMA)


# --- Prometheus ----------------------------------------------------------------------------


def _rules() -> tuple[dict[str, dict], dict[str, dict]]:
    """(alerting rules by alert name, recording rules by record name) of the shipped rule file."""
    rules = [rule for group in load(RULES)["groups"] for rule in group["rules"]]
    return {r["alert"]: r for r in rules if "alert" in r}, {
        r["record"]: r for r in rules if "record" in r
    }


def test_prometheus_config_scrapes_the_compose_workers() -> None:
    config = load(PROMETHEUS)
    assert RULES in {
        p.resolve() for pattern in config["rule_files"] for p in PROMETHEUS.parent.glob(pattern)
    }
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    workers = {name for name in load(COMPOSE)["services"] if name.startswith("worker-")}
    assert targets == {f"{name}:9464" for name in workers}
    result = run(tool("promtool"), "check", "config", PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules() -> None:
    alerts, records = _rules()
    assert set(alerts) == set(EXPECTED_ALERTS)
    for name, expr in EXPECTED_ALERTS.items():
        assert expr in alerts[name]["expr"], name
        assert alerts[name]["labels"]["severity"] in ("warning", "critical")
        assert alerts[name]["annotations"]["summary"]
    for record, rule in records.items():
        # level:metric:operations, on a metric the worker exposes
        level, metric, operations = record.split(":")
        assert level.split("_")[0] == "job" and "job" in rule["expr"], record
        assert metric in rule["expr"] and operations, record
    used = {
        name
        for rule in alerts.values()
        for name in re.findall(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["expr"])
    }
    assert used <= set(records), used - set(records)
    result = run(tool("promtool"), "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts) + len(records)} rules found" in result.stdout


def test_prometheus_rule_unit_tests() -> None:
    """`promtool test rules` on deploy/prometheus/tests: every alert fires and stays quiet as
    intended, every recording rule computes the expected samples."""
    tests = load(RULE_TESTS)
    assert [(RULE_TESTS.parent / f).resolve() for f in tests["rule_files"]] == [RULES]
    alerts, records = _rules()
    alert_tests = [t for case in tests["tests"] for t in case.get("alert_rule_test", [])]
    for name in alerts:
        expectations = [bool(t["exp_alerts"]) for t in alert_tests if t["alertname"] == name]
        assert True in expectations and False in expectations, (
            f"{name}: test it firing and not firing"
        )
    assert {t["expr"] for case in tests["tests"] for t in case.get("promql_expr_test", [])} >= set(
        records
    )
    result = run(tool("promtool"), "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("alert", "expr"),
    [
        # without its new-series operand the drift rule misses the first alert of every series
        ("StreamdriftDriftDetected", "increase(streamdrift_alerts_total[5m]) > 0"),
        (
            "StreamdriftConsumerLagHigh",
            "job_topic:streamdrift_consumer_lag_messages:sum > 10000000",
        ),
    ],
)
def test_prometheus_rule_unit_tests_can_fail(tmp_path: Path, alert: str, expr: str) -> None:
    document = load(RULES)
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = expr
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(document))
    (tmp_path / "tests" / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = run(tool("promtool"), "test", "rules", tmp_path / "tests" / RULE_TESTS.name)
    assert result.returncode != 0 and f"alertname: {alert}" in result.stdout + result.stderr, (
        result.stdout
    )


def _populated_metrics() -> str:
    """The worker's /metrics text with one child per metric (label values as the worker sets
    them)."""
    metrics = Metrics()
    values = {
        "topic": "predictions",
        "partition": "0",
        "reason": "malformed_json",
        "model": "fraud",
        "feature": "amount",
        "detector": "adwin",
        "result": "ok",
    }
    for metric in vars(metrics).values():
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        child = (
            metric.labels(**{n: values.get(n, "x") for n in metric._labelnames})
            if metric._labelnames
            else metric
        )
        if isinstance(metric, Counter):
            child.inc()
        elif isinstance(metric, Gauge):
            child.set(1)
        else:
            child.observe(0.01)
    return generate_latest(metrics.registry).decode()


def test_worker_metrics_pass_promtool_check_metrics() -> None:
    """Base units, `_total` counters, no type clashes (tests/e2e/test_monitoring.py also lints the
    live worker's /metrics and checks its label values are bounded)."""
    text = _populated_metrics()
    promtool = tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check can fail
    bad = (
        "# HELP sd_lag_milliseconds x\n# TYPE sd_lag_milliseconds counter\nsd_lag_milliseconds 1\n"
    )
    result = subprocess.run(
        [promtool, "check", "metrics"], input=bad, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "base unit" in result.stdout + result.stderr


def _exposed_names() -> set[str]:
    """Series names the worker exposes (counters with `_total`, histograms with their suffixes)."""
    names = set()
    for line in _populated_metrics().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _metric_names(expr: str) -> set[str]:
    return set(
        re.findall(r"\bstreamdrift_[a-z_]+\b", re.sub(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", "", expr))
    )


def test_rules_and_dashboard_use_only_metrics_the_worker_exposes() -> None:
    exposed = _exposed_names()
    alerts, records = _rules()
    used = {
        name
        for rule in [*alerts.values(), *records.values()]
        for name in _metric_names(rule["expr"])
    }
    used |= {
        name
        for _, expr in _dashboard_exprs(json.loads(DASHBOARD.read_text()))
        for name in _metric_names(expr)
    }
    assert used, "no metric names found"
    assert used <= exposed, f"not exposed by the worker: {sorted(used - exposed)}"


# --- Alertmanager --------------------------------------------------------------------------


def test_alertmanager_config_and_routes() -> None:
    amtool = tool("amtool")
    result = run(amtool, "check-config", ALERTMANAGER)
    assert result.returncode == 0, result.stdout + result.stderr
    # every shipped alert, with its rule's labels, reaches the intended receiver
    alerts, _ = _rules()
    for name, rule in alerts.items():
        labels = {
            "alertname": name,
            **rule["labels"],
            "job": JOB,
            "model": "fraud",
            "feature": "amount",
        }
        expected = (
            "ml-team"
            if name in ("StreamdriftDriftDetected", "StreamdriftIncidentOpened")
            else ("ops-pager" if rule["labels"]["severity"] == "critical" else "ops")
        )
        result = run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"--verify.receivers={expected}",
            *(f"{k}={v}" for k, v in labels.items()),
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    # an incident of a model whose owner has a route reaches that owner
    owned = ("alertname=StreamdriftIncidentOpened", "model=fraud", "owner=payments-ml")
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        "--verify.receivers=payments-ml",
        *owned,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_check_can_fail(tmp_path: Path) -> None:
    config = load(ALERTMANAGER)
    config["route"]["routes"][0]["receiver"] = "nobody"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(tool("amtool"), "check-config", path)
    assert result.returncode != 0 and "nobody" in result.stdout + result.stderr


# --- Grafana -------------------------------------------------------------------------------

# Minimal schemas from Grafana's provisioning documentation (apiVersion 1); unknown keys fail.
DATASOURCES_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "datasources"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "deleteDatasources": {"type": "array"},
        "prune": {"type": "boolean"},
        "datasources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "access", "url"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
                    "type": {"type": "string"},
                    "access": {"enum": ["proxy", "direct"]},
                    "url": {"type": "string", "pattern": "^https?://"},
                    "orgId": {"type": "integer"},
                    "user": {"type": "string"},
                    "database": {"type": "string"},
                    "basicAuth": {"type": "boolean"},
                    "basicAuthUser": {"type": "string"},
                    "withCredentials": {"type": "boolean"},
                    "isDefault": {"type": "boolean"},
                    "jsonData": {"type": "object"},
                    "secureJsonData": {"type": "object"},
                    "version": {"type": "integer"},
                    "editable": {"type": "boolean"},
                },
            },
        },
    },
}
DASHBOARD_PROVIDERS_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "providers"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "providers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "options"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "orgId": {"type": "integer"},
                    "folder": {"type": "string"},
                    "folderUid": {"type": "string"},
                    "type": {"const": "file"},
                    "disableDeletion": {"type": "boolean"},
                    "allowUiUpdates": {"type": "boolean"},
                    "updateIntervalSeconds": {"type": "integer", "minimum": 10},
                    "options": {
                        "type": "object",
                        "required": ["path"],
                        "additionalProperties": False,
                        "properties": {
                            "path": {"type": "string"},
                            "foldersFromFilesStructure": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
GRAFANA_BUILTINS = ("__rate_interval", "__interval", "__range")


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"] + [
        p for row in dashboard["panels"] for p in row.get("panels", [])
    ]:
        found += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
    return found


def test_grafana_provisioning() -> None:
    datasources, providers = load(GRAFANA_DATASOURCE), load(GRAFANA_PROVIDER)
    jsonschema.validate(datasources, DATASOURCES_SCHEMA)
    jsonschema.validate(providers, DASHBOARD_PROVIDERS_SCHEMA)
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    # the dashboard's data source variable defaults to the provisioned one
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (
        variable["query"] == datasource["type"]
        and variable["current"]["value"] == datasource["uid"]
    )
    # $__rate_interval assumes the scrape interval: keep them equal
    (job,) = [job for job in load(PROMETHEUS)["scrape_configs"] if job["job_name"] == JOB]
    assert datasource["jsonData"]["timeInterval"] == job["scrape_interval"]
    # and the check can fail
    broken = copy.deepcopy(providers)
    broken["providers"][0]["options"]["pathh"] = "/x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, DASHBOARD_PROVIDERS_SCHEMA)


def test_grafana_dashboard_layout_and_coverage() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "streamdrift" and isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard or dashboard["id"] is None, (
        "provisioned dashboards carry no database id"
    )
    panels = dashboard["panels"] + [p for row in dashboard["panels"] for p in row.get("panels", [])]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel[
                "title"
            ]
    # variables: every one used is defined (or a Grafana built-in)
    defined = {v["name"] for v in dashboard["templating"]["list"]} | set(GRAFANA_BUILTINS)
    texts = [expr for _, expr in _dashboard_exprs(dashboard)] + [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    used = {a or b for text in texts for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", text)}
    assert used <= defined, used - defined
    # what the issue asks the dashboard to show
    exprs = " ".join(expr for _, expr in _dashboard_exprs(dashboard))
    for shown in (
        "streamdrift_events_total",
        "consumer_lag_messages",
        "drift_score",
        "streamdrift_alerts_total",
        "ALERTS",
        "streamdrift_dead_letters_total",
        "checkpoint_age_seconds",
    ):
        assert shown in exprs, f"the dashboard shows no {shown}"


def _dashboard_rules(dashboard: dict[str, Any]) -> dict[str, Any]:
    """Every dashboard query (variables filled in) as a recording rule, for promtool's PromQL
    parser."""
    values = {
        "datasource": "prometheus",
        "__rate_interval": "1m",
        "__interval": "15s",
        "__range": "1h",
    }
    values |= {
        v["name"]: v.get("allValue") or ".*"
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    }
    rules = []
    for index, (_, expr) in enumerate(_dashboard_exprs(dashboard)):
        filled = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], expr)
        rules.append({"record": f"dashboard:query_{index}:expr", "expr": filled})
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def test_grafana_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every query; tests/e2e/test_monitoring.py runs them against a real
    Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    path = tmp_path / "dashboard.rules.yml"
    rules = _dashboard_rules(dashboard)
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check can fail
    rules["groups"][0]["rules"][0]["expr"] += ")"
    path.write_text(yaml.safe_dump(rules))
    assert run(tool("promtool"), "check", "rules", path).returncode != 0
