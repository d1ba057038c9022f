"""The README's settings table is the Settings object's: a setting added, renamed, re-defaulted or
re-described without `tagtrail settings --write README.md` fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings
from core.errors import TagtrailError
from tagtrail import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_says_what_it_does() -> None:
    assert [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()] == []


def test_readme_table_is_in_step_with_settings() -> None:
    in_readme = settings_table.section(README.read_text(), str(README))
    assert in_readme == settings_table.render(), (
        "README.md's settings table differs from core.config.Settings: "
        "run `tagtrail settings --write README.md`"
    )


def test_one_row_per_setting_with_its_variable_and_default() -> None:
    table = settings_table.render()
    for name in Settings.model_fields:
        assert f"| {name} | `TAGTRAIL_{name.upper()}` |" in table
    assert "| api_port | `TAGTRAIL_API_PORT` | `8080` |" in table
    assert "`~/.cache/tagtrail/kafka`" in table  # the home folder, written the same everywhere
    assert str(Path.home()) + "/" not in table


def test_write_replaces_only_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{settings_table.START}\nstale\n{settings_table.END}\nafter\n")
    settings_table.write(doc)
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n")
    assert settings_table.section(text) == settings_table.render()
    doc.write_text("no markers\n")
    with pytest.raises(TagtrailError, match="markers"):
        settings_table.write(doc)
