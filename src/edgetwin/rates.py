"""Token buckets by sender: how the broker gate and the DMI socket keep a rate per client."""

from __future__ import annotations

import time

_MOST_KEYS = 10_000  # bounded however many senders come and go


class RateLimits:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def allow(self, key: str) -> bool:
        """Take a token from ``key``'s bucket; False (nothing taken) if it has none."""
        now = time.monotonic()
        if len(self._buckets) > _MOST_KEYS:
            self._buckets.clear()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True
