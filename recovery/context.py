"""The service context: built once per process, handed to `create_api`, started before serving.

Routes receive it through FastAPI's dependency injection (`recovery.deps.Ctx`); case work, police
access and the alert feed take the `ServiceState` part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from recovery import casework
from recovery.alert_feed import AlertFeed
from recovery.auth import Role, new_key
from recovery.notify import Notifier
from recovery.state import ServiceState
from recovery.webhook_policy import WebhookPolicy


@dataclass
class ServiceContext(ServiceState):
    """Everything the routes use; `start()` connects it to the broker, `stop()` disconnects."""

    # Follow the alerts topic into the store (one API process per store should).
    follow_alerts: bool = True
    feed: AlertFeed | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()
        if self.notifier is None:
            self.notifier = Notifier(policy=WebhookPolicy.from_settings(self.settings))
        # A per-run admin key for the local CLI (written to the 0600 run file, never logged).
        key, _, key_hash = new_key(Role.admin)
        self.set_local_admin_key(key, key_hash)
        # A crash between storing a case and publishing it must not leave it off the hotlist.
        await casework.republish_active(self)
        await self.open_cases.start()  # tagtrail_open_cases from the store, then kept there
        if self.follow_alerts:
            self.feed = AlertFeed(self)
            await self.feed.start()

    def key_revoked(self, key_id: str) -> None:
        """A key was revoked here: refused from the next request on, and its open alert streams
        end now (woken, they re-check their key)."""
        self.forget_keys(revoked=key_id)
        if self.feed is not None and self.feed.hub is not None:
            self.feed.hub.wake()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        await self.open_cases.stop()
        if self.notifier is not None:
            await self.notifier.close()
        if self.producer is not None:
            await self.producer.stop()
