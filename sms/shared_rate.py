"""One sending rate for every sending worker: a limiter shared through Redis.

The provider allows so many messages per second for the whole account, however many
workers send. Each worker asks Redis for a turn before each message; one Lua script
(atomic: Redis runs one script at a time) keeps the theoretical arrival time of the next
message (GCRA, the generic cell rate algorithm) under ``SMS_RATE_KEY``, by Redis's own
clock (``TIME``), so the workers' clocks do not matter. A turn not yet due comes back as
how long to wait; the worker sleeps and asks again.

Turns are spaced ``(1 s + SLACK_S) / SMS_RATE_PER_SECOND`` apart: any one second holds at
most SMS_RATE_PER_SECOND turns even when the time from a turn to the provider's receipt
varies by up to SLACK_S between messages (the provider counts arrivals, not turns). The
achieved rate is thus ``rate / (1 + SLACK_S)``, 95 % of the cap. ``SMS_RATE_BURST`` > 1
lets that many go back to back after a quiet spell; a second may then hold up to
``rate + burst - 1``, so keep 1 (the default) where the provider counts strictly.

Without Redis (no SMS_RATE_REDIS_URL and no Redis broker) each process throttles on its
own (``sms.sender.Throttle``): SMS_RATE_PER_SECOND is then per worker. When Redis cannot
be reached the worker does not send faster: it waits and asks again, logging that it
waits (never a phone number or a text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from sms.sender import Throttle

logger = logging.getLogger(__name__)

SLACK_S = 0.05
# Waiting for Redis to come back: 0.5 s, 1 s, 2 s, ... at most this.
RETRY_MAX_S = 10.0

# KEYS[1]: the key. ARGV[1]: the interval between turns (microseconds), ARGV[2]: the
# burst. Returns 0 (go now: the turn is taken) or the microseconds to wait.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return math.ceil(allow_at - now)
end
local after = tat + interval
local ttl_ms = math.ceil((after - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', ttl_ms)
return 0
"""


class SharedThrottle:
    """``sms.sender.Throttle``'s interface (``wait()``), shared by every worker that uses
    the same Redis and key."""

    def __init__(
        self,
        url: str,
        rate: float,
        *,
        burst: int = 1,
        key: str = "dibao:sms:rate",
        slack_s: float = SLACK_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a shared throttle needs a rate above 0")
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.script = self.client.register_script(GCRA)
        self.interval_us = round((1.0 + slack_s) / rate * 1_000_000)
        self.burst = max(1, int(burst))
        self.key = key
        self.sleep = sleep

    def take(self) -> float:
        """Take a turn now (0.0) or say how many seconds until one may be due."""
        waited = self.script(keys=[self.key], args=[self.interval_us, self.burst])
        return int(waited) / 1_000_000

    def wait(self) -> None:
        """Return once a turn is taken; never without one."""
        retry = 0.5
        while True:
            try:
                delay = self.take()
            except redis.RedisError as exc:
                # Fail safe: no turn, no message. The error names the server, not a phone.
                logger.warning(
                    "sms rate limiter: Redis unreachable (%s); waiting %.1f s",
                    type(exc).__name__,
                    retry,
                )
                self.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                continue
            retry = 0.5
            if delay <= 0:
                return
            self.sleep(delay)


def redis_url(config: Mapping[str, Any]) -> str | None:
    """The Redis of the shared limiter: SMS_RATE_REDIS_URL, else a Redis broker's."""
    return config.get("SMS_RATE_REDIS_URL") or None


def throttle(config: Mapping[str, Any]) -> Throttle | SharedThrottle:
    """The sending throttle this configuration asks for: shared through Redis when there
    is one (SMS_RATE_PER_SECOND for all workers together), else this process's own."""
    from sms.sender import Throttle

    rate = float(config["SMS_RATE_PER_SECOND"])
    url = redis_url(config)
    if rate <= 0 or url is None:
        return Throttle(rate)
    return SharedThrottle(
        url, rate, burst=int(config["SMS_RATE_BURST"]), key=str(config["SMS_RATE_KEY"])
    )
