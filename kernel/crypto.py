"""Encryption of stored OAuth refresh tokens: AES-256-GCM bound to organisation and mailbox.

Format of a ciphertext (bytea in core.mailboxes.encrypted_refresh_token):

    version (1 byte, 0x01) || nonce (12 random bytes) || AES-GCM ciphertext and 16-byte tag

The associated data (authenticated, not stored) names the format version, the organisation
and the mailbox, so a ciphertext copied to another mailbox or organisation row does not
decrypt: the tag check fails exactly as it does for tampered bytes or a wrong key.
"""

from __future__ import annotations

import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernel.settings import ConfigError, Settings

TOKEN_FORMAT_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_BYTES = 32
# HKDF "info" for the development key: names what the derived key is for, so the same
# SECRET_KEY never yields this key for any other purpose.
_DEV_KEY_INFO = b"oss-ticketing/oauth-token-encryption/v1"


class TokenDecryptionError(Exception):
    """The ciphertext is malformed, was tampered with, belongs to another mailbox or
    organisation, or was encrypted under another key."""


def token_key(settings: Settings) -> bytes:
    """The AES-256 key for stored tokens.

    ENCRYPTION_KEY_BASE64 when set. Outside production, without it, a key derived from
    SECRET_KEY with HKDF-SHA256 (info names this purpose), so local runs and the demo work
    with no configuration; tokens stored that way become unreadable if SECRET_KEY changes.
    Production requires ENCRYPTION_KEY_BASE64 (Settings.check_startup refuses to start).
    """
    if settings.encryption_key is not None:
        if len(settings.encryption_key) != _KEY_BYTES:
            raise ConfigError("ENCRYPTION_KEY_BASE64 must decode to 32 bytes (AES-256)")
        return settings.encryption_key
    if settings.app_env == "production":
        raise ConfigError("ENCRYPTION_KEY_BASE64 must be set when APP_ENV=production")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=_DEV_KEY_INFO)
    return hkdf.derive(settings.secret_key.encode())


def _associated_data(organization_id: uuid.UUID | str, mailbox_id: uuid.UUID | str) -> bytes:
    # Canonical UUID text, so "ABC..." and "abc..." bind the same row.
    org = str(uuid.UUID(str(organization_id)))
    mailbox = str(uuid.UUID(str(mailbox_id)))
    return (
        f"oss-ticketing:refresh-token:v{TOKEN_FORMAT_VERSION}:org={org}:mailbox={mailbox}".encode()
    )


def encrypt_token(
    key: bytes,
    plaintext: str,
    *,
    organization_id: uuid.UUID | str,
    mailbox_id: uuid.UUID | str,
) -> bytes:
    """Encrypt `plaintext` for one mailbox of one organisation (fresh random nonce)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(
        nonce, plaintext.encode("utf-8"), _associated_data(organization_id, mailbox_id)
    )
    return bytes([TOKEN_FORMAT_VERSION]) + nonce + sealed


def decrypt_token(
    key: bytes,
    ciphertext: bytes,
    *,
    organization_id: uuid.UUID | str,
    mailbox_id: uuid.UUID | str,
) -> str:
    """Decrypt a token encrypted by `encrypt_token` for the same organisation and mailbox.

    Raises TokenDecryptionError on any mismatch (tampering, wrong binding, wrong key).
    """
    data = bytes(ciphertext)
    if len(data) < 1 + _NONCE_BYTES + _TAG_BYTES:
        raise TokenDecryptionError("the stored token is too short to be a ciphertext")
    if data[0] != TOKEN_FORMAT_VERSION:
        raise TokenDecryptionError(f"unknown token format version {data[0]}")
    nonce, sealed = data[1 : 1 + _NONCE_BYTES], data[1 + _NONCE_BYTES :]
    try:
        plaintext = AESGCM(key).decrypt(
            nonce, sealed, _associated_data(organization_id, mailbox_id)
        )
    except InvalidTag as exc:
        raise TokenDecryptionError(
            "the stored token does not authenticate: it was altered, belongs to another "
            "mailbox or organisation, or the encryption key changed"
        ) from exc
    return plaintext.decode("utf-8")
