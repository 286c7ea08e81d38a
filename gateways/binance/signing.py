"""Binance SIGNED requests: HMAC-SHA256 (hex) or Ed25519 (base64) over the exact payload sent.

The payload ("totalParams") is the query string concatenated with the request
body, signature excluded. Both the client and the venue simulator use
`payload_of` and `verify`, so the simulator checks signatures exactly as the
venue does: over the bytes on the wire, not over re-encoded parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import quote

SIGNATURE = "signature"


def encode_params(params: Iterable[tuple[str, object]]) -> str:
    """`k=v&...` in the given order, values percent-encoded as Binance expects (no '+' for spaces)."""
    return "&".join(f"{k}={quote(param_text(v), safe='-_.~')}" for k, v in params)


def param_text(v: object) -> str:
    """A parameter's value as Binance writes it: booleans as `true` / `false`, the rest as `str`."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def hmac_sha256(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class HmacSigner:
    kind = "hmac"

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "HmacSigner(***)"

    def sign(self, payload: str) -> str:
        return hmac_sha256(self._secret, payload)


class Ed25519Signer:
    """Ed25519 API keys: the base64 signature is percent-encoded when it goes into the query string."""

    kind = "ed25519"

    def __init__(self, private_key_pem: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("BINANCE_PRIVATE_KEY_FILE is not an Ed25519 private key")
        self._key = key

    def __repr__(self) -> str:
        return "Ed25519Signer(***)"

    def sign(self, payload: str) -> str:
        return base64.b64encode(self._key.sign(payload.encode())).decode()


def signed_query(params: Iterable[tuple[str, object]], signer: HmacSigner | Ed25519Signer) -> str:
    """The query string to send: parameters, then `signature` last."""
    payload = encode_params(params)
    return f"{payload}&{SIGNATURE}={quote(signer.sign(payload), safe='')}"


def payload_of(raw_query: str, body: str = "") -> tuple[str, str]:
    """Split what arrived into (totalParams without the signature, the signature as sent, percent-decoded)."""
    from urllib.parse import unquote

    kept, sig = [], ""
    for part in raw_query.split("&") if raw_query else []:
        if part.startswith(SIGNATURE + "="):
            sig = unquote(part[len(SIGNATURE) + 1:])
        else:
            kept.append(part)
    body_kept = []
    for part in body.split("&") if body else []:
        if part.startswith(SIGNATURE + "="):
            sig = unquote(part[len(SIGNATURE) + 1:])
        else:
            body_kept.append(part)
    return "&".join(kept) + "&".join(body_kept), sig


def verify_hmac(secret: str, payload: str, signature: str) -> bool:
    return hmac.compare_digest(hmac_sha256(secret, payload), signature.lower())


def verify_ed25519(public_key_pem: bytes, payload: str, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(public_key_pem)
    try:
        key.verify(base64.b64decode(signature), payload.encode())  # type: ignore[union-attr]
    except (InvalidSignature, ValueError):
        return False
    return True
