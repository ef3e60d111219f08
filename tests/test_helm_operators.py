"""The chart's objects for a cluster's operators: monitoring, Grafana, KEDA, and NetworkPolicies.

Each is off by default and rendered here with `ci/operators-values.yaml`. The Prometheus Operator's
and KEDA's kinds are validated against models generated from their published CRDs (see
harness.helm_support.validate); the rest is checked by structure: what each object selects, and
that the alerts and the dashboard read metrics that dalc exports.
"""
from __future__ import annotations

import json

import promql_parser
import pytest

from app.telemetry import metrics
from app.telemetry.exposition import QueueDepth
from app.web.metrics import OverdueTasks
from harness.helm_support import (
    CHART,
    containers,
    find,
    one,
    pod_spec,
    render,
    run_helm,
    secret_data,
    template_args,
    validate,
)

OPERATORS = (CHART / "ci" / "operators-values.yaml",)
ALERTS = {"DalcBacklogGrowing", "DalcDeadLetters", "DalcFailureRatioHigh", "DalcNoWorkerConsuming",
          "DalcTasksOverdue"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication", "NetworkPolicy"}


def matches(selector: dict, labels: dict) -> bool:
    """Tell whether a label selector (matchLabels only, as the chart writes them) selects labels."""
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"]["labels"]


def workloads(objects) -> list[dict]:
    return [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet", "Job")]


def exported_samples() -> set[str]:
    """Every sample name dalc's web and workers can serve on /metrics."""
    families = [family for group in (metrics.web(), metrics.worker()) for metric in vars(group).values()
                for family in metric.describe()]
    families += list(QueueDepth(lambda: {}).collect())
    families += OverdueTasks(60, 5).describe()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    return {family.name + suffix for family in families for suffix in suffixes[family.type]}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (it must parse)."""
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def test_operator_objects_are_off_by_default():
    objects = render()
    assert not [obj for obj in objects if obj["kind"] in OPERATOR_KINDS]
    assert not find(objects, "Service", "dalc-worker-metrics")
    assert not find(objects, "ConfigMap", "dalc-dashboard")


@pytest.mark.parametrize("kind", sorted(OPERATOR_KINDS))
def test_operator_objects_render_and_pass_their_schemas(kind):
    found = find(render(OPERATORS), kind)
    assert found
    for obj in found:
        validate(obj)


@pytest.mark.parametrize("change, message", [
    (lambda spec: spec["endpoints"][0].update(intervall="30s"), "unknown"),
    (lambda spec: spec["endpoints"][0].update(port=["http"]), "port"),
])
def test_the_crd_check_refuses_unknown_fields_and_wrong_types(change, message):
    monitor = json.loads(json.dumps(one(render(OPERATORS), "ServiceMonitor", "dalc-web")))
    change(monitor["spec"])
    with pytest.raises(ValueError, match=message):
        validate(monitor)


def monitored_service(objects, monitor: dict) -> dict:
    """The one Service a ServiceMonitor selects (its name is the scrape job's name)."""
    [service] = [s for s in find(objects, "Service") if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    return service


@pytest.mark.parametrize("component, service_name, settings", [
    ("web", "dalc-web-metrics", ()),
    ("web", "dalc-web", ("web.metrics.port=0",)),
    ("worker", "dalc-worker-metrics", ()),
])
def test_service_monitors_reach_the_metrics_port_of_the_web_and_the_workers(component, service_name, settings):
    objects = render(OPERATORS, settings)
    monitor = one(objects, "ServiceMonitor", f"dalc-{component}")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["dalc"]}
    service = monitored_service(objects, monitor)
    assert service["metadata"]["name"] == service_name
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    deployment = one(objects, "Deployment", f"dalc-{component}")
    assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    [target] = [p for p in containers(deployment)[0]["ports"] if p["name"] == port["targetPort"]]
    # The port the process serves /metrics on: the one its configuration names.
    variable = {"web": "DALC_WEB_METRICS_PORT", "worker": "DALC_WORKER_METRICS_PORT"}[component]
    served = int(one(objects, "ConfigMap", "dalc")["data"][variable]) or int(
        one(objects, "ConfigMap", "dalc")["data"]["DALC_PORT"])
    assert target["containerPort"] == served
    if service_name.endswith("-metrics"):
        assert service["spec"]["clusterIP"] == "None" and len(service["spec"]["ports"]) == 1


@pytest.mark.parametrize("settings", [(), ("web.metrics.port=0",)])
def test_the_alerts_read_the_jobs_the_service_monitors_scrape(settings):
    objects = render(OPERATORS, settings)
    jobs = {monitor["metadata"]["name"]: monitored_service(objects, monitor)["metadata"]["name"]
            for monitor in find(objects, "ServiceMonitor")}
    [group] = one(objects, "PrometheusRule", "dalc")["spec"]["groups"]
    alerts = {alert["alert"]: alert["expr"] for alert in group["rules"]}
    assert f'job="{jobs["dalc-web"]}"' in alerts["DalcTasksOverdue"]
    assert f'job="{jobs["dalc-worker"]}"' in alerts["DalcNoWorkerConsuming"]


def test_without_worker_metrics_only_the_web_is_monitored_and_alerts_are_refused():
    settings = ("monitoring.serviceMonitor.enabled=true", "worker.metrics.enabled=false")
    assert [m["metadata"]["name"] for m in find(render(settings=settings), "ServiceMonitor")] == ["dalc-web"]
    done = run_helm(*template_args(settings=(*settings, "monitoring.prometheusRule.enabled=true")), check=False)
    assert done.returncode != 0 and "needs worker.metrics.enabled" in done.stderr


def test_the_prometheus_rule_alerts_on_what_an_operator_can_act_on():
    rule = one(render(OPERATORS), "PrometheusRule", "dalc")
    [group] = rule["spec"]["groups"]
    alerts = {alert["alert"]: alert for alert in group["rules"]}
    assert set(alerts) == ALERTS
    known = exported_samples() | {"up"}
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and len(alert["annotations"]["description"]) > 80, name
        read = metric_names(alert["expr"])
        assert read and read <= known, f"{name} reads {read - known}, which dalc does not export"
        # Every selector is scoped to this release's scrape jobs.
        assert alert["expr"].count("{") == alert["expr"].count('namespace="dalc"'), name
    assert 'queue="dalc.XQ"' in alerts["DalcDeadLetters"]["expr"]
    assert "dalc_tasks_overdue" in alerts["DalcTasksOverdue"]["expr"]
    assert 'job="dalc-worker-metrics"' in alerts["DalcNoWorkerConsuming"]["expr"]


def test_the_rule_thresholds_come_from_values(tmp_path):
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("monitoring: {prometheusRule: {backlogThreshold: 50, failureRatioThreshold: 0.2}}\n")
    rule = one(render((*OPERATORS, thresholds)), "PrometheusRule", "dalc")
    alerts = {alert["alert"]: alert["expr"] for alert in rule["spec"]["groups"][0]["rules"]}
    assert "> 50\n" in alerts["DalcBacklogGrowing"]
    assert alerts["DalcFailureRatioHigh"].rstrip().endswith("> 0.2")


def test_the_grafana_dashboard_is_labelled_for_the_sidecar_and_reads_dalcs_metrics():
    config_map = one(render(OPERATORS), "ConfigMap", "dalc-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "dalc"
    dashboard = json.loads(config_map["data"]["dalc.json"])
    assert dashboard["uid"] == "dalc-overview"
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"datasource", "namespace", "queue"}
    known = exported_samples()
    read = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expression = target["expr"].replace("$__rate_interval", "5m").replace("$namespace", "dalc")
            read |= metric_names(expression.replace("$queue", "dalc"))
    assert read <= known, f"the dashboard reads {read - known}, which dalc does not export"
    assert {"dalc_tasks_finished_total", "dalc_queue_messages", "dalc_tasks_overdue"} <= read


def test_keda_scales_the_workers_on_the_queue_length_with_the_broker_url_from_the_secret():
    objects = render(OPERATORS)
    scaled = one(objects, "ScaledObject", "dalc-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "dalc-worker"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 8)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {"protocol": "amqp", "queueName": "dalc", "mode": "QueueLength", "value": "100"}
    auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [reference] = auth["spec"]["secretTargetRef"]
    assert reference["parameter"] == "host"
    assert secret_data(one(objects, "Secret", reference["name"]))[reference["key"]].startswith("amqp://")
    assert not find(objects, "HorizontalPodAutoscaler")
    assert "replicas" not in one(objects, "Deployment", "dalc-worker")["spec"]


def test_the_cpu_autoscaler_stays_the_other_choice():
    objects = render((CHART / "ci" / "worker-autoscaling-values.yaml",))
    assert one(objects, "HorizontalPodAutoscaler", "dalc-worker")
    assert not find(objects, "ScaledObject")


def test_bundled_services_accept_only_dalcs_pods_and_rabbitmq_its_peers():
    objects = render(OPERATORS)
    dalc_pods = [obj for obj in workloads(objects) if pod_labels(obj)["app.kubernetes.io/name"] == "dalc"]
    assert {obj["metadata"]["name"] for obj in dalc_pods} == {"dalc-web", "dalc-worker", "dalc-sweeper",
                                                               "dalc-migrate"}
    for service in ("postgresql", "rabbitmq"):
        policy = one(objects, "NetworkPolicy", f"dalc-{service}")
        statefulset = one(objects, "StatefulSet", f"dalc-{service}")
        [selected] = [obj for obj in workloads(objects) if matches(policy["spec"]["podSelector"], pod_labels(obj))]
        assert selected is statefulset
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        client_rule = policy["spec"]["ingress"][0]
        port_names = {p["name"] for p in containers(statefulset)[0]["ports"]}
        assert [p["port"] for p in client_rule["ports"]] == [{"postgresql": "postgresql", "rabbitmq": "amqp"}[service]]
        assert client_rule["ports"][0]["port"] in port_names
        pod_peers = [peer for peer in client_rule["from"] if "podSelector" in peer]
        allowed = [obj for obj in workloads(objects)
                   if any(matches(peer["podSelector"], pod_labels(obj)) for peer in pod_peers)]
        assert {obj["metadata"]["name"] for obj in allowed} == {obj["metadata"]["name"] for obj in dalc_pods}
        assert matches(pod_peers[0]["podSelector"], one(objects, "Pod", "dalc-test-expression")["metadata"]["labels"])
    rabbitmq = one(objects, "NetworkPolicy", "dalc-rabbitmq")["spec"]["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in rabbitmq[0]["from"]
    [peers] = rabbitmq[1]["from"]
    assert "ports" not in rabbitmq[1]
    assert matches(peers["podSelector"], pod_labels(one(objects, "StatefulSet", "dalc-rabbitmq")))
    assert not matches(peers["podSelector"], pod_labels(one(objects, "Deployment", "dalc-web")))


def test_dalcs_pods_accept_traffic_on_their_own_ports_only():
    objects = render(OPERATORS)
    for component, ports in (("web", ["http", "metrics"]), ("worker", ["metrics"]), ("sweeper", [])):
        policy = one(objects, "NetworkPolicy", f"dalc-{component}")
        deployment = one(objects, "Deployment", f"dalc-{component}")
        selected = [obj for obj in workloads(objects) if matches(policy["spec"]["podSelector"], pod_labels(obj))]
        assert selected == [deployment]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]] == ports
        served = {port["name"] for port in containers(deployment)[0].get("ports", [])}
        assert set(ports) == served
    edge = {"namespaceSelector": {"matchLabels": {"team": "edge"}}}
    monitoring = {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}
    objects = render(OPERATORS, ("networkPolicy.webFrom[0].namespaceSelector.matchLabels.team=edge",
                                 "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring"))
    web, worker = (one(objects, "NetworkPolicy", f"dalc-{name}")["spec"]["ingress"] for name in ("web", "worker"))
    assert [(rule["ports"][0]["port"], rule["from"]) for rule in web] == [("http", [edge]), ("metrics", [monitoring])]
    assert [(rule["ports"][0]["port"], rule["from"]) for rule in worker] == [("metrics", [monitoring])]
    # With /metrics on the web's own port, the web takes nothing but http.
    web = one(render(OPERATORS, ("web.metrics.port=0",)), "NetworkPolicy", "dalc-web")
    assert [port["port"] for rule in web["spec"]["ingress"] for port in rule["ports"]] == ["http"]


def test_external_services_get_no_network_policy_of_the_chart():
    objects = render((CHART / "ci" / "external-services-values.yaml",), ("networkPolicy.enabled=true",))
    assert {policy["metadata"]["name"] for policy in find(objects, "NetworkPolicy")} == {
        "dalc-web", "dalc-worker", "dalc-sweeper"}
    assert pod_spec(one(objects, "Deployment", "dalc-web"))


@pytest.mark.parametrize("setting", [
    "worker.autoscaling.type=memory",
    "monitoring.prometheusRule.failureRatioThreshold=2",
    "monitoring.serviceMonitor.interval=often",
    "networkPolicy.everything=true",
])
def test_the_values_schema_refuses_wrong_operator_settings(setting):
    done = run_helm(*template_args(settings=(setting,)), check=False)
    assert done.returncode != 0, f"{setting} was accepted"
    assert "schema" in done.stderr.lower(), done.stderr
