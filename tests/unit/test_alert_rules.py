"""Prometheus alert rules and the Grafana dashboard against promtool and the metrics contract.

``promtool`` (Debian package ``prometheus``) checks the rules' syntax and runs the rule unit
tests in ``infra/prometheus/alerts_test.yml``. Without promtool these tests skip on a
developer machine and fail under ``CI=true``, where infra/setup.sh installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.errors import Reason

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "kpr.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"

# The metrics contract (the names the code exports); histograms add _bucket/_sum/_count.
CONTRACT_COUNTERS_AND_GAUGES = frozenset(
    {
        "kpr_producer_messages_total",
        "kpr_consumer_messages_total",
        "kpr_consumer_dead_letters_total",
        "kpr_crypto_failures_total",
        "kpr_queue_messages",
        "kpr_last_commit_timestamp_seconds",
        "kpr_pathway_stays",
        "kpr_pathway_incomplete_stays_overdue",
        "kpr_pathway_consultations",
        "kpr_consumer_ready",
        "kpr_certificate_expiry_timestamp_seconds",
        "kpr_producer_in_flight",
        "kpr_sender_dead_letters_total",
        "kpr_sender_events_stored",
        "kpr_sender_last_commit_timestamp_seconds",
    }
)
CONTRACT_HISTOGRAMS = frozenset(
    {"kpr_consumer_processing_seconds", "kpr_end_to_end_seconds", "kpr_clinical_to_commit_seconds"}
)
CONTRACT_METRICS = CONTRACT_COUNTERS_AND_GAUGES | {
    f"{name}{suffix}" for name in CONTRACT_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
# Series Prometheus itself provides.
BUILTIN_SERIES = frozenset({"up"})
CONTRACT_LABEL_VALUES = {
    ("kpr_queue_messages", "queue"): {"work", "dead_letter"},
    ("kpr_pathway_stays", "state"): {"complete", "incomplete"},
    ("kpr_certificate_expiry_timestamp_seconds", "certificate"): {
        "signing",
        "decryption",
        "decryption_previous",
        "trust_root",
        "trust_intermediate",
    },
    ("kpr_consumer_dead_letters_total", "reason"): {reason.value for reason in Reason},
    ("kpr_sender_dead_letters_total", "reason"): {reason.value for reason in Reason},
}

PROMQL_WORDS = frozenset(
    {
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "rate",
        "increase",
        "delta",
        "irate",
        "deriv",
        "time",
        "histogram_quantile",
        "bool",
        "offset",
        "le",
        "abs",
        "clamp_min",
        "clamp_max",
        "vector",
    }
)


def _promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI") == "true":
        pytest.fail("promtool is missing in CI: infra/setup.sh must install Debian's prometheus")
    return found


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]


def series_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not PromQL words,
    with label matchers, range selectors and string literals removed first."""
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\boffset\s+\w+", " ", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", stripped)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped))
    return {name for name in names if name not in PROMQL_WORDS}


def label_matchers(expr: str) -> list[tuple[str, str, str]]:
    """``(metric, label, value)`` for every equality matcher written ``metric{label="value"}``."""
    found = []
    for metric, body in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        for label, operator, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', body):
            if operator in ("=", "!="):
                found.append((metric, label, value))
    return found


def test_series_names_finds_metrics_not_functions() -> None:
    """The extractor keeps metric names and drops functions, grouping labels and matchers."""
    expr = 'sum by (reason) (increase(kpr_consumer_dead_letters_total{reason="x"}[15m])) > up'
    assert series_names(expr) == {"kpr_consumer_dead_letters_total", "up"}


def test_promtool_accepts_the_rules() -> None:
    """``promtool check rules`` finds the rule file valid."""
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    """The rule unit tests (not-ready, silent sender, dead letters, certificates) pass."""
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_prometheus_config() -> None:
    """``promtool check config`` accepts prometheus.yml (and the rule file it names)."""
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_only_contract_metrics() -> None:
    """Every series an alert selects is in the metrics contract (or Prometheus's ``up``)."""
    for rule in _rules():
        unknown = series_names(rule["expr"]) - CONTRACT_METRICS - BUILTIN_SERIES
        assert not unknown, f"{rule['alert']}: {sorted(unknown)}"


def test_dashboard_uses_only_contract_metrics() -> None:
    """Every series a dashboard panel queries is in the metrics contract."""
    exprs = list(_dashboard_exprs())
    assert exprs
    for expr in exprs:
        unknown = series_names(expr) - CONTRACT_METRICS - BUILTIN_SERIES
        assert not unknown, f"{expr}: {sorted(unknown)}"


def test_label_values_are_contract_values() -> None:
    """Label values matched in rules and panels are values the contract defines."""
    exprs = [rule["expr"] for rule in _rules()] + list(_dashboard_exprs())
    checked = 0
    for expr in exprs:
        for metric, label, value in label_matchers(expr):
            allowed = CONTRACT_LABEL_VALUES.get((metric, label))
            if allowed is not None:
                assert value in allowed, f"{metric}{{{label}={value!r}}}"
                checked += 1
    assert checked > 0


def test_every_alert_has_severity_and_an_operations_link() -> None:
    """Each alert has a severity and a description linking to an existing section of the guide."""
    guide = OPERATIONS.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", guide, flags=re.MULTILINE)
    }
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        links = re.findall(r"docs/OPERATIONS\.md#([a-z0-9-]+)", rule["annotations"]["description"])
        assert links, f"{rule['alert']} links to no section of docs/OPERATIONS.md"
        assert set(links) <= anchors, f"{rule['alert']}: {links} not headings of OPERATIONS.md"


def test_required_alerts_exist() -> None:
    """The alerts operations asked for are all there."""
    names = {rule["alert"] for rule in _rules()}
    assert {
        "KprConsumerDown",
        "KprConsumerNotReady",
        "KprDeadLettersGrowing",
        "KprWorkQueueGrowing",
        "KprSenderSilent",
        "KprCertificateExpiringSoon",
    } <= names
