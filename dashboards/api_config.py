"""The `api:` config section: where the status API listens and the token it asks for."""

from __future__ import annotations

import ipaddress
import os

from cluster.config_base import Cfg, check

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiSection(Cfg):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8600
    # Bearer token; "" = read it from the environment variable `token_env` (keeps it out of the YAML).
    token: str = ""
    token_env: str = "RSC_API_TOKEN"

    def effective_token(self) -> str:
        return self.token or os.environ.get(self.token_env, "")

    def validate(self, key: str = "api") -> ApiSection:
        check(0 < self.port < 65536, f"{key}.port", "must be a TCP port")
        check(bool(self.host), f"{key}.host", "must not be empty")
        check(is_loopback(self.host) or bool(self.effective_token()), f"{key}.token",
              f"a token is required when the API listens on {self.host!r} (not localhost); set api.token or "
              f"the {self.token_env} environment variable")
        return self
