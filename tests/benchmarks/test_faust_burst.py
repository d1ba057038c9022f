"""The Faust burst benchmark at a tiny size on the session broker: every path delivers the burst."""

from __future__ import annotations

from benchmarks.bench_faust_burst import PATHS, run


def test_every_path_delivers_the_whole_burst(kafka_bootstrap: str) -> None:
    result = run(kafka_bootstrap, messages=40, reps=1)
    assert result["messages"] == 40
    for path in PATHS:
        (delivered,) = result["runs"][path]
        assert delivered["messages"] == 40, path
        assert sum(delivered["batches"]) == 40, path
        assert delivered["bytes"] == result["burst_bytes"], path
        assert result["median"][path]["batches_per_run"] == [len(delivered["batches"])]
