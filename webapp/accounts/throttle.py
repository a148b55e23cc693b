"""Sign-in throttling: after a few failed passwords, each further attempt must wait longer (1 s, 2 s, 4 s ... at most
a minute), per user name and per client address. Nothing is locked for good: a success clears the user name's
count, and counts are forgotten after a quarter of an hour without failures. Counts live in the shared cache
(Redis), so every web process sees the same ones.

An attempt claims its turn atomically (cache.add), so parallel requests cannot all slip through one gap.
When the cache cannot be reached, sign-in goes on unthrottled (logged): the line must not lose its logins to a
Redis outage."""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

TOO_MANY_ATTEMPTS = "Too many sign-in attempts. Try again in {seconds} s."
# Failures allowed before waits begin: a person mistyping a few times never waits; an address signing in for a
# whole shift of people (one PC at the line) gets more.
FREE_FAILURES = {"user": 5, "address": 20}
FIRST_WAIT_S = 1
MAX_WAIT_S = 60
FORGET_AFTER_S = 15 * 60


def client_address(request: HttpRequest) -> str:
    """The client's address. Behind the TLS proxy that settings trust (KENSA_BEHIND_TLS_PROXY), the last
    X-Forwarded-For entry: the address the proxy itself saw (earlier entries are whatever the client sent)."""
    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.rsplit(",", 1)[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def login_attempt_wait(*, username: str, address: str) -> int:
    """0 when this attempt may check its password now (its turn is then taken), else the seconds to wait."""
    try:
        now = time.time()
        turns = []
        for kind, key in _keys(username, address):
            failures = cache.get(f"{key}:failures") or 0
            if failures < FREE_FAILURES[kind]:
                continue
            until = cache.get(f"{key}:next")
            if until and until > now:
                return math.ceil(until - now)
            turns.append((f"{key}:next", min(FIRST_WAIT_S * 2 ** (failures - FREE_FAILURES[kind]), MAX_WAIT_S)))
        for next_key, wait in turns:
            if not cache.add(next_key, now + wait, timeout=wait):  # a parallel attempt took this turn
                return max(1, math.ceil((cache.get(next_key) or now + wait) - now))
        return 0
    except RedisError:
        log.warning("sign-in throttle unavailable (cache unreachable); attempt not throttled", exc_info=True)
        return 0


def login_failure_record(*, username: str, address: str) -> None:
    try:
        for _, key in _keys(username, address):
            count_key = f"{key}:failures"
            cache.add(count_key, 0, timeout=FORGET_AFTER_S)
            try:
                cache.incr(count_key)
            except ValueError:  # expired between add and incr
                cache.set(count_key, 1, timeout=FORGET_AFTER_S)
            cache.touch(count_key, FORGET_AFTER_S)  # forgotten a quarter of an hour after the last failure
    except RedisError:
        log.warning("sign-in throttle unavailable (cache unreachable); failure not counted", exc_info=True)


def login_success_record(*, username: str) -> None:
    """The right password: the user name's count starts again (the address's stays, so one known password
    does not reset a spray across many user names)."""
    try:
        key = _key("user", username)
        cache.delete_many([f"{key}:failures", f"{key}:next"])
    except RedisError:
        log.warning("sign-in throttle unavailable (cache unreachable)", exc_info=True)


def _keys(username: str, address: str) -> list[tuple[str, str]]:
    return [("user", _key("user", username)), ("address", _key("address", address))]


def _key(kind: str, value: str) -> str:
    """Hashed: user names are free text of any length; case-folded as Django's user names compare in practice."""
    digest = hashlib.sha256(value.strip().casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"signin:{kind}:{digest}"
