"""The e2e benchmark's gateway side: simulator chunks -> gateway batches -> Kafka, with thefts.

Reads are published slice by slice of arrival time, in the simulator's send order, one Kafka
message per gateway batch (as a gateway would). Before a slice whose arrival time passes a theft's
report time, the case is put on the hotlist topic (the stream/alert_records contract), so alerts
follow the report as in the city. The feed keeps what the checks need: all reads (for the
reference sightings), the publish wall time of every read of a stolen bike (for alert latency),
the thefts' ground truth and tracks, and the publish rate over time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaProducer

from ingest.publisher import GatewayPublisher
from ingest.reads import Reads
from ingest.simulator import Simulation
from stream.alert_records import HotlistEntry, encode_hotlist

Columns = dict[str, np.ndarray]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Case:
    case_id: str
    tag_id: int
    stolen_at_ms: int
    reported_at_ms: int
    registered_wall_ms: int = 0


@dataclass
class FeedResult:
    reads: list[Reads] = field(default_factory=list)
    n_reads: int = 0
    n_messages: int = 0
    wire_bytes: int = 0
    first_publish_ms: int = 0
    last_publish_ms: int = 0
    # (wall ms after the slice was acknowledged, reads published so far)
    progress: list[tuple[int, int]] = field(default_factory=list)
    cases: dict[int, Case] = field(default_factory=dict)  # by tag_id, reported within the run
    thefts: list[Columns] = field(default_factory=list)
    tracks: list[Columns] = field(default_factory=list)
    passages: list[Columns] = field(default_factory=list)  # of stolen bikes only
    # Reads of stolen bikes: tag_id, reader_id, ts_ms and the wall ms their slice was sent.
    theft_reads: list[Columns] = field(default_factory=list)


def gateway_batches(
    reads: Reads, gateway: np.ndarray, seq: np.ndarray, arrival: np.ndarray
) -> list[tuple[int, int]]:
    """[start, end) row ranges of the gateway batches: runs of equal (gateway, seq, arrival)."""
    n = len(reads)
    if n == 0:
        return []
    change = np.zeros(n, bool)
    change[0] = True
    for k in (gateway, seq, arrival):
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


async def feed(
    sim: Simulation,
    publisher: GatewayPublisher,
    hotlist: AIOKafkaProducer,
    hotlist_topic: str,
    *,
    slice_ms: int = 1000,
    rate_reads_per_s: float = 0.0,
    chunk_s: float = 60.0,
    max_inflight: int = 8,
) -> FeedResult:
    """Publish the whole simulated run; returns once every message is acknowledged."""
    res = FeedResult()
    cfg = sim.cfg
    pending: list[Case] = []  # thefts not yet reported, by report time
    stolen_tags = np.empty(0, np.uint64)
    t_start = time.perf_counter()
    inflight: list[asyncio.Task[None]] = []
    sent_reads = 0
    for ch in sim.chunks(chunk_s):
        if len(ch.thefts["tag_id"]):
            th = ch.thefts
            res.thefts.append(th)
            # Cases reported within the run are the ones the city can act on during it.
            for tag, stolen, reported in zip(
                th["tag_id"].tolist(),
                th["stolen_at_ms"].tolist(),
                th["reported_at_ms"].tolist(),
                strict=True,
            ):
                if stolen < cfg.end_ms and reported < cfg.end_ms:
                    pending.append(Case(f"bench-{tag}", tag, stolen, reported))
            pending.sort(key=lambda c: c.reported_at_ms)
            stolen_tags = np.unique(np.concatenate([stolen_tags, th["tag_id"]]))
        if len(ch.tracks["tag_id"]):
            res.tracks.append(ch.tracks)
        if len(stolen_tags) and len(ch.passages["tag_id"]):
            m = np.isin(ch.passages["tag_id"], stolen_tags)
            res.passages.append({k: v[m] for k, v in ch.passages.items()})
        reads = ch.reads
        if not len(reads):
            continue
        res.reads.append(reads)
        batches = gateway_batches(reads, ch.gateway_id, ch.batch_seq, ch.arrival_ms)
        b_start = np.array([b[0] for b in batches], np.int64)
        b_arrival = ch.arrival_ms[b_start]
        slice_of = (b_arrival - cfg.start_ms) // slice_ms
        cuts = np.flatnonzero(np.diff(slice_of)) + 1
        for lo, hi in zip(
            np.concatenate(([0], cuts)).tolist(),
            np.append(cuts, len(batches)).tolist(),
            strict=True,
        ):
            slice_end_ms = cfg.start_ms + (int(slice_of[lo]) + 1) * slice_ms
            while pending and pending[0].reported_at_ms < slice_end_ms:
                await _report(pending.pop(0), res, hotlist, hotlist_topic)
            rows = slice(batches[lo][0], batches[hi - 1][1])
            items = [
                (reads.take(np.arange(a, b)), int(ch.gateway_id[a])) for a, b in batches[lo:hi]
            ]
            sent_ms = now_ms()
            if not res.first_publish_ms:
                res.first_publish_ms = sent_ms
            # Several slices in flight: a gateway does not wait for the previous second's
            # acknowledgement before sending the next, and waiting would cap the rate at
            # one broker round trip per slice.
            inflight.append(asyncio.create_task(_publish(publisher, items, res)))
            if len(inflight) >= max_inflight:
                await inflight.pop(0)
            if len(stolen_tags):
                tags = reads.tag_id[rows]
                m = np.isin(tags, stolen_tags)
                if m.any():
                    res.theft_reads.append(
                        {
                            "tag_id": tags[m],
                            "reader_id": reads.reader_id[rows][m],
                            "ts_ms": reads.ts_ms[rows][m],
                            "sent_ms": np.full(int(m.sum()), sent_ms, np.int64),
                        }
                    )
            sent_reads += rows.stop - rows.start
            if rate_reads_per_s > 0:
                # Pace to the requested rate: sleep until this many reads are due.
                due_s = sent_reads / rate_reads_per_s - (time.perf_counter() - t_start)
                if due_s > 0:
                    await asyncio.sleep(due_s)
    for task in inflight:
        await task
    while pending:  # reports after the last read: still registered, they count as not spotted
        await _report(pending.pop(0), res, hotlist, hotlist_topic)
    return res


async def _publish(
    publisher: GatewayPublisher, items: list[tuple[Reads, int]], res: FeedResult
) -> None:
    stats = await publisher.publish_many(items)
    res.n_messages += stats.messages
    res.wire_bytes += stats.bytes
    res.n_reads += stats.reads
    res.last_publish_ms = now_ms()
    res.progress.append((res.last_publish_ms, res.n_reads))


async def _report(case: Case, res: FeedResult, producer: AIOKafkaProducer, topic: str) -> None:
    key, value = encode_hotlist(HotlistEntry(case.case_id, case.tag_id, case.stolen_at_ms))
    await (await producer.send(topic, value, key=key))
    case.registered_wall_ms = now_ms()
    res.cases[case.tag_id] = case
