"""deploy/k8s: every manifest is valid Kubernetes and agrees with the code.

Schemas: `kubernetes-validate` (PyPI, in the `test` extra) bundles the Kubernetes OpenAPI
JSON schemas, so validation runs offline; strict mode rejects unknown fields too. The
semantic checks tie the manifests to the worker: probe paths it serves (streams/web/),
its port, the KUDOS_* settings it reads (streams/settings.py), the image's user
(Dockerfile), and secrets that come from the Secret, never inline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from streams.settings import Settings

try:
    import kubernetes_validate
except ImportError:  # a missing validator fails the tests, it never skips them
    pytest.fail(
        "kubernetes-validate is not installed: .venv/bin/pip install -e '.[test]'",
        pytrace=False,
    )

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
# Oldest Kubernetes we claim (policy/v1 PDB with unhealthyPodEvictionPolicy: 1.27+) and
# the newest the validator bundles.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
ENV_PREFIX = "KUDOS_"
# Read by streams/settings.py from the environment directly, not a Settings field.
EXTRA_ENV = {"KUDOS_CONFIG"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@cache
def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest, over every file kustomization.yaml lists."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in _documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for (k, _), d in resources().items() if k == kind]
    return doc


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for (kind, name), doc in resources().items():
        if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{kind}/{name}", doc["spec"]["template"]["spec"]


def worker() -> dict[str, Any]:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def served_paths() -> set[str]:
    """Paths the worker's web server registers (`@app.page("...")` in streams/web/)."""
    text = "".join(p.read_text() for p in sorted((REPO / "streams" / "web").glob("*.py")))
    return set(re.findall(r"@app\.page\(\s*[\"']([^\"']+)[\"']", text))


def image_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", (REPO / "Dockerfile").read_text(), flags=re.M)
    return int(users[-1].split(":")[0])


def config_data() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap")["data"]
    return data


# --- files and schemas ----------------------------------------------------------------------


def test_the_manifests_exist() -> None:
    kinds = {kind for kind, _ in resources()}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "Job",
    } <= kinds


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert {K8S / r for r in listed} == set(MANIFESTS)
    namespace = kustomization["namespace"]
    for (kind, name), doc in resources().items():
        if kind != "Namespace":
            assert doc["metadata"].get("namespace", namespace) == namespace, (kind, name)
    # The image name the manifests use is the one kustomize retags.
    images = {i["name"] for i in kustomization["images"]}
    for where, spec in pod_specs():
        for container in spec["containers"]:
            assert container["image"].split(":")[0] in images, where


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path_in_doc = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']} at {path_in_doc}: {exc.message}")


def test_the_validator_rejects_an_invalid_manifest() -> None:
    """Offline schemas are really applied (a typo and a wrong type both fail)."""
    bad = yaml.safe_load((K8S / "deployment.yaml").read_text())
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    typo = yaml.safe_load((K8S / "deployment.yaml").read_text())
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[-1], strict=True)


# --- the worker Deployment ------------------------------------------------------------------


def test_worker_runs_the_kudos_worker_command() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = worker()
    assert container["args"] == ["worker"]
    assert "command" not in container, "the image's ENTRYPOINT is `kudos`"
    replicas_note = (K8S / "deployment.yaml").read_text()
    assert re.search(r"replicas\s+beyond", replicas_note), "explain idle replicas"
    # Default: no idle replica.
    assert int(config_data()["KUDOS_PARTITIONS"]) >= deployment["spec"]["replicas"]


def _port(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == ref]
    return int(port)


def test_worker_port_matches_the_settings() -> None:
    container = worker()
    http_port = int(
        config_data().get("KUDOS_HTTP_PORT", Settings.model_fields["http_port"].default)
    )
    assert [p["containerPort"] for p in container["ports"]] == [http_port]


def test_probes_use_the_health_endpoints_the_worker_serves() -> None:
    container = worker()
    served = served_paths()
    assert {"/health", "/health/live", "/health/ready", "/metrics"} <= served, served
    http_port = container["ports"][0]["containerPort"]
    expected = {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    for probe_name, path in expected.items():
        probe = container[probe_name]
        assert probe["httpGet"]["path"] == path, probe_name
        assert _port(container, probe["httpGet"]["port"]) == http_port, probe_name
    startup = container["startupProbe"]
    # Generous: importing faust, waiting for ClickHouse and joining the group.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # A live process that is not ready must not be restarted by the liveness probe first.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


def test_pods_shut_down_gracefully_as_non_root_with_bounded_resources() -> None:
    uid = image_uid()
    assert uid != 0
    deployment_spec = one("Deployment")["spec"]["template"]["spec"]
    assert deployment_spec["terminationGracePeriodSeconds"] >= 30
    for where, spec in pod_specs():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["runAsUser"] == uid, f"{where}: the Dockerfile's user is {uid}"
        assert spec.get("automountServiceAccountToken") is False, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (where, kind)
            if sc.get("readOnlyRootFilesystem"):
                # KUDOS_DATA_DIR (faust's data and working directory) must be writable.
                data_dir = config_data().get("KUDOS_DATA_DIR", "/var/lib/kudos")
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert data_dir in mounts, f"{where}: {data_dir} is not writable"


# --- configuration and secrets --------------------------------------------------------------


def _env_names(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for container in spec["containers"]:
        for env in container.get("env", []):
            yield env["name"], env


def test_env_names_are_real_kudos_settings() -> None:
    fields = set(Settings.model_fields)
    assert Settings.model_config.get("env_prefix") == ENV_PREFIX
    names = set(config_data())
    for _, spec in pod_specs():
        names |= {name for name, _ in _env_names(spec)}
    secret = one("Secret")
    names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    unknown = sorted(
        n
        for n in names
        if n not in EXTRA_ENV
        and (not n.startswith(ENV_PREFIX) or n[len(ENV_PREFIX) :].lower() not in fields)
    )
    assert not unknown, f"not KUDOS_<setting> names (streams/settings.py): {unknown}"
    # And the values parse as those settings do.
    Settings(**{k[len(ENV_PREFIX) :].lower(): v for k, v in config_data().items()})


def _secret_settings() -> set[str]:
    return {
        ENV_PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr or "SecretStr" in str(field.annotation)
    }


def test_secrets_come_from_the_secret_never_inline() -> None:
    secret_names = _secret_settings()
    assert "KUDOS_CLICKHOUSE" in secret_names
    secret = one("Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert not secret_names & set(config_data()), "secret settings in the ConfigMap"
    credentials_url = re.compile(r"\w+://[^/\s:@]+:[^/\s@]+@")
    for where, spec in pod_specs():
        env = dict(_env_names(spec))
        ref = env["KUDOS_CLICKHOUSE"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], where
        assert ref["key"] in secret_keys, where
        for name, entry in env.items():
            assert "value" not in entry or not credentials_url.search(str(entry["value"])), (
                f"{where}: {name} inlines credentials"
            )
            if name in secret_names:
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{where}: {name} inline"
        for container in spec["containers"]:
            refs = [e.get("configMapRef", {}).get("name") for e in container.get("envFrom", [])]
            assert one("ConfigMap")["metadata"]["name"] in refs, where
    for value in config_data().values():
        assert not credentials_url.search(value), "credentials in the ConfigMap"
    # The shipped Secret is a placeholder, not a real password.
    url = secret["stringData"]["KUDOS_CLICKHOUSE"]
    assert re.fullmatch(r"clickhouse://[^:]+:CHANGE-ME@[^/]+:9000/kudos", url), url


# --- Service, PodDisruptionBudget, migration Job --------------------------------------------


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= _pod_labels().items()


def test_service_exposes_the_worker_port_for_scraping() -> None:
    service = one("Service")
    assert _selects(service["spec"]["selector"])
    assert one("Deployment")["spec"]["selector"]["matchLabels"].items() <= _pod_labels().items()
    container = worker()
    http_port = container["ports"][0]["containerPort"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == http_port
    assert _port(container, port["targetPort"]) == http_port
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == http_port
    assert annotations["prometheus.io/path"] in served_paths()


def test_pdb_allows_one_worker_down() -> None:
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert _selects(pdb["spec"]["selector"]["matchLabels"])


def test_migration_job_runs_kudos_migrate_with_the_worker_image() -> None:
    job = one("Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == worker()["image"]
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1
    # The Job's pod is neither a Service endpoint nor counted by the workers' PDB.
    job_labels = job["spec"]["template"]["metadata"]["labels"].items()
    assert not one("Service")["spec"]["selector"].items() <= job_labels
    assert not one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= job_labels
