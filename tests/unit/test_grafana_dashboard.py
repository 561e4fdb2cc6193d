"""clusters/grafana/raymlp-dashboard.json: a Grafana dashboard that Ray's Grafana imports, whose PromQL asks for
raymlp's metrics (raymlp.metrics.DEFINITIONS) by the names and labels Ray's metrics agent exports. No Ray is started.

How Ray 2.60 exports a metric `raymlp_x` (checked against a running Ray and Prometheus): the name gets Ray's `ray_`
prefix; a counter gets `_total`, a histogram `_bucket` (with `le`), `_sum` and `_count`, a gauge nothing. Ray adds
its own labels (SessionName, NodeAddress, Version, Component, WorkerId), KubeRay `ray_io_cluster`, Prometheus
`instance` and `job` (the scrape job). Because Prometheus keeps its own `job`, raymlp's tag `job` is stored as
`exported_job` (Ray's prometheus.yml does not set honor_labels): the dashboard must say `exported_job`, never `job`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from raymlp.metrics import DEFINITIONS

DASHBOARD = Path(__file__).resolve().parents[2] / "clusters" / "grafana" / "raymlp-dashboard.json"
DATASOURCE = "${datasource}"

#: The top-level keys of the dashboards Ray generates (ray/dashboard/modules/metrics/dashboards/*_base.json),
#: less `rayMeta`, which only Ray's own dashboards carry.
RAY_DASHBOARD_KEYS = {
    "annotations",
    "editable",
    "gnetId",
    "graphTooltip",
    "iteration",
    "links",
    "panels",
    "refresh",
    "schemaVersion",
    "style",
    "tags",
    "templating",
    "time",
    "timepicker",
    "timezone",
    "title",
    "uid",
    "version",
}
#: Labels every exported raymlp series has besides its tags: Ray's, KubeRay's and those Prometheus attaches.
RAY_LABELS = {"SessionName", "NodeAddress", "Version", "Component", "WorkerId", "ray_io_cluster", "instance"}
#: What every query filters on: the dashboard's session, cluster and job variables.
STANDARD_FILTERS = ('SessionName=~"$SessionName"', 'ray_io_cluster=~"$Cluster"', 'exported_job=~"$job"')
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
#: exported name -> (raymlp name, suffix)
EXPORTED = {
    f"ray_{name}{suffix}": (name, suffix)
    for name, (kind, _description, _tags, _boundaries) in DEFINITIONS.items()
    for suffix in SUFFIXES[kind]
}
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}

METRIC = re.compile(r"\bray_raymlp_[a-z_]+")
SELECTOR = re.compile(r"\b(ray_raymlp_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_REPLACE = re.compile(r',\s*"([A-Za-z_]\w*)"\s*,\s*"[^"]*"\s*,\s*"([A-Za-z_]\w*)"\s*,\s*"[^"]*"\s*\)')
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
VARIABLE = re.compile(r"\$\{?(\w+)")


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, rows included, and the panels a collapsed row holds."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _graph_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in _panels(dashboard) if panel["type"] != "row"]


def _variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def _queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target and every query variable."""
    queries = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"], target.get("legendFormat", ""))
        for panel in _graph_panels(dashboard)
        for target in panel["targets"]
    ]
    for variable in _variables(dashboard).values():
        if variable["type"] == "query":
            queries.append((f"variable {variable['name']}", variable["query"]["query"], ""))
    return queries


def _allowed_labels(exported: str) -> set[str]:
    name, suffix = EXPORTED[exported]
    tags = {"exported_job" if tag == "job" else tag for tag in DEFINITIONS[name][2]}
    return tags | RAY_LABELS | ({"le"} if suffix == "_bucket" else set())


def _matchers(body: str) -> list[tuple[str, str, str]]:
    matchers, position = [], 0
    while position < len(body.strip()):
        match = MATCHER.match(body, position)
        assert match, f"cannot read the label matchers {body!r} from position {position}"
        matchers.append(match.groups())
        position = match.end()
    return matchers


def test_the_dashboard_is_a_grafana_dashboard_model_like_rays() -> None:
    dashboard = _dashboard()
    assert RAY_DASHBOARD_KEYS <= dashboard.keys()
    assert dashboard["title"] == "raymlp" and dashboard["uid"] == "raymlp"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 27
    assert "id" not in dashboard or dashboard["id"] is None  # an import makes a new dashboard, never overwrites by id
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        position = panel["gridPos"]
        assert position["w"] + position["x"] <= 24 and position["h"] > 0, panel["title"]
    assert [panel["title"] for panel in panels if panel["type"] == "row"] == [
        "Serve",
        "Capture",
        "Data and training",
        "Monitoring",
        "Shadow versions",
    ]


def test_the_dashboard_has_the_keys_of_the_installed_rays_own_dashboards() -> None:
    spec = importlib.util.find_spec("ray")  # finds Ray without importing it
    assert spec is not None and spec.submodule_search_locations
    bases = sorted(
        Path(spec.submodule_search_locations[0]).glob(
            "dashboard/modules/metrics/dashboards/*_grafana_dashboard_base.json"
        )
    )
    assert bases, "Ray 2.60 ships its Grafana dashboards' base JSON; where did it go?"
    keys = _dashboard().keys()
    for base in bases:
        assert json.loads(base.read_text()).keys() - {"rayMeta"} <= keys, base.name


def test_every_panel_reads_the_datasource_variable() -> None:
    dashboard = _dashboard()
    datasource = _variables(dashboard)["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for panel in _graph_panels(dashboard):
        assert panel["datasource"] in (DATASOURCE, {"type": "prometheus", "uid": DATASOURCE}), panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
            assert target["expr"].strip() and target["refId"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
    for variable in _variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_the_job_app_and_model_variables_are_multi_select_label_values_with_all() -> None:
    variables = _variables(_dashboard())
    for name, label in (("job", "exported_job"), ("app", "app"), ("model", "model")):
        variable = variables[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"], name
        assert variable["allValue"] == ".*", name  # All also matches series without the label
        query = variable["query"]["query"]
        assert variable["definition"] == query and re.fullmatch(rf"label_values\(.+,\s*{label}\)", query), query
    for name in ("SessionName", "Cluster"):  # Ray's own filters, as Ray's dashboards have them
        assert variables[name]["type"] == "query"


def test_every_metric_name_exists_with_the_suffix_of_its_kind() -> None:
    for where, expr, _legend in _queries(_dashboard()):
        names = METRIC.findall(expr)
        assert names or where.startswith("variable"), f"{where} asks for no raymlp metric: {expr}"
        for name in names:
            assert name in EXPORTED, (
                f"{where}: {name} is no exported raymlp metric (ray_ + a DEFINITIONS name + its kind's suffix)"
            )


def test_every_label_is_a_tag_of_its_metric_or_one_of_rays() -> None:
    for where, expr, legend in _queries(_dashboard()):
        exported = set(METRIC.findall(expr))
        made = set()
        for destination, source in LABEL_REPLACE.findall(expr):
            made.add(destination)
            for name in exported:
                assert source in _allowed_labels(name), f"{where}: label_replace reads {source!r}, no label of {name}"
        for name, body in SELECTOR.findall(expr):
            for label, _operator, _value in _matchers(body):
                assert label != "job", f"{where}: raymlp's tag job is stored as exported_job in Prometheus"
                assert label in _allowed_labels(name), f"{where}: {name} has no label {label!r}"
            if where.startswith("panel"):
                for wanted in STANDARD_FILTERS:
                    assert wanted in body, f"{where}: {name} is not filtered by {wanted}"
                tags = DEFINITIONS[EXPORTED[name][0]][2]
                if "app" in tags:
                    assert 'app=~"$app"' in body, f"{where}: {name} is not filtered by the app variable"
                if "model" in tags:
                    assert 'model=~"$model"' in body, f"{where}: {name} is not filtered by the model variable"
        for match in METRIC.finditer(expr):
            assert expr[match.end() :].lstrip().startswith("{"), f"{where}: {match.group()} has no label selector"
        grouped = set()
        for clause in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                grouped.add(label)
                if label in made:
                    continue
                assert label != "job", f"{where}: raymlp's tag job is stored as exported_job in Prometheus"
                for name in exported:
                    assert label in _allowed_labels(name), f"{where}: groups by {label!r}, no label of {name}"
        for label in LEGEND_LABEL.findall(legend):
            assert label in grouped | made, f"{where}: the legend shows {label!r}, which the query aggregates away"
        if "_bucket" in expr:
            assert "histogram_quantile(" in expr and "le" in grouped, f"{where}: buckets without a quantile by le"


def test_every_metric_of_raymlp_is_on_the_dashboard() -> None:
    shown = {EXPORTED[name][0] for _where, expr, _legend in _queries(_dashboard()) for name in METRIC.findall(expr)}
    assert shown == set(DEFINITIONS), f"not on the dashboard: {sorted(set(DEFINITIONS) - shown)}"
    buckets = {
        EXPORTED[name][0]
        for _where, expr, _legend in _queries(_dashboard())
        for name in METRIC.findall(expr)
        if name.endswith("_bucket")
    }
    histograms = {name for name, definition in DEFINITIONS.items() if definition[0] == "histogram"}
    assert buckets == histograms, "every histogram has its quantiles on the dashboard"


def test_every_variable_a_query_uses_is_defined() -> None:
    dashboard = _dashboard()
    defined = set(_variables(dashboard)) | GRAFANA_VARIABLES
    for where, expr, _legend in _queries(dashboard):
        # ${1} in a label_replace replacement is PromQL's, not Grafana's
        used = {name for name in VARIABLE.findall(expr) if not name.isdigit()}
        assert used <= defined, f"{where} uses undefined variables {sorted(used - defined)}"
        if "rate(" in expr:
            assert "[$__rate_interval]" in expr, f"{where}: rate over $__rate_interval"


def test_the_drift_share_panel_has_a_threshold_line_at_one_half() -> None:
    (panel,) = [
        panel for panel in _graph_panels(_dashboard()) if "ray_raymlp_monitor_drift_share" in str(panel["targets"])
    ]
    defaults = panel["fieldConfig"]["defaults"]
    assert panel["type"] == "timeseries" and defaults["unit"] == "percentunit"
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert 0.5 in [step["value"] for step in defaults["thresholds"]["steps"]]


def test_every_query_is_valid_promql() -> None:
    import promql_parser  # Prometheus's PromQL grammar (GreptimeTeam's port), from the test extra

    values = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
    for where, expr, _legend in _queries(_dashboard()):
        if expr.startswith("label_values("):
            expr = re.fullmatch(r"label_values\((.+),\s*\w+\)", expr).group(1)
        for name, value in values.items():
            expr = expr.replace(name, value)
        expr = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", ".*", expr)
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            raise AssertionError(f"{where}: not PromQL ({error}): {expr}") from None
