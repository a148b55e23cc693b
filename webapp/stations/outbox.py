"""The transactional outbox: a verdict and one message per sink are written in one transaction
(``outbox_enqueue`` runs inside the caller's), and a delivery loop per sink sends them.

Each loop sends the oldest pending message of its sink and only then the next, so a sink sees a station's
verdicts in order; a failure leaves the message pending with a backoff (0.5 s doubling to 60 s), so delivery
resumes, in order, after a restart or an outage: at least once (a crash after sending and before marking it
delivered sends it again; receivers drop duplicates by the inspection id). A sender that gives up after
``max_attempts`` dead-letters the message, shown on the Station page, and goes on with the next.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.db import close_old_connections, connection
from django.utils import timezone

from webapp.stations.models import Inspection, OutboxMessage, OutboxStatus, Sink
from webapp.stations.sinks.base import SinkError

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0


def backoff_seconds(attempts: int) -> float:
    """Wait after the `attempts`-th failed try: 0.5, 1, 2, 4 ... capped at 60 s."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))


def outbox_enqueue(*, inspection: Inspection, payload: dict, sinks: list[Sink]) -> list[OutboxMessage]:
    """One pending message per sink; call inside the transaction that stores the inspection."""
    return OutboxMessage.objects.bulk_create(
        [OutboxMessage(sink=sink, inspection=inspection, payload=payload) for sink in sinks]
    )


def outbox_next(*, sink_id: int) -> OutboxMessage | None:
    return (
        OutboxMessage.objects.select_related("inspection__prediction")
        .filter(sink_id=sink_id, status=OutboxStatus.PENDING)
        .order_by("id")
        .first()
    )


def outbox_delivered(*, message: OutboxMessage) -> None:
    OutboxMessage.objects.filter(id=message.id).update(
        status=OutboxStatus.DELIVERED, delivered_at=timezone.now(), attempts=message.attempts + 1, last_error=""
    )


def outbox_failed(*, message: OutboxMessage, error: str, max_attempts: int | None) -> str:
    """Records a failed try; returns the new status (pending with a backoff, or dead)."""
    attempts = message.attempts + 1
    dead = max_attempts is not None and attempts >= max_attempts
    status = OutboxStatus.DEAD if dead else OutboxStatus.PENDING
    OutboxMessage.objects.filter(id=message.id).update(
        status=status,
        attempts=attempts,
        last_error=error[:400],
        next_attempt_at=timezone.now() + timedelta(seconds=backoff_seconds(attempts)),
    )
    return status


def outbox_dead_retry(*, sink: Sink) -> int:
    """Sends dead-lettered messages again (a person fixed the receiver); they queue after nothing: the loop takes
    the oldest pending first, so they go out before newer verdicts."""
    return OutboxMessage.objects.filter(sink=sink, status=OutboxStatus.DEAD).update(
        status=OutboxStatus.PENDING, attempts=0, next_attempt_at=None
    )


class DeliveryLoop(threading.Thread):
    """Delivers one sink's messages in order until `stop` is set. `wake` is set by the station after a commit,
    so a new verdict goes out at once rather than at the next poll."""

    IDLE_POLL_S = 0.5

    def __init__(self, *, sink: Sink, sender, stop: threading.Event, wake: threading.Event):
        super().__init__(name=f"outbox-sink-{sink.id}", daemon=True)
        self.sink_id = sink.id
        self.sender = sender
        self.stop = stop
        self.wake = wake
        self.delivered = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self._step()
                except Exception:  # a database hiccup must not end deliveries for good; the next step retries
                    log.exception("outbox loop of sink %s failed; retrying", self.sink_id)
                    close_old_connections()
                    self.stop.wait(1.0)
        finally:
            connection.close()

    def _step(self) -> None:
        message = outbox_next(sink_id=self.sink_id)
        if message is None:
            self.wake.wait(self.IDLE_POLL_S)
            self.wake.clear()
            return
        if message.next_attempt_at is not None:
            wait = (message.next_attempt_at - timezone.now()).total_seconds()
            if wait > 0:
                self.stop.wait(min(wait, 1.0))
                return
        try:
            self.sender.send(message)
        except SinkError as error:
            status = outbox_failed(message=message, error=str(error), max_attempts=self.sender.max_attempts)
            if status == OutboxStatus.DEAD:
                log.warning("sink %s gave up on message %s: %s", self.sink_id, message.id, error)
            return
        outbox_delivered(message=message)
        self.delivered += 1
