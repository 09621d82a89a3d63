"""The Kubernetes manifests in deploy/ hold together with the programs they run.

No cluster here, so this checks what can go wrong without one: every file parses, every kustomization names files
that exist, the broker runs as ≥ 2 replicas with probes on the gRPC health service, the agents run as a DaemonSet on
GPU nodes with their certificates from a Secret, every CLOUDSEAT_* setting is one the broker reads, and the agent's
host config template is a valid agent config once the per-node placeholders are filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudseat import logs, settings

from broker.config import BrokerConfig, SecurityConfig
from gpu_agent import config as agent_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(DEPLOY.rglob("*.yaml")) for d in _docs(p)]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [
        d
        for p in sorted((DEPLOY / "base").rglob("*.yaml"))
        for d in _docs(p)
        if d.get("kind") == kind and d["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in deploy/base"
    return found[0]


def test_every_manifest_parses_and_has_a_kind() -> None:
    docs = _all_docs()
    assert docs
    for d in docs:
        assert d.get("kind"), d
        assert d.get("apiVersion"), d


@pytest.mark.parametrize("kustomization", sorted(DEPLOY.rglob("kustomization.yaml")), ids=str)
def test_kustomizations_name_files_that_exist(kustomization: Path) -> None:
    doc = _docs(kustomization)[0]
    for entry in doc.get("resources", []) + doc.get("patches", []):
        rel = entry if isinstance(entry, str) else entry.get("path")
        if rel is None:
            continue
        assert (kustomization.parent / rel).exists(), f"{kustomization}: {rel} does not exist"


def test_broker_is_replicated_behind_a_service_with_grpc_health_probes() -> None:
    dep = _one("Deployment", "cloudseat-broker")
    assert dep["spec"]["replicas"] >= 2
    (broker,) = dep["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = broker[probe]["exec"]["command"]
        assert command[0] == "grpc_health_probe", probe
        assert "-tls" in command, f"{probe}: the token port speaks TLS"
    ports = {p["name"]: p["containerPort"] for p in broker["ports"]}
    svc = _one("Service", "cloudseat-broker")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports)
    # Certificates and the token key come from Secrets.
    secrets = {
        v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"].get("volumes", []) if "secret" in v
    }
    assert {"cloudseat-broker-tls", "cloudseat-token-key"} <= secrets
    env = {e["name"]: e for e in broker["env"]}
    assert env["CLOUDSEAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "cloudseat-database"


def test_agents_are_a_daemonset_on_gpu_nodes_with_their_certificates_from_a_secret() -> None:
    ds = _one("DaemonSet", "cloudseat-agent")
    spec = ds["spec"]["template"]["spec"]
    assert any("gpu" in key for key in spec["nodeSelector"])
    secrets = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    assert "cloudseat-agent-tls" in secrets


def test_every_setting_the_manifests_give_is_one_the_broker_reads() -> None:
    read = {
        name
        for config in (BrokerConfig, SecurityConfig, logs.LogConfig)
        for name in settings.variables(config)
    }
    given: set[str] = set()
    for d in _all_docs():
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("cloudseat-broker"):
            given |= set(d.get("data", {}))
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c["name"] == "broker":
                given |= {e["name"] for e in c.get("env", []) if e["name"].startswith("CLOUDSEAT_")}
    assert given, "no broker settings found"
    assert given <= read, f"settings no flag reads: {sorted(given - read)}"


def test_the_agent_host_config_template_is_a_valid_agent_config(tmp_path: Path) -> None:
    cm = _one("ConfigMap", "cloudseat-agent")
    text = cm["data"]["host.toml"].replace("@HOST_ID@", "node-1").replace("@MEDIA_ADDRESS@", "10.0.0.7")
    # The certificate paths are the Secret's mount; here they point at files that exist.
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text("PEM\n")
    text = text.replace("/etc/cloudseat/agent-tls/", f"{tmp_path}/")
    cfg = agent_config.parse(text, "host.toml", base=tmp_path)
    assert cfg.host_id == "node-1"
    assert cfg.tls is not None
