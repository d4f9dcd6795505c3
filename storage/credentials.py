"""Identifiers, API key hashing and the encryption of webhook signing secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken


def new_id(prefix: str) -> str:
    """A random public identifier such as ``org_3f9a…``."""
    return f"{prefix}_{secrets.token_hex(10)}"


def new_api_key() -> str:
    return f"alk_{secrets.token_urlsafe(32)}"


def hash_api_key(api_key: str) -> str:
    """API keys are high-entropy random strings, so one SHA-256 suffices (no slow KDF)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


class SecretBox:
    """Encrypts source secrets at rest with a key derived from ``SECRET_KEY``.

    The signature check needs the secret itself, so a hash cannot be kept; rotating
    ``SECRET_KEY`` therefore means creating the sources (and their secrets) again.
    """

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"auditlog/source-secret/" + secret_key.encode("utf-8")).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode("utf-8"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode("utf-8")
        except InvalidToken:
            raise ValueError("the source secret cannot be decrypted with this SECRET_KEY") from None
