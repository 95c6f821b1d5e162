"""Configuration parsing: .env, environment precedence, validation."""

from __future__ import annotations

import base64

import pytest

from kernel.settings import DEV_SECRET_KEY, ConfigError, Settings, load_settings, read_dotenv

PRODUCTION_KEY = base64.b64encode(bytes(range(32))).decode()


def test_dotenv_parsing(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "ALLOW_DEV_LOGIN=true\n"
        "export SESSION_TTL_SECONDS=600\n"
        "SECRET_KEY='quoted value'\n"
        'S3_BUCKET="bucket"\n'
        "not a pair\n"
        "\n"
    )
    assert read_dotenv(dotenv) == {
        "ALLOW_DEV_LOGIN": "true",
        "SESSION_TTL_SECONDS": "600",
        "SECRET_KEY": "quoted value",
        "S3_BUCKET": "bucket",
    }


def test_environment_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("ALLOW_DEV_LOGIN=true\nSESSION_TTL_SECONDS=600\n")
    settings = load_settings({"SESSION_TTL_SECONDS": "900"}, dotenv=dotenv)
    assert settings.allow_dev_login is True
    assert settings.session_ttl_seconds == 900


def test_defaults_need_nothing(tmp_path):
    settings = load_settings({}, dotenv=tmp_path / "missing.env")
    assert settings.database_url is None  # embedded PostgreSQL
    assert settings.allow_dev_login is False
    assert settings.session_cookie_name == "oss_session"
    assert settings.csrf_cookie_name == "oss_csrf"
    assert settings.blob_store == "local"
    settings.check_startup()  # development accepts the default secret


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESSION_TTL_SECONDS": "abc"}, "SESSION_TTL_SECONDS must be an integer"),
        ({"SESSION_TTL_SECONDS": "5"}, "between"),
        ({"ALLOW_DEV_LOGIN": "maybe"}, "boolean"),
        ({"BLOB_STORE": "ftp"}, "BLOB_STORE"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"ENCRYPTION_KEY_BASE64": "!!!"}, "base64"),
        ({"ENCRYPTION_KEY_BASE64": base64.b64encode(b"short").decode()}, "32 bytes"),
        ({"COOKIE_SAMESITE": "sometimes"}, "COOKIE_SAMESITE"),
    ],
)
def test_malformed_settings_are_refused(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env, dotenv=tmp_path / "missing.env")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_ENV": "production"}, "SECRET_KEY"),
        ({"APP_ENV": "production", "SECRET_KEY": "short"}, "SECRET_KEY"),
        (
            {
                "APP_ENV": "production",
                "SECRET_KEY": "x" * 40,
                "ALLOW_DEV_LOGIN": "true",
                "ENCRYPTION_KEY_BASE64": PRODUCTION_KEY,
            },
            "ALLOW_DEV_LOGIN",
        ),
        ({"APP_ENV": "production", "SECRET_KEY": "x" * 40}, "ENCRYPTION_KEY_BASE64"),
    ],
)
def test_production_refuses_unsafe_settings(tmp_path, env, message):
    settings = load_settings(env, dotenv=tmp_path / "missing.env")
    with pytest.raises(ConfigError, match=message):
        settings.check_startup()


def test_production_with_a_real_secret_starts(tmp_path):
    settings = load_settings(
        {"APP_ENV": "production", "SECRET_KEY": "s" * 48, "ENCRYPTION_KEY_BASE64": PRODUCTION_KEY},
        dotenv=tmp_path / "missing.env",
    )
    settings.check_startup()
    assert settings.encryption_key == base64.b64decode(PRODUCTION_KEY)
    assert settings.secret_key != DEV_SECRET_KEY
    assert settings.cookie_secure is True  # production defaults to Secure cookies


def test_development_needs_no_encryption_key(tmp_path):
    # Tokens are then encrypted under a key derived from SECRET_KEY (kernel/crypto.py).
    settings = load_settings({"APP_ENV": "development"}, dotenv=tmp_path / "missing.env")
    assert settings.encryption_key is None
    settings.check_startup()


def test_oauth_redirect_uri_setting(tmp_path):
    default = load_settings({}, dotenv=tmp_path / "missing.env")
    assert default.google_oauth_redirect_uri == Settings.google_oauth_redirect_uri
    assert default.google_oauth_redirect_uri.endswith("/mailboxes/gmail/oauth/callback")
    custom = load_settings(
        {"GOOGLE_OAUTH_REDIRECT_URI": "https://help.example.com/mailboxes/gmail/oauth/callback"},
        dotenv=tmp_path / "missing.env",
    )
    assert custom.google_oauth_redirect_uri.startswith("https://help.example.com/")
