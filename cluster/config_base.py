"""Building blocks of the config: the error type and the base of every section.

Each concept owns its section (`risk/limits.py`, `gateways/venue_config.py`, ...);
`cluster/config.py` assembles them and checks the relations between sections.
"""

from __future__ import annotations

from cluster.messages import Struct


class ConfigError(ValueError):
    """A config problem, naming the key (`strategies[1].symbols`) and what is wrong."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config error at {key}: {problem}")


class Cfg(Struct, forbid_unknown_fields=True):
    """Config sections: frozen, no unknown keys."""


def check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(key, problem)
