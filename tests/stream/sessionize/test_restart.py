"""A restored sessionizer told the rows published after its checkpoint (`expect`) retracts those the
redelivered reads do not make again, and only those."""

from __future__ import annotations

import numpy as np

from core.records.reads import Reads
from stream.sessionize.sessionizer import Sessionizer

T0 = 1_790_000_000_000
GAP = 30_000


def reads(*ts: int, tag: int = 5, reader: int = 1) -> Reads:
    n = len(ts)
    return Reads.from_columns(
        tag_id=[tag] * n, reader_id=[reader] * n, ts_ms=[T0 + t for t in ts], rssi_dbm=[-50] * n
    )


def identities(rows: dict[str, np.ndarray], deleted: int) -> set[tuple[int, int, int]]:
    sel = rows["is_deleted"] == deleted
    cols = (rows[k][sel].tolist() for k in ("tag_id", "reader_id", "first_ts"))
    return set(zip(*cols, strict=True))


def test_a_partial_published_after_the_checkpoint_is_retracted_by_the_replay() -> None:
    live = Sessionizer(gap_ms=GAP)
    live.process(reads(0, tag=9), version=1)  # another tag: the checkpointed state
    checkpoint = live.snapshot()
    # Offset 1 brings the later reads of a sighting (a partial), offset 2 its first read.
    partial = live.process(reads(900, 1_800), version=2).rows
    assert identities(partial, 0) == {(5, 1, T0 + 900)}
    # The worker dies before its next checkpoint; its successor gets both messages in one step.
    again = Sessionizer(gap_ms=GAP)
    again.restore(checkpoint)
    assert again.expect(partial) == 1
    rows = again.process(Reads.concat([reads(900, 1_800), reads(0)]), version=3).rows
    assert identities(rows, 0) == {(5, 1, T0)}
    assert identities(rows, 1) == {(5, 1, T0 + 900)}
    gone = rows["is_deleted"] == 1
    assert (rows["version"][gone] > 2).all()
    assert again.n_expected == 0


def test_rows_the_replay_makes_again_stay() -> None:
    live = Sessionizer(gap_ms=GAP)
    checkpoint = live.snapshot()
    first = live.process(reads(0, 1_000), version=1).rows
    second = live.process(reads(100_000, tag=6), version=2).rows
    again = Sessionizer(gap_ms=GAP)
    again.restore(checkpoint)
    assert again.expect({k: np.concatenate([first[k], second[k]]) for k in first}) == 2
    # Redelivered one message at a time: the first one checks only the row it could have made.
    rows = again.process(reads(0, 1_000), version=1).rows
    assert identities(rows, 1) == set() and again.n_expected == 1
    rows = again.process(reads(100_000, tag=6), version=2).rows
    assert identities(rows, 1) == set() and again.n_expected == 0


def test_rows_up_to_the_states_own_version_and_retractions_are_not_expected() -> None:
    live = Sessionizer(gap_ms=GAP)
    old = live.process(reads(900), version=4).rows  # before the checkpoint: the state knows it
    checkpoint = live.snapshot()
    later = live.process(reads(0), version=5).rows  # retracts (5, 1, T0 + 900)
    assert identities(later, 1) == {(5, 1, T0 + 900)}
    again = Sessionizer(gap_ms=GAP)
    again.restore(checkpoint)
    assert again.expect(old) == 0
    assert again.expect(later) == 1  # only the upsert of (5, 1, T0)
