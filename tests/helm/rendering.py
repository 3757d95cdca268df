"""Rendering the chart with Helm's own code (helm-python-sdk binds Helm's Go library)
and the value sets the tests render it with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "loom-redis"
RELEASE = "orders"
NAMESPACE = "prod"
FULLNAME = "orders-loom-redis"
URL = "redis://loom-worker:s3cret@redis.prod.svc:6379/0"

helm.disable_logging()

# The chart's defaults need only the Redis URL.
DEFAULTS: dict[str, Any] = {"redis": {"url": URL}}

EXISTING_SECRET_TLS: dict[str, Any] = {
    "redis": {
        "existingSecret": {"name": "app-redis", "urlKey": "loom-url"},
        "tls": {"enabled": True, "secretName": "app-redis-tls", "caKey": "ca.pem"},
    },
    "loom": {"namespace": "shop", "queues": ["orders", "mail"], "retention": "7d"},
    "worker": {
        "modules": ["shop.workflows", "shop.activities"],
        "concurrency": 8,
        "lease": 45,
        "drain": 50,
        "eagerSeconds": 0,
        "maxDeliveries": 7,
        "metricsPort": 9100,
        "extraEnv": [{"name": "APP_MODE", "value": "prod"}],
        "extraVolumes": [{"name": "cache", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
    },
    "serviceAccount": {"create": False, "name": "shop"},
}

MONITORED: dict[str, Any] = {
    **DEFAULTS,
    "metrics": {
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "runbookUrl": "https://runbooks.example/loom"},
        "dashboard": {"enabled": True},
    },
}


def keda(source: str, **more: Any) -> dict[str, Any]:
    return {
        **EXISTING_SECRET_TLS,
        "loom": {"namespace": "shop", "queues": ["orders", "mail", "audit"], "shards": 4},
        "autoscaling": {"keda": {"enabled": True, "source": source, **more}},
    }


EVERYTHING_OFF: dict[str, Any] = {
    **DEFAULTS,
    "serviceAccount": {"create": False},
    "podDisruptionBudget": {"enabled": False},
    "init": {"enabled": False},
    "test": {"enabled": False},
    "metrics": {
        "podMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "dashboard": {"enabled": False},
    },
}

WEB: dict[str, Any] = {**DEFAULTS, "web": {"enabled": True, "token": "open-sesame"}}
WEB_EXISTING_SECRET_TLS: dict[str, Any] = {
    **EXISTING_SECRET_TLS,
    "web": {"enabled": True, "existingTokenSecret": {"name": "dash", "key": "t"}, "port": 8080},
}
# The dashboard as a Redis user of its own (docs/security.md's read-only role).
WEB_OWN_REDIS_USER: dict[str, Any] = {
    **WEB_EXISTING_SECRET_TLS,
    "web": {
        **WEB_EXISTING_SECRET_TLS["web"],
        "existingRedisSecret": {"name": "dashboard-redis", "urlKey": "readonly-url"},
    },
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "web": WEB,
    "web-existing-secret-tls": WEB_EXISTING_SECRET_TLS,
    "web-own-redis-user": WEB_OWN_REDIS_USER,
    "defaults": DEFAULTS,
    "existing-secret-tls": EXISTING_SECRET_TLS,
    "monitored": MONITORED,
    "keda-prometheus": keda("prometheus"),
    "keda-redis-streams": keda("redis-streams", minReplicas=2),
    "keda-redis-streams-lag": keda("redis-streams", redisStreams={"mode": "lagCount"}),
    "everything-off": EVERYTHING_OFF,
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifests `helm install` would apply for `values` (hooks and tests included)."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def one(manifests: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> set[str]:
    return {m["kind"] for m in manifests}
