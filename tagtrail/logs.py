"""Log configuration of every tagtrail process: our packages at TAGTRAIL_LOG_LEVEL, libraries at
WARNING (aiokafka's and Faust's debug output would drown ours, and costs CPU at load).

Services (`up`, `worker`, `sink`, `api`) log to stderr, where their supervisor collects it. The
demo logs to a file instead: aiokafka's and Faust's warnings while a consumer group forms on a
fresh broker (NotLeaderForPartition, UnknownMemberId, CommitFailed...) are normal start-up, and
on a user's terminal they read as failure. Only our own errors reach the terminal then, one
plain line each, pointing to the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.config import Settings

OWN_PACKAGES = ("tagtrail", "ingest", "stream", "store", "recovery", "benchmarks", "core")
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _own(name: str) -> bool:
    return name.split(".", 1)[0] in OWN_PACKAGES


class _Trouble(logging.Filter):
    """What the terminal still shows when logs go to a file: our errors, anyone's criticals."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        return record.levelno >= logging.ERROR and _own(record.name)


class _OneLine(logging.Formatter):
    """The message's first line and where the details are; the traceback stays in the file."""

    def __init__(self, log_file: Path) -> None:
        super().__init__()
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        first = record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else ""
        return f"error: {first} (details: {self.log_file})"


def configure_logging(settings: Settings, *, log_file: Path | None = None) -> None:
    """Set up logging once per process. With `log_file`, everything goes to that file (replaced)
    and the terminal (stderr) gets only our errors, as one line each; Python warnings go to the
    file too."""
    own_level = settings.log_level
    if log_file is None:
        logging.basicConfig(level=logging.WARNING, format=FORMAT)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        to_file.setFormatter(logging.Formatter(FORMAT))
        to_terminal = logging.StreamHandler()
        to_terminal.addFilter(_Trouble())
        to_terminal.setFormatter(_OneLine(log_file))
        logging.basicConfig(level=logging.WARNING, handlers=[to_file, to_terminal], force=True)
        logging.captureWarnings(True)
        # The file is for reading after the fact: our INFO lines (few) belong in it.
        if logging.getLevelName(own_level) > logging.INFO:
            own_level = "INFO"
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(own_level)
