"""Errors of the stream package."""

from __future__ import annotations

from core.errors import TagtrailError


class StreamError(TagtrailError):
    """Base of stream errors."""


class CheckpointStopped(StreamError):
    """A checkpoint's writer was stopped before it finished: the previous checkpoint stands."""


class BrokerUnavailable(StreamError):
    """The Kafka broker cannot be reached."""

    retriable = True
