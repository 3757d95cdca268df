"""The chart's README documents every value, and its dashboard and alerts query only
metrics that loom-redis workers export."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from .rendering import CHART, MONITORED, one, render

# The metrics of a worker (loom_redis/metrics.py and issue 13's queue, timer and
# worker gauges), with the series a histogram adds.
WORKER_METRICS = {
    "loom_tasks_total",
    "loom_activity_duration_seconds",
    "loom_workflow_task_duration_seconds",
    "loom_commit_conflicts_total",
    "loom_workflows_closed_total",
    "loom_dead_letters_total",
    "loom_timers_fired_total",
    "loom_eager_activities_total",
    "loom_unregistered_tasks_total",
    "loom_tasks_reclaimed_total",
    "loom_namespace_data_lost_total",
    "loom_tasks_in_flight",
    "loom_tasks_waiting_locally",
    "loom_worker_concurrency",
    "loom_queue_backlog",
    "loom_queue_lag",
    "loom_queue_pending",
    "loom_queue_oldest_pending_age_seconds",
    "loom_timers_due",
    "loom_timers_overdue_seconds",
    "loom_dead_letter_entries",
    "loom_workers_live",
    "loom_workflow_duration_seconds",
    "loom_schedule_to_start_seconds",
    "loom_build_info",
}
HISTOGRAMS = {
    "loom_activity_duration_seconds",
    "loom_workflow_task_duration_seconds",
    "loom_workflow_duration_seconds",
    "loom_schedule_to_start_seconds",
}
EXPORTED = WORKER_METRICS | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}


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
