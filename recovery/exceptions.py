"""Errors of the recovery service's domain: what a request asked for that cannot be done, and why.

Raised by case work, police access rules and the routes; `recovery.http_errors` turns each kind
into its HTTP answer in one place, so nothing here knows about status codes. The message is what
the caller is told; callers that act on an error read its class and fields, never the message.
"""

from __future__ import annotations

from core.errors import TagtrailError


class RecoveryError(TagtrailError):
    """Any refusal of the recovery service."""


class NotFound(RecoveryError):
    """No `kind` with `key`, or none the caller may see (an owner is not told others' exist)."""

    def __init__(self, message: str, *, kind: str, key: object) -> None:
        super().__init__(message)
        self.kind = kind
        self.key = key


class NotAllowed(RecoveryError):
    """The caller's role may not do `action`."""

    def __init__(self, message: str, *, role: str, action: str) -> None:
        super().__init__(message)
        self.role = role
        self.action = action


class Unauthenticated(RecoveryError):
    """No API key, or one that is unknown or revoked."""


class Conflict(RecoveryError):
    """The request contradicts the current state of `kind` `key` (e.g. a case's status)."""

    def __init__(self, message: str, *, kind: str, key: object) -> None:
        super().__init__(message)
        self.kind = kind
        self.key = key


class InvalidRequest(RecoveryError):
    """The request as a whole is unusable: a missing justification, a bad combination of
    parameters, a window or area too large."""


class InvalidField(InvalidRequest):
    """One field's value is unusable; `field` names it as request validation does (`body.x`,
    `query.x`, `header.x`)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class RateLimited(RecoveryError):
    """The caller's key used up its requests; one more is allowed after `retry_after_s`."""

    retriable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retriable=True)
        self.retry_after_s = retry_after_s


class NotReady(RecoveryError):
    """The service is still starting (its broker producer is not up); try again shortly."""

    retriable = True

    def __init__(self, message: str = "service is starting", *, retry_after_s: float = 1.0):
        super().__init__(message, retriable=True)
        self.retry_after_s = retry_after_s
