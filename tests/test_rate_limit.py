"""The venue rate limiter: venue counters, 429 back-off by Retry-After, the 418 ban."""

from __future__ import annotations

import pytest

from gateways.rate_limit import LimitState, RateLimited, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_binance_weight_header_is_the_counter_and_throttles_before_the_limit() -> None:
    clock = Clock()
    rl = RateLimiter("binance", "binance", 1200, headroom=0.95, clock=clock)
    rl.check(1)
    rl.on_response(200, {"X-MBX-USED-WEIGHT-1M": "1139"})
    assert rl.used == 1139
    with pytest.raises(RateLimited) as exc:
        rl.check(2)  # 1141 > 1140
    assert exc.value.state is LimitState.THROTTLED
    clock.t += 60.0
    rl.check(2)  # a new minute


def test_429_backs_off_for_retry_after_and_418_bans() -> None:
    clock = Clock()
    changes = []
    rl = RateLimiter("binance", "binance", 6000, clock=clock, on_change=changes.append)
    rl.on_response(429, {"Retry-After": "3"})
    with pytest.raises(RateLimited) as exc:
        rl.check()
    assert exc.value.state is LimitState.BACKOFF
    clock.t += 3.0
    rl.check()
    rl.on_response(418, {"Retry-After": "120"})
    clock.t += 119.0
    with pytest.raises(RateLimited) as exc:
        rl.check()
    assert exc.value.state is LimitState.BANNED
    clock.t += 1.0
    rl.check()
    assert [c.state for c in changes] == [LimitState.BACKOFF, LimitState.OK, LimitState.BANNED, LimitState.OK]


def test_alpaca_remaining_header() -> None:
    rl = RateLimiter("alpaca", "alpaca", 200, headroom=1.0, clock=Clock())
    rl.on_response(200, {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0"})
    with pytest.raises(RateLimited):
        rl.check()
    rl.on_response(429, {})  # no Retry-After: a default back-off
    assert rl.status().state is LimitState.BACKOFF


def test_alpaca_429_without_retry_after_waits_until_the_rate_limit_reset() -> None:
    import time

    clock = Clock()
    rl = RateLimiter("alpaca", "alpaca", 200, clock=clock)
    rl.on_response(429, {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                         "X-RateLimit-Reset": str(int(time.time()) + 7)})
    status = rl.status()
    assert status.state is LimitState.BACKOFF and 5.5 <= status.retry_after_s <= 7.0
    with pytest.raises(RateLimited) as exc:
        rl.check()
    assert 5.5 <= exc.value.retry_after_s <= 7.0
    clock.t += 7.0
    rl.check()
