"""The settings reference, generated from the Settings object: `tagtrail settings` prints it, and
`tagtrail settings --write README.md` puts it between the README's settings-table markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import TagtrailError

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))


def _default(value: Any) -> str:
    """A default as one would type it in the environment; the home folder as `~`, so the table
    reads the same on every machine."""
    if isinstance(value, Path):
        home = Path.home()
        if value.is_relative_to(home):
            return f"`~/{value.relative_to(home).as_posix()}`"
        return f"`{value.as_posix() if value.is_absolute() else './' + value.as_posix()}`"
    if value == "":
        return "(empty)"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def rows() -> list[tuple[str, str, str, str]]:
    """(name, environment variable, default, description) of every setting, in declared order."""
    return [
        (name, ENV_PREFIX + name.upper(), _default(field.default), field.description or "")
        for name, field in Settings.model_fields.items()
    ]


def render() -> str:
    """The Markdown table."""
    lines = [
        "| setting | environment variable | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for name, env, default, description in rows():
        what = description.replace("|", r"\|")
        lines.append(f"| {name} | `{env}` | {default} | {what} |")
    return "\n".join(lines)


def section(text: str, where: str = "the text") -> str:
    """What a file holds between the markers (TagtrailError without both)."""
    if START not in text or END not in text:
        raise TagtrailError(f"{where}: add the markers {START} and {END} where the table goes")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def write(path: Path) -> None:
    """Replace the table between the markers of `path`."""
    text = path.read_text()
    section(text, str(path))
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{START}\n{render()}\n{END}{tail}")
