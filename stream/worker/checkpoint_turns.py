"""When the worker checkpoints: partitions take turns, one forked write at a time, out of bursts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial

from core.config import Settings
from stream import metrics
from stream.exceptions import CheckpointStopped
from stream.kafka.groups import worker_group
from stream.worker.checkpoint import CheckpointStore, PendingCheckpoint
from stream.worker.processing import Processor

log = logging.getLogger(__name__)

# A checkpoint not written for this many of its turns is written even if the worker never idles.
CHECKPOINT_OVERDUE_TURNS = 3
# A step with this many alerts is a burst: checkpoint turns wait until a burst has been over for
# BURST_QUIET_S (up to CHECKPOINT_OVERDUE_TURNS), as forking a big partition's writer, and the
# copy-on-write faults while it runs, slow the steps that follow. A burst that starts while a
# writer is alive stops it, unless that partition's previous writer was stopped too: that one is
# let finish, so a restart's catch-up stays bounded.
ALERT_BURST = 50
BURST_QUIET_S = 1.0


class CheckpointTurns:
    """The checkpoints of one worker's partitions, taken in turns between steps.

    The worker reports what its steps changed (`changed`) and the alerts each sends (`on_alerts`),
    asks whether a turn is `due`, and takes it with `ready` and then, holding its lock,
    `write_next`. A rebalance waits for the write in progress (`synced`), saves the partitions
    that go (`save`, on the kernel thread) and `forget`s them.
    """

    def __init__(self, settings: Settings, processor: Processor, kernels: Executor) -> None:
        self.settings = settings
        self.processor = processor
        self.store = CheckpointStore(settings.data_dir / "state" / worker_group(settings))
        self._kernels = kernels  # the worker's kernel thread: the only one that reads the state
        # Checkpoint files are flushed to disk here, while the next steps run.
        self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-sync")
        self._syncing: asyncio.Future[bool] | None = None  # True: durable, False: stopped
        self.writing: tuple[int, PendingCheckpoint] | None = None  # what _syncing commits
        self.stopped: set[int] = set()  # partitions whose last writer was stopped by a burst
        self.dirty: set[int] = set()  # partitions changed since their last checkpoint
        self.last_turn = time.monotonic()
        self.burst_at = float("-inf")  # when a step last had ALERT_BURST alerts or more
        self.last_saved = -1  # partition checkpointed last (they take turns)

    def close(self) -> None:
        self._sync_pool.shutdown(wait=True)

    def changed(self, partitions: Iterable[int]) -> None:
        """These partitions' state changed since their last checkpoint."""
        self.dirty.update(partitions)

    def forget(self, partitions: Iterable[int]) -> None:
        """These partitions are no longer the worker's: no turns for them."""
        gone = set(partitions)
        self.dirty -= gone
        self.stopped -= gone

    def on_alerts(self, n: int) -> None:
        """A step is sending `n` alerts: a burst (ALERT_BURST or more) holds turns back and stops
        a live writer."""
        if n >= ALERT_BURST:
            self.burst_at = time.monotonic()
            self.stop_writer()

    def due(self, n_owned: int, overdue: bool = False) -> bool:
        """A partition's turn has come (`overdue`: CHECKPOINT_OVERDUE_TURNS turns ago), with
        `n_owned` partitions owned. Partitions take turns, each saved every checkpoint interval
        (the whole state at once would be one long write and fsync), so one partition's write is
        in progress at a time. A turn waits for a burst of alerts to pass; an overdue one does
        not."""
        now = time.monotonic()
        if not overdue and now - self.burst_at < BURST_QUIET_S:
            return False
        turns = CHECKPOINT_OVERDUE_TURNS if overdue else 1
        every = self.settings.checkpoint_interval_s / max(n_owned, 1)
        return bool(self.dirty) and now - self.last_turn >= turns * every

    async def ready(self) -> bool:
        """Whether this turn may write. While the previous checkpoint is still being written or
        flushed to disk, the turn is skipped rather than waited for (False; tried again next turn,
        without spinning); once it is done, whatever it failed with is raised here."""
        if self._syncing is not None and not self._syncing.done():
            self.last_turn = time.monotonic()
            return False
        await self.synced()
        return True

    async def write_next(self, owned: set[int]) -> None:
        """Checkpoint the next changed partition of `owned` in turn; call after `ready()`, with the
        worker's lock held. Steps wait only for the fork of the writer (see CheckpointStore.write),
        not for the write, which for a big partition would hold them much longer; the file is
        made durable on the sync thread meanwhile."""
        loop = asyncio.get_running_loop()
        dirty = sorted(self.dirty & owned)
        self.last_turn = time.monotonic()
        if not dirty:
            return
        # A partition whose writer a burst stopped goes first, lest its turn be lost.
        first = sorted(self.stopped & set(dirty))
        p = first[0] if first else next((q for q in dirty if q > self.last_saved), dirty[0])
        self.last_saved = p
        self.dirty.discard(p)
        t0 = time.perf_counter()
        ckpt = self.processor.checkpoint(p)
        topic = self.settings.topic_reads
        others = self.processor.arrays_except(p)
        written = await loop.run_in_executor(
            self._kernels,
            partial(self.store.write, topic, p, ckpt, fork=True, unshared=others),
        )
        held = time.perf_counter() - t0
        metrics.CHECKPOINT_PAUSE.observe(held)
        log.debug("checkpoint of partition %d forked: steps held %.3f s", p, held)
        self.writing = (p, written)
        self._syncing = loop.run_in_executor(self._sync_pool, self._commit, written, t0)

    @staticmethod
    def _commit(written: PendingCheckpoint, t0: float) -> bool:
        """On the sync thread: wait for the writer, then make its file durable and current.
        False if a burst stopped the writer."""
        try:
            written.commit()
        except CheckpointStopped:
            log.debug("checkpoint %s stopped by a burst of alerts", written.path.name)
            return False
        took = time.perf_counter() - t0
        metrics.CHECKPOINT_SECONDS.observe(took)
        log.debug("checkpoint %s durable: %.3f s", written.path.name, took)
        return True

    def stop_writer(self) -> None:
        """A burst of alerts: stop the checkpoint writer if it is alive, unless its partition's
        previous writer was stopped too (see ALERT_BURST). The partition is saved at a later
        turn, before the others."""
        if self.writing is None or self._syncing is None or self._syncing.done():
            return
        p, written = self.writing
        if p not in self.stopped and written.stop():
            self.stopped.add(p)
            self.dirty.add(p)
            metrics.CHECKPOINTS_STOPPED.inc()

    async def synced(self) -> None:
        """Wait for the checkpoint being flushed to disk (its failure fails the caller)."""
        if self._syncing is not None:
            syncing, self._syncing = self._syncing, None
            durable = await syncing
            assert self.writing is not None
            p, self.writing = self.writing[0], None
            if durable:
                self.stopped.discard(p)

    def save(self, partitions: list[int]) -> None:
        """Checkpoint `partitions` in place, on the kernel thread (the state held still)."""
        for p in partitions:
            if p in self.processor.partitions:
                self.store.save(self.settings.topic_reads, p, self.processor.checkpoint(p))
