"""The chart's README documents every value, and its dashboard and alerts query only
metrics that loom-redis workers export."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import click
import yaml
from prometheus_client import REGISTRY

import loom_redis.metrics  # noqa: F401  # registers the worker's metrics
from loom_redis.cli import main as cli

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


RUNBOOK = CHART.parents[1] / "docs" / "runbook.md"


def _anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_the_runbook_has_a_section_for_each_alert_where_its_url_points() -> None:
    runbook = RUNBOOK.read_text()
    anchors = {_anchor(h) for h in re.findall(r"^## (.+)$", runbook, re.MULTILINE)}
    rules = one(render(MONITORED), "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert rules
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://runbooks.example/loom#"), url
        assert url.split("#")[1] in anchors, f"docs/runbook.md has no section {rule['alert']}"


def test_the_runbook_names_real_commands_metrics_and_values() -> None:
    """Every `loom ...` command the runbook gives exists with its options, every metric
    it names is exported, every chart value it names is one."""
    runbook = RUNBOOK.read_text()
    commands = re.findall(r"`(loom [^`]+)`", runbook)
    assert len(commands) > 5
    for line in commands:
        words = shlex.split(line)[1:]
        command: click.Command = cli
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        assert not isinstance(command, click.Group), f"{line}: no such command"
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        for word in words:
            assert not word.startswith("-") or word in options, f"{line}: no option {word}"
    named_metrics = _metrics_in(runbook)
    families = {m for m in named_metrics if m.endswith("_")}  # loom_queue_*
    assert named_metrics - families <= EXPORTED, named_metrics - families - EXPORTED
    assert all(any(e.startswith(f) for e in EXPORTED) for f in families), families
    values = _leaf_keys(yaml.safe_load((CHART / "values.yaml").read_text()))
    named = set(
        re.findall(r"`((?:worker|metrics|autoscaling|redis|web|loom)\.[a-zA-Z.]+)`", runbook)
    )
    sections = {v.rsplit(".", 1)[0] for v in values}
    for value in named:
        assert value in values or value in sections, f"no chart value {value}"
