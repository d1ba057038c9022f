"""Grafana dashboards as code: `python -m deploy.grafana.build` writes deploy/grafana/dashboards/.

The committed JSON is the output of this script (a test checks they agree). Prometheus panels
use metric names from stream/metrics.py; ClickHouse panels query the store's tables through the
grafana-clickhouse-datasource plugin (v4 macros $__fromTime_ms / $__toTime_ms).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
PROM = {"type": "prometheus", "uid": "prometheus"}
CH = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}
RI = "$__rate_interval"
# Int64 epoch-ms bounds of the dashboard range (the store keeps times as Int64 ms).
FROM_MS = "toUnixTimestamp64Milli($__fromTime_ms)"
TO_MS = "toUnixTimestamp64Milli($__toTime_ms)"


def prom(expr: str, legend: str = "") -> dict[str, Any]:
    return {"datasource": PROM, "expr": expr, "legendFormat": legend or "__auto"}


def sql(text: str, fmt: str = "table") -> dict[str, Any]:
    """A raw-SQL ClickHouse target; fmt 'table' or 'timeseries' (plugin format 1 or 0)."""
    return {
        "datasource": CH,
        "editorType": "sql",
        "queryType": fmt,
        "format": 1 if fmt == "table" else 0,
        "rawSql": " ".join(text.split()),
    }


def panel(
    title: str, targets: list[dict[str, Any]], kind: str = "timeseries", unit: str = "short"
) -> dict[str, Any]:
    return {"title": title, "type": kind, "targets": targets, "unit": unit}


def q(metric: str, agg: str = "sum", by: str = "") -> str:
    """Per-second rate of a counter, summed (optionally by labels) over all processes."""
    grp = f" by ({by})" if by else ""
    return f"{agg}{grp} (rate({metric}[{RI}]))"


def quantile(metric: str, phi: float, by: str = "", window: str = RI) -> str:
    labels = ", ".join(x for x in (by, "le") if x)
    return f"histogram_quantile({phi}, sum by ({labels}) (rate({metric}_bucket[{window}])))"


def pipeline() -> list[dict[str, Any]]:
    return [
        panel("Reads in", [prom(q("tagtrail_reads_total"), "reads/s")], unit="reqps"),
        panel(
            "Sightings written", [prom(q("tagtrail_sightings_written_total"), "rows/s")], unit="rps"
        ),
        panel("Duplicate reads collapsed", [prom(q("tagtrail_duplicate_reads_total"), "reads/s")]),
        panel(
            "Invalid reads by reason",
            [prom(q("tagtrail_invalid_reads_total", by="reason"), "{{reason}}")],
        ),
        panel(
            "Dead letters by reason",
            [prom(q("tagtrail_dead_letters_total", by="reason"), "{{reason}}")],
        ),
        panel(
            "Invalid share of reads",
            [
                prom(
                    f"(sum(rate(tagtrail_invalid_reads_total[{RI}])) or vector(0)) / clamp_min("
                    f"sum(rate(tagtrail_reads_total[{RI}])) "
                    f"+ (sum(rate(tagtrail_invalid_reads_total[{RI}])) or vector(0)), 1e-9)",
                    "invalid",
                )
            ],
            unit="percentunit",
        ),
        panel("Late reads", [prom(q("tagtrail_late_reads_total"), "reads/s")]),
        panel(
            "Consumer lag per partition",
            [
                prom(
                    "sum by (group, topic, partition) (tagtrail_consumer_lag)",
                    "{{group}} {{topic}}/{{partition}}",
                )
            ],
        ),
        panel(
            "Worker batch latency",
            [
                prom(quantile("tagtrail_worker_batch_seconds", 0.5), "p50"),
                prom(quantile("tagtrail_worker_batch_seconds", 0.99), "p99"),
            ],
            unit="s",
        ),
        panel(
            "Sink insert latency",
            [
                prom(quantile("tagtrail_sink_insert_seconds", 0.5), "p50"),
                prom(quantile("tagtrail_sink_insert_seconds", 0.99), "p99"),
            ],
            unit="s",
        ),
        panel(
            "Rows per store insert (mean)",
            [
                prom(
                    f"sum(rate(tagtrail_sink_batch_rows_sum[{RI}])) / "
                    f"sum(rate(tagtrail_sink_batch_rows_count[{RI}]))",
                    "rows",
                )
            ],
        ),
        panel("Hotlist size", [prom("max(tagtrail_hotlist_size)", "cases")], kind="stat"),
        panel(
            "Process CPU",
            [prom(q('process_cpu_seconds_total{job=~"tagtrail.*"}', by="job, instance"))],
            unit="percentunit",
        ),
        panel(
            "Process RSS",
            [prom('max by (job, instance) (process_resident_memory_bytes{job=~"tagtrail.*"})')],
            unit="bytes",
        ),
    ]


def recovery() -> list[dict[str, Any]]:
    api = "tagtrail_api_requests_total"
    return [
        panel("Open cases", [prom("max(tagtrail_open_cases)", "open")], kind="stat"),
        panel(
            "Alerts per minute",
            [prom(f"sum(rate(tagtrail_alerts_total[{RI}])) * 60", "alerts/min")],
        ),
        panel(
            "Alert latency (gateway publish -> alert)",
            [
                prom(quantile("tagtrail_alert_latency_seconds", 0.5), "p50"),
                prom(quantile("tagtrail_alert_latency_seconds", 0.99), "p99"),
            ],
            unit="s",
        ),
        panel(
            "Alerts within 1 s (SLO 99%), last hour",
            [
                prom(
                    'sum(rate(tagtrail_alert_latency_seconds_bucket{le="1.0"}[1h])) / '
                    "sum(rate(tagtrail_alert_latency_seconds_count[1h]))",
                    "within 1 s",
                )
            ],
            kind="stat",
            unit="percentunit",
        ),
        panel(
            "Report to first alert",
            [
                prom(quantile("tagtrail_report_to_first_alert_seconds", 0.5, window="1d"), "p50"),
                prom(quantile("tagtrail_report_to_first_alert_seconds", 0.9, window="1d"), "p90"),
            ],
            unit="s",
        ),
        panel(
            "Recoveries, last 24 h",
            [prom("sum(increase(tagtrail_recoveries_total[1d]))", "recovered")],
            kind="stat",
        ),
        panel(
            "API requests by route and status",
            [prom(q(api, by="route, status"), "{{route}} {{status}}")],
            unit="reqps",
        ),
        panel(
            "API latency p99 by route",
            [prom(quantile("tagtrail_api_request_seconds", 0.99, by="route"), "{{route}}")],
            unit="s",
        ),
        panel(
            "API 5xx share",
            [
                prom(
                    f'(sum(rate({api}{{status=~"5.."}}[{RI}])) or vector(0)) / '
                    f"clamp_min(sum(rate({api}[{RI}])), 1e-9)",
                    "5xx",
                )
            ],
            unit="percentunit",
        ),
    ]


def live(alias: str = "") -> str:
    """Live sightings of an aggregate group: stored identities minus the retracted ones.

    A retraction keeps its identity's uniq state in `sightings` (it was live once), so counting
    only `sightings` would include sightings a late read merged away. uniq is approximate, and the
    difference of two approximations can dip below zero on tiny groups: clamp it.
    """
    return (
        f"greatest(toInt64(uniqMerge({alias}sightings)) - toInt64(uniqMerge({alias}retracted)), 0)"
    )


def city_map() -> list[dict[str, Any]]:
    window = f"minute_ms >= intDiv({FROM_MS}, 60000) * 60000 AND minute_ms < {TO_MS}"
    cells = f"""
        SELECT h3ToString(h3_r9) AS cell, tupleElement(h3ToGeo(h3_r9), 1) AS lat,
               tupleElement(h3ToGeo(h3_r9), 2) AS lon, sightings, bikes
        FROM (SELECT h3_r9, {live()} AS sightings, uniqMerge(tags) AS bikes
              FROM cell_minute WHERE {window} GROUP BY h3_r9)
        ORDER BY sightings DESC LIMIT {{limit}}
        SETTINGS h3togeo_lon_lat_result_order = 0"""
    return [
        panel("Sightings per H3 cell (res 9)", [sql(cells.format(limit=20000))], kind="geomap"),
        panel(
            "Sightings per minute, whole city",
            [
                sql(
                    f"""SELECT toDateTime(intDiv(minute_ms, 1000)) AS time,
                        {live()} AS sightings, uniqMerge(tags) AS bikes
                    FROM cell_minute WHERE {window} GROUP BY minute_ms ORDER BY minute_ms""",
                    "timeseries",
                )
            ],
        ),
        panel("Busiest cells", [sql(cells.format(limit=25))], kind="table"),
    ]


def readers() -> list[dict[str, Any]]:
    window = f"minute_ms >= intDiv({FROM_MS}, 60000) * 60000 AND minute_ms < {TO_MS}"
    district = "if(r.district = '', 'unassigned', r.district)"
    reg = "(SELECT reader_id, district, kind FROM readers FINAL)"
    return [
        panel("Silent readers", [prom("max(tagtrail_reader_silent)", "silent")], kind="stat"),
        panel(
            "Silent share of registered readers",
            [
                prom(
                    "max(tagtrail_reader_silent) / clamp_min(max(tagtrail_readers_registered), 1)",
                    "silent",
                )
            ],
            unit="percentunit",
        ),
        panel(
            "Sightings per minute by district",
            [
                sql(
                    f"""SELECT toDateTime(intDiv(m.minute_ms, 1000)) AS time,
                        {district} AS district, {live("m.")} AS sightings
                    FROM (SELECT * FROM reader_minute WHERE {window}) AS m
                    LEFT JOIN {reg} AS r ON m.reader_id = r.reader_id
                    GROUP BY m.minute_ms, district ORDER BY m.minute_ms, district""",
                    "timeseries",
                )
            ],
        ),
        panel(
            "Read rates by district",
            [
                sql(
                    f"""SELECT {district} AS district, uniqExact(m.reader_id) AS active_readers,
                        sum(m.reads) / greatest(({TO_MS} - {FROM_MS}) / 60000, 1) AS reads_per_min,
                        {live("m.")} / greatest(({TO_MS} - {FROM_MS}) / 60000, 1)
                            AS sightings_per_min
                    FROM (SELECT * FROM reader_minute WHERE {window}) AS m
                    LEFT JOIN {reg} AS r ON m.reader_id = r.reader_id
                    GROUP BY district ORDER BY district"""
                )
            ],
            kind="table",
        ),
        panel(
            "Readers by last activity (silent first)",
            [
                sql(
                    f"""SELECT r.reader_id AS reader_id, {district} AS district, r.kind AS kind,
                        if(a.last_minute = 0, NULL, toDateTime(intDiv(a.last_minute, 1000)))
                            AS last_active, a.sightings AS sightings
                    FROM {reg} AS r
                    LEFT JOIN (SELECT reader_id, max(minute_ms) AS last_minute,
                                      {live()} AS sightings
                               FROM reader_minute WHERE {window} GROUP BY reader_id) AS a
                        ON a.reader_id = r.reader_id
                    ORDER BY a.last_minute ASC, r.reader_id LIMIT 500"""
                )
            ],
            kind="table",
        ),
    ]


DASHBOARDS = {
    "tagtrail-pipeline": ("tagtrail: pipeline health", pipeline),
    "tagtrail-recovery": ("tagtrail: recovery operations", recovery),
    "tagtrail-city-map": ("tagtrail: city map", city_map),
    "tagtrail-readers": ("tagtrail: reader health", readers),
}


# Kunming's centre; markers sized and coloured by sightings in the cell.
GEOMAP_OPTIONS = {
    "view": {"id": "coords", "lat": 25.04, "lon": 102.71, "zoom": 11},
    "layers": [
        {
            "type": "markers",
            "name": "sightings",
            "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
            "config": {
                "size": {"field": "sightings", "min": 2, "max": 15},
                "color": {"field": "sightings"},
            },
        }
    ],
}


def render(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    """A Grafana dashboard model (schemaVersion 39), two panels per row."""
    out = []
    for i, p in enumerate(panels):
        full = p["type"] in ("geomap", "table")
        out.append(
            {
                "id": i + 1,
                "title": p["title"],
                "type": p["type"],
                "datasource": p["targets"][0]["datasource"],
                "gridPos": {"h": 12 if full else 8, "w": 24 if full else 12, "x": 0, "y": i * 8},
                "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
                "options": GEOMAP_OPTIONS if p["type"] == "geomap" else {},
                "targets": [{"refId": chr(65 + k), **t} for k, t in enumerate(p["targets"])],
            }
        )
    x = y = 0
    for p in out:  # flow layout: half-width panels pair up, full-width ones take a row
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y = 0, y + 8
        p["gridPos"].update(x=x, y=y)
        x += w
        if x >= 24:
            x, y = 0, y + h
    return {
        "uid": uid,
        "title": title,
        "tags": ["tagtrail"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": out,
    }


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{uid}.json": json.dumps(render(uid, title, make()), indent=2, sort_keys=True) + "\n"
        for uid, (title, make) in DASHBOARDS.items()
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
