"""The Kubernetes manifests (``deploy/``): rendered by ``kubectl kustomize`` as an operator would,
validated against the Kubernetes schemas, and checked for what keeps a clinical service up and
contained: several replicas, probes on the right paths, a locked-down container, a disruption
budget the cluster can honour, egress only where the service must go, settings that the service
really reads, and no secret in a ConfigMap.

Why render instead of reading the YAML files: kustomize merges, renames and labels; a mistake
shows only in its output (e.g. ``commonLabels`` added to a DNS ``podSelector`` silently cuts DNS).
Both the kustomize in current kubectl (v5) and the one in Debian's kubectl 1.20 (v2.0.3, what
``.ci/run`` installs on a new machine) must give the same objects: set ``DEPLOY_TEST_KUBECTLS`` to
further kubectl binaries (``os.pathsep``-separated) to compare them with the one on ``PATH``.
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.settings import Settings
from cds_hooks.stores.session_table import new_session_key
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TARGETS = {"base": DEPLOY / "base", "production": DEPLOY / "overlays" / "production"}
KUBERNETES_VERSION = "1.30"
"""The schemas every object must satisfy (strict: unknown fields are errors)."""
SERVICE_UID = 10001
"""The user the Dockerfile creates and runs as."""
SERVICE_PORT = 8080
PLACEHOLDER = "CHANGE-ME"
SITE_FIELDS = {
    "Deployment/crs-cds: image",
    "ConfigMap/crs-cds-settings: CRS_CDS_PUBLIC_BASE_URL",
    "ConfigMap/crs-cds-settings: CRS_CDS_FHIR_SERVER_ALLOWLIST",
    "ConfigMap/crs-cds-settings: CRS_CDS_TRUSTED_ISSUERS",
    "Secret/crs-cds-secrets: CRS_CDS_DATABASE_URL",
    "Secret/crs-cds-secrets: CRS_CDS_SESSION_KEY",
}
"""The only places a placeholder may stand: what a site must fill in (README "Deploying")."""

Manifest = dict[str, Any]


# --- rendering -------------------------------------------------------------------------------


def _kubectls() -> list[str]:
    found = shutil.which("kubectl")
    extra = [path for path in os.environ.get("DEPLOY_TEST_KUBECTLS", "").split(os.pathsep) if path]
    return ([found] if found else []) + extra


def _require_kubectl() -> str:
    kubectls = _kubectls()
    if kubectls:
        return kubectls[0]
    message = (
        "kubectl not found: the deploy/ manifests are rendered with `kubectl kustomize`; "
        "install Debian's kubernetes-client (.ci/run does when kubectl is missing)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _render(kubectl: str, target: str) -> tuple[Manifest, ...]:
    done = subprocess.run(
        [kubectl, "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{kubectl} kustomize {target} failed: {done.stderr[-2000:]}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def rendered(target: str) -> list[Manifest]:
    """A fresh copy of the rendered objects (tests may mutate them)."""
    return copy.deepcopy(list(_render(_require_kubectl(), target)))


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def secret_values(secret: Manifest) -> dict[str, str]:
    """Decoded; base64 line breaks (kustomize v5 wraps long values) are ignored."""
    data: dict[str, str] = secret.get("data", {})
    decoded = {key: base64.b64decode("".join(value.split())).decode() for key, value in data.items()}
    return decoded | dict(secret.get("stringData", {}))


def _normalised(objects: tuple[Manifest, ...]) -> list[Manifest]:
    """The same objects however a kustomize version prints them: Secret data decoded, empty
    annotations dropped (v2 writes ``annotations: {}`` on merged generators), sorted by kind/name."""
    result = []
    for obj in copy.deepcopy(list(objects)):
        if obj["kind"] == "Secret":
            obj["data"] = secret_values(obj)
        if obj["metadata"].get("annotations") == {}:
            del obj["metadata"]["annotations"]
        result.append(obj)
    return sorted(result, key=lambda o: (o["kind"], o["metadata"]["name"]))


TARGET_PARAMS = [pytest.param(name, id=name) for name in TARGETS]


# --- checks (each returns what is wrong, so the tests below can also show that they bite) ------


def pod_security_problems(deployment: Manifest) -> list[str]:
    pod = deployment["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext", {})
    context = container(deployment).get("securityContext", {})
    problems = []
    if pod_context.get("runAsNonRoot") is not True or context.get("runAsNonRoot") is False:
        problems.append("may run as root")
    if context.get("runAsUser", pod_context.get("runAsUser")) != SERVICE_UID:
        problems.append(f"not the image's user {SERVICE_UID}")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("writable root filesystem")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("privilege escalation allowed")
    if context.get("privileged", False):
        problems.append("privileged")
    capabilities = context.get("capabilities", {})
    if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
        problems.append("capabilities not all dropped")
    seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        problems.append("no RuntimeDefault seccomp profile")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("Kubernetes API token mounted")
    return problems


def egress_problems(policy: Manifest) -> list[str]:
    """Egress must be DNS (to kube-system, UDP and TCP 53), PostgreSQL and https to CIDR blocks,
    nothing open-ended."""
    spec = policy["spec"]
    problems = []
    if "Egress" not in spec.get("policyTypes", []):
        problems.append("egress not restricted")
    rules: list[Manifest] = spec.get("egress", [])
    for rule in rules:
        if not rule.get("to") or not rule.get("ports"):
            problems.append("an egress rule open to every destination or port")
    dns = [r for r in rules if {p["port"] for p in r.get("ports", [])} == {53}]
    if len(dns) != 1 or {p.get("protocol", "TCP") for p in dns[0]["ports"]} != {"UDP", "TCP"}:
        problems.append("no DNS rule for UDP and TCP 53")
    else:
        for peer in dns[0]["to"]:
            if "podSelector" in peer:
                problems.append("DNS peer selects pods by label (commonLabels rewrites it)")
            if peer.get("namespaceSelector", {}).get("matchLabels") != {"kubernetes.io/metadata.name": "kube-system"}:
                problems.append("DNS peer is not the kube-system namespace")
    for port, what in ((5432, "PostgreSQL"), (443, "https (FHIR servers, JWKS hosts)")):
        matching = [r for r in rules if [p["port"] for p in r.get("ports", [])] == [port]]
        if not matching or not all(all("ipBlock" in peer for peer in r.get("to", [])) for r in matching):
            problems.append(f"no CIDR egress rule for {what}")
    return problems


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_every_object_is_valid_for_kubernetes(target: str) -> None:
    objects = rendered(target)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} is not valid Kubernetes {KUBERNETES_VERSION}: {error}"
            )


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_every_kubectl_renders_the_same_objects(target: str) -> None:
    """The kustomize of Debian's kubectl 1.20 (v2.0.3) and current kubectl (v5) agree."""
    first = _require_kubectl()
    others = _kubectls()[1:]
    if not others:
        pytest.skip("one kubectl only; set DEPLOY_TEST_KUBECTLS to compare kustomize versions")
    expected = _normalised(_render(first, target))
    for kubectl in others:
        assert _normalised(_render(kubectl, target)) == expected, f"{kubectl} renders {target} differently"


@dataclass(frozen=True)
class Size:
    replicas: int
    pdb_min_available: int
    hpa_min: int
    hpa_max: int
    memory_request: str


V5_ONLY_FIELDS = {"patches", "labels", "replacements", "components", "sortOptions", "helmCharts", "openapi"}
"""Kustomization fields the kustomize of Debian's kubectl 1.20 (v2.0.3) does not know."""


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_kustomization_uses_only_what_kustomize_v2_reads(target: str) -> None:
    """Where only a current kubectl is installed, the comparison above is skipped: this keeps a
    v5-only field, an ``envs`` generator or a directory in ``resources`` (all unreadable by
    v2.0.3, what ``.ci/run`` installs on a new machine) out of the files."""
    kustomization = yaml.safe_load((TARGETS[target] / "kustomization.yaml").read_text())
    assert sorted(V5_ONLY_FIELDS & set(kustomization)) == []
    generators = kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", [])
    assert all("envs" not in generator for generator in generators)
    directories = [r for r in kustomization.get("resources", []) if (TARGETS[target] / r).is_dir()]
    assert directories == [], "kustomize v2 takes a directory only in bases"


@pytest.mark.parametrize(
    ("target", "size"),
    [
        pytest.param("base", Size(2, 1, 2, 4, "256Mi"), id="base->2-replicas-pdb-1"),
        pytest.param("production", Size(3, 2, 3, 8, "512Mi"), id="production->3-replicas-pdb-2"),
    ],
)
def test_replicas_disruption_budget_and_autoscaler(target: str, size: Size) -> None:
    objects = rendered(target)
    deployment = one(objects, "Deployment")
    pdb = one(objects, "PodDisruptionBudget")
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert deployment["spec"]["replicas"] == size.replicas >= 2
    assert pdb["spec"]["minAvailable"] == size.pdb_min_available
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (size.hpa_min, size.hpa_max)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # A drain must be able to evict one pod, or node maintenance blocks forever.
    assert size.pdb_min_available < min(size.replicas, size.hpa_min)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    resources = container(deployment)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert resources["requests"]["memory"] == size.memory_request


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_probes_and_service_reach_the_service_port(target: str) -> None:
    objects = rendered(target)
    deployment = one(objects, "Deployment")
    main = container(deployment)
    assert main["ports"] == [{"name": "http", "containerPort": SERVICE_PORT, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_container_is_locked_down(target: str) -> None:
    deployment = one(rendered(target), "Deployment")
    assert pod_security_problems(deployment) == []
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a read-only root needs a writable /tmp"


def _drop_capabilities_list(d: Manifest) -> None:
    del container(d)["securityContext"]["capabilities"]


def _add_capability(d: Manifest) -> None:
    container(d)["securityContext"]["capabilities"]["add"] = ["NET_RAW"]


def _writable_root(d: Manifest) -> None:
    container(d)["securityContext"]["readOnlyRootFilesystem"] = False


def _run_as_root(d: Manifest) -> None:
    d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    container(d)["securityContext"]["runAsUser"] = 0


def _escalation(d: Manifest) -> None:
    del container(d)["securityContext"]["allowPrivilegeEscalation"]


def _no_seccomp(d: Manifest) -> None:
    del d["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]


def _api_token(d: Manifest) -> None:
    del d["spec"]["template"]["spec"]["automountServiceAccountToken"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        pytest.param(_drop_capabilities_list, "capabilities not all dropped", id="no-capabilities-drop->flagged"),
        pytest.param(_add_capability, "capabilities not all dropped", id="NET_RAW-added->flagged"),
        pytest.param(_writable_root, "writable root filesystem", id="writable-root->flagged"),
        pytest.param(_run_as_root, f"not the image's user {SERVICE_UID}", id="uid-0->flagged"),
        pytest.param(_escalation, "privilege escalation allowed", id="escalation-unset->flagged"),
        pytest.param(_no_seccomp, "no RuntimeDefault seccomp profile", id="no-seccomp->flagged"),
        pytest.param(_api_token, "Kubernetes API token mounted", id="api-token->flagged"),
    ],
)
def test_security_check_catches_a_weakened_pod(mutate: Callable[[Manifest], None], problem: str) -> None:
    deployment = one(rendered("production"), "Deployment")
    mutate(deployment)
    assert problem in pod_security_problems(deployment)


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_network_policy_holds_the_edges(target: str) -> None:
    objects = rendered(target)
    policy = one(objects, "NetworkPolicy")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"port": SERVICE_PORT, "protocol": "TCP"}]]
    assert egress_problems(policy) == []


def _dns_by_pod_label(p: Manifest) -> None:
    p["spec"]["egress"][0]["to"][0]["podSelector"] = {
        "matchLabels": {"k8s-app": "kube-dns", "app.kubernetes.io/name": "crs-cds"}
    }


def _open_egress(p: Manifest) -> None:
    p["spec"]["egress"].append({"ports": [{"port": 443, "protocol": "TCP"}]})


def _no_database_rule(p: Manifest) -> None:
    p["spec"]["egress"] = [r for r in p["spec"]["egress"] if r["ports"][0]["port"] != 5432]


def _dns_udp_only(p: Manifest) -> None:
    p["spec"]["egress"][0]["ports"] = [{"port": 53, "protocol": "UDP"}]


def _egress_unrestricted(p: Manifest) -> None:
    p["spec"]["policyTypes"] = ["Ingress"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        pytest.param(
            _dns_by_pod_label,
            "DNS peer selects pods by label (commonLabels rewrites it)",
            id="dns-podSelector->flagged",
        ),
        pytest.param(_open_egress, "an egress rule open to every destination or port", id="https-anywhere->flagged"),
        pytest.param(_no_database_rule, "no CIDR egress rule for PostgreSQL", id="no-database-rule->flagged"),
        pytest.param(_dns_udp_only, "no DNS rule for UDP and TCP 53", id="dns-udp-only->flagged"),
        pytest.param(_egress_unrestricted, "egress not restricted", id="no-Egress-policyType->flagged"),
    ],
)
def test_egress_check_catches_a_loosened_policy(mutate: Callable[[Manifest], None], problem: str) -> None:
    policy = one(rendered("production"), "NetworkPolicy")
    mutate(policy)
    assert problem in egress_problems(policy)


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_settings_come_from_the_configmap_and_the_secret(target: str) -> None:
    objects = rendered(target)
    deployment = one(objects, "Deployment")
    sources = container(deployment)["envFrom"]
    config_name = next(s["configMapRef"]["name"] for s in sources if "configMapRef" in s)
    secret_name = next(s["secretRef"]["name"] for s in sources if "secretRef" in s)
    settings = one(objects, "ConfigMap", config_name)["data"]
    secrets = secret_values(one(objects, "Secret", secret_name))
    assert set(secrets) == {"CRS_CDS_DATABASE_URL", "CRS_CDS_SESSION_KEY"}
    # The mounted site mapping files are exactly the ones CRS_CDS_MAPPING_FILES names.
    mount = next(m for m in container(deployment)["volumeMounts"] if m["mountPath"] == "/etc/crs-cds/mappings")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    mappings = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    named = settings["CRS_CDS_MAPPING_FILES"].split(",")
    assert sorted(named) == sorted(f"{mount['mountPath']}/{key}" for key in mappings)


SECRET_WORDS = ("DATABASE_URL", "KEY", "SECRET", "PASSWORD", "TOKEN")


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_no_secret_in_a_configmap(target: str) -> None:
    for config in (o for o in rendered(target) if o["kind"] == "ConfigMap"):
        for key, value in config["data"].items():
            assert not any(word in key.upper() for word in SECRET_WORDS), f"{key} belongs in the Secret"
            assert "postgresql://" not in value and "postgres://" not in value, f"{key} holds a database URL"


@pytest.fixture
def service_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """An environment with no CRS_CDS_* variable (the suite sets some for its own app)."""
    for key in [k for k in os.environ if k.startswith("CRS_CDS_")]:
        monkeypatch.delenv(key)
    yield monkeypatch


def pod_environment(objects: list[Manifest], mappings_dir: Path) -> dict[str, str]:
    """The ``CRS_CDS_*`` variables the pod gets, with the site mapping files written to
    ``mappings_dir`` (where this test can read them) instead of the ConfigMap mount."""
    settings: dict[str, str] = one(objects, "ConfigMap", "crs-cds-settings")["data"]
    environment = settings | secret_values(one(objects, "Secret", "crs-cds-secrets"))
    for key, text in one(objects, "ConfigMap", "crs-cds-mappings")["data"].items():
        (mappings_dir / key).write_text(text)
    environment["CRS_CDS_MAPPING_FILES"] = environment["CRS_CDS_MAPPING_FILES"].replace(
        "/etc/crs-cds/mappings", str(mappings_dir)
    )
    return environment


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_the_service_accepts_the_rendered_settings(
    target: str, service_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every variable is a real setting (the service ignores unknown ones, so a typo would pass
    unseen), the values pass the service's own start-up validation once the site has put a real
    session key in the Secret, the site mapping files load, and the pod runs as production must:
    authenticated, https FHIR servers, shared PostgreSQL, SMART sessions sealed in it."""
    environment = pod_environment(rendered(target), tmp_path)
    known = {f"CRS_CDS_{name.upper()}" for name in Settings.model_fields}
    assert sorted(set(environment) - known) == [], "variables the service does not read"
    environment["CRS_CDS_SESSION_KEY"] = new_session_key()
    for key, value in environment.items():
        service_environment.setenv(key, value)
    settings = Settings()
    load_terminology(settings.mapping_files)
    assert settings.database_url.startswith("postgresql://")
    assert settings.session_key is not None
    assert settings.allow_unauthenticated is False
    assert settings.allow_insecure_fhir_server is False
    assert settings.trusted_issuers and settings.public_base_url and settings.fhir_server_allowlist
    assert (settings.host, settings.port) == ("0.0.0.0", SERVICE_PORT)


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_the_placeholder_session_key_stops_the_service(
    target: str, service_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A site that forgets the key gets a service that will not start, not one whose SMART
    sessions are sealed with a key published in this repository."""
    for key, value in pod_environment(rendered(target), tmp_path).items():
        service_environment.setenv(key, value)
    with pytest.raises(ValidationError, match="session_key must be a Fernet key"):
        Settings()


def _placeholders(obj: Any, where: str) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _placeholders(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _placeholders(value, f"{where}[{index}]")
    elif isinstance(obj, str) and PLACEHOLDER in obj:
        yield where


def placeholder_fields(objects: list[Manifest]) -> set[str]:
    """``Kind/name: field`` for every value holding a placeholder (Secret data decoded)."""
    found = set()
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        body = {"data": secret_values(obj)} if obj["kind"] == "Secret" else obj
        for path in _placeholders(body, ""):
            field = path.rsplit(".", 1)[-1]
            found.add(f"{name}: {field}")
    return found


def test_production_placeholders_only_where_a_site_fills_in() -> None:
    """A site fills in these and nothing else (README "Deploying" lists the same fields); once it
    has, none is left."""
    assert placeholder_fields(rendered("production")) <= SITE_FIELDS


def test_production_runs_this_release() -> None:
    """The overlay deploys the image of the version in this repository, never ``latest``."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = container(one(rendered("production"), "Deployment"))["image"]
    assert image.rsplit(":", 1)[-1] == version
