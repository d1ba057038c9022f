"""The README's short performance table and docs/performance.md's full tables are the ones the
committed results/ generate, and every run the docs cite is committed with its command."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.readme_table import (
    END,
    FULL_END,
    FULL_START,
    START,
    latest,
    render,
    render_short,
)

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks/README.md"]
REGENERATE = "run `python -m benchmarks.readme_table --write README.md`"


def _between(path: Path, start: str, end: str) -> str:
    text = path.read_text()
    assert start in text and end in text, f"{path}: markers {start} ... {end} missing"
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def test_readme_short_table_is_generated_from_results() -> None:
    e2e, paced, micro = latest(RESULTS)
    assert _between(REPO / "README.md", START, END) == render_short(e2e, paced, micro), REGENERATE


def test_performance_doc_tables_are_generated_from_results() -> None:
    e2e, paced, micro = latest(RESULTS)
    full = render(e2e, paced, micro, RESULTS)
    assert _between(REPO / "docs/performance.md", FULL_START, FULL_END) == full, REGENERATE


def test_short_table_gives_each_figure_its_command_and_run() -> None:
    table = render_short(*latest(RESULTS))
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(rows) >= 5
    for row in rows:
        assert re.search(r"`[^`]*tagtrail bench [^`]+` \(`\d{8}-\d{6}-[\w.-]+`\) \|$", row), row


def test_every_cited_run_is_committed_with_its_command() -> None:
    cited: set[str] = set()
    for doc in DOCS:
        cited |= set(
            re.findall(r"\b(\d{8}-\d{6})(?:-[a-z0-9.]+(?:-[a-z0-9.]+)*)?", doc.read_text())
        )
    assert cited
    folders = {p.name[:15]: p for p in RESULTS.iterdir() if p.is_dir()}
    missing = sorted(c for c in cited if c not in folders)
    assert not missing, f"runs cited by the docs but not in results/: {missing}"
    for stamp in cited:
        report = (folders[stamp] / "report.md").read_text()
        assert re.search(r"^Command: `[^`]+`", report, re.M), f"{folders[stamp]}: no Command line"


def test_results_keeps_only_cited_runs() -> None:
    text = "\n".join(doc.read_text() for doc in DOCS)
    uncited = sorted(p.name for p in RESULTS.iterdir() if p.is_dir() and p.name[:15] not in text)
    assert not uncited, f"run folders no doc cites (cite them or `git rm -r` them): {uncited}"
