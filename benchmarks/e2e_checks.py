"""The e2e benchmark's checks: stored sightings vs the reference, alert latency, recovery figures.

Every figure is computed from what was observed (the store's export, the alerts topic, the SSE
stream, the API's last-seen answers) against the reference sessionizer and the simulator's ground
truth. Where something could not be observed, the result says "not measured" and why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from benchmarks.e2e_feed import FeedResult
from core.records.sightings import SIGHTING_COLUMNS

IDENTITY = ["tag_id", "reader_id", "first_ts"]
# A case alerts on what the workers see once it is on the hotlist: reads sent this long after the
# API answered the report (the workers' hotlist followers have it by then).
HOTLIST_MARGIN_MS = 1000


def compare_sightings(stored: pd.DataFrame, reference: pd.DataFrame) -> dict[str, int]:
    """Lost (reference rows not stored exactly), extra and duplicated stored rows."""
    cols = list(SIGHTING_COLUMNS)
    s = stored[cols].astype(reference[cols].dtypes.to_dict())
    dup = int(s.duplicated(subset=IDENTITY).sum())
    merged = reference[cols].merge(s.drop_duplicates(), on=cols, how="outer", indicator=True)
    return {
        "reference_sightings": len(reference),
        "stored_sightings": len(stored),
        "lost": int((merged["_merge"] == "left_only").sum()),
        "extra_or_different": int((merged["_merge"] == "right_only").sum()),
        "duplicated": dup,
    }


def percentiles(values_ms: np.ndarray) -> dict[str, float]:
    v = np.asarray(values_ms, np.float64)
    return {
        "n": len(v),
        "p50_ms": round(float(np.percentile(v, 50)), 1),
        "p95_ms": round(float(np.percentile(v, 95)), 1),
        "p99_ms": round(float(np.percentile(v, 99)), 1),
        "max_ms": round(float(v.max()), 1),
    }


def _cat(parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame()
    return pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def alert_latencies(alerts: list[dict[str, Any]], feed: FeedResult) -> tuple[np.ndarray, str]:
    """Latency of each first delivery of an alert, from the publish of the read that raised it.

    Uses the alert's read_published_ms when the pipeline carries it; otherwise the harness's own
    record: the earliest send of a read of that sighting after the case reached the hotlist.
    """
    reads = _cat(feed.theft_reads)
    out: list[float] = []
    carried = 0
    seen: set[str] = set()
    for row in alerts:
        a = row["alert"]
        if a is None or a["alert_id"] in seen:
            continue
        seen.add(a["alert_id"])
        pub = int(a.get("read_published_ms") or 0)
        if pub > 0:
            carried += 1
            out.append(row["recv_ms"] - pub)
            continue
        case = feed.cases.get(int(a["tag_id"]))
        if case is None or reads.empty:
            continue
        m = (
            (reads["tag_id"] == a["tag_id"])
            & (reads["reader_id"] == a["reader_id"])
            & (reads["ts_ms"] >= a["first_ts"])
            & (reads["ts_ms"] <= a["last_ts"])
            & (reads["sent_ms"] >= case.registered_wall_ms)
        )
        start = int(reads["sent_ms"][m].min()) if m.any() else case.registered_wall_ms
        out.append(row["recv_ms"] - max(start, case.registered_wall_ms))
    source = "Alert.read_published_ms" if carried == len(out) and out else "harness send times"
    if 0 < carried < len(out):
        source = "mixed: read_published_ms where carried, else harness send times"
    return np.asarray(out, np.float64), source


def recovery(
    alerts: list[dict[str, Any]],
    feed: FeedResult,
    reference: pd.DataFrame,
    last_seen: dict[int, dict[str, Any] | None],
    skew_ms: int,
) -> dict[str, Any]:
    """Recovery effectiveness against the simulator's ground truth (see the report for terms)."""
    cases = feed.cases
    topic = [r["alert"] for r in alerts if r["source"] == "topic" and r["alert"] is not None]
    ids = [a["alert_id"] for a in topic]
    ref_ids = set(
        zip(reference["tag_id"], reference["reader_id"], reference["first_ts"], strict=True)
    )
    false_alerts = 0
    for a in topic:
        case = cases.get(int(a["tag_id"]))
        ident = (a["tag_id"], a["reader_id"], a["first_ts"])
        if case is None or a["last_ts"] < case.stolen_at_ms or ident not in ref_ids:
            false_alerts += 1
    by_case: dict[str, list[dict[str, Any]]] = {}
    for a in topic:
        by_case.setdefault(a["case_id"], []).append(a)
    # Passed a reader after the report: a reference sighting ends after the simulated report
    # time. Spottable: a read of the bike was sent once the case was on the hotlist (the API's
    # answer to the report + HOTLIST_MARGIN_MS). Replayed 200x faster than the city lives, a
    # report answered in 100 ms is 20 simulated seconds late, so the two can differ.
    # Alerted: any alert (the contract alerts every sighting from stolen_at on, so a sighting
    # between theft and report still alerts when the worker sees it after the report).
    reads = _cat(feed.theft_reads)
    last_sent = reads.groupby("tag_id")["sent_ms"].max().to_dict() if not reads.empty else {}
    passed, spottable, spotted, alerted, delays_min = 0, 0, 0, 0, []
    for c in cases.values():
        ref = reference[
            (reference["tag_id"] == c.tag_id) & (reference["last_ts"] >= c.reported_at_ms)
        ]
        got = by_case.get(c.case_id, [])
        can = last_sent.get(c.tag_id, 0) >= c.registered_wall_ms + HOTLIST_MARGIN_MS
        passed += bool(len(ref))
        spottable += can
        alerted += bool(got)
        spotted += can and bool(got)
        if got:
            first = min(max(a["first_ts"], c.reported_at_ms) for a in got)
            delays_min.append((first - c.reported_at_ms) / 60_000)
    passages = _cat(feed.passages)
    correct = consistent = checked = 0
    for tag, ans in last_seen.items():
        ref = reference[reference["tag_id"] == tag]
        if not len(ref):
            continue
        checked += 1
        want = ref.loc[ref["last_ts"].idxmax()]
        if ans is not None and (ans["reader_id"], ans["last_ts"]) == (
            int(want["reader_id"]),
            int(want["last_ts"]),
        ):
            correct += 1
        if not passages.empty and ans is not None:
            p = passages[(passages["tag_id"] == tag) & (passages["reader_id"] == ans["reader_id"])]
            ok = (p["t_enter_ms"] - skew_ms <= ans["last_ts"]) & (
                ans["last_ts"] <= p["t_exit_ms"] + skew_ms
            )
            consistent += bool(ok.any())
    return {
        "cases_reported_in_run": len(cases),
        "cases_passed_a_reader_after_report": passed,
        "cases_spottable_after_report": spottable,
        "cases_spottable_and_alerted": spotted,
        "cases_alerted": alerted,
        "spotted_share_of_spottable": round(spotted / spottable, 4) if spottable else None,
        "alerted_share_of_all": round(alerted / len(cases), 4) if cases else None,
        "report_to_first_alert_sim_min_p50": round(float(np.median(delays_min)), 2)
        if delays_min
        else None,
        "report_to_first_alert_sim_min_max": round(float(np.max(delays_min)), 2)
        if delays_min
        else None,
        "alerts_on_topic": len(topic),
        "distinct_alert_ids": len(set(ids)),
        "duplicate_alert_deliveries": len(ids) - len(set(ids)),
        "false_alerts": false_alerts,
        "last_seen_checked": checked,
        "last_seen_equals_reference": correct,
        "last_seen_matches_ground_truth_passage": consistent,
        "last_seen_correct_share": round(correct / checked, 4) if checked else None,
    }
