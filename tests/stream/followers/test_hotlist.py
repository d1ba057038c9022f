"""Hotlist matching and the alert record: against plain per-row rules and json.dumps."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.records.alerts import (
    Alert,
    HotlistEntry,
    _scan,
    alert_id,
    decode_alerts,
    decode_hotlist,
    encode_hotlist,
    hotlist_key,
)
from stream.followers.hotlist import Hotlist, HotlistFollower

TAGS = [11, 12, 13, 14]


@st.composite
def entries(draw: st.DrawFn) -> list[HotlistEntry]:
    tags = draw(st.lists(st.sampled_from(TAGS), unique=True))
    return [
        HotlistEntry(
            f"case-{t}",
            t,
            draw(st.integers(0, 100)),
            draw(st.sampled_from(["open", "spotted", "recovered", "closed"])),
        )
        for t in tags
    ]


@st.composite
def sighting_rows(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 30))
    ints = st.integers(0, 200)
    return {
        "tag_id": np.array(draw(st.lists(st.sampled_from([*TAGS, 99]), min_size=n, max_size=n)),
                           np.uint64),
        "reader_id": np.array(draw(st.lists(st.integers(1, 9), min_size=n, max_size=n)), np.uint32),
        "first_ts": np.array(draw(st.lists(ints, min_size=n, max_size=n)), np.int64),
        "last_ts": np.array(draw(st.lists(ints, min_size=n, max_size=n)), np.int64),
        "lat": np.array(draw(st.lists(st.floats(-90, 90), min_size=n, max_size=n)), np.float64),
        "lon": np.array(draw(st.lists(st.floats(-180, 180), min_size=n, max_size=n)), np.float64),
        "h3_r9": np.array(draw(st.lists(st.integers(0, 2**63), min_size=n, max_size=n)), np.uint64),
        "is_deleted": np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8),
    }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(entries(), sighting_rows())
def test_match_equals_the_rule_row_by_row(cases: list[HotlistEntry], rows: dict) -> None:
    got = Hotlist(cases).match(rows, published_ms=5)
    by_tag = {e.tag_id: e for e in cases if e.matching}
    want = []
    for i in range(len(rows["tag_id"])):
        e = by_tag.get(int(rows["tag_id"][i]))
        if e is None or rows["is_deleted"][i] or rows["last_ts"][i] < e.stolen_at_ms:
            continue
        t, r, f = int(rows["tag_id"][i]), int(rows["reader_id"][i]), int(rows["first_ts"][i])
        want.append(
            Alert(alert_id(e.case_id, t, r, f), e.case_id, t, r, f, int(rows["last_ts"][i]),
                  float(rows["lat"][i]), float(rows["lon"][i]), int(rows["h3_r9"][i]), 5)
        )  # fmt: skip
    assert got == want
    # Python values, not numpy scalars: the record encodes them as JSON numbers.
    assert all(type(a.tag_id) is int and type(a.lat) is float for a in got)


# An alert's fields, any values: (alert_id, case_id, tag_id, reader_id, ts, lat, lon).
ALERT_FIELDS = (
    st.text(),
    st.text(),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(*ALERT_FIELDS)
def test_alert_encode_is_json_dumps_of_its_fields(
    aid: str, case: str, tag: int, reader: int, ts: int, lat: float, lon: float
) -> None:
    a = Alert(aid, case, tag, reader, ts, ts, lat, lon, tag, ts)
    assert a.encode() == json.dumps({f: getattr(a, f) for f in Alert.__slots__}).encode()
    back = Alert.decode(a.encode())
    assert (back.case_id, back.tag_id, back.first_ts) == (case, tag, ts)


def test_follower_rebuilds_only_when_matching_changes() -> None:
    f = HotlistFollower("localhost:1", "hotlist")
    rows: dict[bytes, bytes] = {}

    def put(*entries: HotlistEntry) -> None:
        news = dict(encode_hotlist(e) for e in entries)
        rows.update(news)
        f._update(rows, set(news))

    put(HotlistEntry("a", 11, 10), HotlistEntry("b", 12, 20))
    first = f.hotlist
    assert first.tags.tolist() == [11, 12] and first.case_ids == ["a", "b"]
    # Marking a case spotted keeps it matching: same arrays, no rebuild.
    put(HotlistEntry("a", 11, 10, "spotted"))
    assert f.hotlist is first
    # Recovered, a tombstone, and a new case each change what matches.
    put(HotlistEntry("b", 12, 20, "recovered"))
    assert f.hotlist.tags.tolist() == [11]
    put(HotlistEntry("c", 13, 30))
    assert f.hotlist.case_ids == ["a", "c"]
    del rows[hotlist_key(11)]
    f._update(rows, {hotlist_key(11)})
    assert f.hotlist.case_ids == ["c"] and f.hotlist.stolen_at.tolist() == [30]


_STATUSES = st.sampled_from(["open", "spotted", "recovered", "closed"])
_RECORD = st.tuples(st.sampled_from("xyz"), st.integers(0, 3), _STATUSES)  # case, stolen, status


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(1, 6),  # tag
                st.one_of(st.none(), _RECORD),  # None: a tombstone
            ),
            max_size=5,
        ),
        max_size=8,
    )
)
def test_follower_updates_equal_a_full_rebuild(polls: list[list[tuple[int, Any]]]) -> None:
    """Poll by poll, the incrementally kept hotlist is the Hotlist of all current records."""
    f = HotlistFollower("localhost:1", "hotlist")
    rows: dict[bytes, bytes] = {}
    for poll in polls:
        changed = set()
        for tag, rec in poll:
            if rec is None:
                rows.pop(hotlist_key(tag), None)
                changed.add(hotlist_key(tag))
            else:
                case, stolen, status = rec
                k, v = encode_hotlist(HotlistEntry(case, tag, stolen, status))
                rows[k] = v
                changed.add(k)
        if changed:
            f._update(rows, changed)
        full = Hotlist([e for v in rows.values() if (e := decode_hotlist(v)) is not None])
        assert f.hotlist.tags.tolist() == full.tags.tolist()
        assert f.hotlist.stolen_at.tolist() == full.stolen_at.tolist()
        assert f.hotlist.case_ids == full.case_ids


def _one_by_one(value: bytes | None) -> Alert | None:
    try:
        return Alert.decode(value) if value else None
    except (ValueError, TypeError):
        return None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda c, t, la: Alert(f"id{t}", c, t, 1, 2, 3, la, 1.0, 4, 5).encode(),
                st.text(max_size=5), st.integers(0, 2**64 - 1), st.floats(-90, 90),
            ),
            st.sampled_from([None, b"", b"null", b"1,2", b"{}", b'{"alert_id": "x"}', b"[1]",
                             b"{bad", b'"s"']),
            st.binary(max_size=8),
        ),
        max_size=12,
    )
)  # fmt: skip
def test_decode_alerts_equals_decoding_each(values: list[bytes | None]) -> None:
    assert decode_alerts(values) == [_one_by_one(v) for v in values]


def _loads(value: bytes) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return ValueError


def _scanned(value: bytes) -> object:
    try:
        return _scan(value)
    except ValueError:
        return ValueError


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=6,
        ).map(lambda v: json.dumps(v).encode()),
        st.sampled_from([b' {"a": 1}', b'{"a": 1} ', b"1 2", b"\xff", "[1]".encode("utf-16")]),
    ).filter(bool)
)
def test_scan_is_json_loads(value: bytes) -> None:
    got, want = _scanned(value), _loads(value)
    assert got == want or (got != got and want != want) or json.dumps(got) == json.dumps(want)
