"""API keys for the real venues: from the environment or a secrets file, never from the config.

A `Credentials` object never shows its secret: `repr`/`str` mask it, it cannot be
pickled into Ray's object store or encoded into Redis/journal JSON by accident
(it is not a msgspec Struct), and nothing here logs a key. The secrets file is
YAML or JSON, `{ENV_NAME: value}`, e.g. `BINANCE_API_KEY: ...`; the environment wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ENV_NAMES: dict[str, tuple[str, str]] = {
    "binance": ("BINANCE_API_KEY", "BINANCE_API_SECRET"),
    "alpaca": ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"),
}
BINANCE_PRIVATE_KEY_FILE = "BINANCE_PRIVATE_KEY_FILE"
"""Optional: a PEM Ed25519 private key; when set, Binance requests are signed with Ed25519 instead of HMAC."""


class SecretsError(RuntimeError):
    """Keys are missing or the secrets file cannot be read; the message names what, never a value."""


@dataclass(frozen=True)
class Credentials:
    venue: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    private_key_pem: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"Credentials(venue={self.venue!r}, api_key='***', api_secret='***')"

    __str__ = __repr__

    def __reduce__(self):  # pragma: no cover - guard, exercised via pickle in tests
        raise TypeError("Credentials must not be serialized; load them where they are used")

    def secrets(self) -> list[str]:
        """Every secret value, for log scrubbing and for tests that search logs and Redis."""
        return [s for s in (self.api_key, self.api_secret) if s]


def _read_file(path: str) -> Mapping[str, str]:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise SecretsError(f"cannot read secrets file {p}: {exc.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise SecretsError(f"secrets file {p} is not valid YAML/JSON") from None
    if not isinstance(data, dict):
        raise SecretsError(f"secrets file {p} must map names to values")
    return {str(k): str(v) for k, v in data.items()}


def simulator_credentials(venue_type: str) -> Credentials:
    """The keys of the account every venue simulator has (not secrets): what a gateway signs with when the
    cluster trades on the simulator."""
    if venue_type == "binance":
        from gateways.venue_sim.binance_trading import SIM_API_KEY, SIM_API_SECRET

        return Credentials(venue=venue_type, api_key=SIM_API_KEY, api_secret=SIM_API_SECRET)
    if venue_type == "alpaca":
        from gateways.venue_sim.alpaca_trading import SIM_KEY_ID, SIM_SECRET_KEY

        return Credentials(venue=venue_type, api_key=SIM_KEY_ID, api_secret=SIM_SECRET_KEY)
    raise SecretsError(f"venue type {venue_type!r} takes no API keys")


def load_credentials(venue_type: str, secrets_file: str = "", env: Mapping[str, str] | None = None) -> Credentials:
    """Keys for `venue_type` ('binance' or 'alpaca'): environment first, then `secrets_file`."""
    if venue_type not in ENV_NAMES:
        raise SecretsError(f"venue type {venue_type!r} takes no API keys")
    env = os.environ if env is None else env
    key_name, secret_name = ENV_NAMES[venue_type]
    from_file = _read_file(secrets_file) if secrets_file else {}
    key = env.get(key_name) or from_file.get(key_name, "")
    secret = env.get(secret_name) or from_file.get(secret_name, "")
    pem = b""
    pem_path = env.get(BINANCE_PRIVATE_KEY_FILE) or from_file.get(BINANCE_PRIVATE_KEY_FILE, "")
    if venue_type == "binance" and pem_path:
        try:
            pem = Path(pem_path).expanduser().read_bytes()
        except OSError as exc:
            raise SecretsError(f"cannot read {BINANCE_PRIVATE_KEY_FILE} {pem_path}: {exc.strerror}") from None
    missing = [n for n, v in ((key_name, key), (secret_name, secret or pem)) if not v]
    if missing:
        where = f"the environment or {secrets_file}" if secrets_file else "the environment"
        raise SecretsError(f"{venue_type} API keys missing: set {' and '.join(missing)} in {where}")
    return Credentials(venue=venue_type, api_key=key, api_secret=secret, private_key_pem=pem)
