"""deploy/kubernetes: every manifest valid against the Kubernetes schemas (offline), and consistent with patterd."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from patterd.cli import main

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
HPA = KUBE / "components" / "hpa"
KUBERNETES_VERSION = "1.33.0"  # schemas bundled with kubernetes-validate: no network


def resources(kustomization: Path) -> list[dict[str, Any]]:
    """Every document of every file a kustomization (or component) lists, in order."""
    spec = yaml.safe_load(kustomization.read_text())
    docs: list[dict[str, Any]] = []
    for name in spec["resources"]:
        docs.extend(d for d in yaml.safe_load_all((kustomization.parent / name).read_text()) if d)
    return docs


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return resources(KUBE / "kustomization.yaml")


def test_every_manifest_is_listed_and_valid(docs: list[dict[str, Any]]) -> None:
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "a manifest is missing from (or extra in) kustomization.yaml"
    component = yaml.safe_load((HPA / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    everything = docs + resources(HPA / "kustomization.yaml")
    assert {d["kind"] for d in everything} == {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for doc in everything:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any schema error


def test_the_validator_catches_a_broken_manifest(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def patter_yaml(docs: list[dict[str, Any]]) -> str:
    return str(one(docs, "ConfigMap")["data"]["patter.yaml"])


def test_grace_period_outlasts_the_drain(docs: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(patter_yaml(docs))
    drain = float(config["server"]["drain_timeout_secs"])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    margin = pod["terminationGracePeriodSeconds"] - drain - float(pre_stop[1])
    assert margin >= 30, "records need time to flush after the drain"
    ingress = one(docs, "Ingress")["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(ingress[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600  # hour-long calls


def test_probes_config_and_keys(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == yaml.safe_load(patter_yaml(docs))["server"]["port"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    assert f"{mounts['config']}/patter.yaml" in container["args"]
    secret = one(docs, "Secret")
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert "PATTERD_CLUSTER_SECRET" in secret["stringData"]  # one token key for every replica
    # every ${VAR} of the config comes from the Secret
    needed = set(re.findall(r"\$\{(\w+)", patter_yaml(docs)))
    assert needed <= set(secret["stringData"])
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert one(docs, "Service")["spec"]["selector"] == selector
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector


def test_the_autoscaler_metric_is_one_patterd_exports() -> None:
    (hpa,) = resources(HPA / "kustomization.yaml")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rule = yaml.safe_load((HPA / "prometheus-adapter-rule.yaml").read_text())["rules"]["custom"][0]
    assert rule["name"]["as"] == metric == "patterd_live_calls"
    exported = rule["name"]["matches"].strip("^$")
    assert f'"{exported}"' in (ROOT / "patterd" / "metrics.py").read_text()


def test_the_configmap_config_passes_patterd_check(
    docs: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in one(docs, "Secret")["stringData"].items():
        monkeypatch.setenv(key, str(value))
    path = tmp_path / "patter.yaml"
    path.write_text(patter_yaml(docs))
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err
    assert "ok (1 agent(s), carrier twilio)" in capsys.readouterr().out
