"""deploy/k8s/*.yaml (deploy/README.md): validated offline against the Kubernetes API schemas, and held to the relay.

`kubernetes-validate --strict` checks each manifest against the OpenAPI schemas it ships (no network, no
cluster; strict rejects unknown fields, so a misspelled key fails). The other checks tie the manifests to the
relay itself: the probes hit its real routes, the grace period covers its drain, the fleet respects the upstream
quota, the ConfigMap and Secret are fed to `realtime-relay serve --print-config`, and the HPA's metric is one
that a running relay exports.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the venv

from relay.server.app import FORCED_CLOSE_WAIT_S
from tests.support import tiers
from tests.support.deploy_fixtures import (
    DOCKERFILE,
    K8S_DIR,
    UPSTREAM_SESSION_QUOTA,
    VENV_BIN,
    free_port,
    in_stage,
    output_tail,
    parse_dockerfile,
    print_config,
    relay_command,
    relay_env,
    running,
    settings_env_names,
    wait_until_answering,
)
from tests.support.timing import seconds

pytestmark = pytest.mark.deploy

# The oldest Kubernetes minor still widely run and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
APP_LABELS = {"app.kubernetes.io/name": "realtime-relay"}


def manifests() -> list[Path]:
    return sorted(K8S_DIR.glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifests():
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind]
    return dict(found)


def relay_container() -> dict[str, Any]:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def configmap_data() -> dict[str, str]:
    return dict(one("ConfigMap")["data"])


def kubernetes_validate() -> str:
    return tiers.require(str(VENV_BIN / "kubernetes-validate"), "kubernetes-validate is not installed (pip)")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    result = subprocess.run(
        [kubernetes_validate(), "--strict", "--kubernetes-version", version, *map(str, manifests())],
        capture_output=True,
        text=True,
        timeout=seconds(120),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert sorted(passed) == sorted(f"{d['kind'].lower()}/{d['metadata']['name']}" for d in documents())


def test_validator_rejects_a_misspelled_field(tmp_path: Path) -> None:
    # The guard for the test above: strict validation really reads the fields.
    broken = tmp_path / "deployment.yaml"
    broken.write_text(
        (K8S_DIR / "deployment.yaml").read_text(encoding="utf-8").replace("readOnlyRootFilesystem", "readOnlyRootFs"),
        encoding="utf-8",
    )
    result = subprocess.run(
        [kubernetes_validate(), "--strict", "--kubernetes-version", KUBERNETES_VERSIONS[0], str(broken)],
        capture_output=True,
        text=True,
        timeout=seconds(120),
    )
    assert result.returncode != 0
    assert "readOnlyRootFs" in result.stdout + result.stderr


def test_the_example_set_has_every_kind_the_deployment_needs() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
    )


def test_readiness_uses_readyz_and_liveness_uses_healthz() -> None:
    container = relay_container()
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = container[probe]["httpGet"]["port"]
        assert port_names.get(port, port) == int(configmap_data()["RELAY_PORT"])


def test_grace_period_covers_prestop_and_the_drain() -> None:
    spec = one("Deployment")["spec"]["template"]["spec"]
    command = relay_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", "preStop waits for the endpoint removal to propagate"
    pre_stop = float(command[1])
    drain = float(configmap_data()["RELAY_DRAIN_SECONDS"])
    # After the drain, the sessions it closed get FORCED_CLOSE_WAIT_S to end; then the logs are flushed.
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + FORCED_CLOSE_WAIT_S + 5


def test_fleet_sessions_fit_the_upstream_quota() -> None:
    hpa = one("HorizontalPodAutoscaler")["spec"]
    per_pod = int(configmap_data()["RELAY_MAX_SESSIONS"])
    # A terminating pod's sessions run on beside its replacement: one draining pod's worth of headroom.
    assert per_pod * (hpa["maxReplicas"] + 1) <= UPSTREAM_SESSION_QUOTA
    deployment = one("Deployment")["spec"]
    assert deployment["replicas"] <= hpa["maxReplicas"]
    # Rollouts add no pod on top (no surge), and drain one pod at a time: the next old pod is taken only once its
    # replacement has been available for longer than preStop + the drain + the time the closed sessions get to end.
    assert deployment["strategy"]["rollingUpdate"]["maxSurge"] == 0
    pre_stop = float(relay_container()["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(configmap_data()["RELAY_DRAIN_SECONDS"])
    assert deployment["minReadySeconds"] >= pre_stop + drain + FORCED_CLOSE_WAIT_S  # the closed sessions end


def test_service_pdb_and_hpa_select_the_deployment() -> None:
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == APP_LABELS
    assert one("Service")["spec"]["selector"].items() <= pod_labels.items()
    assert one("Service")["spec"]["sessionAffinity"] == "None"
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    service_port = one("Service")["spec"]["ports"][0]["targetPort"]
    assert service_port in {p["name"] for p in relay_container()["ports"]}


def test_pod_runs_non_root_with_a_read_only_root_filesystem_and_writable_volumes() -> None:
    spec = one("Deployment")["spec"]["template"]["spec"]
    container = relay_container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    data = configmap_data()
    assert {data["RELAY_DATA_DIR"], data["RELAY_LOG_DIR"], "/tmp"} <= mounts


def test_pod_user_is_the_image_user() -> None:
    (user,) = in_stage(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")), "runtime", "USER")
    uid, _, gid = user.args.partition(":")
    context = one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, gid)


def test_configmap_and_deployment_name_only_real_settings() -> None:
    names = set(configmap_data()) | {e["name"] for e in relay_container().get("env", [])}
    unknown = {n for n in names if n.startswith("RELAY_")} - settings_env_names()
    assert not unknown, f"variables no setting reads: {sorted(unknown)}"


def test_secret_example_holds_every_key_the_deployment_reads() -> None:
    secret_keys = set(one("Secret")["stringData"])
    spec = one("Deployment")["spec"]["template"]["spec"]
    referenced = {e["valueFrom"]["secretKeyRef"]["key"] for e in relay_container()["env"] if "valueFrom" in e}
    for volume in spec["volumes"]:
        if "secret" in volume:
            referenced |= {item["key"] for item in volume["secret"]["items"]}
    assert referenced <= secret_keys


def test_configmap_and_secret_are_accepted_by_the_relay(tmp_path: Path) -> None:
    """The pod's environment, with the Secret's files where the volume mounts them, as serve reads it."""
    data = configmap_data()
    secret = one("Secret")["stringData"]
    mounted = tmp_path / "secrets"
    mounted.mkdir()
    (mount,) = [m for m in relay_container()["volumeMounts"] if m["name"] == "secrets"]
    env = relay_env(tmp_path)
    for key, value in data.items():
        env[key] = value.replace(mount["mountPath"], str(mounted))
    for key in ("token_secret", "credentials"):
        (mounted / key).write_text(secret[key], encoding="utf-8")
    env["RELAY_CLIENT_TOKENS"] = secret["client_tokens"]
    for directory in ("RELAY_DATA_DIR", "RELAY_LOG_DIR"):
        env[directory] = str(tmp_path / directory.lower())
    shown = print_config(env)
    assert shown["host"] == ('"0.0.0.0"', "env RELAY_HOST")
    assert shown["max_sessions"] == (data["RELAY_MAX_SESSIONS"], "env RELAY_MAX_SESSIONS")
    assert shown["event_log_stdout"] == ("true", "env RELAY_EVENT_LOG_STDOUT")
    assert shown["client_tokens"][1] == "env RELAY_CLIENT_TOKENS"
    assert "example-static-token" not in str(shown), "secrets are masked"


def test_hpa_metric_is_exported_by_a_running_relay(tmp_path: Path) -> None:
    (metric,) = one("HorizontalPodAutoscaler")["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    port = free_port()
    env = relay_env(tmp_path, RELAY_PORT=str(port), RELAY_HOST="127.0.0.1")
    output = tmp_path / "relay.out"
    with running(relay_command("serve", "--upstream", "sim"), env, output) as relay:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/healthz", relay, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output_tail(output)}") from None
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=seconds(10)) as response:
            text = response.read().decode()
    assert re.search(rf"^{name} 0(\.0)?$", text, re.MULTILINE), f"{name} not exported:\n{text[:2000]}"
