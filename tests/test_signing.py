"""Binance request signing: the published test vector, Ed25519, and the simulator's verification."""

from __future__ import annotations

import re

import pytest

from gateways.binance.signing import (
    Ed25519Signer,
    HmacSigner,
    hmac_sha256,
    payload_of,
    signed_query,
    verify_ed25519,
    verify_hmac,
)
from tests.conftest import SHARED_DATA

VECTOR_QUERY = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
                "&timestamp=1499827319559")


def vector() -> tuple[str, str, str]:
    """The secret, query and signature as README.md of the shared data documents them."""
    text = (SHARED_DATA / "README.md").read_text()
    secret = re.search(r"secretKey `([^`]+)`", text).group(1)  # type: ignore[union-attr]
    query = re.search(r"query string `([^`]+)`", text).group(1)  # type: ignore[union-attr]
    sig = re.search(r"signature `([0-9a-f]{64})`", text).group(1)  # type: ignore[union-attr]
    return secret, query, sig


def test_published_hmac_vector() -> None:
    secret, query, sig = vector()
    assert query == VECTOR_QUERY
    assert hmac_sha256(secret, query) == sig
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    assert signed_query(params, HmacSigner(secret)) == f"{query}&signature={sig}"


def test_verification_is_over_query_and_body_concatenated() -> None:
    secret, query, sig = vector()
    assert verify_hmac(secret, *payload_of(f"{query}&signature={sig}"))
    # Query and body: totalParams is the two concatenated, signature removed from wherever it is.
    q, body = "symbol=LTCBTC&side=BUY", "type=LIMIT&timestamp=1"
    good = hmac_sha256(secret, q + body)
    assert verify_hmac(secret, *payload_of(q, f"{body}&signature={good}"))
    assert not verify_hmac(secret, *payload_of(q.replace("BUY", "SELL"), f"{body}&signature={good}"))
    assert not verify_hmac("other", *payload_of(f"{query}&signature={sig}"))


def test_ed25519_signature_round_trip() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    qs = signed_query([("symbol", "BTCUSDT"), ("timestamp", 1)], Ed25519Signer(pem))
    payload, sig = payload_of(qs)
    assert payload == "symbol=BTCUSDT&timestamp=1"
    assert verify_ed25519(pub, payload, sig)
    assert not verify_ed25519(pub, payload + "0", sig)


def test_signers_never_show_the_secret() -> None:
    assert "s3cr3t" not in repr(HmacSigner("s3cr3t"))
    with pytest.raises(ValueError):
        Ed25519Signer(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
