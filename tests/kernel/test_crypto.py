"""Refresh-token encryption: AES-256-GCM bound to organisation and mailbox."""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from kernel.crypto import TokenDecryptionError, decrypt_token, encrypt_token, token_key
from kernel.settings import ConfigError, Settings

KEY = bytes(range(32))
ORG = uuid.UUID("11111111-1111-4111-8111-111111111111")
MAILBOX = uuid.UUID("22222222-2222-4222-8222-222222222222")
TOKEN = "1//refresh-token-ünïcode"


def _encrypt(**binding) -> bytes:
    return encrypt_token(
        KEY, TOKEN, organization_id=binding.get("org", ORG), mailbox_id=binding.get("mb", MAILBOX)
    )


def test_round_trip_with_the_same_binding():
    ciphertext = _encrypt()
    assert decrypt_token(KEY, ciphertext, organization_id=ORG, mailbox_id=MAILBOX) == TOKEN
    # The binding is the UUID, not its spelling.
    assert (
        decrypt_token(KEY, ciphertext, organization_id=str(ORG).upper(), mailbox_id=str(MAILBOX))
        == TOKEN
    )


def test_format_is_version_nonce_ciphertext_and_the_nonce_is_fresh():
    first, second = _encrypt(), _encrypt()
    assert first[0] == 1
    assert len(first) == 1 + 12 + len(TOKEN.encode()) + 16
    assert first[1:13] != second[1:13]
    assert first != second
    assert TOKEN.encode() not in first


@pytest.mark.parametrize(
    ("org", "mailbox"),
    [(ORG, uuid.uuid4()), (uuid.uuid4(), MAILBOX), (MAILBOX, ORG)],
    ids=["other mailbox", "other organization", "swapped ids"],
)
def test_a_ciphertext_does_not_decrypt_under_another_binding(org, mailbox):
    with pytest.raises(TokenDecryptionError, match="another mailbox or organisation"):
        decrypt_token(KEY, _encrypt(), organization_id=org, mailbox_id=mailbox)


@pytest.mark.parametrize("position", [0, 1, 12, 13, -1])
def test_any_flipped_byte_is_refused(position):
    tampered = bytearray(_encrypt())
    tampered[position] ^= 0x01
    with pytest.raises(TokenDecryptionError):
        decrypt_token(KEY, bytes(tampered), organization_id=ORG, mailbox_id=MAILBOX)


def test_truncated_and_wrong_key_are_refused():
    ciphertext = _encrypt()
    with pytest.raises(TokenDecryptionError, match="too short"):
        decrypt_token(KEY, ciphertext[:20], organization_id=ORG, mailbox_id=MAILBOX)
    with pytest.raises(TokenDecryptionError):
        decrypt_token(os.urandom(32), ciphertext, organization_id=ORG, mailbox_id=MAILBOX)


def test_token_key_prefers_the_configured_key():
    configured = os.urandom(32)
    settings = Settings(encryption_key=configured, secret_key="s" * 40)
    assert token_key(settings) == configured


def test_development_key_is_derived_from_secret_key_and_stable():
    first = token_key(Settings(secret_key="a" * 40))
    assert len(first) == 32
    assert token_key(Settings(secret_key="a" * 40)) == first
    assert token_key(Settings(secret_key="b" * 40)) != first
    # Derived, not the secret itself.
    assert first != ("a" * 40).encode()[:32]


def test_production_requires_an_explicit_key():
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY_BASE64"):
        token_key(Settings(app_env="production", secret_key="p" * 40))
    key = base64.b64decode(base64.b64encode(os.urandom(32)))
    assert token_key(Settings(app_env="production", secret_key="p" * 40, encryption_key=key)) == key
