"""Identifiers, API key hashing and the encryption of webhook signing secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


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


def signing_keys(secret_keys: str | Sequence[str]) -> list[str]:
    """``SECRET_KEY`` and its fallbacks (newest first) as itsdangerous wants a key list:
    oldest first, so that it signs with the last (the current key) and accepts them all."""
    keys = [secret_keys] if isinstance(secret_keys, str) else list(secret_keys)
    return list(reversed(keys))


class SecretBox:
    """Encrypts secrets at rest (webhook signing secrets, log keys) with ``SECRET_KEY``.

    The signature check needs the secret itself, so a hash cannot be kept. Each secret key
    gives a Fernet key through HKDF; sealing uses the first key, opening tries them all
    (``MultiFernet``), so ``SECRET_KEY_FALLBACKS`` keep sealed values readable while
    ``SECRET_KEY`` is rotated, and ``reseal`` moves a value onto the current key. Values
    sealed before HKDF was used (a plain SHA-256 of the key) still open.
    """

    def __init__(self, secret_keys: str | Sequence[str]) -> None:
        keys = [secret_keys] if isinstance(secret_keys, str) else list(secret_keys)
        if not keys or not all(keys):
            raise ValueError("SecretBox needs at least one non-empty secret key")
        self._current = Fernet(_fernet_key(keys[0]))
        self._fernet = MultiFernet(
            [self._current]
            + [Fernet(_fernet_key(key)) for key in keys[1:]]
            + [Fernet(_legacy_fernet_key(key)) for key in keys]
        )

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode("utf-8"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode("utf-8")
        except InvalidToken:
            raise SealedWithUnknownKey(
                "a stored secret cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS"
            ) from None

    def is_current(self, sealed: bytes) -> bool:
        """Whether ``sealed`` opens with the current key (``reseal`` would not change it)."""
        try:
            self._current.decrypt(bytes(sealed))
        except InvalidToken:
            return False
        return True

    def reseal(self, sealed: bytes) -> bytes:
        """The same secret sealed with the current key."""
        try:
            return self._fernet.rotate(bytes(sealed))
        except InvalidToken:
            raise SealedWithUnknownKey(
                "a stored secret cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS"
            ) from None


class SealedWithUnknownKey(ValueError):
    """A sealed value none of the configured secret keys opens."""


def _fernet_key(secret_key: str) -> bytes:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"auditlog/sealed-secret/v2"
    ).derive(secret_key.encode("utf-8"))
    return base64.urlsafe_b64encode(derived)


def _legacy_fernet_key(secret_key: str) -> bytes:
    digest = hashlib.sha256(b"auditlog/source-secret/" + secret_key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest)
