"""Trading state per scope: active, reducing (only orders that shrink a position) or halted.

Scopes: `global`, `venue:<v>`, `strategy:<s>`, `symbol:<sym>`. An operator may set any state
(`python -m cluster limits state SCOPE STATE`); the loss breakers may only tighten one
(`AUTO_TRANSITIONS`), so a breaker never loosens what a person or another breaker set.
"""

from __future__ import annotations

import enum

import msgspec


class TradingState(str, enum.Enum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


# What an automatic breaker may switch a scope to, from each state.
AUTO_TRANSITIONS: dict[TradingState, frozenset[TradingState]] = {
    TradingState.ACTIVE: frozenset({TradingState.REDUCING, TradingState.HALTED}),
    TradingState.REDUCING: frozenset({TradingState.HALTED}),
    TradingState.HALTED: frozenset(),
}


class TradingStatus(msgspec.Struct, frozen=True, omit_defaults=True):
    """A scope's state, why, and who set it (`operator`, `drawdown`, `daily_loss`)."""

    state: TradingState
    reason: str = ""
    source: str = "operator"
    ts_ns: int = 0


def scope_kinds_ok(scope: str) -> bool:
    return scope == "global" or scope.partition(":")[0] in ("venue", "strategy", "symbol") and ":" in scope


def auto_allowed(current: TradingStatus | None, target: TradingState) -> bool:
    return target in AUTO_TRANSITIONS[current.state if current else TradingState.ACTIVE]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TradingStatus)


def encode_status(s: TradingStatus) -> bytes:
    return _encoder.encode(s)


def decode_status(raw: bytes | str) -> TradingStatus:
    return _decoder.decode(raw)
