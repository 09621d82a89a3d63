"""The Kubernetes manifests in deploy/ hold together with the programs they run.

No cluster here, so this checks what can go wrong without one: every file parses, every kustomization names files
that exist, and, for the base and for each overlay as kustomize renders it, each broker role's Deployment is a
command line `cloudseat-broker serve` accepts (its args and its environment, as the kubelet would give them, through
the real parser and the real config checks), running that role alone, with its probes on the port where that role
answers the gRPC health service, its Secrets mounted where its settings say, and its Service (the tenant's, the
agents' gateway's) in front of its pods alone; every CLOUDSEAT_* setting is one the broker reads; and the agents'
host config template is a valid agent config that links to the gateway's Service.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudseat import logs, settings

from broker import cli
from broker.config import BrokerConfig, SecurityConfig
from broker.server import Role
from gpu_agent import config as agent_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# What `kubectl apply -k` is pointed at, and whether the broker runs with authentication there.
TREES = {"base": (DEPLOY, True), "insecure-dev": (DEPLOY / "overlays" / "insecure-dev", False)}
# Each role's Deployment, and the Service in front of it (the leader serves no RPC).
ROLES = {
    Role.TENANT: ("cloudseat-broker-tenant", "cloudseat-broker"),
    Role.AGENTS: ("cloudseat-broker-agents", "cloudseat-broker-agents"),
    Role.LEADER: ("cloudseat-broker-leader", None),
}
POD_IP = "10.1.2.3"  # what status.podIP gives
READ = {
    name
    for config in (BrokerConfig, SecurityConfig, logs.LogConfig, cli.ServeOptions)
    for name in settings.variables(config)
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(DEPLOY.rglob("*.yaml")) for d in _docs(p)]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} of them"
    return found[0]


# -- kustomize, as far as these checks need it ---------------------------------------------------------------

# Strategic merge, as far as the overlays use it: maps merge and null removes a key; the lists Kubernetes merges by
# a key are merged by it (new items first, as kustomize writes them; `$patch: delete` removes one, a
# `$patch: replace` item replaces the whole list); any other list is replaced.
_MERGE_KEYS = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "port"),  # a container's, a Service's
    "topologySpreadConstraints": ("topologyKey",),
}
_REPLACE = {"$patch": "replace"}


def _merged(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(patch, dict):
        out = dict(base) if isinstance(base, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _merged(out.get(key), value, key)
        return out
    if isinstance(patch, list) and field in _MERGE_KEYS:
        if _REPLACE in patch:
            return [_merged(None, item) for item in patch if item != _REPLACE]
        items: list[Any] = list(base or [])
        new: list[Any] = []
        for item in patch:
            key = next(k for k in _MERGE_KEYS[field] if k in item)
            at = [i for i, old in enumerate(items) if old.get(key) == item[key]]
            if item.get("$patch") == "delete":
                assert at, f"a patch deletes {field} {item[key]!r}, which is not there"
                del items[at[0]]
            elif at:
                items[at[0]] = _merged(items[at[0]], item)
            else:
                new.append(_merged(None, item))
        return new + items
    return patch


def _rendered(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` makes, less what these checks do not look at (the namespace, common
    labels and image names it sets): the resources, files or folders with a kustomization, with the patches."""
    kustomization = _docs(folder / "kustomization.yaml")[0]
    docs: list[dict[str, Any]] = []
    for rel in kustomization.get("resources", []):
        path = folder / rel
        docs += _rendered(path) if path.is_dir() else _docs(path)
    for entry in kustomization.get("patches", []):
        assert set(entry) == {"path"}, f"{folder}: only strategic merge patches by path are rendered here"
        for patch in _docs(folder / entry["path"]):
            target = _one(docs, patch["kind"], patch["metadata"]["name"])
            docs = [_merged(d, patch) if d is target else d for d in docs]
    return docs


# -- a container as the kubelet starts it, and as the broker's command line reads it ---------------------------


def _cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _secret_value(docs: list[dict[str, Any]], name: str, key: str) -> str:
    """A Secret's value: the tree's own Secret if it has one (the dev overlay's database), else secrets.example's."""
    found = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    secret = found[0] if found else _one(_docs(DEPLOY / "secrets.example.yaml"), "Secret", name)
    assert key in secret["stringData"], f"Secret {name} has no key {key}"
    return str(secret["stringData"][key])


def _environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: its ConfigMaps, then its env in order, $(VAR) expanded as the kubelet does."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(item["value"]))
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "status.podIP", name
            env[name] = POD_IP
        elif "secretKeyRef" in ref:
            env[name] = _secret_value(docs, ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        else:
            field = ref["resourceFieldRef"]
            assert field.get("containerName", container["name"]) == container["name"], name
            requested = container["resources"]["requests"][field["resource"].removeprefix("requests.")]
            env[name] = str(math.ceil(_cpus(str(requested)) / _cpus(str(field.get("divisor", "1")))))
    return env


def _serve(
    docs: list[dict[str, Any]], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[BrokerConfig, cli.ServeOptions]:
    """What `cloudseat-broker serve` makes of the container's command line and environment: broker.cli.main as it
    runs, checks and all, stopped where it would start serving."""
    for name in READ:
        monkeypatch.delenv(name, raising=False)
    for name, value in _environment(docs, container).items():
        monkeypatch.setenv(name, value)
    got: dict[str, Any] = {}

    async def serve(
        config: BrokerConfig, options: cli.ServeOptions, log_config: logs.LogConfig, **_: Any
    ) -> int:
        got.update(config=config, options=options)
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    monkeypatch.setattr(logs, "configure_from", lambda args: None)
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["cloudseat-broker", "serve"], argv
    assert cli.main(argv[1:]) == 0, "cloudseat-broker serve refuses the container's args or environment"
    return got["config"], got["options"]


def _broker(docs: list[dict[str, Any]], deployment: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and its broker container."""
    dep = _one(docs, "Deployment", deployment)
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "broker"]
    return dep, container


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _selects(selector: dict[str, str], dep: dict[str, Any]) -> bool:
    labels: dict[str, str] = dep["spec"]["template"]["metadata"]["labels"]
    return selector.items() <= labels.items()


def _container_port(container: dict[str, Any], target: int | str) -> int:
    """The port a Service's targetPort names in the container (a number stands for itself)."""
    if isinstance(target, int):
        return target
    (port,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == target]
    return int(port)


# -- the checks --------------------------------------------------------------------------------------------------


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


def test_the_broker_is_one_deployment_per_role() -> None:
    deployments = {d["metadata"]["name"] for d in _rendered(DEPLOY) if d["kind"] == "Deployment"}
    assert deployments == {name for name, _ in ROLES.values()}


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("role", ROLES, ids=str)
def test_each_role_is_a_command_line_the_broker_accepts(
    tree: str, role: Role, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, secure = TREES[tree]
    docs = _rendered(folder)
    dep, container = _broker(docs, ROLES[role][0])
    config, options = _serve(docs, container, monkeypatch)
    assert options.roles == {role}
    if role is Role.TENANT:
        # A worker per CPU the pod asks for, not per core of whatever node it lands on.
        assert options.workers == math.ceil(_cpus(str(container["resources"]["requests"]["cpu"])))
    else:
        assert options.workers == 0, "one process: a supervisor would only add a process around it"
    assert config.database_url is not None, "the region's PostgreSQL, not an embedded one"
    assert (config.security is not None) == secure
    assert config.insecure == (not secure)
    if secure:
        # Every file the security settings name is a key of a Secret (secrets.example.yaml) mounted there.
        sec = config.security
        assert sec is not None
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
        for path in (sec.cert, sec.key, sec.client_ca, sec.token_key, *sec.extra_verify_keys):
            volume = volumes[mounts[str(path.parent)]]
            assert "items" not in volume["secret"], "every key of the Secret, under its own name"
            _secret_value(docs, volume["secret"]["secretName"], path.name)
        env = {e["name"]: e for e in container["env"]}
        assert env["CLOUDSEAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "cloudseat-database"


def _health(config: BrokerConfig, role: Role) -> dict[int, tuple[str, bool]]:
    """Where a broker process of `role` answers grpc.health.v1 for a probe (broker/server.py): port → (the host it
    listens on, whether it speaks TLS)."""
    secure = config.security is not None
    if role is Role.TENANT:
        host, port = _host_port(config.listen)
        return {port: (host, secure)}
    relay_host, relay_port = _host_port(config.relay_listen)
    if role is Role.LEADER:
        return {relay_port: (relay_host, False)}  # health alone, in plaintext
    out = {relay_port: (relay_host, secure)}
    if not secure and config.agent_listen is not None:  # with security, it asks for an agent's certificate
        out[_host_port(config.agent_listen)[1]] = _host_port(config.agent_listen)[0], False
    return out


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("role", ROLES, ids=str)
def test_probes_ask_the_port_where_the_role_answers_health(
    tree: str, role: Role, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _rendered(TREES[tree][0])
    _, container = _broker(docs, ROLES[role][0])
    config, _ = _serve(docs, container, monkeypatch)
    health = _health(config, role)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        if "grpc" in probe:  # the kubelet's own: plaintext, to the pod's IP
            port, tls, host, ca = probe["grpc"]["port"], False, POD_IP, None
        else:
            command = probe["exec"]["command"]
            assert command[0] == "grpc_health_probe", kind
            flags = dict(arg.lstrip("-").partition("=")[::2] for arg in command[1:])
            host, port = _host_port(flags["addr"])
            tls, ca = "tls" in flags, flags.get("tls-ca-cert")
        assert port in health, f"{kind}: nothing answers health on {port} (only on {sorted(health)})"
        listen_host, speaks_tls = health[port]
        assert tls == speaks_tls, f"{kind}: port {port} {'speaks' if speaks_tls else 'does not speak'} TLS"
        if tls:
            assert config.security is not None and ca == str(config.security.client_ca), kind
        if host == POD_IP:
            assert listen_host == "0.0.0.0", f"{kind}: port {port} listens on {listen_host} only"
        else:
            assert host == "127.0.0.1" and listen_host in ("0.0.0.0", "127.0.0.1"), kind


@pytest.mark.parametrize("tree", TREES)
def test_each_service_is_in_front_of_its_role_alone(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _rendered(TREES[tree][0])
    deployments = {role: _broker(docs, name) for role, (name, _) in ROLES.items()}
    services = [
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].startswith("cloudseat-broker")
    ]
    assert {s["metadata"]["name"] for s in services} == {svc for _, svc in ROLES.values() if svc}
    for role, (_, service) in ROLES.items():
        dep, container = deployments[role]
        config, _ = _serve(docs, container, monkeypatch)
        # Its pods alone behind it (no Service for the leader).
        fronting = [s["metadata"]["name"] for s in services if _selects(s["spec"]["selector"], dep)]
        assert fronting == ([service] if service else []), role
        if service is None:
            continue
        ports = {
            p["port"]: _container_port(container, p["targetPort"])
            for p in _one(docs, "Service", service)["spec"]["ports"]
        }
        if role is Role.TENANT:
            # Seats, venues, providers and operators on 50051, and the consoles where they are on.
            serves = {50051: _host_port(config.listen)[1]}
            if config.http_listen is not None:
                http = _host_port(config.http_listen)[1]
                serves[http] = http
            assert ports == serves
        else:
            # The agents on 50052; the relay port is reached at each pod's IP, which the pod advertises.
            assert config.agent_listen is not None
            assert ports == {50052: _host_port(config.agent_listen)[1]}
            relay_host, relay_port = _host_port(config.relay_listen)
            assert relay_host == "0.0.0.0" and relay_port in {p["containerPort"] for p in container["ports"]}
            assert config.advertise is not None and _host_port(config.advertise)[0] == POD_IP


def test_each_role_is_spread_budgeted_and_stopped_gently() -> None:
    docs = _rendered(DEPLOY)
    grace_s = float(_one(docs, "ConfigMap", "cloudseat-broker")["data"]["CLOUDSEAT_SHUTDOWN_GRACE_S"])
    deployments = {role: _broker(docs, name) for role, (name, _) in ROLES.items()}

    def roles(selector: dict[str, str]) -> set[Role]:
        return {role for role, (dep, _) in deployments.items() if _selects(selector, dep)}

    budgets = [d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    for role, (dep, container) in deployments.items():
        spec = dep["spec"]["template"]["spec"]
        replicas = dep["spec"]["replicas"]
        # Tenant pods scale with the seats; gateways ≥ 2 so agents find a survivor; the leader and its stand-by.
        assert replicas == 2 if role is Role.LEADER else replicas >= 2, role
        # Its selector, its spread and its budget take its own pods and no other role's.
        assert roles(dep["spec"]["selector"]["matchLabels"]) == {role}, role
        spread = spec["topologySpreadConstraints"]
        assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}, role
        assert all(roles(c["labelSelector"]["matchLabels"]) == {role} for c in spread), role
        (budget,) = [b for b in budgets if role in roles(b["selector"]["matchLabels"])]
        assert roles(budget["selector"]["matchLabels"]) == {role} and budget["maxUnavailable"] == 1, role
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        # Behind a Service, the pod first leaves its endpoints; then calls get the grace, within the pod's.
        pre_stop_s = 0.0
        if ROLES[role][1] is not None:
            command = container["lifecycle"]["preStop"]["exec"]["command"]
            assert command[0] == "sleep"
            pre_stop_s = float(command[1])
        assert spec["terminationGracePeriodSeconds"] > pre_stop_s + grace_s, role


def test_every_setting_the_manifests_give_is_one_the_broker_reads() -> None:
    given: set[str] = set()
    for d in _all_docs():
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("cloudseat-broker"):
            given |= set(d.get("data", {}))
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c["name"] == "broker":
                given |= {e["name"] for e in c.get("env", []) if e["name"].startswith("CLOUDSEAT_")}
    assert given, "no broker settings found"
    assert given <= READ, f"settings no flag reads: {sorted(given - READ)}"


@pytest.mark.parametrize("tree", TREES)
def test_the_agent_host_config_template_is_a_valid_agent_config_linking_to_the_gateway(
    tree: str, tmp_path: Path
) -> None:
    folder, secure = TREES[tree]
    docs = _rendered(folder)
    cm = _one(docs, "ConfigMap", "cloudseat-agent")
    text = cm["data"]["host.toml"].replace("@HOST_ID@", "node-1").replace("@MEDIA_ADDRESS@", "10.0.0.7")
    # The certificate paths are the Secret's mount; here they point at files that exist.
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text("PEM\n")
    text = text.replace("/etc/cloudseat/agent-tls/", f"{tmp_path}/")
    cfg = agent_config.parse(text, "host.toml", base=tmp_path)
    assert cfg.host_id == "node-1"
    assert (cfg.tls is not None) == secure
    # The agents' gateway Service, by a name the agent's DNS resolves in the namespace, on its agents' port.
    service = _one(docs, "Service", ROLES[Role.AGENTS][1] or "")
    (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    name = service["metadata"]["name"]
    host, port = _host_port(cfg.broker)
    assert host in {
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    }
    assert port in {p["port"] for p in service["spec"]["ports"]}
