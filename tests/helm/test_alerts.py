"""The chart's alerting rules pass `promtool check rules`, and its unit tests
(alerts_test.yaml: series that must fire each alert and series that must not)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from .rendering import DEFAULTS, one, render

HERE = Path(__file__).parent


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, (
        "promtool is not on PATH: install Debian's `prometheus` package "
        "(apt-get install prometheus), as .ci/run does"
    )
    return found


def _rules_file(directory: Path) -> Path:
    """The rules exactly as the chart's PrometheusRule carries them (its spec)."""
    values = {**DEFAULTS, "metrics": {"prometheusRule": {"enabled": True}}}
    rule = one(render(values), "PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def _promtool_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    checked = _promtool_run("check", "rules", str(_rules_file(tmp_path)), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_each_alert_fires_on_its_series_and_only_then(tmp_path: Path) -> None:
    _rules_file(tmp_path)
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)
    tested = _promtool_run("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation (the timer alert firing at 30 s overdue) fails promtool."""
    _rules_file(tmp_path)
    broken = (HERE / "alerts_test.yaml").read_text().replace("'30x20'", "'120x20'")
    (tmp_path / "alerts_test.yaml").write_text(broken)
    tested = _promtool_run("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert tested.returncode != 0 and "LoomTimersOverdue" in tested.stdout + tested.stderr
