"""The Helm chart: it lints, renders valid Kubernetes 1.33 objects, and wires dalc as documented.

No cluster runs here, so these tests check what `helm template` produces; docs/deploy.md says what
was and was not tried on a real cluster.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes_validate
import pytest
import yaml

from app.config import Config
from harness.helm_support import (
    CHART,
    CI_VALUES,
    KIND_VALUES,
    KUBE_VERSION,
    ROOT,
    SUBCHARTS,
    containers,
    env_of,
    find,
    one,
    pod_spec,
    render,
    run_helm,
    secret_data,
    template_args,
    validate,
)

RENDERINGS = [pytest.param((path,), id=path.stem) for path in [*CI_VALUES, KIND_VALUES]]
HOOK = "helm.sh/hook"


def annotations(obj: dict) -> dict:
    return obj["metadata"].get("annotations") or {}


def hook_phases(obj: dict) -> set[str]:
    return set(filter(None, annotations(obj).get(HOOK, "").split(",")))


def test_ci_renders_the_four_combinations_the_issue_names():
    names = {path.stem for path in CI_VALUES}
    assert {"default-values", "external-services-values", "single-node-rabbitmq-values",
            "tracing-values"} <= names


@pytest.mark.parametrize("values_files", [pytest.param((), id="chart-defaults"), *RENDERINGS])
def test_chart_lints_strictly(values_files):
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    done = run_helm(*args, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize("subchart", SUBCHARTS, ids=lambda path: path.name)
def test_each_subchart_lints_and_renders_on_its_own(subchart):
    done = run_helm("lint", "--strict", str(subchart), "--kube-version", KUBE_VERSION, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    objects = render(chart=subchart)
    assert find(objects, "StatefulSet") and find(objects, "Secret")
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values_files", RENDERINGS)
def test_every_rendered_object_is_valid_for_kubernetes_1_33_or_its_crd(values_files):
    objects = render(values_files)
    assert objects
    for obj in objects:
        try:
            checked_against = validate(obj)
        except ValueError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
        assert checked_against in ("1.33", "monitoring.coreos.com/v1", "keda.sh/v1alpha1")


def test_the_validator_rejects_an_unknown_field():
    deployment = json.loads(json.dumps(one(render(), "Deployment", "dalc-web")))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_worker_runs_the_dramatiq_cli_on_the_app_worker_module():
    worker = containers(one(render(), "Deployment", "dalc-worker"))[0]
    assert worker["command"] == ["dramatiq", "app.worker", "--processes", "1", "--threads", "8",
                                 "--worker-shutdown-timeout", "30000"]
    assert env_of(worker)["OTEL_SERVICE_NAME"]["value"] == "dalc-worker"


def test_a_sigtermed_worker_hands_back_its_tasks_before_the_kubelet_kills_it():
    objects = render(settings=("worker.shutdownSeconds=5", "worker.terminationGracePeriodSeconds=20"))
    worker = one(objects, "Deployment", "dalc-worker")
    command = containers(worker)[0]["command"]
    assert command[command.index("--worker-shutdown-timeout") + 1] == "5000"
    assert pod_spec(worker)["terminationGracePeriodSeconds"] == 20
    assert one(objects, "ConfigMap", "dalc")["data"]["DALC_WORKER_SHUTDOWN_SECONDS"] == "5"
    done = run_helm(*template_args(settings=("worker.shutdownSeconds=60",)), check=False)
    assert done.returncode != 0
    assert "worker.shutdownSeconds must be less than worker.terminationGracePeriodSeconds" in done.stderr


def test_worker_metrics_port_is_probed_scraped_and_switchable():
    objects = render()
    worker = one(objects, "Deployment", "dalc-worker")
    assert containers(worker)[0]["ports"] == [{"name": "metrics", "containerPort": 9191, "protocol": "TCP"}]
    assert worker["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9191"
    assert containers(worker)[0]["readinessProbe"]["tcpSocket"]["port"] == "metrics"

    worker = one(render(settings=("worker.metrics.enabled=false",)), "Deployment", "dalc-worker")
    assert "ports" not in containers(worker)[0] and "livenessProbe" not in containers(worker)[0]
    assert "prometheus.io/scrape" not in worker["spec"]["template"]["metadata"]["annotations"]


def test_the_web_serves_metrics_on_a_port_of_their_own_that_its_service_does_not_expose():
    objects = render()
    web = one(objects, "Deployment", "dalc-web")
    assert containers(web)[0]["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                           {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert web["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert one(objects, "ConfigMap", "dalc")["data"]["DALC_WEB_METRICS_PORT"] == "9090"
    assert [port["targetPort"] for port in one(objects, "Service", "dalc-web")["spec"]["ports"]] == ["http"]

    objects = render(settings=("web.metrics.port=0",))
    web = one(objects, "Deployment", "dalc-web")
    assert [port["name"] for port in containers(web)[0]["ports"]] == ["http"]
    assert web["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert one(objects, "ConfigMap", "dalc")["data"]["DALC_WEB_METRICS_PORT"] == "0"


@pytest.mark.parametrize("port", ["80", "70000", "-1"])
def test_the_web_metrics_port_must_be_unprivileged_or_zero(port):
    done = run_helm(*template_args(settings=(f"web.metrics.port={port}",)), check=False)
    assert done.returncode != 0 and "schema" in done.stderr.lower(), done.stderr


def test_worker_extra_arguments_follow_the_cli_line():
    worker = containers(one(render((CHART / "ci" / "worker-autoscaling-values.yaml",)),
                            "Deployment", "dalc-worker"))[0]
    assert worker["command"][:2] == ["dramatiq", "app.worker"]
    assert worker["command"][-2:] == ["--queues", "dalc"]


def test_web_runs_gunicorn_on_the_app_factory_with_health_probes():
    web = containers(one(render(), "Deployment", "dalc-web"))[0]
    assert web["command"] == ["gunicorn", "--config", "python:app.gunicorn_conf", "app:create_app()"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["port"] == web["livenessProbe"]["httpGet"]["port"] == "http"
    assert env_of(web)["OTEL_SERVICE_NAME"]["value"] == "dalc-web"


def test_sweeper_and_migrations_run_the_dalc_console_script():
    objects = render()
    sweeper = containers(one(objects, "Deployment", "dalc-sweeper"))[0]
    migrate = containers(one(objects, "Job", "dalc-migrate"))[0]
    assert sweeper["command"] == ["dalc", "sweep"]
    assert env_of(sweeper)["OTEL_SERVICE_NAME"]["value"] == "dalc-sweeper"
    assert migrate["command"] == ["dalc", "migrate"]


def test_settings_go_to_the_config_map_and_urls_to_the_secret():
    objects = render()
    config = one(objects, "ConfigMap", "dalc")["data"]
    assert config["DALC_HOST"] == "0.0.0.0"
    assert config["DALC_PORT"] == "8080"
    assert config["DALC_QUEUE_TYPE"] == "quorum"
    assert config["DALC_WORKER_METRICS_PORT"] == "9191"
    for name in ("dalc-web", "dalc-worker", "dalc-sweeper"):
        container = containers(one(objects, "Deployment", name))[0]
        assert container["envFrom"] == [{"configMapRef": {"name": "dalc"}}]
        env = env_of(container)
        for variable, key in (("DALC_DATABASE_URL", "database-url"), ("DALC_BROKER_URL", "broker-url")):
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "dalc-credentials", "key": key}


def test_the_chart_requires_tokens_and_limits_each_by_default():
    config = one(render(), "ConfigMap", "dalc")["data"]
    assert (config["DALC_AUTH"], config["DALC_RATE_LIMIT"]) == ("required", "2000/second")
    config = one(render(settings=("config.auth=off", "config.rateLimit=")), "ConfigMap", "dalc")["data"]
    assert config["DALC_AUTH"] == "off" and "DALC_RATE_LIMIT" not in config


@pytest.mark.parametrize("values_files", RENDERINGS)
def test_secrets_never_land_in_config_maps_or_plain_env(values_files):
    objects = render(values_files)
    secrets = [value for secret in find(objects, "Secret") for value in secret_data(secret).values()]
    plain = [str(value) for config_map in find(objects, "ConfigMap")
             for value in (config_map.get("data") or {}).values()]
    plain += [str(entry.get("value", "")) for obj in objects for container in containers(obj)
              for entry in container.get("env", [])]
    for text in plain:
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), f"credentials in plain text: {text!r}"
        for secret in secrets:
            assert secret not in text, "a Secret's value appears outside Secrets"
    for config_map in find(objects, "ConfigMap"):
        for key in config_map.get("data") or {}:
            assert not re.search(r"PASSWORD|_URL$|COOKIE", key, re.IGNORECASE), key


def test_the_generated_secret_holds_urls_matching_the_bundled_services():
    objects = render()
    secret = one(objects, "Secret", "dalc-credentials")
    data = secret_data(secret)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["postgres-password"])
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["rabbitmq-password"])
    assert re.fullmatch(r"[A-Za-z0-9]{64}", data["rabbitmq-erlang-cookie"])
    assert data["database-url"] == (
        f"postgresql://dalc:{data['postgres-password']}@dalc-postgresql:5432/dalc")
    assert data["broker-url"] == f"amqp://dalc:{data['rabbitmq-password']}@dalc-rabbitmq:5672/%2F"
    assert one(objects, "Service", "dalc-postgresql") and one(objects, "Service", "dalc-rabbitmq")

    postgres = env_of(containers(one(objects, "StatefulSet", "dalc-postgresql"))[0])
    assert postgres["POSTGRES_USER"]["value"] == "dalc"
    assert postgres["POSTGRES_DB"]["value"] == "dalc"
    assert postgres["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "dalc-credentials", "key": "postgres-password"}
    rabbitmq = one(objects, "StatefulSet", "dalc-rabbitmq")
    assert env_of(containers(rabbitmq)[0])["RABBITMQ_DEFAULT_PASS"]["valueFrom"]["secretKeyRef"] == {
        "name": "dalc-credentials", "key": "rabbitmq-password"}
    cookie = next(volume for volume in pod_spec(rabbitmq)["volumes"] if volume["name"] == "erlang-cookie")
    assert cookie["secret"]["secretName"] == "dalc-credentials"
    # The subcharts make no Secret of their own when they use dalc's.
    assert [secret["metadata"]["name"] for secret in find(objects, "Secret")] == ["dalc-credentials"]


def test_the_secret_exists_before_the_hooks_and_services_that_read_it():
    secret = one(render(), "Secret", "dalc-credentials")
    assert hook_phases(secret) == {"pre-install", "pre-upgrade"}
    assert int(annotations(secret)["helm.sh/hook-weight"]) < 0
    assert annotations(secret)["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_given_passwords_are_used_instead_of_generated_ones():
    objects = render(settings=("postgresql.auth.password=given-pg", "rabbitmq.auth.password=given-mq"))
    data = secret_data(one(objects, "Secret", "dalc-credentials"))
    assert data["database-url"].startswith("postgresql://dalc:given-pg@")
    assert data["broker-url"].startswith("amqp://dalc:given-mq@")


def test_external_services_replace_the_bundled_ones():
    objects = render((CHART / "ci" / "external-services-values.yaml",))
    assert not find(objects, "StatefulSet")
    data = secret_data(one(objects, "Secret", "dalc-credentials"))
    assert data == {
        "database-url": "postgresql://dalc:not-a-real-password@db.example.internal:5432/dalc",
        "broker-url": "amqp://dalc:not-a-real-password@mq.example.internal:5672/%2F",
    }


def test_an_existing_secret_replaces_the_generated_one():
    objects = render((CHART / "ci" / "external-services-values.yaml",), ("existingSecret=my-dalc",))
    assert not find(objects, "Secret")
    web = containers(one(objects, "Deployment", "dalc-web"))[0]
    assert env_of(web)["DALC_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "my-dalc"
    assert "checksum/secret" not in one(objects, "Deployment", "dalc-web")["spec"]["template"][
        "metadata"]["annotations"]


@pytest.mark.parametrize("service, message", [
    ("postgresql", "set externalDatabase.url"),
    ("rabbitmq", "set externalBroker.url"),
])
def test_turning_a_bundled_service_off_without_a_replacement_fails_clearly(service, message):
    done = run_helm(*template_args(settings=(f"{service}.enabled=false",)), check=False)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize("setting", [
    "unknownKey=1",
    "web.replicaCount=3",
    "config.queueType=fanout",
    "config.extra.DALC_DATABASE_URL=postgresql://u:p@h/d",
    "securityContext.readOnlyRootFilesystem=false",
    "postgresql.auth.unknown=1",
    "rabbitmq.replicas=0",
])
def test_the_values_schema_rejects_what_the_chart_does_not_know(setting):
    done = run_helm(*template_args(settings=(setting,)), check=False)
    assert done.returncode != 0, f"{setting} was accepted"
    assert "schema" in done.stderr.lower(), done.stderr


@pytest.mark.parametrize("values_files", RENDERINGS)
def test_every_container_has_resources(values_files):
    for obj in render(values_files):
        for container in containers(obj):
            resources = container.get("resources") or {}
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where


@pytest.mark.parametrize("values_files", RENDERINGS)
def test_every_container_that_serves_has_readiness_and_liveness_probes(values_files):
    serving = 0
    for obj in render(values_files):
        for container in containers(obj, init=False):
            if container.get("ports"):
                serving += 1
                where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
                assert "readinessProbe" in container and "livenessProbe" in container, where
    assert serving >= 2


@pytest.mark.parametrize("values_files", RENDERINGS)
def test_dalc_containers_run_unprivileged_on_a_read_only_root(values_files):
    objects = render(values_files)
    dalc_image = f"dalc:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    checked = 0
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None or obj["metadata"]["labels"].get("app.kubernetes.io/name") != "dalc":
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for container in containers(obj):
            checked += container["image"] == dalc_image
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            if container["image"] == dalc_image and obj["kind"] != "Pod":
                assert "/tmp" in mounts, "a read-only root needs a writable /tmp"
    assert checked >= 4


def test_bundled_services_run_unprivileged_too():
    for obj in find(render(), "StatefulSet"):
        assert pod_spec(obj)["securityContext"]["runAsNonRoot"] is True
        for container in containers(obj):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("values_file, install_phase", [
    ("default-values.yaml", "post-install"),
    ("external-services-values.yaml", "pre-install"),
])
def test_migrations_run_as_a_hook_before_upgrades_and_at_install(values_file, install_phase):
    job = one(render((CHART / "ci" / values_file,)), "Job", "dalc-migrate")
    assert hook_phases(job) == {install_phase, "pre-upgrade"}
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    # The hook may run before the ConfigMap and ServiceAccount of the release exist.
    assert "serviceAccountName" not in spec
    assert "envFrom" not in containers(job)[0]


def test_the_helm_test_pod_submits_an_expression_through_the_web_service():
    pod = one(render(), "Pod", "dalc-test-expression")
    assert hook_phases(pod) == {"test"}
    container = containers(pod)[0]
    assert container["command"][:2] == ["python", "-c"]
    assert env_of(container)["DALC_URL"]["value"] == "http://dalc-web:8080"
    assert pod["spec"]["restartPolicy"] == "Never"


class _FakeDalc(BaseHTTPRequestHandler):
    """Answer like dalc's API for one task: 202 on POST /tasks, then RUNNING, then COMPLETED."""

    polls = 0
    seen: list[tuple[str, str, object]] = []

    def _answer(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802 - the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(("POST", self.path, body))
        self._answer(202, {"id": 7, "expression": body["expression"], "status": "SCHEDULED", "result": None})

    def do_GET(self):  # noqa: N802 - the name http.server calls
        type(self).seen.append(("GET", self.path, None))
        type(self).polls += 1
        status = "COMPLETED" if type(self).polls > 1 else "RUNNING"
        self._answer(200, {"id": 7, "status": status, "result": 2 if status == "COMPLETED" else None})

    def log_message(self, *args):
        pass


def test_the_helm_test_script_passes_against_an_api_that_answers_two():
    container = containers(one(render(), "Pod", "dalc-test-expression"))[0]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeDalc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"DALC_URL": f"http://127.0.0.1:{server.server_port}", "TIMEOUT_SECONDS": "20"}
        done = subprocess.run([sys.executable, "-c", container["command"][2]], env=env,
                              capture_output=True, text=True, timeout=30, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "1 + 1 = 2" in done.stdout
    assert _FakeDalc.seen[0] == ("POST", "/tasks", {"expression": "1 + 1"})
    assert _FakeDalc.seen[1][:2] == ("GET", "/tasks/7?wait=10")


def test_image_tag_and_replicas_follow_values():
    objects = render(settings=("image.repository=registry.local/dalc", "image.tag=abc123",
                               "web.replicas=3", "worker.replicas=5", "sweeper.replicas=2"))
    for name, replicas in (("dalc-web", 3), ("dalc-worker", 5), ("dalc-sweeper", 2)):
        deployment = one(objects, "Deployment", name)
        assert deployment["spec"]["replicas"] == replicas
        assert containers(deployment)[0]["image"] == "registry.local/dalc:abc123"
    for kind, name in (("Job", "dalc-migrate"), ("Pod", "dalc-test-expression")):
        assert containers(one(objects, kind, name))[0]["image"] == "registry.local/dalc:abc123"


def test_the_image_tag_defaults_to_the_app_version():
    web = containers(one(render(), "Deployment", "dalc-web"))[0]
    assert web["image"] == "dalc:0.1.0"


def test_worker_autoscaling_takes_over_the_replica_count():
    objects = render((CHART / "ci" / "worker-autoscaling-values.yaml",))
    assert "replicas" not in one(objects, "Deployment", "dalc-worker")["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler", "dalc-worker")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "dalc-worker"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert not find(render(), "HorizontalPodAutoscaler")


def test_disruption_budgets_cover_web_workers_and_the_rabbitmq_cluster():
    names = {pdb["metadata"]["name"] for pdb in find(render(), "PodDisruptionBudget")}
    assert names == {"dalc-web", "dalc-worker", "dalc-rabbitmq"}


def test_config_checksums_roll_the_pods_when_settings_change():
    def checksum(objects):
        deployment = one(objects, "Deployment", "dalc-worker")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(render()) == checksum(render(settings=("web.replicas=2",)))
    assert checksum(render()) != checksum(render(settings=("config.logLevel=DEBUG",)))
    for name in ("dalc-web", "dalc-worker", "dalc-sweeper"):
        assert "checksum/secret" in one(render(), "Deployment", name)["spec"]["template"]["metadata"][
            "annotations"]
    rabbitmq = one(render(), "StatefulSet", "dalc-rabbitmq")
    assert "checksum/config" in rabbitmq["spec"]["template"]["metadata"]["annotations"]


def test_tracing_off_disables_the_sdk_and_deploys_no_jaeger():
    objects = render()
    assert one(objects, "ConfigMap", "dalc")["data"]["OTEL_SDK_DISABLED"] == "true"
    assert not find(objects, "Deployment", "dalc-jaeger")


def test_tracing_on_sends_otlp_to_a_bundled_jaeger_v2():
    objects = render((CHART / "ci" / "tracing-values.yaml",))
    config = one(objects, "ConfigMap", "dalc")["data"]
    assert config["OTEL_SDK_DISABLED"] == "false"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://dalc-jaeger:4317"
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    jaeger = containers(one(objects, "Deployment", "dalc-jaeger"))[0]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")
    ports = {port["port"] for port in one(objects, "Service", "dalc-jaeger")["spec"]["ports"]}
    assert ports == {16686, 4317, 4318}


def test_tracing_over_http_uses_the_otlp_http_port():
    objects = render((CHART / "ci" / "tracing-values.yaml",), ("tracing.protocol=http/protobuf",))
    assert one(objects, "ConfigMap", "dalc")["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://dalc-jaeger:4318"


def test_tracing_to_an_external_collector_deploys_no_jaeger():
    objects = render((CHART / "ci" / "tracing-values.yaml",), ("tracing.endpoint=http://otel.example:4317",))
    assert one(objects, "ConfigMap", "dalc")["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel.example:4317"
    assert not find(objects, "Deployment", "dalc-jaeger")


def test_rabbitmq_is_a_three_node_cluster_with_kubernetes_peer_discovery():
    objects = render()
    statefulset = one(objects, "StatefulSet", "dalc-rabbitmq")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["serviceName"] == "dalc-rabbitmq-nodes"
    assert containers(statefulset)[0]["image"].startswith("rabbitmq:")
    config = one(objects, "ConfigMap", "dalc-rabbitmq")["data"]
    assert "rabbitmq_peer_discovery_k8s" in config["enabled_plugins"]
    assert "cluster_formation.peer_discovery_backend = k8s" in config["rabbitmq.conf"]
    assert one(objects, "Service", "dalc-rabbitmq-nodes")["spec"]["publishNotReadyAddresses"] is True
    role = one(objects, "Role", "dalc-rabbitmq-peer-discovery")
    assert {"resources": ["endpoints"], "verbs": ["get"], "apiGroups": [""]} in role["rules"]
    binding = one(objects, "RoleBinding", "dalc-rabbitmq-peer-discovery")
    assert binding["subjects"][0]["name"] == pod_spec(statefulset)["serviceAccountName"]
    assert one(objects, "ConfigMap", "dalc")["data"]["DALC_QUEUE_TYPE"] == "quorum"


def test_single_node_rabbitmq_has_one_replica_and_no_disruption_budget():
    objects = render((CHART / "ci" / "single-node-rabbitmq-values.yaml",))
    statefulset = one(objects, "StatefulSet", "dalc-rabbitmq")
    assert statefulset["spec"]["replicas"] == 1
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert not find(objects, "PodDisruptionBudget", "dalc-rabbitmq")


def test_postgresql_keeps_its_data_on_a_persistent_volume():
    statefulset = one(render(), "StatefulSet", "dalc-postgresql")
    assert statefulset["spec"]["replicas"] == 1
    assert containers(statefulset)[0]["image"].startswith("postgres:")
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def notes(*settings: str, values_files: tuple = ()) -> str:
    """Return the notes `helm install` prints (a dry run as release dalc in namespace dalc)."""
    done = run_helm("install", "dalc", str(CHART), "--dry-run=client", "--namespace", "dalc",
                    *[arg for path in values_files for arg in ("--values", str(path))],
                    *[arg for setting in settings for arg in ("--set", setting)])
    return done.stdout.split("NOTES:", 1)[1]


def connection_figure(text: str) -> int:
    return int(re.search(r"dalc's pods hold up to (\d+) connections", text).group(1))


@pytest.mark.parametrize("settings, expected", [
    # (2 web pods + 1 surge) x 2 processes x (8 threads + 1 listener) + (2 + 1) x 1 x 8 + (1 + 1) + 2
    ((), 54 + 24 + 2 + 2),
    # workers autoscaling up to 10 pods: 10 + 3 surge
    (("worker.autoscaling.enabled=true",), 54 + 13 * 8 + 2 + 2),
    (("web.replicas=5", "web.threads=4", "worker.processes=2", "sweeper.replicas=2"),
     (5 + 2) * 2 * 5 + 3 * 2 * 8 + (2 + 1) + 2),
])
def test_install_notes_give_the_most_connections_dalc_holds_on_postgresql(settings, expected):
    text = notes(*settings)
    assert connection_figure(text) == expected
    assert "the bundled server accepts 200 (postgresql.maxConnections)" in text


def test_the_bundled_postgresql_accepts_the_configured_connections():
    for settings, value in [((), "200"), (("postgresql.maxConnections=450",), "450")]:
        statefulset = one(render(settings=settings), "StatefulSet", "dalc-postgresql")
        assert containers(statefulset)[0]["args"] == ["-c", f"max_connections={value}"]


def test_values_that_could_exhaust_the_bundled_postgresql_are_refused():
    # 82 connections with the defaults; the server keeps 3 of its max_connections for superusers.
    assert render(settings=("postgresql.maxConnections=85",))
    done = run_helm(*template_args(settings=("postgresql.maxConnections=84",)), check=False)
    assert done.returncode != 0
    assert "may hold 82 connections to the bundled PostgreSQL at once, more than the 81" in done.stderr
    assert "raise postgresql.maxConnections" in done.stderr
    many = ("worker.autoscaling.enabled=true", "worker.autoscaling.maxReplicas=30")
    assert run_helm(*template_args(settings=many), check=False).returncode != 0
    assert render(settings=(*many, "postgresql.maxConnections=400"))


EXTERNAL_DATABASE = ("postgresql.enabled=false", "externalDatabase.url=postgresql://u:p@db.example:5432/dalc")


def test_an_external_postgresql_is_not_checked_unless_told_its_limit_but_the_notes_give_the_figure():
    external = (*EXTERNAL_DATABASE, "worker.autoscaling.enabled=true", "worker.autoscaling.maxReplicas=30")
    text = notes(*external)
    assert connection_figure(text) == 54 + 38 * 8 + 2 + 2
    assert "your server must accept that many" in text
    assert "externalDatabase.maxConnections makes the chart check" in text


def test_values_that_could_need_more_than_externalDatabase_maxConnections_are_refused():
    # 82 connections with the defaults.
    text = notes(*EXTERNAL_DATABASE, "externalDatabase.maxConnections=82")
    assert connection_figure(text) == 82
    assert "your server gives dalc 82 (externalDatabase.maxConnections)" in text
    done = run_helm(*template_args(settings=(*EXTERNAL_DATABASE, "externalDatabase.maxConnections=81")), check=False)
    assert done.returncode != 0
    assert ("may hold 82 connections to the external PostgreSQL at once, more than "
            "externalDatabase.maxConnections=81") in done.stderr
    negative = run_helm(*template_args(settings=(*EXTERNAL_DATABASE, "externalDatabase.maxConnections=-1")),
                        check=False)
    assert negative.returncode != 0 and "maxConnections" in negative.stderr


@pytest.mark.parametrize("settings, pool", [
    ((), "20"),
    (("web.threads=24",), "28"),
    (("worker.threads=40",), "44"),
    (("web.threads=24", "config.extra.DALC_DB_POOL_SIZE=50"), "50"),
])
def test_the_pool_holds_a_connection_for_every_thread_and_dalc_accepts_the_config_map(settings, pool):
    data = one(render(settings=settings), "ConfigMap", "dalc")["data"]
    assert data["DALC_DB_POOL_SIZE"] == pool
    # What the web and the sweeper read (the workers take their thread count as an argument instead).
    assert Config.from_env(data).db_pool_size == int(pool)


def test_kind_values_expose_the_node_ports_that_kind_cluster_yaml_maps():
    kind_cluster = yaml.safe_load((ROOT / "kind-cluster.yaml").read_text())
    [node] = kind_cluster["nodes"]
    assert node["role"] == "control-plane"
    assert node["labels"]["ingress-ready"] == "true"
    mapped = {m["hostPort"]: m["containerPort"] for m in node["extraPortMappings"]}
    assert mapped == {8080: 30001, 5672: 30672, 15672: 31672, 5432: 31234}

    objects = render((KIND_VALUES,))
    node_ports = {port["name"]: port["nodePort"] for service in find(objects, "Service")
                  if service["spec"].get("type") == "NodePort" for port in service["spec"]["ports"]}
    assert node_ports == {"http": 30001, "amqp": 30672, "management": 31672, "postgresql": 31234}


def test_notes_tell_how_to_reach_dalc_and_jaeger():
    text = notes(values_files=(KIND_VALUES, CHART / "ci" / "tracing-values.yaml"))
    assert "http://localhost:8080" in text
    assert "helm test dalc" in text
    assert "port-forward --namespace dalc service/dalc-jaeger 16686:16686" in text


def _keys_without_comment(path):
    """Return values-file keys that are not right below a comment (inside commented objects excepted)."""
    missing, stack, previous = [], [], ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = re.match(r"\s*([A-Za-z][\w.-]*):", line)
        if line.lstrip().startswith("#") or line.lstrip().startswith("-") or not match:
            previous = line
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        passthrough = any(commented_whole for _, commented_whole in stack)
        if not passthrough and not previous.lstrip().startswith("#"):
            missing.append(f"{path.name}:{number}: {match.group(1)}")
        # An object whose children are Kubernetes fields is commented as a whole.
        stack.append((indent, match.group(1) in _PASSED_THROUGH))
        previous = line
    return missing


_PASSED_THROUGH = {"resources", "podSecurityContext", "securityContext", "readinessProbe",
                   "livenessProbe"}


@pytest.mark.parametrize("path", [CHART / "values.yaml", KIND_VALUES,
                                  *(chart / "values.yaml" for chart in SUBCHARTS)],
                         ids=lambda path: str(path.relative_to(CHART)))
def test_values_files_comment_every_key(path):
    assert _keys_without_comment(path) == []


@pytest.mark.parametrize("chart", [CHART, *SUBCHARTS], ids=lambda path: path.name)
def test_values_schemas_are_strict(chart):
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False

    def walk(node, where):
        if node.get("properties") and "additionalProperties" not in node and where not in _OPEN_OBJECTS:
            pytest.fail(f"{chart.name}: {where} accepts unknown keys")
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{where}.{key}")

    walk(schema, "")
    defaults = set(yaml.safe_load((chart / "values.yaml").read_text()))
    assert defaults <= set(schema["properties"])


# Objects whose keys a subchart's own schema checks, or that Kubernetes checks.
_OPEN_OBJECTS = {".postgresql", ".rabbitmq", ".podSecurityContext", ".securityContext"}


def test_the_makefile_has_the_kind_workflow_targets():
    snippet = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", snippet, re.MULTILINE))
    documented = set(re.findall(r"^## ([a-z-]+):", snippet, re.MULTILINE))
    assert documented == targets
    assert {"create-cluster", "build", "deploy", "teardown", "helm-lint"} <= targets
    phony = set(" ".join(re.findall(r"^\.PHONY:(.*)$", snippet, re.MULTILINE)).split())
    assert targets <= phony
    assert "kind create cluster" in snippet and "--config kind-cluster.yaml" in snippet
    assert "kind load docker-image" in snippet
    assert "upgrade --install" in snippet and "--wait" in snippet


def test_a_cron_job_runs_dalc_purge_with_the_retention_settings():
    objects = render()
    cron = one(objects, "CronJob", "dalc-purge")
    assert cron["spec"]["schedule"] == "*/10 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    purge = containers(cron)[0]
    assert purge["command"] == ["dalc", "purge"]
    assert purge["envFrom"] == [{"configMapRef": {"name": "dalc"}}]
    assert env_of(purge)["DALC_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "dalc-credentials", "key": "database-url"}
    assert pod_spec(cron)["restartPolicy"] == "Never"
    config = one(objects, "ConfigMap", "dalc")["data"]
    assert (config["DALC_TASK_RETENTION"], config["DALC_IDEMPOTENCY_RETENTION"]) == ("7d", "24h")

    objects = render(settings=("purge.enabled=false", "config.taskRetention=12h", "purge.schedule=0 * * * *"))
    assert not find(objects, "CronJob")
    assert one(objects, "ConfigMap", "dalc")["data"]["DALC_TASK_RETENTION"] == "12h"


@pytest.mark.parametrize("setting", ["config.taskRetention=7 days", "config.idempotencyRetention=1w",
                                     "purge.enabled=yes"])
def test_the_schema_refuses_a_retention_dalc_would_refuse(setting):
    done = run_helm(*template_args(settings=(setting,)), check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
