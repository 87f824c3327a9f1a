"""Deployment files checked with the real tools: check-jsonschema (compose spec),
kubernetes-validate (Kubernetes OpenAPI schemas), yamllint and, where installed, promtool.

Each tool also gets a deliberately broken input, to prove the check can fail.

* The KEDA ScaledObject is a custom resource: kubernetes-validate has no schema for it offline
  (it prints a warning and exits 0), so it is checked against a minimal schema written from the
  KEDA ScaledObject CRD instead, and its wiring to the Deployment is asserted.
* Kustomizations are not Kubernetes objects: their references are resolved here; when `kubectl`
  is on PATH the overlay is also rendered with `kubectl kustomize` and validated whole.
* promtool comes with Debian's `prometheus` package. Without it, the rules are checked as YAML
  (group, alert names, expressions); with it, `promtool check rules`, `promtool check config` and
  a `promtool test rules` unit test run as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "streamdrift.rules.yml"
YAMLLINT_CONFIG = ROOT / ".yamllint.yaml"

INPUT_PARTITIONS = 8
WORKER_LABELS = {"app.kubernetes.io/name": "streamdrift", "app.kubernetes.io/component": "worker"}
CRD_API_GROUPS = ("keda.sh/",)
EXPECTED_ALERTS = {
    "StreamdriftDriftDetected": "increase(streamdrift_alerts_total[5m]) > 0",
    "StreamdriftWorkerDown": 'up{job="streamdrift"} == 0',
    "StreamdriftCheckpointStale": "streamdrift_checkpoint_age_seconds > 60",
    "StreamdriftDeadLettersHigh": "rate(streamdrift_dead_letters_total[5m]) > 1",
    "StreamdriftConsumerLagHigh": "streamdrift_consumer_lag_messages",
}


def tool(name: str) -> str:
    """Path of a command-line tool from this interpreter's environment (the venv), else PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifests() -> list[Path]:
    """Every Kubernetes manifest under deploy/kubernetes (kustomizations excluded)."""
    files = sorted(p for p in K8S.rglob("*.y*ml") if p.name not in ("kustomization.yaml", "kustomization.yml"))
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
    assert {"kafka", "redis", "worker-1", "worker-2", "simulator", "prometheus"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    for name, service in services.items():
        if "build" not in service:
            assert _pinned(service["image"]), f"{name}: image {service['image']} is not pinned to a version"
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


def test_dockerfile() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base) for base in bases), bases
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
    final_stage = lines[lines.index(final):]
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
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz"}}
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run(tool("kubernetes-validate"), "--strict", path)
    assert result.returncode != 0, result.stdout


# Minimal schema from KEDA's ScaledObject CRD (keda.sh/v1alpha1): kubernetes-validate cannot fetch
# CRD schemas offline. Unknown fields fail, as a strict server-side apply would.
_INT = {"type": "integer", "minimum": 0}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {k: {"type": "string"} for k in ("apiVersion", "kind", "name", "envSourceContainerName")},
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
    },
}


def test_keda_scaled_object() -> None:
    found = objects()
    crds = [doc for doc in found.values() if is_crd(doc)]
    assert [doc["kind"] for doc in crds] == ["ScaledObject"], "a new custom resource needs its own check"
    scaled = crds[0]
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    assert (spec["scaleTargetRef"].get("kind", "Deployment"), spec["scaleTargetRef"]["name"]) in found
    assert spec["maxReplicaCount"] == INPUT_PARTITIONS
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    config = found[("ConfigMap", "streamdrift-config")]["data"]
    assert trigger["metadata"]["consumerGroup"] == config["STREAMDRIFT_GROUP_ID"] == "streamdrift"
    assert trigger["metadata"]["topic"] == config["STREAMDRIFT_INPUT_TOPIC"] == "predictions"
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    # and the check can fail
    broken = {**scaled, "spec": {**spec, "triggers": [{**trigger, "metadata": {"lagThreshold": 10}}]}}
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
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    sources = [next(iter(source.items())) for source in container["envFrom"]]
    assert ("configMapRef", {"name": "streamdrift-config"}) in sources
    assert ("secretRef", {"name": "streamdrift-credentials"}) in sources
    assert "STREAMDRIFT_REDIS_URL" not in found[("ConfigMap", "streamdrift-config")]["data"], "credentials go in the Secret"
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
    assert {c["image"].split(":")[0] for c in deployment["spec"]["template"]["spec"]["containers"]} <= images

    kubectl = shutil.which("kubectl")
    if kubectl:  # render and validate the whole overlay as it would be applied
        rendered = run(kubectl, "kustomize", OVERLAY)
        assert rendered.returncode == 0, rendered.stderr
        validated = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "-"], input=rendered.stdout, capture_output=True, text=True, check=False
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr


# --- yamllint ------------------------------------------------------------------------------


def test_yamllint_strict() -> None:
    listed = run(tool("yamllint"), "--list-files", "-c", YAMLLINT_CONFIG, ".")
    assert listed.returncode == 0, listed.stderr
    files = {(ROOT / line).resolve() for line in listed.stdout.split()}
    assert {COMPOSE, PROMETHEUS, RULES, BASE / "deployment.yaml", OVERLAY / "kustomization.yaml"} <= files
    result = run(tool("yamllint"), "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("key: " + "x" * 130 + "\nkey: duplicate\n")
    result = run(tool("yamllint"), "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, path)
    assert result.returncode != 0
    assert "line-length" in result.stdout and "key-duplicates" in result.stdout


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_config_scrapes_the_compose_workers() -> None:
    config = load(PROMETHEUS)
    assert RULES in {p.resolve() for pattern in config["rule_files"] for p in PROMETHEUS.parent.glob(pattern)}
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamdrift"]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    workers = {name for name in load(COMPOSE)["services"] if name.startswith("worker-")}
    assert targets == {f"{name}:9464" for name in workers}


def test_prometheus_rules() -> None:
    """Always: the rules parse with the expected alerts. With promtool: also the real checks."""
    groups = load(RULES)["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == set(EXPECTED_ALERTS)
    for name, expr in EXPECTED_ALERTS.items():
        assert expr in rules[name]["expr"], name
        assert rules[name]["labels"]["severity"] in ("warning", "critical")
        assert rules[name]["annotations"]["summary"]
    assert re.search(r"\bsum\b.*\)\s*>\s*100000$", rules["StreamdriftConsumerLagHigh"]["expr"])

    promtool = shutil.which("promtool")
    if promtool is None:  # Debian's `prometheus` package brings it
        return
    for args in (("check", "rules", RULES), ("check", "config", PROMETHEUS)):
        result = run(promtool, *args)
        assert result.returncode == 0, result.stdout + result.stderr


PROMTOOL_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'streamdrift_alerts_total{job="streamdrift",instance="w1",model="fraud",feature="amount",detector="adwin"}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1'
      - series: 'up{job="streamdrift",instance="w2"}'
        values: '1 1 0 0 0 0 0 0 0 0 0 0'
      - series: 'streamdrift_checkpoint_age_seconds{job="streamdrift",instance="w1"}'
        values: '1 1 1 90 90 90 90 90 90 90 90 90'
      - series: 'streamdrift_dead_letters_total{job="streamdrift",instance="w1",reason="malformed_json"}'
        values: '0+120x20'
      - series: 'streamdrift_consumer_lag_messages{job="streamdrift",instance="w1",topic="predictions",partition="0"}'
        values: '60000x20'
      - series: 'streamdrift_consumer_lag_messages{job="streamdrift",instance="w2",topic="predictions",partition="1"}'
        values: '50000x20'
      - series: 'streamdrift_consumer_lag_messages{job="streamdrift",instance="w1",topic="predictions",partition="1"}'
        values: '50000x20'
    alert_rule_test:
      - eval_time: 2m
        alertname: StreamdriftDriftDetected
        exp_alerts: []
      - eval_time: 4m
        alertname: StreamdriftDriftDetected
        exp_alerts:
          - exp_labels: {severity: warning, job: streamdrift, instance: w1, model: fraud, feature: amount,
                         detector: adwin}
      - eval_time: 2m
        alertname: StreamdriftWorkerDown
        exp_alerts: []
      - eval_time: 4m
        alertname: StreamdriftWorkerDown
        exp_alerts:
          - exp_labels: {severity: critical, job: streamdrift, instance: w2}
      - eval_time: 5m
        alertname: StreamdriftCheckpointStale
        exp_alerts:
          - exp_labels: {severity: warning, job: streamdrift, instance: w1}
      - eval_time: 12m
        alertname: StreamdriftDeadLettersHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: streamdrift, instance: w1, reason: malformed_json}
      - eval_time: 15m
        alertname: StreamdriftConsumerLagHigh
        exp_alerts:
          - exp_labels: {severity: warning, topic: predictions}
"""


def test_prometheus_rules_fire_as_intended(tmp_path: Path) -> None:
    """`promtool test rules` on synthetic series (the copy's annotations are dropped: they are
    checked by `promtool check rules`; here only expressions, `for` and labels count)."""
    promtool = shutil.which("promtool")
    groups = load(RULES)["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS)
    # the unit test file itself must be valid YAML with one expectation per alert
    expected = {t["alertname"] for t in yaml.safe_load(PROMTOOL_TESTS)["tests"][0]["alert_rule_test"]}
    assert expected == set(EXPECTED_ALERTS)
    if promtool is None:  # Debian's `prometheus` package brings it
        return
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check can fail: a 100x higher lag threshold must not fire
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}).replace("100000", "10000000"))
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0
