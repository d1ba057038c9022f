"""The root of every tagtrail exception; each package adds its own in `exceptions.py`."""

from __future__ import annotations


class TagtrailError(Exception):
    """Base class of all tagtrail errors.

    `retriable` tells callers whether repeating the same operation may succeed;
    retry logic reads this attribute, never the message text.
    """

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(TagtrailError):
    """A setting is missing or wrong; the message names it in one line."""


class DependencyMissing(ConfigError):
    """A program tagtrail needs (java, mvn, ...) is not installed."""
