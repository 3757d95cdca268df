"""The chart renders (with Helm's own code) into manifests that Kubernetes, the
Prometheus operator and KEDA accept, carrying the values given; bad values are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from loom_redis.store import Keyspace

from .rendering import (
    CHART,
    DEFAULTS,
    EVERYTHING_OFF,
    EXISTING_SECRET_TLS,
    FULLNAME,
    MONITORED,
    NAMESPACE,
    URL,
    VALUE_SETS,
    WEB,
    WEB_EXISTING_SECRET_TLS,
    WEB_OWN_REDIS_USER,
    keda,
    kinds,
    one,
    render,
)

KUBERNETES_VERSION = "1.35.0"
CRDS = Path(__file__).parent / "crds"


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as the API server's strict field
    validation (kubectl's default) refuses them, except where the CRD keeps them."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if isinstance(schema.get("pattern"), str) and schema["pattern"].startswith("^(?i)"):
        # Go's RE2 takes a flag group anywhere; Python only at the start.
        strict["pattern"] = "(?i)^" + schema["pattern"][len("^(?i)") :]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    if "properties" in schema:
        strict["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    return strict


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        schemas[(crd["apiVersion"], crd["kind"])] = _strict(crd["schema"])
    return schemas


CRD_SCHEMAS = _crd_schemas()


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_matches_its_schema(name: str) -> None:
    for manifest in render(VALUE_SETS[name]):
        crd = CRD_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
        if crd is not None:
            jsonschema.validate(manifest, crd, cls=jsonschema.Draft7Validator)
        else:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_strict_checks_refuse_an_unknown_field() -> None:
    """The validation above can fail: a misspelt field is refused in both kinds."""
    manifests = render(keda("prometheus"))
    deployment = copy.deepcopy(one(manifests, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="envv"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(one(manifests, "ScaledObject"))
    scaled["spec"]["minReplicas"] = 1
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        jsonschema.validate(scaled, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


def _worker(manifests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_defaults() -> None:
    manifests = render(DEFAULTS)
    assert kinds(manifests) == {
        "Deployment",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
        "Job",
        "Pod",
    }
    pod, container = _worker(manifests)
    assert container["command"] == ["loom"]
    assert container["args"] == [
        "worker",
        "--queue=default",
        "--concurrency=16",
        "--lease=30",
        "--drain=30",
        "--eager-seconds=0.05",
        "--max-deliveries=5",
        "--metrics-port=9464",
        "--metrics-host=0.0.0.0",
    ]
    assert pod["terminationGracePeriodSeconds"] == 30 + 15
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    secret = one(manifests, "Secret", f"{FULLNAME}-redis")
    assert secret["stringData"] == {
        "url": URL,
        "address": "redis.prod.svc:6379",
        "username": "loom-worker",
        "password": "s3cret",
    }
    assert _env(container)["LOOM_REDIS_URL"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-redis", "key": "url"}
    }
    assert _env(container)["LOOM_NAMESPACE"] == "default"
    assert _env(container)["LOOM_LOG_FORMAT"] == "json"
    assert _env(container)["LOOM_DURABILITY"] == "async"
    assert one(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_the_hook_runs_loom_init_with_the_workers_connection() -> None:
    values = {**DEFAULTS, "loom": {"queues": ["a", "b"], "shards": 8, "retention": "7d"}}
    manifests = render(values)
    job = one(manifests, "Job", f"{FULLNAME}-init")
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["init", "--shards=8", "--retention=7d", "--queue=a", "--queue=b"]
    # Its Secret is a hook too, made before it: on a first install the release's own
    # Secret and ServiceAccount do not exist yet when hooks run.
    hook_secret = one(manifests, "Secret", f"{FULLNAME}-redis-hook")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    assert hook_secret["stringData"] == one(manifests, "Secret", f"{FULLNAME}-redis")["stringData"]
    assert _env(container)["LOOM_REDIS_URL"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-redis-hook", "key": "url"}
    }
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    _, worker = _worker(manifests)
    assert container["securityContext"] == worker["securityContext"]

    test_pod = one(manifests, "Pod", f"{FULLNAME}-test-workers")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    checker = test_pod["spec"]["containers"][0]
    assert checker["command"] == ["loom"]
    assert checker["args"] == ["workers", "--require-live=1", "--queue=a", "--queue=b"]


def test_existing_secret_and_tls() -> None:
    manifests = render(EXISTING_SECRET_TLS)
    assert "Secret" not in kinds(manifests) and "ServiceAccount" not in kinds(manifests)
    pod, container = _worker(manifests)
    env = _env(container)
    assert env["LOOM_REDIS_BASE_URL"] == {"secretKeyRef": {"name": "app-redis", "key": "loom-url"}}
    assert env["LOOM_REDIS_URL"] == (
        "$(LOOM_REDIS_BASE_URL)?ssl_ca_certs=/etc/loom/tls/ca.crt"
        "&ssl_certfile=/etc/loom/tls/tls.crt&ssl_keyfile=/etc/loom/tls/tls.key"
    )
    # The base URL comes first: Kubernetes expands $(VAR) only from earlier variables.
    names = [e["name"] for e in container["env"]]
    assert names.index("LOOM_REDIS_BASE_URL") < names.index("LOOM_REDIS_URL")
    assert env["LOOM_NAMESPACE"] == "shop" and env["APP_MODE"] == "prod"
    assert {"name": "redis-tls", "mountPath": "/etc/loom/tls", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]
    tls = next(v for v in pod["volumes"] if v["name"] == "redis-tls")["secret"]
    assert tls["secretName"] == "app-redis-tls"
    assert tls["items"] == [
        {"key": "ca.pem", "path": "ca.crt"},
        {"key": "tls.crt", "path": "tls.crt"},
        {"key": "tls.key", "path": "tls.key"},
    ]
    assert container["args"] == [
        "worker",
        "shop.workflows",
        "shop.activities",
        "--queue=orders",
        "--queue=mail",
        "--concurrency=8",
        "--lease=45",
        "--drain=50",
        "--eager-seconds=0",
        "--max-deliveries=7",
        "--metrics-port=9100",
        "--metrics-host=0.0.0.0",
    ]
    assert pod["terminationGracePeriodSeconds"] == 50 + 15
    assert pod["serviceAccountName"] == "shop"
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}}
    # The hook Job and the test pod reach Redis the same way.
    job = one(manifests, "Job", f"{FULLNAME}-init")["spec"]["template"]["spec"]
    test_pod = one(manifests, "Pod", f"{FULLNAME}-test-workers")["spec"]
    for other in (job, test_pod):
        assert other["containers"][0]["env"] == container["env"]
        assert other["containers"][0]["volumeMounts"] == container["volumeMounts"]
        assert other["volumes"] == pod["volumes"]


def test_a_fractional_drain_rounds_the_grace_period_up() -> None:
    pod, _ = _worker(render({**DEFAULTS, "worker": {"drain": 20.5}}))
    assert pod["terminationGracePeriodSeconds"] == 21 + 15


def test_keda_prometheus_scales_on_the_summed_backlog() -> None:
    manifests = render(keda("prometheus", maxReplicas=20))
    assert "replicas" not in one(manifests, "Deployment")["spec"]
    scaled = one(manifests, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {"name": FULLNAME}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 20)
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == (
        f'sum(max by (queue) (loom_queue_backlog{{job="{NAMESPACE}/{FULLNAME}", '
        'queue=~"orders|mail|audit"}))'
    )
    assert trigger["metadata"]["threshold"] == "8"  # worker.concurrency
    assert "TriggerAuthentication" not in kinds(manifests)


@pytest.mark.parametrize("mode", ["streamLength", "lagCount"])
def test_keda_redis_streams_sums_a_trigger_per_shard_stream(mode: str) -> None:
    manifests = render(keda("redis-streams", targetTasksPerPod=30, redisStreams={"mode": mode}))
    scaled = one(manifests, "ScaledObject")["spec"]
    triggers = scaled["triggers"]
    # A queue is two streams per shard: workflow tasks and activity tasks.
    assert len(triggers) == 3 * 4 * 2
    names = [t["name"] for t in triggers]
    modifiers = scaled["advanced"]["scalingModifiers"]
    assert modifiers["formula"].split(" + ") == names
    assert len(set(names)) == 24
    assert modifiers["target"] == "30"
    streams = {t["metadata"]["stream"] for t in triggers}
    keys = Keyspace("shop", 4)  # the store's own key names
    assert streams == {
        stream(shard, queue)
        for queue in ("orders", "mail", "audit")
        for shard in range(4)
        for stream in (keys.queue, keys.activity_queue)
    }
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert trigger["authenticationRef"] == {"name": FULLNAME}
        assert metadata["enableTLS"] == "true"
        if mode == "lagCount":
            assert (metadata["consumerGroup"], metadata["lagCount"]) == ("workers", "30")
        else:
            # A consumerGroup would make KEDA count the pending entries instead of XLEN.
            assert "consumerGroup" not in metadata and metadata["streamLength"] == "30"
    auth = one(manifests, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert auth == [
        {"parameter": "address", "name": "app-redis", "key": "address"},
        {"parameter": "username", "name": "app-redis", "key": "username"},
        {"parameter": "password", "name": "app-redis", "key": "password"},
        {"parameter": "ca", "name": "app-redis-tls", "key": "ca.pem"},
        {"parameter": "cert", "name": "app-redis-tls", "key": "tls.crt"},
        {"parameter": "key", "name": "app-redis-tls", "key": "tls.key"},
    ]


def test_monitoring_resources() -> None:
    manifests = render(MONITORED)
    monitor = one(manifests, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"]
        == one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    rules = one(manifests, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "LoomBacklogGrowing",
        "LoomDeadLetters",
        "LoomNoLiveWorkers",
        "LoomCommitConflictsSpiking",
        "LoomRedeliveriesSpiking",
        "LoomTimersOverdue",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook", "runbook_url"} <= set(rule["annotations"])
    dashboard = one(manifests, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "loom-redis.json").read_text())
    assert json.loads(dashboard["data"]["loom-redis.json"]) == shipped


def test_the_dashboard_runs_loom_web_from_the_same_image_behind_a_service() -> None:
    manifests = render(WEB)
    deployment = one(manifests, "Deployment", f"{FULLNAME}-web")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    worker_pod, worker = _worker(manifests)
    assert container["image"] == worker["image"]
    assert container["args"] == ["web", "--host=0.0.0.0", "--port=8000"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/api/me", "port": "http"}
    assert container["securityContext"] == worker["securityContext"]
    assert pod["securityContext"] == worker_pod["securityContext"]
    env = _env(container)
    assert env["LOOM_REDIS_URL"] == _env(worker)["LOOM_REDIS_URL"]
    assert env["LOOM_WEB_TOKEN"] == {"secretKeyRef": {"name": f"{FULLNAME}-web", "key": "token"}}
    assert one(manifests, "Secret", f"{FULLNAME}-web")["stringData"] == {"token": "open-sesame"}
    service = one(manifests, "Service", f"{FULLNAME}-web")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "web"
    # The workers' selector does not take the dashboard's pods.
    worker_selector = one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert worker_selector["app.kubernetes.io/component"] == "worker"

    manifests = render(WEB_EXISTING_SECRET_TLS)
    [container] = one(manifests, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"][
        "containers"
    ]
    assert _env(container)["LOOM_WEB_TOKEN"] == {"secretKeyRef": {"name": "dash", "key": "t"}}
    assert "--port=8080" in container["args"]
    assert {m["name"] for m in container["volumeMounts"]} >= {"tmp", "redis-tls"}
    assert not [
        m for m in manifests if m["metadata"]["name"] == f"{FULLNAME}-web" and m["kind"] == "Secret"
    ]
    insecure = render({**DEFAULTS, "web": {"enabled": True, "insecure": True}})
    [container] = one(insecure, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"][-1] == "--insecure"
    assert "LOOM_WEB_TOKEN" not in _env(container)


def test_the_dashboard_may_connect_as_a_redis_user_of_its_own() -> None:
    """A read-only user for the dashboard (docs/security.md's dashboard role), its URL in
    a Secret of the user's; the workers keep theirs. With TLS the dashboard's URL gets
    the same files."""
    own = WEB_OWN_REDIS_USER["web"]["existingRedisSecret"]
    manifests = render({**WEB, "web": {**WEB["web"], "existingRedisSecret": own}})
    [container] = one(manifests, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"][
        "containers"
    ]
    assert _env(container)["LOOM_REDIS_URL"] == {
        "secretKeyRef": {"name": "dashboard-redis", "key": "readonly-url"}
    }
    _, worker = _worker(manifests)
    assert _env(worker)["LOOM_REDIS_URL"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-redis", "key": "url"}
    }

    manifests = render(WEB_OWN_REDIS_USER)
    [container] = one(manifests, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"][
        "containers"
    ]
    env = _env(container)
    assert env["LOOM_REDIS_BASE_URL"] == {
        "secretKeyRef": {"name": "dashboard-redis", "key": "readonly-url"}
    }
    assert env["LOOM_REDIS_URL"].startswith("$(LOOM_REDIS_BASE_URL)?ssl_ca_certs=")


def test_a_cluster_url_reaches_the_workers() -> None:
    url = "redis+cluster://loom-worker:pw@redis-0:6379,redis-1:6379"
    manifests = render({"redis": {"url": url}})
    assert one(manifests, "Secret", f"{FULLNAME}-redis")["stringData"]["url"] == url


@pytest.mark.parametrize("named_by", ["url", "flag"])
def test_keda_redis_streams_on_a_cluster_uses_the_cluster_scaler(named_by: str) -> None:
    """A cluster URL (or, for a URL kept in an existing Secret, redis.cluster) makes each
    trigger KEDA's redis-cluster-streams, which finds each stream's node; its nodes come
    from the Secret's address key (host:port,host:port), as `addresses`."""
    url = "rediss+cluster://loom-worker:pw@redis-0:6379,redis-1:6379"
    tls = {"enabled": True, "secretName": "redis-tls"}
    redis: dict[str, Any] = {"url": url, "tls": tls}
    if named_by == "flag":
        redis = {"existingSecret": {"name": "app-redis"}, "cluster": True, "tls": tls}
    values = {
        "redis": redis,
        "loom": {"namespace": "shop", "queues": ["orders"], "shards": 2},
        "autoscaling": {"keda": {"enabled": True, "source": "redis-streams"}},
    }
    manifests = render(values)
    triggers = one(manifests, "ScaledObject")["spec"]["triggers"]
    assert len(triggers) == 2 * 2
    for trigger in triggers:
        assert trigger["type"] == "redis-cluster-streams"
        assert "databaseIndex" not in trigger["metadata"]  # a cluster has database 0 only
        assert trigger["metadata"]["enableTLS"] == "true"
    auth = one(manifests, "TriggerAuthentication")["spec"]["secretTargetRef"]
    secret = "app-redis" if named_by == "flag" else f"{FULLNAME}-redis"
    assert auth[0] == {"parameter": "addresses", "name": secret, "key": "address"}
    if named_by == "url":
        data = one(manifests, "Secret", secret)["stringData"]
        assert data["address"] == "redis-0:6379,redis-1:6379"
        assert (data["username"], data["password"]) == ("loom-worker", "pw")
    # A standalone server keeps the scaler of one server.
    standalone = render(keda("redis-streams"))
    assert {t["type"] for t in one(standalone, "ScaledObject")["spec"]["triggers"]} == {
        "redis-streams"
    }


def test_replicated_durability_reaches_the_workers() -> None:
    _, container = _worker(render({**DEFAULTS, "loom": {"durability": "replicated"}}))
    assert _env(container)["LOOM_DURABILITY"] == "replicated"


def test_everything_off() -> None:
    manifests = render(EVERYTHING_OFF)
    assert kinds(manifests) == {"Deployment", "Secret"}
    pod, _ = _worker(manifests)
    assert pod["serviceAccountName"] == "default"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker": {"concurrency": 0}}, "at '/worker/concurrency': minimum: got 0, want 1"),
        ({"worker": {"concurency": 4}}, "at '/worker': additional properties 'concurency'"),
        ({"redis": {"url": "http://x"}}, "at '/redis/url'"),
        ({"loom": {"queues": []}}, "at '/loom/queues'"),
        ({"loom": {"durability": "sync"}}, "at '/loom/durability'"),
        ({"loom": {"queues": ["a b"]}}, "at '/loom/queues/0'"),
        ({"autoscaling": {"keda": {"source": "redis"}}}, "at '/autoscaling/keda/source'"),
        (
            {"web": {"existingRedisSecret": {"name": "x", "urlKey": ""}}},
            "at '/web/existingRedisSecret/urlKey'",
        ),
        (
            {"podDisruptionBudget": {"maxUnavailable": 0}},
            "at '/podDisruptionBudget/maxUnavailable'",
        ),
    ],
)
def test_the_schema_refuses_bad_values(values: dict[str, Any], message: str) -> None:
    merged = {**values, "redis": {"url": URL, **values.get("redis", {})}}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as refused:
        chart.render(merged, name="orders", namespace=NAMESPACE)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "set redis.url"),
        (
            {"redis": {"url": URL, "tls": {"enabled": True, "secretName": "t"}}},
            "redis.url must be a rediss:// (or rediss+cluster://) URL",
        ),
        (
            {
                "redis": {
                    "url": "rediss://h:6380/0?x=1",
                    "tls": {"enabled": True, "secretName": "t"},
                }
            },
            "redis.url must have no query string",
        ),
        ({"redis": {"url": URL, "tls": {"enabled": True}}}, "set redis.tls.secretName"),
        (
            {**DEFAULTS, "autoscaling": {"keda": {"enabled": True, "minReplicas": 0}}},
            "minReplicas: 0 would leave no worker to fire durable timers",
        ),
        ({**DEFAULTS, "web": {"enabled": True}}, "web.enabled: set web.token"),
        (
            {**DEFAULTS, "web": {"token": "a", "existingTokenSecret": {"name": "b"}}},
            "set web.token or web.existingTokenSecret.name, not both",
        ),
    ],
)
def test_the_chart_refuses_values_that_cannot_work(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError) as refused:
        chart.render(values, name="orders", namespace=NAMESPACE)
    assert message in str(refused.value)


def test_the_chart_s_app_version_is_the_package_s() -> None:
    import loom_redis

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    # The image tag defaults to it.
    assert chart["appVersion"] == loom_redis.__version__
