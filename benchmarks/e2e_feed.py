"""The e2e benchmark's gateway side: simulator chunks -> gateway buffers -> Kafka, with thefts.

Gateways flush on the wall clock, as a real uplink does: every `flush_ms` of wall time each gateway
sends everything that reached it since its last flush, one Kafka message per (gateway, partition)
(the partition rule and per-gateway batch_seq of docs/wire-format.md). Each gateway keeps its own
phase within the interval, as independent uplinks do (their clocks are not synchronised to the
millisecond): the gateways are spread over `flush_slots` phases, one phase flushing every
`flush_ms / flush_slots`. `flush_slots=1` is the worst case of all gateways flushing at once.
Replaying a day 200x faster than real time, one flush then carries many simulated batch intervals,
as the simulator's outage backlogs already do (ingest/simulator/gateways.py MAX_FLUSH_BATCHES).
Reads keep the simulator's send order within a gateway. Thefts are reported
(`benchmarks.e2e_owners`: on the recovery API, the bike registered when the simulator reveals its
theft, or straight onto the hotlist topic) when the replay reaches their report time,
concurrently with the flushes (a report does not wait for the city's gateways, nor they for
it). The feed keeps what the checks need: all reads (in memory or in a spool, for the reference
sightings), the publish wall time of every read of a stolen bike (for alert latency), the thefts'
ground truth and tracks, and the publish rate over time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks.e2e_owners import Case, Reporter, now_ms
from benchmarks.e2e_spool import ReadSpool
from core.records.reads import Reads
from ingest.publisher import GatewayPublisher, SentMessages
from ingest.simulator import SimChunk, Simulation

Columns = dict[str, np.ndarray]


@dataclass
class FeedResult:
    reads: list[Reads] = field(default_factory=list)
    n_reads: int = 0
    n_messages: int = 0
    wire_bytes: int = 0
    first_publish_ms: int = 0
    last_publish_ms: int = 0
    n_flushes: int = 0
    # (wall ms after the slice was acknowledged, reads published so far)
    progress: list[tuple[int, int]] = field(default_factory=list)
    cases: dict[int, Case] = field(default_factory=dict)  # by tag_id, reported within the run
    thefts: list[Columns] = field(default_factory=list)
    tracks: list[Columns] = field(default_factory=list)
    passages: list[Columns] = field(default_factory=list)  # of stolen bikes only
    # Reads of stolen bikes: tag_id, reader_id, ts_ms and the wall ms their slice was sent.
    theft_reads: list[Columns] = field(default_factory=list)


def phase_slot(gateway_id: np.ndarray, slots: int) -> np.ndarray:
    """The flush phase (0..slots-1) of each gateway: a fixed, well-spread hash of its id."""
    if slots <= 1:
        return np.zeros(len(gateway_id), np.int64)
    h = (gateway_id.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return (h % np.uint64(slots)).astype(np.int64)


class _GatewayBuffer:
    """Reads that arrived at the gateways since their last flush, per flush phase, in arrival
    (send) order within a gateway."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.parts: list[list[tuple[Reads, np.ndarray]]] = [[] for _ in range(slots)]
        # Added since the last take, not yet split by phase: a slice of simulated time can be a
        # handful of reads (a night), so splitting is done once per flush, not once per slice.
        self.unsplit: list[tuple[Reads, np.ndarray]] = []

    def add(self, reads: Reads, gateway_id: np.ndarray) -> None:
        self.unsplit.append((reads, gateway_id))

    def _split(self) -> None:
        if not self.unsplit:
            return
        reads = Reads.concat([r for r, _ in self.unsplit])
        gw = np.concatenate([g for _, g in self.unsplit])
        self.unsplit = []
        slot = phase_slot(gw, self.slots)
        order = np.argsort(slot, kind="stable")  # keeps each gateway's send order
        bounds = np.searchsorted(slot[order], np.arange(self.slots + 1))
        for k in range(self.slots):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            if hi > lo:
                self.parts[k].append((reads.take(order[lo:hi]), gw[order[lo:hi]]))

    def take(self, slot: int) -> tuple[Reads, np.ndarray] | None:
        """The reads of the gateways of phase `slot` (None if there are none)."""
        self._split()
        parts = self.parts[slot]
        if not parts:
            return None
        self.parts[slot] = []
        return Reads.concat([r for r, _ in parts]), np.concatenate([g for _, g in parts])


async def feed(
    sim: Simulation,
    publisher: GatewayPublisher,
    reporter: Reporter,
    *,
    flush_ms: int = 1000,
    flush_slots: int = 1,
    slice_ms: int = 1000,
    rate_reads_per_s: float = 0.0,
    chunk_s: float = 60.0,
    max_inflight_s: float = 4.0,
    spool: ReadSpool | None = None,
) -> FeedResult:
    """Publish the whole simulated run; returns once every message is acknowledged.

    Simulated arrival time advances `slice_ms` at a time (as fast as the generator goes, or paced
    to `rate_reads_per_s`); each gateway flushes every `flush_ms` of wall time, at one of
    `flush_slots` phases. Reads go to `spool` when given (a day does not fit in memory twice),
    else to `FeedResult.reads`.
    """
    if flush_ms < 1:
        raise ValueError(f"flush_ms must be >= 1 (got {flush_ms})")
    if not 1 <= flush_slots <= flush_ms:
        raise ValueError(f"flush_slots must be in 1..flush_ms (got {flush_slots})")
    res = FeedResult()
    cfg = sim.cfg
    pending: list[Case] = []  # thefts not yet reported, by report time
    registering: dict[int, asyncio.Task[None]] = {}  # tag -> its bike's registration
    reporting: list[asyncio.Task[None]] = []
    stolen_tags = np.empty(0, np.uint64)
    inflight: list[asyncio.Task[None]] = []
    buf = _GatewayBuffer(flush_slots)
    t_start = time.perf_counter()
    every_s = flush_ms / 1000 / flush_slots  # one phase slot after the other
    # Unacknowledged flushes allowed, as seconds of flushing: a gateway does not wait either.
    max_inflight = max(1, round(max_inflight_s * flush_slots * 1000 / flush_ms))
    next_flush = t_start + every_s
    slot = 0
    queued = 0

    async def flush(final: bool = False) -> None:
        """Flush the gateways of the next phase slot (all of them when `final`)."""
        nonlocal next_flush, slot
        next_flush = time.perf_counter() + every_s
        slots = range(flush_slots) if final else [slot]
        slot = (slot + 1) % flush_slots
        for k in slots:
            taken = buf.take(k)
            if taken is not None:
                await flush_slot(*taken)

    async def flush_slot(reads: Reads, gw: np.ndarray) -> None:
        sent_ms = now_ms()
        if not res.first_publish_ms:
            res.first_publish_ms = sent_ms
        _record_theft_reads(res, reads, stolen_tags, sent_ms)
        # Several flushes in flight: waiting for each acknowledgement would cap the rate at one
        # broker round trip per flush, and a gateway does not wait either.
        # Encoding runs off the event loop, so acknowledgements and sends keep flowing; the
        # messages are then queued in order here, so batch_seq stays in send order per gateway.
        msgs = await asyncio.to_thread(publisher.flush_messages, reads, gw)
        sent = await publisher.enqueue(msgs)
        inflight.append(asyncio.create_task(_acked(sent, len(reads), res)))
        while len(inflight) >= max_inflight:
            await inflight.pop(0)

    async def until(t: float) -> None:
        """Sleep until perf_counter() >= t, flushing on schedule meanwhile."""
        while (now := time.perf_counter()) < t:
            if now >= next_flush:
                await flush()
            await asyncio.sleep(max(min(t, next_flush) - now, 0))

    chunks = sim.chunks(chunk_s)

    def generate() -> SimChunk | None:
        # Simulation and spooling run in a thread: a 60 s chunk of a full-scale city is a few
        # hundred ms of CPU that would otherwise stall sends and acknowledgements.
        ch = next(chunks, None)
        if ch is not None and len(ch.reads) and spool is not None:
            spool.add(ch.reads)
        return ch

    next_chunk = asyncio.ensure_future(asyncio.to_thread(generate))
    while (ch := await next_chunk) is not None:
        next_chunk = asyncio.ensure_future(asyncio.to_thread(generate))
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
                    pending.append(Case("", tag, stolen, reported))
                    if tag not in registering:
                        registering[tag] = asyncio.create_task(reporter.register(tag))
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
        if spool is None:
            res.reads.append(reads)
        slice_of = (ch.arrival_ms - cfg.start_ms) // slice_ms
        cuts = np.flatnonzero(np.diff(slice_of)) + 1
        for lo, hi in zip(
            np.concatenate(([0], cuts)).tolist(), np.append(cuts, len(reads)).tolist(), strict=True
        ):
            slice_end_ms = cfg.start_ms + (int(slice_of[lo]) + 1) * slice_ms
            while pending and pending[0].reported_at_ms < slice_end_ms:
                case = pending.pop(0)
                reporting.append(
                    asyncio.create_task(_report(case, registering.get(case.tag_id), reporter, res))
                )
            rows = Reads(**{k: v[lo:hi] for k, v in reads.columns().items()})  # views
            buf.add(rows, ch.gateway_id[lo:hi])
            queued += hi - lo
            if rate_reads_per_s > 0:
                # A cap, never made up for beyond one flush interval: when generating fell behind
                # the schedule (always at the start, while the first chunk is simulated), the
                # schedule moves, instead of publishing the backlog as one burst far above the
                # rate (the first million reads of a day went out at ~2.5 M reads/s before
                # this). Within the slack, sleeps that overshoot are made up for, so the pace
                # holds on average.
                behind = time.perf_counter() - (t_start + queued / rate_reads_per_s)
                t_start += max(behind - flush_ms / 1000, 0.0)
                await until(t_start + queued / rate_reads_per_s)
            if time.perf_counter() >= next_flush:
                await flush()
    # The last reads leave at their gateways' phases too, over one more interval: flushing all
    # at once would end the replay with the worst-case burst the phases model away.
    await until(time.perf_counter() + flush_ms / 1000)
    await flush(final=True)  # whatever is left (nothing, but the current slot's newest)
    for task in inflight:
        await task
    # Reports after the last read: still made, they count as not spotted.
    reporting += [
        asyncio.create_task(_report(c, registering.get(c.tag_id), reporter, res)) for c in pending
    ]
    await asyncio.gather(*reporting)  # a failed request fails the run, with the API's answer
    return res


def _record_theft_reads(
    res: FeedResult, reads: Reads, stolen_tags: np.ndarray, sent_ms: int
) -> None:
    if not len(stolen_tags):
        return
    m = np.isin(reads.tag_id, stolen_tags)
    if m.any():
        res.theft_reads.append(
            {
                "tag_id": reads.tag_id[m],
                "reader_id": reads.reader_id[m],
                "ts_ms": reads.ts_ms[m],
                "sent_ms": np.full(int(m.sum()), sent_ms, np.int64),
            }
        )


async def _acked(sent: SentMessages, n_reads: int, res: FeedResult) -> None:
    stats = await sent.wait()
    res.n_messages += stats.messages
    res.wire_bytes += stats.bytes
    res.n_reads += n_reads
    res.n_flushes += 1
    res.last_publish_ms = now_ms()
    res.progress.append((res.last_publish_ms, res.n_reads))


async def _report(
    case: Case, registered: asyncio.Task[None] | None, reporter: Reporter, res: FeedResult
) -> None:
    if await reporter.report(case, registered):  # (a refusal is kept in reporter.refused)
        res.cases[case.tag_id] = case
