"""City simulator: configured rates come out in the data, outputs obey the read contract, and runs
are deterministic and independent of how they are chunked."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from core.records.reads import FLAG_MOBILE, FLAG_TAMPER, Reads
from ingest.simulator import CityConfig, iter_chunks, run_simulation_to_parquet, simulate
from ingest.simulator.result import SimResult

DAY_S = 86_400


@pytest.fixture(scope="module")
def day() -> SimResult:
    """One small city day with boosted rates so every effect has enough samples."""
    cfg = CityConfig(
        seed=7,
        scale=0.005,
        duration_s=DAY_S,
        dup_rate=0.05,
        retry_rate=0.02,
        offline_rate_per_day=2.0,
        theft_rate_per_day=300.0,
    )
    return simulate(cfg)


def _true_ms(r: SimResult) -> np.ndarray:
    """Reader clock minus the gateway's skew: the true time of each read."""
    return r.reads.ts_ms - r.city.gateway_skew_ms[r.gateway_id.astype(np.int64) - 1]


def _distinct(tag: np.ndarray, reader: np.ndarray, ts: np.ndarray) -> int:
    return len(
        np.unique(np.stack([tag.astype(np.int64), reader.astype(np.int64), ts], axis=1), axis=0)
    )


def test_config_rejects_bad_values_with_the_field_name() -> None:
    for kw, name in (
        ({"miss_rate": 1.5}, "miss_rate"),
        ({"duration_s": 0}, "duration_s"),
        ({"speed_min_mps": 5.0, "speed_max_mps": 4.0}, "speed_max_mps"),
        ({"read_range_m": float("nan")}, "read_range_m"),
        ({"bikes": 0}, "bikes"),
    ):
        with pytest.raises(ValueError, match=name):
            CityConfig(**kw)
    with pytest.raises(ValueError, match="no_such_knob"):
        run_simulation_to_parquet("/nonexistent", no_such_knob=1)
    with pytest.raises(ValueError, match="chunk_s"):
        iter_chunks(CityConfig(scale=0.001), chunk_s=0)


def test_reads_obey_the_contract(day: SimResult) -> None:
    r, cfg, reads = day, day.config, day.reads
    assert len(reads) > 100_000
    Reads(**reads.columns())  # dtypes and lengths
    assert np.isin(reads.reader_id, r.readers["reader_id"]).all()
    mobile_ids = r.readers["reader_id"][r.readers["kind"] == "mobile"]
    mobile = np.isin(reads.reader_id, mobile_ids)
    assert mobile.any() and (~mobile).any()
    assert ((reads.flags & FLAG_MOBILE) != 0).tolist() == mobile.tolist()
    assert np.isnan(reads.lat[~mobile]).all() and np.isnan(reads.lon[~mobile]).all()
    assert ((reads.lat[mobile] >= cfg.lat_min) & (reads.lat[mobile] <= cfg.lat_max)).all()
    assert ((reads.lon[mobile] >= cfg.lon_min) & (reads.lon[mobile] <= cfg.lon_max)).all()
    skew = cfg.max_skew_ms
    assert reads.ts_ms.min() >= cfg.start_ms - skew and reads.ts_ms.max() < cfg.end_ms + skew
    t = _true_ms(r)
    assert t.min() >= cfg.start_ms and t.max() < cfg.end_ms
    assert (r.arrival_ms > t).all()
    assert reads.rssi_dbm.min() >= -90 and reads.rssi_dbm.max() <= -40
    assert np.isin(r.gateway_id, r.readers["gateway_id"]).all()


def test_send_order_and_batches(day: SimResult) -> None:
    assert (np.diff(day.arrival_ms) >= 0).all()
    first = ~day.is_retry
    assert (day.batch_seq[first] == day.arrival_ms[first]).all()
    assert (day.arrival_ms[day.is_retry] > day.batch_seq[day.is_retry]).all()
    # A retried batch is resent whole: same reads, same count.
    key = day.gateway_id.astype(np.int64) << 44 | day.batch_seq
    orig_batches, orig_n = np.unique(key[first], return_counts=True)
    retry_batches, retry_n = np.unique(key[day.is_retry], return_counts=True)
    i = np.searchsorted(orig_batches, retry_batches)
    assert (orig_batches[i] == retry_batches).all() and (orig_n[i] == retry_n).all()
    # Each send (gateway, batch_seq, arrival) is one contiguous run of rows: one Kafka message.
    send_key = np.stack([day.gateway_id.astype(np.int64), day.batch_seq, day.arrival_ms], axis=1)
    change = np.any(send_key[1:] != send_key[:-1], axis=1)
    runs = int(change.sum()) + 1
    assert runs == len(np.unique(send_key, axis=0)) == len(orig_batches) + len(retry_batches)
    share = len(retry_batches) / len(orig_batches)
    assert share == pytest.approx(day.config.retry_rate, rel=0.2)


def test_reads_per_passage_and_duplicates(day: SimResult) -> None:
    cfg, reads = day.config, day.reads
    stolen = np.isin(reads.tag_id, day.thefts["tag_id"])
    m = ~day.is_retry & ~stolen
    n_rows = int(m.sum())
    n_distinct = _distinct(reads.tag_id[m], reads.reader_id[m], reads.ts_ms[m])
    assert (n_rows - n_distinct) / n_distinct == pytest.approx(cfg.dup_rate, rel=0.1)
    p = day.passages
    ok = ~np.isin(p["tag_id"], day.thefts["tag_id"])
    dwell_ms = (p["t_exit_ms"] - p["t_enter_ms"])[ok]
    expected = (dwell_ms / cfg.beacon_interval_ms).sum() * (1 - cfg.miss_rate)
    assert n_distinct / expected == pytest.approx(1.0, abs=0.03)
    per_passage = n_distinct / ok.sum()
    assert 5 < per_passage < 15  # ~50 m at ~5 m/s, one beacon a second


def test_every_read_lies_inside_a_true_passage(day: SimResult) -> None:
    p, reads = day.passages, day.reads
    m = ~day.is_retry
    t = _true_ms(day)[m]
    pair_keys = np.concatenate(
        [
            p["tag_id"].astype(np.int64) << 20 | p["reader_id"].astype(np.int64),
            reads.tag_id[m].astype(np.int64) << 20 | reads.reader_id[m].astype(np.int64),
        ]
    )
    _, pair = np.unique(pair_keys, return_inverse=True)
    pp, rp = pair[: len(p["tag_id"])], pair[len(p["tag_id"]) :]
    o = np.lexsort((p["t_enter_ms"], pp))
    key_p = pp[o].astype(np.int64) << 40 | (p["t_enter_ms"][o] - day.config.start_ms + (1 << 30))
    key_r = rp.astype(np.int64) << 40 | (t - day.config.start_ms + (1 << 30))
    i = np.searchsorted(key_p, key_r, side="right") - 1
    assert (i >= 0).all() and (pp[o][i] == rp).all()
    assert (t < p["t_exit_ms"][o][i]).all()


def test_late_reads_come_from_gateway_outages(day: SimResult) -> None:
    t = _true_ms(day)
    late = day.arrival_ms - t > 60_000
    assert 0 < late.mean() < 0.5
    o = day.outages
    gw = day.gateway_id[late]
    tl, arr = t[late], day.arrival_ms[late]
    # Each late read was buffered by its gateway during an outage and flushed right after it.
    for g in np.unique(gw)[:50]:
        sel = gw == g
        mine = o["gateway_id"] == g
        s, e = o["start_ms"][mine], o["end_ms"][mine]
        k = np.searchsorted(s, tl[sel], "right") - 1
        assert (k >= 0).all() and (tl[sel] < e[k]).all()
        assert ((arr[sel] > e[k]) & (arr[sel] <= e[k] + 201 + 3000)).all()
    # The late share follows the offline time fraction (traffic is uneven, so loosely).
    gws = day.city.gateway_id
    frac = (o["end_ms"] - np.maximum(o["start_ms"], day.config.start_ms)).clip(0).sum() / (
        len(gws) * DAY_S * 1000
    )
    assert 0.3 * frac < late.mean() < 3 * frac


def test_thefts_match_configuration(day: SimResult) -> None:
    cfg, th = day.config, day.thefts
    n = len(th["tag_id"])
    assert n == pytest.approx(cfg.theft_rate_per_day, rel=0.3)
    assert len(np.unique(th["tag_id"])) == n
    hour = ((th["stolen_at_ms"] + 8 * 3_600_000) // 3_600_000) % 24
    night = (hour >= 22) | (hour < 5)
    assert night.mean() == pytest.approx(cfg.theft_night_share, abs=0.12)
    delay_s = (th["reported_at_ms"] - th["stolen_at_ms"]) / 1000
    assert (delay_s > 0).all()
    assert np.median(delay_s) == pytest.approx(cfg.report_delay_median_s, rel=0.35)
    vans = th["van_group"][th["van_group"] >= 0]
    groups, sizes = np.unique(vans, return_counts=True)
    assert len(groups) > 0 and (sizes >= 2).all()
    for g in groups[:10]:  # a van's bikes leave together and reach the same stash
        m = th["van_group"] == g
        assert len(set(th["depart_ms"][m])) == 1 and len(set(th["stash_lat"][m])) == 1
    assert th["tampered"].mean() == pytest.approx(cfg.tamper_share, abs=0.12)
    assert set(th["place"]) <= {"home", "work", "errand"}


def test_stolen_bikes_tracks_and_dark_tags(day: SimResult) -> None:
    th, reads, tr = day.thefts, day.reads, day.tracks
    t = _true_ms(day)
    tamp = th["tampered"]
    for tag, dark in zip(th["tag_id"][tamp], th["dark_at_ms"][tamp], strict=True):
        m = reads.tag_id == tag
        assert (t[m] < dark).all()  # the tag is silent once tampered
    flagged = (reads.flags & FLAG_TAMPER) != 0
    assert np.isin(reads.tag_id[flagged], th["tag_id"][tamp]).all()
    # The true track of a stolen bike runs from the theft place to the stash.
    done = th["arrive_ms"] < day.config.end_ms
    for i in np.flatnonzero(done)[:20]:
        m = tr["tag_id"] == th["tag_id"][i]
        order = np.argsort(tr["t_ms"][m])
        lat = tr["lat"][m][order]
        assert lat[0] == pytest.approx(th["theft_lat"][i]) and lat[-1] == th["stash_lat"][i]
        assert tr["t_ms"][m].min() >= th["depart_ms"][i]
    # Owners no longer ride a stolen bike: its fixed-reader reads lie on the theft route.
    fixed = (reads.flags & FLAG_MOBILE) == 0
    for i in range(min(20, len(th["tag_id"]))):
        m = (reads.tag_id == th["tag_id"][i]) & fixed & (t > th["stolen_at_ms"][i])
        assert (t[m] >= th["depart_ms"][i] - 60_000).all()
        assert (t[m] <= th["arrive_ms"][i] + 60_000).all()


def _small(seed: int) -> CityConfig:
    return CityConfig(
        seed=seed,
        scale=0.002,
        duration_s=3 * 3600,
        theft_rate_per_day=200.0,
        offline_rate_per_day=3.0,  # late flushes keep reads pending across windows
        start_ms=CityConfig().start_ms + 6 * 3_600_000,
    )


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b, c = simulate(_small(1)), simulate(_small(1)), simulate(_small(2))
    for k, v in a.reads.columns().items():
        assert v.tobytes() == getattr(b.reads, k).tobytes(), k
    assert a.arrival_ms.tobytes() == b.arrival_ms.tobytes()
    for k in a.thefts:
        assert np.array_equal(a.thefts[k], b.thefts[k]), k
    assert a.passages["t_enter_ms"].tobytes() == b.passages["t_enter_ms"].tobytes()
    assert len(a.reads) != len(c.reads) or a.reads.ts_ms.tobytes() != c.reads.ts_ms.tobytes()


def test_chunks_concatenate_to_the_whole_run() -> None:
    cfg = _small(3)
    whole = simulate(cfg)
    chunks = list(iter_chunks(cfg, chunk_s=37.0))
    assert len(chunks) > 100
    parts = Reads.concat([c.reads for c in chunks])
    for k, v in whole.reads.columns().items():
        assert v.tobytes() == getattr(parts, k).tobytes(), k
    assert whole.batch_seq.tobytes() == np.concatenate([c.batch_seq for c in chunks]).tobytes()
    for c in chunks:  # each chunk holds exactly the reads arriving in its slice
        if len(c.reads):
            assert c.arrival_ms.min() >= c.arrival_from_ms and c.arrival_ms.max() < c.arrival_to_ms
    assert sum(len(c.thefts["tag_id"]) for c in chunks) == len(whole.thefts["tag_id"])


def test_parquet_output(tmp_path) -> None:
    seen: list[tuple[float, int]] = []
    s = run_simulation_to_parquet(
        tmp_path,
        scale=0.002,
        duration_s=1800,
        seed=5,
        theft_rate=500.0,
        progress_cb=lambda f, n: seen.append((f, n)),
    )
    t = pq.read_table(tmp_path / "reads.parquet")
    want = {
        "tag_id": "uint64",
        "reader_id": "uint32",
        "ts_ms": "int64",
        "rssi_dbm": "int8",
        "flags": "uint8",
        "lat": "double",
        "lon": "double",
        "gateway_id": "uint32",
    }
    got = {f.name: str(f.type) for f in t.schema}
    assert {k: got[k] for k in want} == want
    assert set(got) - set(want) == {"arrival_ms", "batch_seq"}
    assert t.num_rows == s["reads"] > 0
    assert Reads.from_arrow(t).ts_ms.dtype == np.int64
    readers = pacsv.read_csv(tmp_path / "readers.csv")
    assert readers.column_names == ["reader_id", "lat", "lon", "kind"]
    assert set(readers.column("kind").to_pylist()) == {"fixed", "mobile"}
    for name in ("passages", "thefts", "tracks", "outages"):
        assert (tmp_path / f"truth_{name}.parquet").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["reads"] == s["reads"]
    assert seen and seen[-1][0] == 1.0 and seen[-1][1] == s["reads"]


def test_stolen_bikes_stay_stashed_on_later_days() -> None:
    cfg = CityConfig(
        seed=11,
        scale=0.002,
        duration_s=2 * DAY_S,
        theft_rate_per_day=150.0,
        patrol_parked_read_prob=0.5,
    )
    r = simulate(cfg)
    th, reads = r.thefts, r.reads
    day2 = cfg.start_ms + DAY_S * 1000
    assert (th["stolen_at_ms"] < day2).any() and (th["stolen_at_ms"] >= day2).any()
    t = _true_ms(r)
    fixed = (reads.flags & FLAG_MOBILE) == 0
    patrol_near_stash = 0
    for i in np.flatnonzero(th["arrive_ms"] < day2 - 3_600_000):
        mine = reads.tag_id == th["tag_id"][i]
        # No owner rides it again: fixed readers never see it after it reaches the stash.
        assert not (mine & fixed & (t > th["arrive_ms"][i] + 60_000)).any()
        seen = mine & ~fixed & (t > th["arrive_ms"][i] + 60_000)
        if seen.any():  # a patrol passing the stash reads it there
            assert not th["tampered"][i]
            assert np.abs(reads.lat[seen] - th["stash_lat"][i]).max() < 0.001
            patrol_near_stash += 1
    assert patrol_near_stash > 0
