"""Deployment files stay valid and agree with the code.

Checks docker-compose.yml with docker-compose, Prometheus config and alert rules with
promtool (including the rule unit tests), and that every metric name an alert or a Grafana
panel queries is one that streams/metrics.py exports. Missing tools fail the test:
`apt-get install docker-compose prometheus` (promtool ships with prometheus).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

import streams.metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
WORKER_PORT = 6066

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Series that exist without streams/metrics.py: Prometheus' own per-target series.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package}")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )


# --- the metrics streams/metrics.py exports -------------------------------------------------

# Sample names each metric type exposes in the text format (prometheus_client).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name /metrics can expose, with the label names it may carry.

    Names come from prometheus_client's default REGISTRY (what the worker's /metrics
    serves): a labelled metric with no children yet has no samples, so names are derived
    from each family's type as well. Label names come from the metric objects in
    streams.metrics (`_labelnames`: prometheus_client has no public accessor).
    """
    labels_by_family = {
        m._name: frozenset(m._labelnames)
        for m in vars(streams.metrics).values()
        if isinstance(m, prometheus_client.metrics.MetricWrapperBase)
    }
    series: dict[str, frozenset[str]] = {}
    for family in prometheus_client.REGISTRY.collect():
        labels = labels_by_family.get(family.name, frozenset())
        for suffix in _SUFFIXES.get(family.type, ("",)):
            extra = {"le"} if suffix == "_bucket" else set()
            series[family.name + suffix] = labels | extra
        for sample in family.samples:
            series.setdefault(sample.name, frozenset(sample.labels))
    missing = set(labels_by_family) - {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not missing, f"metrics in streams/metrics.py not in the default registry: {missing}"
    return series


def test_registry_exports_the_kudos_metrics() -> None:
    series = exported_series()
    assert "kudos_events_consumed_total" in series
    assert series["kudos_decisions_refused_total"] == {"reason"}
    assert series["kudos_batch_seconds_bucket"] == {"stage", "le"}


# --- a small PromQL reader: enough to find metric and label names ---------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    ]
)


def promql_names(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric selectors as (name, matcher label names), grouping label names) in `expr`."""
    text = _STRING.sub('""', expr)
    selectors: list[tuple[str, set[str]]] = []

    def selector(m: re.Match[str]) -> str:
        labels = set(_MATCHER_LABEL.findall(m.group(2)))
        if m.group(1) and m.group(1) not in _KEYWORDS:
            selectors.append((m.group(1), labels))
            return " "
        assert not labels - {"__name__"}, f"selector without a metric name in {expr!r}"
        return " "

    text = _SELECTOR.sub(selector, text)
    grouping: set[str] = set()
    for group in _GROUPING.findall(text):
        grouping |= {label.strip() for label in group.split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    for name, call in _IDENT.findall(text):
        if not call and name not in _KEYWORDS:
            selectors.append((name, set()))
    return selectors, grouping


def test_promql_reader() -> None:
    selectors, grouping = promql_names(
        "histogram_quantile(0.99, sum by (le, stage) (rate(kudos_batch_seconds_bucket"
        '{job="kudos", instance=~"$instance"}[$__rate_interval]))) / on (job) group_left ()'
        " up offset 15m > bool 1e3"
    )
    assert selectors == [("kudos_batch_seconds_bucket", {"job", "instance"}), ("up", set())]
    assert grouping == {"le", "stage", "job"}


def rules() -> Iterator[dict[str, Any]]:
    """Every rule (alerting and recording) in alerts.yml."""
    for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]:
        yield from group["rules"]


def rule_expressions() -> Iterator[tuple[str, str]]:
    for rule in rules():
        yield rule.get("alert") or rule["record"], rule["expr"]


def alert_expressions() -> Iterator[tuple[str, str]]:
    for rule in rules():
        if "alert" in rule:
            yield rule["alert"], rule["expr"]


def recorded_series() -> dict[str, frozenset[str]]:
    """Series the recording rules create, with the labels their aggregation keeps."""
    recorded = {}
    for rule in rules():
        if "record" in rule:
            _, grouping = promql_names(rule["expr"])
            assert grouping, f"{rule['record']}: aggregate `by (...)` so its labels are known"
            recorded[rule["record"]] = frozenset(grouping)
    return recorded


def dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), {"_panel_datasource": panel.get("datasource"), **target}


def dashboard_prometheus_expressions() -> Iterator[tuple[str, str]]:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for title, target in dashboard_targets(dashboard):
            datasource = target.get("datasource") or target["_panel_datasource"] or {}
            if datasource.get("type", "prometheus") == "prometheus" and "expr" in target:
                yield f"{path.name}: {title}", target["expr"]
        for variable in dashboard.get("templating", {}).get("list", []):
            var_ds = variable.get("datasource") or {}
            if (
                variable.get("type") == "query"
                and variable.get("definition")
                and var_ds.get("type", "prometheus") == "prometheus"
            ):
                definition = variable["definition"]
                inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", definition)
                yield f"{path.name}: ${variable['name']}", inner.group(1) if inner else definition


def _check_names(where: str, expr: str) -> list[str]:
    known = {**exported_series(), **PROMETHEUS_SERIES, **recorded_series()}
    selectors, grouping = promql_names(expr)
    problems = []
    allowed_grouping = set(TARGET_LABELS)
    for name, labels in selectors:
        if name not in known:
            problems.append(f"{where}: metric {name!r} is not exported by streams/metrics.py")
            continue
        allowed = known[name] | TARGET_LABELS
        allowed_grouping |= allowed
        if labels - allowed:
            problems.append(f"{where}: {name} has no label(s) {sorted(labels - allowed)}")
    if not selectors:
        problems.append(f"{where}: no metric found in {expr!r}")
    if grouping - allowed_grouping:
        problems.append(
            f"{where}: groups by unknown label(s) {sorted(grouping - allowed_grouping)}"
        )
    return problems


def test_alerts_use_only_exported_metrics_and_labels() -> None:
    expressions = list(rule_expressions())
    assert expressions, "no rules in alerts.yml"
    problems = [p for name, expr in expressions for p in _check_names(f"alert {name}", expr)]
    assert not problems, "\n".join(problems)


def test_dashboards_use_only_exported_metrics_and_labels() -> None:
    expressions = list(dashboard_prometheus_expressions())
    assert expressions, "no Prometheus targets in the dashboards"
    problems = [p for where, expr in expressions for p in _check_names(where, expr)]
    assert not problems, "\n".join(problems)


def test_the_alerts_of_issue_5_exist() -> None:
    names = {name for name, _ in alert_expressions()}
    assert {
        "KudosWorkerDown",
        "KudosDLQMessagesIncreasing",
        "KudosClickHouseInsertFailures",
        "KudosDecisionsRefusedSpike",
        "KudosConsumerLagGrowing",
        "KudosFreshnessSLOBurnFast",
        "KudosFreshnessSLOBurnSlow",
        "KudosDLQRatioHigh",
        "KudosPartitionStalled",
    } <= names


def test_every_alert_has_a_severity_and_explains_itself() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    for rule in rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        # A comment explaining the rule and its thresholds sits right under `- alert:`.
        after = text.split(f"- alert: {name}\n", 1)[1].lstrip(" ")
        assert after.startswith("#"), f"{name}: no comment explaining the rule"


# Matchers on a histogram's `le` label must name a bound the histogram exports; the text
# format writes bounds as Go floats (le="10.0", not le="10").
_LE_MATCHER = re.compile(r'([a-zA-Z_:][\w:]*_bucket)\s*\{[^}]*\ble\s*=\s*"([^"]*)"')


def _exported_bucket_bounds() -> dict[str, set[str]]:
    bounds: dict[str, set[str]] = {}
    for m in vars(streams.metrics).values():
        if isinstance(m, prometheus_client.Histogram):
            bounds[m._name + "_bucket"] = {
                prometheus_client.utils.floatToGoString(b) for b in m._upper_bounds
            }
    return bounds


def test_histogram_bucket_matchers_name_exported_bounds() -> None:
    bounds = _exported_bucket_bounds()
    assert "10.0" in bounds["kudos_freshness_seconds_bucket"]
    exprs = list(rule_expressions()) + list(dashboard_prometheus_expressions())
    found = 0
    for where, expr in exprs:
        for name, le in _LE_MATCHER.findall(expr):
            found += 1
            assert le in bounds.get(name, set()), f"{where}: {name} has no bucket le={le!r}"
    assert found, "no le= matcher checked (the freshness SLO rules use one)"


# --- promtool -------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    promtool = _tool("promtool", "prometheus")
    _ok(_run(promtool, "check", "config", "deploy/prometheus/prometheus.yml"))


def test_promtool_check_rules() -> None:
    promtool = _tool("promtool", "prometheus")
    _ok(_run(promtool, "check", "rules", "deploy/prometheus/alerts.yml"))


def test_promtool_rule_unit_tests() -> None:
    promtool = _tool("promtool", "prometheus")
    _ok(_run(promtool, "test", "rules", "deploy/prometheus/alerts_test.yml"))


def test_alert_unit_tests_cover_every_alert() -> None:
    """Every alert has a unit test where it fires and one where it stays quiet."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    alerts = {name for name, _ in alert_expressions()}
    assert not alerts - firing, f"alerts without a firing unit test: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts without a quiet unit test: {sorted(alerts - quiet)}"
    assert not (firing | quiet) - alerts, f"tests of unknown alerts: {(firing | quiet) - alerts}"


# --- docker-compose -------------------------------------------------------------------------


@cache
def compose_config() -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (interpolated, anchors merged)."""
    docker_compose = _tool("docker-compose", "docker-compose")
    proc = _run(docker_compose, "-f", "docker-compose.yml", "config")
    _ok(proc)
    config: dict[str, Any] = yaml.safe_load(proc.stdout)
    return config


def test_compose_config_is_valid() -> None:
    docker_compose = _tool("docker-compose", "docker-compose")
    _ok(_run(docker_compose, "-f", "docker-compose.yml", "config", "-q"))


def _workers(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("command") == ["worker"]}


def test_compose_stack_is_wired() -> None:
    services = compose_config()["services"]
    assert {"kafka", "clickhouse", "migrate", "generator", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server")
    for name in ("kafka", "clickhouse"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"

    workers = _workers(services)
    assert len(workers) >= 2, "the stack runs at least two workers"
    host_ports = []
    for name, worker in workers.items():
        assert worker["depends_on"]["kafka"]["condition"] == "service_healthy", name
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = worker["environment"]
        assert env["KUDOS_KAFKA"] == "kafka:9092", name
        assert env["KUDOS_CLICKHOUSE"].startswith("clickhouse://kudos:"), name
        assert env["KUDOS_CLICKHOUSE"].endswith("@clickhouse:9000/kudos"), name
        (port,) = worker["ports"]
        host, _, container = str(port).rpartition(":")
        assert container.split("/")[0] == str(WORKER_PORT), name
        host_ports.append(host.rpartition(":")[2])
    assert len(set(host_ports)) == len(host_ports), f"workers share a host port: {host_ports}"

    ch_env = services["clickhouse"]["environment"]
    assert ch_env["CLICKHOUSE_USER"] == "kudos"
    assert "CLICKHOUSE_PASSWORD" in ch_env
    generator = services["generator"]["command"]
    assert generator[:2] == ["produce", "--synthetic"]
    assert "--bootstrap" in generator and generator[generator.index("--bootstrap") + 1] == (
        "kafka:9092"
    )


def test_prometheus_scrapes_every_compose_worker() -> None:
    workers = _workers(compose_config()["services"])
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "kudos"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:{WORKER_PORT}" for name in workers}
    assert (PROMETHEUS / config["rule_files"][0]).resolve() == (PROMETHEUS / "alerts.yml")


def test_compose_mounts_the_deploy_directories() -> None:
    services = compose_config()["services"]

    def sources(name: str) -> set[Path]:
        return {
            Path(v.split(":")[0]).resolve()
            for v in services[name].get("volumes", [])
            if v.startswith("/")
        }

    assert PROMETHEUS in sources("prometheus")
    assert {GRAFANA / "provisioning", GRAFANA / "dashboards"} <= sources("grafana")
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    dashboards_mount = next(
        v.split(":")[1] for v in services["grafana"]["volumes"] if "/dashboards:" in v
    )
    assert provider["providers"][0]["options"]["path"] == dashboards_mount


# --- Grafana --------------------------------------------------------------------------------


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard, dict)
    for key in ("uid", "title", "schemaVersion", "panels"):
        assert key in dashboard, f"{path.name}: no {key!r}"
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned dashboards carry no id"
    panels = list(all_panels(dashboard))
    assert panels
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids), f"{path.name}: panel without an integer id"
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids {ids}"
    for panel in panels:
        assert {"type", "title", "gridPos"} <= set(panel), panel.get("title")
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        ref_ids = [t.get("refId") for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"{panel['title']}: duplicate refIds"


def test_dashboard_uids_are_unique() -> None:
    assert DASHBOARDS, "no dashboards in deploy/grafana/dashboards"
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)), uids


def test_dashboards_use_provisioned_datasources() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/datasources.yml").read_text()
    )["datasources"]
    by_uid = {d["uid"]: d["type"] for d in provisioned}
    assert "prometheus" in by_uid.values()
    assert "grafana-clickhouse-datasource" in by_uid.values()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for title, target in dashboard_targets(dashboard):
            for ds in (target.get("datasource"), target["_panel_datasource"]):
                if isinstance(ds, dict) and not str(ds.get("uid", "")).startswith("$"):
                    assert by_uid.get(ds["uid"]) == ds["type"], f"{path.name}: {title}: {ds}"


def clickhouse_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, SQL) of every ClickHouse panel target and ClickHouse template variable."""
    for title, target in dashboard_targets(dashboard):
        if target.get("rawSql") is not None:
            yield title, target["rawSql"]
    for variable in dashboard.get("templating", {}).get("list", []):
        ds = variable.get("datasource") or {}
        if variable.get("type") == "query" and ds.get("type") == "grafana-clickhouse-datasource":
            query = variable["query"]
            yield f"${variable['name']}", query if isinstance(query, str) else query["rawSql"]


def test_clickhouse_panels_read_only_the_public_views() -> None:
    """BI-facing SQL goes through kudos.scores and kudos.badge_awards (the contract)."""
    for path in DASHBOARDS:
        for title, sql in clickhouse_queries(json.loads(path.read_text())):
            tables = set(re.findall(r"\b(?:FROM|JOIN)\s+([\w.`]+)", sql, flags=re.IGNORECASE))
            assert tables, f"{path.name}: {title}: no table in {sql!r}"
            assert tables <= {"kudos.scores", "kudos.badge_awards"}, f"{title}: {tables}"


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_kudos_image() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip()]
    instructions = [ln for ln in lines if not ln.startswith("#")]
    froms = [ln.split()[1] for ln in instructions if ln.upper().startswith("FROM ")]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms), froms
    final = instructions[max(i for i, ln in enumerate(instructions) if ln.startswith("FROM ")) :]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert f"EXPOSE {WORKER_PORT}" in final
    assert any(ln.startswith("HEALTHCHECK") and "/health" in ln for ln in final)
    assert 'ENTRYPOINT ["kudos"]' in final

    ignored = {
        ln.strip().rstrip("/")
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    for ln in instructions:
        if ln.startswith("COPY ") and "--from=" not in ln:
            for src in ln.split()[1:-1]:
                top = src.rstrip("/").split("/")[0]
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
                assert top not in ignored, f".dockerignore excludes {src}, which the image needs"
