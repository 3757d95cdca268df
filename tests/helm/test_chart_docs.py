"""The chart's README documents every value, and its dashboard and alerts query only
metrics that loom-redis workers export."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import REGISTRY

import loom_redis.metrics  # noqa: F401  # registers the worker's metrics

from .rendering import CHART, MONITORED, one, render


def _exported() -> set[str]:
    """The series names a worker exports: each metric's samples as the registry lists
    them (a histogram's _bucket, _sum and _count; an Info's _info), without labels."""
    names = set()
    for metric in REGISTRY.collect():
        if metric.name.startswith("loom_"):
            names.add(metric.name)
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}
            names.update(metric.name + s for s in suffixes.get(metric.type, ()))
            if metric.type == "info":
                names.add(metric.name + "_info")
    return names


EXPORTED = _exported()


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys |= _leaf_keys(value, f"{path}.")
        else:
            keys.add(path)
    return keys


def test_the_readme_table_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    assert documented == _leaf_keys(values)


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bloom_[a-z_]+\b", expr))


def test_the_dashboard_and_alerts_query_exported_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "loom-redis.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = one(render(MONITORED), "PrometheusRule")["spec"]["groups"][0]["rules"]
    exprs += [r["expr"] for r in rules]
    used = set().union(*map(_metrics_in, exprs))
    assert used <= EXPORTED, used - EXPORTED
    # The dashboard shows each of the signals.
    assert {
        "loom_tasks_total",
        "loom_queue_backlog",
        "loom_queue_lag",
        "loom_queue_pending",
        "loom_queue_oldest_pending_age_seconds",
        "loom_activity_duration_seconds_bucket",
        "loom_workflow_task_duration_seconds_bucket",
        "loom_schedule_to_start_seconds_bucket",
        "loom_workflow_duration_seconds_bucket",
        "loom_commit_conflicts_total",
        "loom_tasks_reclaimed_total",
        "loom_dead_letters_total",
        "loom_timers_due",
        "loom_timers_overdue_seconds",
        "loom_workers_live",
        "loom_tasks_in_flight",
        "loom_worker_concurrency",
    } <= used
