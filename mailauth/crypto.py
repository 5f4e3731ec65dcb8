"""Encryption of secrets at rest (client secrets, passwords, tokens)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    """Encrypt with the first key, decrypt with any, so keys can be rotated.

    ``ENCRYPTION_KEYS`` lists Fernet keys newest first; after adding a new key
    at the front, :meth:`rotate` re-encrypts old values under it.
    """

    def __init__(self, keys: tuple[str, ...] | list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise ValueError(
                "an ENCRYPTION_KEYS entry is not a Fernet key (32 url-safe base64 bytes); "
                "generate one with Fernet.generate_key()"
            ) from exc

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            raise ValueError(
                "a stored secret cannot be decrypted with ENCRYPTION_KEYS; "
                "add the key it was written with back to the list"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        return self._fernet.rotate(token)

    def __repr__(self) -> str:
        return "<SecretBox>"
