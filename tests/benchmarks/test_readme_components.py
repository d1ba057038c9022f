"""The README's per-component rows come from the saved results, and only from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.readme_components import SOURCES, component_rows

RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_every_committed_result_renders_a_row_with_its_command() -> None:
    present = [n for n in SOURCES if (RESULTS / f"{n}.json").exists()]
    assert present, f"no results/bench_*.json committed under {RESULTS}"
    rows = component_rows(RESULTS)
    assert len(rows) >= len(present)
    for what, figure, command in rows:
        assert what and figure and command.startswith("`python -m benchmarks.")


def test_a_figure_comes_from_the_file(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "bench_sessionize.json", tmp_path / "bench_sessionize.json")
    d = json.loads((tmp_path / "bench_sessionize.json").read_text())
    d["stream_reads_per_s"] = 123_450_000
    (tmp_path / "bench_sessionize.json").write_text(json.dumps(d))
    (row,) = [r for r in component_rows(tmp_path) if r[0] == "streaming sessionizer"]
    assert "123.45 M reads/s" in row[1]
    assert component_rows(tmp_path / "empty") == []
