"""The monitoring report (`raymlp.monitor-report/1`) as one self-contained HTML page.

Plots are SVG drawn here and styles are inline, and the page has no script: it opens anywhere, offline,
and fetches nothing. Every string from the report is escaped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

_REFERENCE = "#8497b0"
_CURRENT = "#e8743b"
_SERIES = ("#2f6db5", "#e8743b", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_MAX_CATEGORIES = 15
_MAX_CLASSES = len(_SERIES)
_CHARACTER_WIDTH = 6.6  # the widest average of an axis label's 10.5px characters, in SVG units
_TESTS = {
    "ks": "Kolmogorov–Smirnov",
    "chisquare": "chi-square",
    "z": "z-test (proportions)",
    "wasserstein": "Wasserstein",
    "jensenshannon": "Jensen–Shannon",
    "psi": "PSI",
}
_ISO_TIME = re.compile(r"^(\d{4})-(\d{2}-\d{2})[T ](\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


class _Series(NamedTuple):
    name: str
    colour: str
    values: list[float | None]
    dashed: bool = False


def render_report(report: dict[str, Any]) -> str:
    """The report as a complete HTML document.

    Drift is ordered most drifted first, in the table and in the distribution plots: the prediction's row
    leads the table, then drifted columns come before the others, each group by severity, and ties by name.
    Severity puts both score kinds on one scale where 1 is the threshold and more is more drifted: a
    distance divided by its threshold, or a threshold divided by the p-value (floored at 1e-300).
    """
    drift = report.get("drift") or {}
    ordered = sorted(drift.get("columns") or [], key=_drift_order)
    model = str(report.get("model") or "model")
    body = "".join(
        [
            _header(report),
            _summary(report),
            _drift_section(drift, ordered),
            _anomalies_section(report.get("anomalies") or []),
            _distributions_section(report.get("distributions") or {}, ordered),
            _predictions_section(report.get("predictions_over_time") or [], report.get("task")),
            _performance_section(report.get("performance")),
            _skipped_section(report.get("skipped_files") or []),
            f"<footer>{_e(report.get('format') or 'raymlp.monitor-report')} · created "
            f"{_e(_time(report.get('created_at')))}</footer>",
        ]
    )
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Monitoring · {_e(model)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


# Page sections.


def _header(report: dict[str, Any]) -> str:
    window = report.get("window") or {}
    reference = report.get("reference") or {}
    versions = ", ".join(str(version) for version in report.get("versions") or []) or "—"
    task = _e(report.get("task") or "—")
    if report.get("label"):
        task += f" · label <code>{_e(report['label'])}</code>"
    span = " → ".join(_time(window.get(end)) if window.get(end) else "…" for end in ("since", "until"))
    window_text = _e(window.get("description") or "the capture")
    if window.get("since") or window.get("until"):
        window_text += f"<br><span class='muted'>{_e(span)}</span>"
    reference_text = _e(reference.get("description") or "—")
    if reference.get("rows") is not None:
        reference_text += f"<br><span class='muted'>{_num(reference['rows'])} rows</span>"
    facts = [
        ("Versions", _e(versions)),
        ("Task", task),
        ("Window", window_text),
        ("Reference", reference_text),
        ("Created", _e(_time(report.get("created_at")))),
    ]
    items = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in facts)
    return (
        "<header><div class='eyebrow'>Model monitoring report</div>"
        f"<h1>{_e(report.get('model') or '—')}</h1><dl class='facts'>{items}</dl></header>"
    )


def _summary(report: dict[str, Any]) -> str:
    window = report.get("window") or {}
    drift = report.get("drift") or {}
    performance = report.get("performance") or {}
    metric = str(performance.get("metric") or "metric")
    anomalies = report.get("anomalies") or []
    cards = []

    requests = window.get("requests")
    cards.append(
        _card("Rows analysed", _num(window.get("rows")), f"from {_num(requests)} requests" if requests else "", "")
    )

    if drift:
        drifted = bool(drift.get("drifted"))
        detail = (
            f"{_num(drift.get('columns_drifted'))} of {_num(drift.get('columns_tested'))} columns drifted; "
            f"dataset drift at {_percent(drift.get('share_threshold'))}"
        )
        prediction = drift.get("prediction")
        if prediction:
            detail += "<br>prediction " + ("drifted" if prediction.get("drifted") else "did not drift")
        verdict = _badge("Dataset drift", "bad") if drifted else _badge("No dataset drift", "ok")
        cards.append(_card("Drift share", _percent(drift.get("share")), detail, verdict, "bad" if drifted else "ok"))
    else:
        cards.append(_card("Drift share", "—", "no drift in this report", ""))

    measured = performance.get("measured") or {}
    measured_value = (measured.get("metrics") or {}).get(metric)
    cards.append(
        _card(
            f"Measured {_e(metric)}",
            _num(measured_value),
            f"on {_num(measured.get('rows'))} labelled rows" if measured_value is not None else "no labels in window",
            "",
        )
    )
    estimated = performance.get("estimated") or {}
    estimated_value = (estimated.get("metrics") or {}).get(metric)
    cards.append(
        _card(
            f"Estimated {_e(metric)}",
            _num(estimated_value),
            f"on {_num(estimated.get('rows'))} rows, without labels"
            if estimated_value is not None
            else "not estimated",
            "",
        )
    )

    kinds = sorted({_words(anomaly.get("kind")) for anomaly in anomalies})
    cards.append(
        _card(
            "Anomalies",
            _num(len(anomalies)),
            _e(", ".join(kinds)) if kinds else "none found",
            "",
            "warn" if anomalies else "ok",
        )
    )
    return f"<section class='cards'>{''.join(cards)}</section>"


def _drift_section(drift: dict[str, Any], ordered: list[dict[str, Any]]) -> str:
    prediction = drift.get("prediction")
    if not ordered and not prediction:
        return _section("Drift", _empty("No drift tests in this report."))
    note = (
        f"{_num(drift.get('columns_drifted'))} of {_num(drift.get('columns_tested'))} columns drifted "
        f"({_percent(drift.get('share'))}); the dataset drifts at a share of {_percent(drift.get('share_threshold'))}. "
        f"Correction for multiple tests: {_e(drift.get('correction') or 'none')}. Most drifted first."
    )
    head = (
        "<tr><th>Column</th><th>Kind</th><th>Test</th><th class='num'>Score</th><th class='num'>Threshold</th>"
        "<th class='num'>Rows (reference / current)</th><th>Drift</th></tr>"
    )
    rows = [_drift_row(prediction, is_prediction=True)] if prediction else []
    rows += [_drift_row(row, is_prediction=False) for row in ordered]
    table = f"<table class='drift'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return _section("Drift", f"<p class='note'>{note}</p>{table}")


def _drift_row(row: dict[str, Any], *, is_prediction: bool) -> str:
    drifted = bool(row.get("drifted"))
    name = f"<code>{_e(row.get('column'))}</code>"
    if is_prediction:
        name += " <span class='tag'>model prediction</span>"
    test = _e(_TESTS.get(str(row.get("test")), row.get("test") or "—"))
    score_kind = "p-value" if row.get("score_kind") == "p_value" else "distance"
    marker = _badge("drifted", "bad") if drifted else _badge("no drift", "ok")
    note = f"<div class='muted small'>{_e(row['note'])}</div>" if row.get("note") else ""
    classes = " ".join(kind for kind, on in (("drifted", drifted), ("prediction", is_prediction)) if on)
    return (
        f"<tr class='{classes}'><td>{name}</td><td>{_e(row.get('kind') or '—')}</td>"
        f"<td>{test} <span class='muted'>{score_kind}</span>{note}</td>"
        f"<td class='num'>{_num(row.get('score'))}</td><td class='num'>{_num(row.get('threshold'))}</td>"
        f"<td class='num'>{_num(row.get('reference_rows'))} / {_num(row.get('current_rows'))}</td>"
        f"<td>{marker}</td></tr>"
    )


def _anomalies_section(anomalies: list[dict[str, Any]]) -> str:
    if not anomalies:
        return _section("Anomalies", _empty("No anomalies."))
    rows = "".join(
        f"<tr><td>{_badge(_e(_words(anomaly.get('kind'))), 'warn')}</td><td><code>{_e(anomaly.get('column'))}"
        f"</code></td><td>{_e(anomaly.get('message') or '')}</td></tr>"
        for anomaly in anomalies
    )
    head = "<tr><th>Kind</th><th>Column</th><th>What was found</th></tr>"
    return _section("Anomalies", f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>")


def _distributions_section(distributions: dict[str, Any], ordered: list[dict[str, Any]]) -> str:
    if not distributions:
        return _section("Distributions", _empty("No distributions in this report."))
    tests = {str(row.get("column")): row for row in ordered}
    rank = {name: position for position, name in enumerate(tests)}
    names = sorted(distributions, key=lambda name: (rank.get(str(name), len(rank)), str(name)))
    cards = []
    for name in names:
        test = tests.get(str(name))
        if test is None:
            badge = ""
        elif test.get("drifted"):
            badge = _badge("drifted", "bad")
        else:
            badge = _badge("no drift", "ok")
        plot = _distribution_plot(distributions[name] or {})
        cards.append(f"<figure class='plot'><figcaption><code>{_e(name)}</code>{badge}</figcaption>{plot}</figure>")
    legend = _legend([_Series("reference", _REFERENCE, []), _Series("current", _CURRENT, [])])
    return _section("Distributions", f"{legend}<div class='grid'>{''.join(cards)}</div>")


def _distribution_plot(distribution: dict[str, Any]) -> str:
    reference = _floats(distribution.get("reference"))
    current = _floats(distribution.get("current"))
    if not reference or len(reference) != len(current):
        return _empty("No histogram for this column.")
    if distribution.get("edges") is not None:
        edges = _floats(distribution["edges"])
        if len(edges) != len(reference) + 1:
            return _empty("No histogram for this column.")
        return _histogram(edges, reference, current)
    categories = [str(category) for category in distribution.get("categories") or []]
    if len(categories) != len(reference):
        return _empty("No histogram for this column.")
    return _category_bars(categories, reference, current)


def _predictions_section(buckets: list[dict[str, Any]], task: object) -> str:
    title = "Predictions over time"
    if not buckets:
        return _section(title, _empty("No predictions over time in this report."))
    classes: dict[str, float] = {}
    for bucket in buckets:
        for name, share in (bucket.get("shares") or {}).items():
            classes[str(name)] = classes.get(str(name), 0.0) + (_float(share) or 0.0)
    if task == "regression" or not classes:
        means = [_float(bucket.get("mean")) for bucket in buckets]
        if all(mean is None for mean in means):
            return _section(title, _empty("No predictions over time in this report."))
        series = [_Series("mean prediction", _SERIES[0], means)]
        chart = _line_chart(buckets, series, percent=False)
        note = "Mean prediction per time bucket."
    else:
        shown = sorted(classes, key=lambda name: -classes[name])[:_MAX_CLASSES]
        shown = [name for name in classes if name in shown]
        series = [
            _Series(name, _SERIES[position], [_float((bucket.get("shares") or {}).get(name)) for bucket in buckets])
            for position, name in enumerate(shown)
        ]
        chart = _line_chart(buckets, series, percent=True, from_zero=True)
        note = "Share of each predicted class per time bucket."
        if len(classes) > len(shown):
            note += f" The {len(shown)} most frequent of {len(classes)} classes are shown."
    note += f" {_buckets_span(buckets)}"
    return _section(title, f"<p class='note'>{_e(note)}</p>{_legend(series)}{chart}")


def _performance_section(performance: dict[str, Any] | None) -> str:
    title = "Performance over time"
    if not performance:
        return _section(title, _empty("No performance in this report."))
    metric = str(performance.get("metric") or "metric")
    buckets = performance.get("over_time") or []
    measured = [_float(bucket.get("measured")) for bucket in buckets]
    estimated = [_float(bucket.get("estimated")) for bucket in buckets]
    parts = []
    if any(value is not None for value in measured + estimated):
        series = [
            _Series(f"measured {metric}", _SERIES[0], measured),
            _Series(f"estimated {metric}", _SERIES[1], estimated, dashed=True),
        ]
        series = [line for line in series if any(value is not None for value in line.values)]
        note = f"Per time bucket: {metric} measured where labels arrived, estimated without them. "
        parts.append(f"<p class='note'>{_e(note + _buckets_span(buckets))}</p>")
        parts.append(_legend(series) + _line_chart(buckets, series, percent=False))
    else:
        parts.append(_empty(f"No {metric} over time: no time bucket was measured or estimated."))
    estimated_part = performance.get("estimated") or {}
    if estimated_part.get("assumption"):
        parts.append(
            f"<p class='assumption'><strong>The estimate assumes:</strong> {_e(estimated_part['assumption'])}</p>"
        )
    measured_part = performance.get("measured") or {}
    metrics = measured_part.get("metrics") or {}
    if metrics:
        cells = "".join(
            f"<tr><td>{_e(name)}</td><td class='num'>{_num(value)}</td></tr>" for name, value in metrics.items()
        )
        parts.append(
            f"<h3>Measured on {_num(measured_part.get('rows'))} labelled rows</h3>"
            f"<table class='metrics'><thead><tr><th>Metric</th><th class='num'>Value</th></tr></thead>"
            f"<tbody>{cells}</tbody></table>"
        )
    return _section(title, "".join(parts))


def _skipped_section(skipped: list[dict[str, Any]]) -> str:
    if not skipped:
        return _section("Skipped files", _empty("No files were skipped."))
    rows = "".join(
        f"<tr><td class='path'><code>{_e(item.get('path'))}</code></td><td>{_e(item.get('reason') or '')}</td></tr>"
        for item in skipped
    )
    head = "<tr><th>File</th><th>Why it was skipped</th></tr>"
    files = "1 capture file" if len(skipped) == 1 else f"{_num(len(skipped))} capture files"
    note = f"<p class='note'>{files} could not be read; the rows in them are not in this report.</p>"
    return _section("Skipped files", f"{note}<table><thead>{head}</thead><tbody>{rows}</tbody></table>")


# Plots: inline SVG, drawn in a fixed coordinate system that CSS scales to the page.


def _histogram(edges: list[float], reference: list[float], current: list[float]) -> str:
    width, height, left, right, top, bottom = 320, 170, 40, 12, 10, 24
    plot_width, plot_height = width - left - right, height - top - bottom
    if not all(later > earlier for earlier, later in zip(edges, edges[1:])):
        edges = [float(position) for position in range(len(reference) + 1)]
    low, high = edges[0], edges[-1]
    y_ticks = _ticks(0.0, max(reference + current + [0.0]) or 1.0)

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * plot_width

    def y(value: float) -> float:
        return top + plot_height - value / y_ticks[-1] * plot_height

    parts = _y_axis(y_ticks, y, left, width - right, _percent_tick)
    bins = list(zip(edges, edges[1:], reference, current))
    for start, end, share, _ in bins:
        parts.append(
            f"<rect x='{x(start):.1f}' y='{y(share):.1f}' width='{max(x(end) - x(start) - 1, 0.5):.1f}' "
            f"height='{y(0) - y(share):.1f}' fill='{_REFERENCE}' fill-opacity='0.75'/>"
        )
    outline = f"M{x(low):.1f},{y(0):.1f}" + "".join(f"V{y(share):.1f}H{x(end):.1f}" for _, end, _, share in bins)
    parts.append(
        f"<path d='{outline}V{y(0):.1f}Z' fill='{_CURRENT}' fill-opacity='0.22' stroke='{_CURRENT}' "
        "stroke-width='1.8' stroke-linejoin='round'/>"
    )
    for start, end, share, now in bins:
        tip = f"{_num(start)} – {_num(end)}: reference {_percent(share)}, current {_percent(now)}"
        parts.append(
            f"<rect x='{x(start):.1f}' y='{top}' width='{x(end) - x(start):.1f}' height='{plot_height}' "
            f"fill='transparent'><title>{_e(tip)}</title></rect>"
        )
    parts.append(_line(left, y(0), width - right, y(0), "axis"))
    for tick in _ticks(low, high, 4):
        if low <= tick <= high:
            parts.append(_x_label(x(tick), height - 8, _axis_number(tick), width))
    return _svg(width, height, parts, "histogram of reference and current")


def _category_bars(categories: list[str], reference: list[float], current: list[float]) -> str:
    order = sorted(range(len(categories)), key=lambda index: -max(reference[index], current[index]))
    shown = order[:_MAX_CATEGORIES]
    longest = max(len(categories[index]) for index in shown)
    # Short names sit left of their bars; longer ones above them, across the whole plot.
    beside = longest <= 16
    width, right, top, bottom = 320, 14, 6, 22
    label_width = round(_CHARACTER_WIDTH * longest) + 12 if beside else 8
    row_height, bar_top = (22, 3) if beside else (34, 15)
    height = top + row_height * len(shown) + bottom
    plot_width = width - label_width - right
    x_ticks = _ticks(0.0, max(reference + current + [0.0]) or 1.0, 3)

    def x(value: float) -> float:
        return label_width + value / x_ticks[-1] * plot_width

    parts = []
    for tick in x_ticks:
        parts.append(_line(x(tick), top, x(tick), height - bottom, "grid"))
        parts.append(_text(x(tick), height - 8, _percent_tick(tick), "middle"))
    for row, index in enumerate(shown):
        row_top = top + row * row_height
        name = categories[index]
        title = f"<title>{_e(name)}</title>"
        if beside:
            parts.append(f"<text x='{label_width - 6}' y='{row_top + 15}' text-anchor='end'>{title}{_e(name)}</text>")
        else:
            label = name if len(name) <= 44 else name[:43] + "…"
            parts.append(f"<text x='{label_width + 3}' y='{row_top + 11}'>{title}{_e(label)}</text>")
        for offset, share, colour in ((bar_top, reference[index], _REFERENCE), (bar_top + 8, current[index], _CURRENT)):
            parts.append(
                f"<rect x='{label_width}' y='{row_top + offset}' width='{max(x(share) - label_width, 0.0):.1f}' "
                f"height='7' fill='{colour}'><title>{_e(name)}: {_percent(share)}</title></rect>"
            )
    parts.append(_line(label_width, top, label_width, height - bottom, "axis"))
    svg = _svg(width, height, parts, "category shares of reference and current")
    if len(categories) > len(shown):
        svg += f"<p class='muted small'>The {len(shown)} largest of {len(categories)} categories.</p>"
    return svg


def _line_chart(buckets: list[dict[str, Any]], series: list[_Series], *, percent: bool, from_zero: bool = False) -> str:
    width, height, left, right, top, bottom = 880, 230, 56, 24, 12, 28
    plot_width, plot_height = width - left - right, height - top - bottom
    positions = _bucket_positions(buckets)
    values = [value for line in series for value in line.values if value is not None]
    low, high = (0.0 if from_zero else min(values)), max(values)
    if high - low < 1e-12:
        low, high = low - (abs(low) * 0.05 or 0.05), high + (abs(high) * 0.05 or 0.05)
    y_ticks = _ticks(low, high)
    first, last = positions[0], positions[-1]

    def x(position: float) -> float:
        if last == first:
            return left + plot_width / 2
        return left + (position - first) / (last - first) * plot_width

    def y(value: float) -> float:
        return top + plot_height - (value - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * plot_height

    parts = _y_axis(y_ticks, y, left, width - right, _percent_tick if percent else _axis_number)
    parts.append(_line(left, top + plot_height, width - right, top + plot_height, "axis"))
    labels = _short_times([bucket.get("start") for bucket in buckets])
    previous = -math.inf
    for index in range(0, len(buckets), math.ceil(len(buckets) / (plot_width // 90))):
        if x(positions[index]) - previous >= 90:
            previous = x(positions[index])
            parts.append(_x_label(previous, height - 8, labels[index], width))
    for line in series:
        dash = " stroke-dasharray='6 4'" if line.dashed else ""
        run: list[str] = []
        for position, value in zip(positions + [0.0], line.values + [None]):
            if value is not None:
                run.append(f"{x(position):.1f},{y(value):.1f}")
                continue
            if len(run) > 1:
                parts.append(
                    f"<polyline points='{' '.join(run)}' fill='none' stroke='{line.colour}' stroke-width='2'{dash}/>"
                )
            run = []
        for bucket, position, value in zip(buckets, positions, line.values):
            if value is not None:
                shown = _percent(value) if percent else _num(value)
                tip = f"{line.name}: {shown} ({_time(bucket.get('start'))}, {_num(bucket.get('rows'))} rows)"
                parts.append(
                    f"<circle cx='{x(position):.1f}' cy='{y(value):.1f}' r='3' fill='{line.colour}'>"
                    f"<title>{_e(tip)}</title></circle>"
                )
    return _svg(width, height, parts, "chart over time", wide=True)


def _y_axis(
    ticks: list[float], y: Callable[[float], float], left: float, right: float, label: Callable[[Any], str]
) -> list[str]:
    parts = []
    for tick in ticks:
        parts.append(_line(left, y(tick), right, y(tick), "grid"))
        parts.append(_text(left - 6, y(tick) + 3.5, label(tick), "end"))
    return parts


def _svg(width: int, height: int, parts: list[str], label: str, *, wide: bool = False) -> str:
    kind = " wide" if wide else ""
    return (
        f"<svg class='chart{kind}' viewBox='0 0 {width} {height}' width='{width}' height='{height}' role='img' "
        f"aria-label='{_e(label)}'>{''.join(parts)}</svg>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, kind: str) -> str:
    return f"<line class='{kind}' x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}'/>"


def _text(x: float, y: float, text: str, anchor: str) -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}'>{text}</text>"


def _x_label(x: float, y: float, label: str, width: int) -> str:
    """A label centred under x, moved in as far as it takes to stay inside the plot's width."""
    half = _CHARACTER_WIDTH * len(html.unescape(label)) / 2 + 1
    return _text(min(max(x, half), width - half), y, label, "middle")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering low..high, about `count` steps."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(multiple * magnitude for multiple in (1, 2, 2.5, 5, 10) if multiple * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(index * step, 12) for index in range(first, last + 1)]


def _bucket_positions(buckets: list[dict[str, Any]]) -> list[float]:
    """Each bucket's place on the time axis (its start, in seconds); its index when times do not parse."""
    try:
        return [datetime.fromisoformat(bucket["start"]).timestamp() for bucket in buckets]
    except (KeyError, TypeError, ValueError):
        return [float(index) for index in range(len(buckets))]


def _legend(series: Sequence[_Series]) -> str:
    items = "".join(
        f"<span><i class='swatch{' dashed' if line.dashed else ''}' style='--colour:{line.colour}'></i>"
        f"{_e(line.name)}</span>"
        for line in series
    )
    return f"<div class='legend'>{items}</div>"


# Text.


def _e(value: object) -> str:
    return html.escape(str(value) if value is not None else "—")


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _floats(values: object) -> list[float]:
    if not isinstance(values, list | tuple):
        return []
    return [_float(value) or 0.0 for value in values]


def _num(value: object) -> str:
    """Four significant digits (integers whole, thousands separated); '—' when missing."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if 1e4 <= abs(value) < 1e15:
        return f"{float(f'{value:.4g}'):,.0f}"
    return f"{value:.4g}"


def _axis_number(value: float) -> str:
    """A tick label: 4 significant digits, millions and up shortened (2.5M)."""
    for power, suffix in ((12, "T"), (9, "G"), (6, "M")):
        if abs(value) >= 10**power:
            return f"{value / 10**power:.4g}{suffix}"
    return _num(value)


def _percent(share: object) -> str:
    number = _float(share)
    return "—" if number is None else f"{_num(number * 100)}%"


def _percent_tick(share: float) -> str:
    return f"{share * 100:.4g}%"


def _time(value: object) -> str:
    """An ISO time as given, to the minute: 2026-12-07T18:00:00+00:00 is 2026-12-07 18:00 UTC."""
    if not value:
        return "—"
    match = _ISO_TIME.match(str(value))
    if match is None:
        return str(value)
    year, day, minute, zone = match.groups()
    if zone in ("Z", "+00:00", "+0000", "-00:00"):
        zone = "UTC"
    return f"{year}-{day} {minute}" + (f" {zone}" if zone else "")


def _short_times(values: list[object]) -> list[str]:
    """Axis labels: the time of day when all fall on one day, else month-day and time."""
    matches = [_ISO_TIME.match(str(value)) for value in values]
    if not all(matches):
        return [_e(_time(value)) for value in values]
    days = {(match.group(1), match.group(2)) for match in matches if match}
    return [
        _e(match.group(3) if len(days) == 1 else f"{match.group(2)} {match.group(3)}") for match in matches if match
    ]


def _buckets_span(buckets: list[dict[str, Any]]) -> str:
    count = "1 bucket" if len(buckets) == 1 else f"{len(buckets)} buckets"
    return f"{count}, {_time(buckets[0].get('start'))} to {_time(buckets[-1].get('end'))}."


def _words(value: object) -> str:
    return str(value or "unknown").replace("_", " ")


def _badge(text: str, tone: str) -> str:
    return f"<span class='badge {tone}'>{text}</span>"


def _card(title: str, value: str, detail: str, verdict: str, tone: str = "") -> str:
    return (
        f"<div class='card {tone}'><div class='card-title'>{title}</div><div class='card-value'>{value}</div>"
        f"{verdict}<div class='card-detail'>{detail}</div></div>"
    )


def _section(title: str, content: str) -> str:
    return f"<section><h2>{title}</h2>{content}</section>"


def _empty(text: str) -> str:
    return f"<p class='empty'>{_e(text)}</p>"


def _drift_order(row: dict[str, Any]) -> tuple[bool, float, str]:
    score, threshold = row.get("score"), _float(row.get("threshold"))
    if threshold is None or not isinstance(score, int | float) or math.isnan(score):
        severity = 0.0
    elif row.get("score_kind") == "p_value":
        severity = threshold / max(score, 1e-300)
    else:  # an infinite distance (drift.py's score for an undefined one) is the most drifted
        severity = score / threshold if threshold > 0 else math.inf
    return (not row.get("drifted"), -severity, str(row.get("column")))


_STYLE = """
:root { --ink: #1d2733; --muted: #5f6b7a; --line: #e3e7ed; --bad: #c62f2f; --ok: #1f8a4c; --warn: #b7791f; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 40px; }
header { margin-bottom: 18px; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--muted); }
h1 { margin: 2px 0 12px; font-size: 28px; overflow-wrap: anywhere; }
h2 { margin: 0 0 12px; font-size: 18px; }
h3 { margin: 18px 0 8px; font-size: 14px; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 8px 24px; margin: 0; }
.facts dt { font-size: 12px; color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
code { font: 12.5px "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #eef1f5; padding: 1px 4px;
  border-radius: 3px; overflow-wrap: anywhere; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; margin-bottom: 18px;
  background: none; border: 0; padding: 0; }
.card { background: #fff; border: 1px solid var(--line); border-top: 4px solid #9aa8b8; border-radius: 8px;
  padding: 12px 14px; }
.card.bad { border-top-color: var(--bad); } .card.ok { border-top-color: var(--ok); }
.card.warn { border-top-color: var(--warn); }
.card-title { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card-value { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card-detail { font-size: 12.5px; color: var(--muted); margin-top: 4px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 20px;
  margin-bottom: 18px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #f8f9fb; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.path { max-width: 480px; }
tr.drifted td:first-child { box-shadow: inset 3px 0 0 var(--bad); }
tr.prediction { background: #f1f6fd; }
table.metrics { width: auto; min-width: 260px; }
.badge { display: inline-block; font-size: 11.5px; font-weight: 600; padding: 1px 8px; border-radius: 10px;
  white-space: nowrap; }
.badge.bad { background: #fde8e8; color: var(--bad); } .badge.ok { background: #e5f5ec; color: var(--ok); }
.badge.warn { background: #fdf3e1; color: var(--warn); }
.card .badge { margin: 2px 0; }
.tag { font-size: 11px; color: #2f6db5; border: 1px solid #b9d0ee; border-radius: 4px; padding: 0 5px;
  white-space: nowrap; }
.muted { color: var(--muted); } .small { font-size: 12px; margin: 2px 0 0; }
.note { color: var(--muted); margin: 0 0 12px; }
.empty { color: var(--muted); font-style: italic; margin: 0; }
.assumption { background: #f8f9fb; border-left: 3px solid #9aa8b8; padding: 8px 12px; margin: 14px 0 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 14px; align-items: start; }
figure.plot { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
figure.plot figcaption { display: flex; justify-content: space-between; align-items: center; gap: 8px;
  margin-bottom: 4px; overflow-wrap: anywhere; }
svg.chart { display: block; width: 100%; max-width: 420px; height: auto; }
svg.chart.wide { max-width: 100%; }
svg text { font: 10.5px "DejaVu Sans", Arial, sans-serif; fill: var(--muted); paint-order: stroke; stroke: #fff;
  stroke-width: 3px; stroke-linejoin: round; }
svg .grid { stroke: #edf0f4; stroke-width: 1; }
svg .axis { stroke: #9aa3ad; stroke-width: 1; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0 0 10px; font-size: 12.5px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 18px; height: 10px; border-radius: 2px; background: var(--colour); }
.swatch.dashed { height: 0; border-top: 3px dashed var(--colour); background: none; border-radius: 0; }
footer { color: var(--muted); font-size: 12px; text-align: center; }
"""
