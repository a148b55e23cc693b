"""What every sink implements. The outbox delivery loop (webapp/stations/outbox.py) calls ``send`` for one message
at a time, in order; a SinkError means "not delivered, try again later" and the loop backs off."""

from __future__ import annotations

from typing import Protocol


class SinkError(Exception):
    """A delivery failed for now (broker down, receiver answered 5xx, disk full). str() is shown on the page."""


class SinkSettingsError(ValueError):
    """Settings a sink cannot work with; shown to the person saving them."""


class Sender(Protocol):
    # Attempts before a message is dead-lettered; None: never (a PLC or broker outage only delays delivery).
    max_attempts: int | None

    def send(self, message) -> None: ...  # message: OutboxMessage (payload, inspection); raises SinkError

    def health(self) -> dict: ...  # {"state": "ok"|"retrying"|"error", "detail": str}

    def close(self) -> None: ...
