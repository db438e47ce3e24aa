"""Public keys an EHR signs its client assertions with: RSA of 2048 bits or more (RS256), or P-256 (ES256)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key


class KeyProblem(ValueError):
    """A public key that cannot be used."""


def load_public_key(pem: str) -> Any:
    """An RSA (2048 bits or more) or P-256 public key from PEM text, or :class:`KeyProblem`."""
    try:
        key = load_pem_public_key(pem.strip().encode())
    except ValueError:
        raise KeyProblem("Not a PEM public key.") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyProblem("RSA keys need at least 2048 bits.")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyProblem("Only RSA (RS256) and P-256 (ES256) public keys are accepted.")
