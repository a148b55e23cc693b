"""Webhook sink: POSTs the verdict as JSON with an HMAC-SHA256 signature of the body.

Settings: ``url`` (http or https), ``secret`` (the HMAC key; the header is omitted without one), ``timeout_s`` (5),
``max_attempts`` (12: with the loop's backoff of 0.5 s doubling to 60 s, about six minutes of trying before the
message is dead-lettered and shown on the Station page).

Headers: ``Content-Type: application/json``, ``X-Kensa-Delivery: <outbox id>`` (the same on every retry, so a
receiver can drop duplicates), ``X-Kensa-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by secret>``.
Any 2xx is delivered; anything else, or no answer, is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from webapp.stations.sinks.base import SinkError, SinkSettingsError

SIGNATURE_HEADER = "X-Kensa-Signature"
DELIVERY_HEADER = "X-Kensa-Delivery"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload_body(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


class WebhookSender:
    def __init__(self, settings: dict):
        self.url = str(settings.get("url") or "").strip()
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).netloc:
            raise SinkSettingsError("A webhook needs an http:// or https:// URL.")
        self.secret = str(settings.get("secret") or "")
        self.timeout_s = float(settings.get("timeout_s", 5))
        self.max_attempts = int(settings.get("max_attempts", 12))
        self._health = {"state": "ok", "detail": f"POST {self.url}"}

    def send(self, message) -> None:
        body = payload_body(message.payload)
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header(DELIVERY_HEADER, str(message.id))
        if self.secret:
            request.add_header(SIGNATURE_HEADER, signature(self.secret, body))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            self._health = {"state": "retrying", "detail": f"receiver answered {error.code}"}
            raise SinkError(f"receiver answered {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            self._health = {"state": "retrying", "detail": f"cannot reach {self.url}: {reason}"}
            raise SinkError(f"cannot reach the receiver: {reason}") from None
        self._health = {"state": "ok", "detail": f"POST {self.url}"}

    def health(self) -> dict:
        return dict(self._health)

    def close(self) -> None:
        pass
