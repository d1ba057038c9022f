"""A burst of gateway messages delivered to the consumer: aiokafka getmany against a Faust agent.

Run: .venv/bin/python -m benchmarks.bench_faust_burst [--messages 1600] [--reps 5] [--bootstrap H:P]
Without --bootstrap (or TAGTRAIL_KAFKA) a local broker is started for the run and stopped after.
Saves results/bench_faust_burst.json and prints the median per path.

The burst: `--messages` real gateway messages (simulator reads of two 120 s flush slices of a
rush hour, one message per gateway, partition and slice, ~120-140 reads each, encoded by
ingest.wire and compressed by the gateway publisher) published once to a 4-partition topic.
Every run is a fresh process and a fresh consumer group reading that topic from the earliest
offset, so every path gets the same bytes, already in the broker, as a worker does after a
gateway burst or a restart. Paths:

- `getmany`: an aiokafka consumer as the worker's fetch loop has it (16 MiB per partition,
  getmany(timeout_ms=200, max_records=2000)); a batch is what one call returns.
- `faust_default`: a Faust agent, default settings, `stream.noack_take(2000, within=0.2)` and
  `stream.ack(event)` for every event of a taken batch (what the issue's agent would do).
- `faust_tuned`: the same agent with consumer_max_fetch_size 16 MiB, broker_max_poll_records
  2000, stream_buffer_maxsize 16384, stream_wait_empty off and cython_optimizations on.

Faust runs as it is meant to: `faust.Worker(app).execute_from_commandline()` in its own process,
stopped by SIGTERM (the worker's own shutdown path) once every message was taken; no private
setting is touched. A processor added to the agent's stream stamps each message as the stream
hands it over (what user code would see first); the figures:

- `first_to_last_ms`: the first message in user code to the last one (getmany: first call that
  returned messages to the last one: ~0 when one call returns the whole burst);
- `assigned_to_last_ms`: partitions assigned to the last message (fetch included: comparable);
- `handover_us_per_msg`: Faust: first_to_last / (n - 1) (its fetches overlap the hand-over);
  getmany: the burst read a second time (seek to the beginning, 1 s for the background fetch),
  time inside getmany(timeout_ms=0) / n: the hand-over alone. `in_call_us_per_msg` is the
  first pass's time inside the calls that returned messages / n (fetch wait included);
- `msgs_per_s`: 1e6 / handover_us_per_msg (medians over the runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from core.config import load_settings

PATHS = ("getmany", "faust_default", "faust_tuned")
TAKE_MAX = 2000  # the worker's MAX_MESSAGES_PER_STEP
TAKE_WITHIN_S = 0.2  # the worker's IDLE_POLL_MS
FETCH_BYTES = 16 * 1024 * 1024  # the worker's max_partition_fetch_bytes
SLICE_MS = 120_000  # a paced day at ~100-200 k reads/s: one flush carries ~2 min of a gateway
WARM_UP_SLICES = 2
PARTITIONS = 4
REPO = Path(__file__).resolve().parents[1]
RUSH_HOUR_MS = 8 * 3600 * 1000
CHILD_TIMEOUT_S = 180
BUFFER_WAIT_S = 1.0  # getmany's second pass: time for the background fetch to fill the buffer

FAUST_TUNED = {
    "consumer_max_fetch_size": FETCH_BYTES,
    "broker_max_poll_records": TAKE_MAX,
    "stream_buffer_maxsize": 16384,
    "stream_wait_empty": False,
    "cython_optimizations": True,
}


# -- the burst ------------------------------------------------------------------------------------


def build_burst(n_messages: int, seed: int = 3) -> list[tuple[int, int, bytes]]:
    """(partition, gateway_id, message) of the simulator's rush hour, in flush order."""
    from ingest.publisher import partition_of
    from ingest.simulator import CityConfig, Simulation
    from ingest.wire import encode_batch

    start = CityConfig().start_ms + RUSH_HOUR_MS
    # The simulated city starts empty: its first two slices are warm-up (~40 and ~90 reads a
    # message); from the third on, ~1,590 messages a slice of ~120-140 reads each.
    sim = Simulation(CityConfig(seed=seed, duration_s=5 * SLICE_MS / 1000, start_ms=start))
    out: list[tuple[int, int, bytes]] = []
    seq: dict[int, int] = {}
    for i, ch in enumerate(sim.chunks(SLICE_MS / 1000)):
        if i < WARM_UP_SLICES:
            continue
        part = partition_of(ch.reads.reader_id, PARTITIONS)
        gw = ch.gateway_id.astype(np.int64)
        key = gw * PARTITIONS + part
        order = np.argsort(key, kind="stable")  # a gateway's reads keep their send order
        k = key[order]
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        ends = np.append(starts[1:], len(k))
        reads = ch.reads.take(order)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            g, p = divmod(int(k[a]), PARTITIONS)
            seq[g] = seq.get(g, 0) + 1
            out.append((p, g, encode_batch(reads.take(np.arange(a, b)), g, seq[g])))
            if len(out) == n_messages:
                return out
    raise ValueError(f"the simulated slices hold only {len(out)} messages (< {n_messages})")


async def publish_burst(bootstrap: str, topic: str, burst: list[tuple[int, int, bytes]]) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from ingest.publisher import GatewayPublisher

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    async with GatewayPublisher(bootstrap, topic) as pub:
        await (await pub.enqueue(burst)).wait()
        return pub.compression or "none"


# -- the paths (each in a child process) -----------------------------------------------------------


def _result(path: str, n: int, t_start: float, t_assigned: float, stamps: list[float],
            batches: list[int], extra: dict) -> dict:  # fmt: skip
    first, last = stamps[0], stamps[-1]
    return {
        "path": path,
        "messages": n,
        "first_to_last_ms": round((last - first) * 1000, 3),
        "assigned_to_last_ms": round((last - t_assigned) * 1000, 1),
        "start_to_last_ms": round((last - t_start) * 1000, 1),
        "batches": batches,
        **extra,
    }


async def _getmany(bootstrap: str, topic: str, expect: int) -> dict:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    t_start = time.perf_counter()
    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: object) -> None:
            pass

        async def on_partitions_assigned(self, tps: object) -> None:
            assigned.append(time.perf_counter())

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-burst-getmany-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=FETCH_BYTES,
    )
    consumer.subscribe([topic], listener=Listener())
    await consumer.start()
    n, nbytes, stamps, batches, in_call = 0, 0, [], [], 0.0
    try:
        while n < expect:
            t0 = time.perf_counter()
            fetched = await consumer.getmany(
                timeout_ms=int(TAKE_WITHIN_S * 1000), max_records=TAKE_MAX
            )
            t1 = time.perf_counter()
            got = sum(len(v) for v in fetched.values())
            if got:
                in_call += t1 - t0
                stamps.append(t1)
                batches.append(got)
                n += got
                nbytes += sum(len(m.value) for v in fetched.values() for m in v)
        # Hand-over alone: the burst again, once its fetch is in the consumer's buffer.
        await consumer.seek_to_beginning()
        await asyncio.sleep(BUFFER_WAIT_S)
        again, buffered_s = 0, 0.0
        while again < expect:
            t0 = time.perf_counter()
            fetched = await consumer.getmany(timeout_ms=0, max_records=TAKE_MAX)
            if got := sum(len(v) for v in fetched.values()):
                buffered_s += time.perf_counter() - t0
                again += got
            else:
                await asyncio.sleep(0.01)
    finally:
        await consumer.stop()
    extra = {"bytes": nbytes, "in_call_us_per_msg": round(in_call / n * 1e6, 2)}
    res = _result("getmany", n, t_start, assigned[0], stamps, batches, extra)
    res["handover_us_per_msg"] = round(buffered_s / again * 1e6, 2)
    return res


def _faust(path: str, bootstrap: str, topic: str, expect: int, out: Path) -> None:
    import faust

    settings = dict(FAUST_TUNED) if path == "faust_tuned" else {}
    t_start = time.perf_counter()
    app = faust.App(
        f"bench-burst-{path}-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=PARTITIONS,
        **settings,
    )
    source = app.topic(topic, value_serializer="raw", partitions=PARTITIONS)
    assigned: list[float] = []
    stamps: list[float] = []
    batches: list[int] = []

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned_tps: object = None, **kw: object) -> None:
        assigned.append(time.perf_counter())

    def mark(value: bytes) -> bytes:
        stamps.append(time.perf_counter())
        return value

    @app.agent(source)
    async def burst(stream: faust.Stream) -> None:
        stream.add_processor(mark)  # runs before noack_take's buffer: the hand-over instant
        n = nbytes = 0
        ack_s = 0.0
        async for events in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN_S):
            batches.append(len(events))
            n += len(events)
            nbytes += sum(len(e.value) for e in events)
            t0 = time.perf_counter()
            for event in events:
                await stream.ack(event)
            ack_s += time.perf_counter() - t0
            if n >= expect:
                extra = {"bytes": nbytes, "ack_us_per_msg": round(ack_s / n * 1e6, 2),
                         "last_batch_yield_ms": round((time.perf_counter() - stamps[0]) * 1000, 1),
                         "settings": settings}  # fmt: skip
                res = _result(path, n, t_start, (assigned or [t_start])[-1], stamps, batches, extra)
                res["handover_us_per_msg"] = round(res["first_to_last_ms"] * 1000 / (n - 1), 2)
                out.write_text(json.dumps(res))
                os.kill(os.getpid(), signal.SIGTERM)  # the Faust worker's own shutdown

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def run_path(path: str, bootstrap: str, topic: str, expect: int) -> dict:
    """One delivery of the burst on `path`, in a fresh process and consumer group."""
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_faust_burst", "--child", path,
               "--bootstrap", bootstrap, "--topic", topic, "--messages", str(expect),
               "--child-out", str(out)]  # fmt: skip
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=REPO
        )
        if not out.exists():
            raise RuntimeError(f"{path} gave no result (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")  # fmt: skip
        return json.loads(out.read_text())


# -- the run -------------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict:
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    mid = sorted(runs, key=lambda r: r["assigned_to_last_ms"])[len(runs) // 2]
    ftl = med("first_to_last_ms")
    return {
        "first_to_last_ms": ftl,
        "assigned_to_last_ms": med("assigned_to_last_ms"),
        "msgs_per_s": round(1e6 / med("handover_us_per_msg")),
        "handover_us_per_msg": med("handover_us_per_msg"),
        "batches_median_run": mid["batches"],
        "batches_per_run": [len(r["batches"]) for r in runs],
    }


def run(bootstrap: str, messages: int, reps: int, paths: tuple[str, ...] = PATHS) -> dict:
    """Publish the burst once, deliver it `reps` times on every path (interleaved)."""
    from ingest.wire import decode_structure

    load = os.getloadavg()
    t = time.perf_counter()
    burst = build_burst(messages)
    build_s = time.perf_counter() - t
    topic = f"bench-burst-{uuid.uuid4().hex[:10]}"
    compression = asyncio.run(publish_burst(bootstrap, topic, burst))
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    for _ in range(reps):
        for p in paths:
            runs[p].append(run_path(p, bootstrap, topic, messages))
    sizes = np.array([len(m) for _, _, m in burst])
    reads = np.array([len(decode_structure(m).reads) for _, _, m in burst])
    return {
        "benchmark": "bench_faust_burst",
        "messages": messages,
        "reps": reps,
        "topic_partitions": PARTITIONS,
        "burst_bytes": int(sizes.sum()),
        "message_bytes_median": int(np.median(sizes)),
        "reads": int(reads.sum()),
        "reads_per_message_median": int(np.median(reads)),
        "compression": compression,
        "build_burst_s": round(build_s, 2),
        "load_avg_at_start": [round(x, 2) for x in load],
        "take": {"max": TAKE_MAX, "within_s": TAKE_WITHIN_S},
        "faust_tuned_settings": FAUST_TUNED,
        "median": {p: summarize(rs) for p, rs in runs.items()},
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "note": "2-core machine shared with other work; each run a fresh process and group",
    }


def print_figures(result: dict) -> None:
    print(f"burst: {result['messages']} messages, {result['burst_bytes'] / 1e6:.1f} MB "
          f"({result['compression']} on the wire), {result['reps']} runs per path, "
          f"load {result['load_avg_at_start']}")  # fmt: skip
    for p, m in result["median"].items():
        rate = f"{m['msgs_per_s']:>10,}"
        print(f"{p:14s} first->last {m['first_to_last_ms']:9.1f} ms  {rate} msg/s  "
              f"{m['handover_us_per_msg']:7.1f} us/msg  assigned->last "
              f"{m['assigned_to_last_ms']:8.1f} ms  batches {m['batches_median_run']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1600)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bootstrap", default=load_settings().kafka, help="existing broker")
    parser.add_argument("--out", type=Path, default=Path("results/bench_faust_burst.json"))
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "getmany":
        res = asyncio.run(_getmany(args.bootstrap, args.topic, args.messages))
        args.child_out.write_text(json.dumps(res))
        return
    if args.child:
        _faust(args.child, args.bootstrap, args.topic, args.messages, args.child_out)
        return

    if args.bootstrap:
        result = run(args.bootstrap, args.messages, args.reps)
    else:
        from tagtrail.broker.launcher import LocalKafka

        settings = load_settings()
        with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
            broker = LocalKafka(Path(tmp), settings.kafka_cache_dir, heap_mb=512, partitions=4)
            with broker:
                result = run(broker.bootstrap, args.messages, args.reps)
    print_figures(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
