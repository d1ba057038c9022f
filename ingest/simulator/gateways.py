"""Gateways: reader clock skew, one batch per interval, outages with a late flush, batch retries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.simulator import _rand
from ingest.simulator.city import City
from ingest.simulator.config import CityConfig

_GW_SHIFT = np.int64(1 << 43)  # composite (gateway, time) keys: time offsets stay below 2^43 ms
MAX_FLUSH_BATCHES = 200  # an outage's backlog is uploaded as at most this many batches
LATENCY_MIN_MS = 20
LATENCY_MAX_MS = 300  # capped at half the batch interval so batches of a gateway never tie
RETRY_DELAY_MIN_MS = 500
RETRY_DELAY_MAX_MS = 3000
_SALT_LATENCY = 11
_SALT_RETRY = 12


@dataclass(frozen=True, slots=True)
class Outages:
    """Gateway outages [start_ms, end_ms) in true time, sorted by (gateway, start), disjoint."""

    gateway: np.ndarray  # int32 gateway index
    start_ms: np.ndarray  # int64, aligned to the batch interval
    end_ms: np.ndarray  # int64, aligned to the batch interval
    base_ms: int  # origin of the composite keys

    def __len__(self) -> int:
        return len(self.gateway)


def make_outages(cfg: CityConfig, city: City) -> Outages:
    """Poisson outages per gateway over the run (and before it, so the run can open mid-outage)."""
    g = _rand.rng(cfg.seed, _rand.P_GATEWAY)
    n_gw = len(city.gateway_id)
    lead_ms = int(cfg.offline_max_s * 1000)
    t0, t1 = cfg.start_ms - lead_ms, cfg.end_ms
    days = (t1 - t0) / 86_400_000
    cnt = g.poisson(cfg.offline_rate_per_day * days, n_gw)
    gw = np.repeat(np.arange(n_gw, dtype=np.int32), cnt)
    b = cfg.batch_interval_ms
    start = g.integers(t0, t1, len(gw)) // b * b
    dur = np.exp(g.uniform(np.log(cfg.offline_min_s), np.log(cfg.offline_max_s), len(gw)))
    end = start + np.maximum(np.round(dur * 1000 / b), 1).astype(np.int64) * b
    # Merge overlapping outages of one gateway: a running max of end within the gateway.
    o = np.lexsort((start, gw))
    gw, start, end = gw[o], start[o], end[o]
    key_end = gw.astype(np.int64) * _GW_SHIFT + (end - t0)
    run_end = np.maximum.accumulate(key_end) if len(gw) else key_end
    new = np.ones(len(gw), bool)
    new[1:] = gw[1:].astype(np.int64) * _GW_SHIFT + (start[1:] - t0) >= run_end[:-1]
    grp = np.cumsum(new) - 1
    merged_end = np.zeros(int(new.sum()), np.int64)
    np.maximum.at(merged_end, grp, end)
    return Outages(gateway=gw[new], start_ms=start[new], end_ms=merged_end, base_ms=t0)


@dataclass(frozen=True, slots=True)
class Sent:
    """Per-read gateway fields: the input reads, then the second copies of retried batches."""

    retry_src: np.ndarray  # int64 input rows that are sent twice (appended in this order)
    gateway: np.ndarray  # int32 gateway index
    ts_ms: np.ndarray  # int64 reader clock
    arrival_ms: np.ndarray  # int64 true time the batch reaches Kafka
    batch_seq: np.ndarray  # int64 per-gateway batch number (its first-send time, increasing)
    is_retry: np.ndarray  # bool: the second copy of a retried batch
    late: np.ndarray  # bool: buffered through an outage


def send(cfg: CityConfig, city: City, out: Outages, reader: np.ndarray, t_ms: np.ndarray) -> Sent:
    """Assign each read its gateway batch, arrival time and reader-clock timestamp.

    Every decision is a pure function of (seed, gateway, time), never of the order or split of
    the input, so reads of one batch produced in different windows land in the same batch.
    """
    gw = city.reader_gateway[reader]
    b = cfg.batch_interval_ms
    gw64 = gw.astype(np.int64)
    slot = t_ms // b
    lat = LATENCY_MIN_MS + (
        _rand.mix64((gw64 << 40) + slot, cfg.seed * 16 + _SALT_LATENCY)
        % np.uint64(min(LATENCY_MAX_MS, b // 2) - LATENCY_MIN_MS)
    ).astype(np.int64)
    arrival = (slot + 1) * b + lat

    late = np.zeros(len(t_ms), bool)
    # Only reads of gateways with an outage overlapping this stretch of time need a lookup.
    live = (out.start_ms < t_ms.max(initial=0) + 1) & (out.end_ms > t_ms.min(initial=0))
    if live.any():
        down = np.zeros(len(city.gateway_id), bool)
        down[out.gateway[live]] = True
        c = np.flatnonzero(down[gw])
        okey = out.gateway.astype(np.int64) * _GW_SHIFT + (out.start_ms - out.base_ms)
        rkey = gw64[c] * _GW_SHIFT + (t_ms[c] - out.base_ms)
        i = np.maximum(np.searchsorted(okey, rkey, side="right") - 1, 0)
        tc = t_ms[c]
        is_late = (out.gateway[i] == gw[c]) & (out.start_ms[i] <= tc) & (tc < out.end_ms[i])
        # The backlog goes up right after the outage, one batch per bucket of buffered time;
        # bucket k leaves k+1 ms after the end, before the first live batch (>= end + interval).
        os_, oe = out.start_ms[i], out.end_ms[i]
        bucket_ms = np.maximum(60_000, -(-(oe - os_) // MAX_FLUSH_BATCHES))
        c, k = c[is_late], ((tc - os_) // bucket_ms)[is_late]
        late[c] = True
        arrival[c] = oe[is_late] + 1 + k

    batch_seq = arrival
    retry = _rand.unit((gw64 << 44) + batch_seq, cfg.seed * 16 + _SALT_RETRY) < cfg.retry_rate
    # Each gateway has its own fixed retry timeout, so two resent batches of one gateway never
    # arrive in the same millisecond (every send-order group is exactly one batch).
    span = RETRY_DELAY_MAX_MS - RETRY_DELAY_MIN_MS
    timeout = RETRY_DELAY_MIN_MS + (
        _rand.mix64(np.arange(len(city.gateway_id), dtype=np.uint64), cfg.seed * 16 + _SALT_RETRY)
        % np.uint64(span)
    ).astype(np.int64)
    delay = timeout[gw]
    rsrc = np.flatnonzero(retry)
    ts = t_ms + city.gateway_skew_ms[gw]
    return Sent(
        retry_src=rsrc,
        gateway=np.concatenate([gw, gw[rsrc]]),
        ts_ms=np.concatenate([ts, ts[rsrc]]),
        arrival_ms=np.concatenate([arrival, arrival[rsrc] + delay[rsrc]]),
        batch_seq=np.concatenate([batch_seq, batch_seq[rsrc]]),
        is_retry=np.concatenate([np.zeros(len(ts), bool), np.ones(len(rsrc), bool)]),
        late=np.concatenate([late, late[rsrc]]),
    )
