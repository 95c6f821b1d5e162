"""Configuration from environment variables and an optional repo-root `.env` file.

Every variable is documented in the README's configuration section; keep the two in step.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - refused outside development


class ConfigError(ValueError):
    """A setting is missing or malformed; the process must not start."""


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (optionally quoted, `#` comments) without touching os.environ."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"expected a boolean, got {value!r}")


def _int(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from exc
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {number}")
    return number


_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


def _origin_url(name: str, value: str) -> str:
    """An http(s) URL without a trailing slash (FRONTEND_URL may carry a path)."""
    url = value.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return url


def _origins(name: str, value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of origins (scheme://host[:port]); empty: none."""
    if value is None:
        return default
    origins = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
    for origin in origins:
        if not _ORIGIN_RE.fullmatch(origin):
            raise ConfigError(
                f"{name} must list origins like http://localhost:3000, got {origin!r}"
            )
    return origins


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its environment."""

    app_env: str = "development"
    database_url: str | None = None
    embedded_pg_dir: Path = REPO_ROOT / "var" / "pgdata"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    allow_dev_login: bool = False
    session_ttl_seconds: int = 8 * 3600
    session_cookie_name: str = "oss_session"
    csrf_cookie_name: str = "oss_csrf"
    cookie_secure: bool = False
    cookie_samesite: str = "Lax"
    cookie_domain: str | None = None
    secret_key: str = DEV_SECRET_KEY
    encryption_key: bytes | None = None
    blob_store: str = "local"
    local_blob_dir: Path = REPO_ROOT / "var" / "blobs"
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_bucket: str = "oss-ticketing"
    attachment_download_url_ttl_seconds: int = 300
    google_client_id: str | None = None
    google_client_secret: str | None = None
    gmail_api_base_url: str = "https://gmail.googleapis.com/"
    google_auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_uri: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    google_oauth_redirect_uri: str = "http://127.0.0.1:8000/mailboxes/gmail/oauth/callback"
    # Sign in with Google (OpenID Connect): the provider is read from its discovery document.
    google_oidc_client_id: str | None = None
    google_oidc_client_secret: str | None = None
    google_oidc_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    google_oidc_redirect_uri: str = "http://127.0.0.1:8000/auth/google/callback"
    # Where the web client runs: a browser lands there after signing in, and the mailbox
    # OAuth callback sends it back to its /mailboxes/connected page.
    frontend_url: str = "http://localhost:3000"
    # Gmail push (Cloud Pub/Sub): without a topic, push is off and only polling runs.
    gmail_pubsub_topic: str | None = None
    # How pushes are authenticated: Pub/Sub's OIDC token (audience and service account),
    # else a shared secret in the push URL's query string (?token=).
    gmail_push_audience: str | None = None
    gmail_push_service_account: str | None = None
    gmail_push_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    gmail_push_token: str | None = None
    # Seconds between periodic history syncs of every mailbox; None: 60 with push, 15 without.
    sync_poll_seconds_setting: int | None = None
    enable_prometheus_metrics: bool = False
    rate_limit_requests_per_minute: int = 600
    trust_forwarded_for: bool = False
    # Browser origins (scheme://host[:port]) allowed to call the API with credentials: the
    # web client's, when it is served apart from the API.
    cors_origins: tuple[str, ...] = ("http://localhost:3000",)
    # One log line per request costs about a tenth of a list request's CPU; the request id
    # header, /metrics and the proxy in front usually cover it.
    access_log: bool = False

    @property
    def google_signin_configured(self) -> bool:
        """Whether Sign in with Google can run (an OpenID Connect client is set)."""
        return bool(self.google_oidc_client_id and self.google_oidc_client_secret)

    @property
    def push_enabled(self) -> bool:
        """Whether mailboxes are watched (Gmail notifies Pub/Sub of every change)."""
        return self.gmail_pubsub_topic is not None

    @property
    def push_oidc(self) -> bool:
        """Whether pushes must carry Pub/Sub's OIDC token (else the shared secret)."""
        return self.gmail_push_audience is not None

    @property
    def push_configured(self) -> bool:
        """Whether pushes can be authenticated, so POST /webhooks/gmail/pubsub exists."""
        return self.push_oidc or self.gmail_push_token is not None

    @property
    def sync_poll_seconds(self) -> int:
        """The polling safety net: a lost push costs at most this long."""
        if self.sync_poll_seconds_setting is not None:
            return self.sync_poll_seconds_setting
        return 60 if self.push_enabled else 15

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests and CLI flags use this)."""
        return replace(self, **changes)

    def check_startup(self) -> None:
        """Refuse configurations that are unsafe in production."""
        if self.app_env != "production":
            return
        if self.secret_key == DEV_SECRET_KEY or len(self.secret_key) < 32:
            raise ConfigError(
                "SECRET_KEY must be set to a random value of at least 32 characters "
                f"when APP_ENV={self.app_env}"
            )
        if self.allow_dev_login:
            raise ConfigError(f"ALLOW_DEV_LOGIN=true is refused when APP_ENV={self.app_env}")
        if self.encryption_key is None:
            # Outside production the token key is derived from SECRET_KEY (kernel/crypto.py);
            # production keeps the two secrets apart.
            raise ConfigError(
                "ENCRYPTION_KEY_BASE64 must be set (32 random bytes, base64) "
                f"when APP_ENV={self.app_env}"
            )


def load_settings(environ: dict[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build Settings from `.env` (lowest precedence) overlaid with the process environment."""
    env = read_dotenv(dotenv if dotenv is not None else REPO_ROOT / ".env")
    env.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    app_env = (get("APP_ENV") or "development").lower()
    if app_env not in {"development", "test", "production"}:
        raise ConfigError(f"APP_ENV must be development, test or production, got {app_env!r}")

    encryption_key = None
    if raw_key := get("ENCRYPTION_KEY_BASE64"):
        try:
            encryption_key = base64.b64decode(raw_key, validate=True)
        except binascii.Error as exc:
            raise ConfigError("ENCRYPTION_KEY_BASE64 is not valid base64") from exc
        if len(encryption_key) != 32:
            raise ConfigError("ENCRYPTION_KEY_BASE64 must decode to 32 bytes (AES-256)")

    blob_store = (get("BLOB_STORE") or "local").lower()
    if blob_store not in {"local", "s3"}:
        raise ConfigError(f"BLOB_STORE must be local or s3, got {blob_store!r}")

    samesite = get("COOKIE_SAMESITE") or "Lax"
    if samesite.capitalize() not in {"Lax", "Strict", "None"}:
        raise ConfigError(f"COOKIE_SAMESITE must be Lax, Strict or None, got {samesite!r}")

    topic = get("GMAIL_PUBSUB_TOPIC")
    if topic is not None and not re.fullmatch(r"projects/[^/\s]+/topics/[^/\s]+", topic):
        raise ConfigError(
            f"GMAIL_PUBSUB_TOPIC must look like projects/PROJECT/topics/TOPIC, got {topic!r}"
        )
    audience, service_account = get("GMAIL_PUSH_AUDIENCE"), get("GMAIL_PUSH_SERVICE_ACCOUNT")
    if (audience is None) != (service_account is None):
        raise ConfigError("GMAIL_PUSH_AUDIENCE and GMAIL_PUSH_SERVICE_ACCOUNT go together")

    return Settings(
        app_env=app_env,
        database_url=get("DATABASE_URL"),
        embedded_pg_dir=Path(get("EMBEDDED_PG_DIR") or REPO_ROOT / "var" / "pgdata"),
        db_pool_min_size=_int("DB_POOL_MIN_SIZE", get("DB_POOL_MIN_SIZE"), 1, 0, 100),
        db_pool_max_size=_int("DB_POOL_MAX_SIZE", get("DB_POOL_MAX_SIZE"), 10, 1, 200),
        allow_dev_login=_bool(get("ALLOW_DEV_LOGIN"), False),
        session_ttl_seconds=_int(
            "SESSION_TTL_SECONDS", get("SESSION_TTL_SECONDS"), 8 * 3600, 60, 90 * 86400
        ),
        session_cookie_name=get("SESSION_COOKIE_NAME") or "oss_session",
        csrf_cookie_name=get("CSRF_COOKIE_NAME") or "oss_csrf",
        cookie_secure=_bool(get("COOKIE_SECURE"), app_env == "production"),
        cookie_samesite=samesite.capitalize(),
        cookie_domain=get("COOKIE_DOMAIN"),
        secret_key=get("SECRET_KEY") or DEV_SECRET_KEY,
        encryption_key=encryption_key,
        blob_store=blob_store,
        local_blob_dir=Path(get("LOCAL_BLOB_DIR") or REPO_ROOT / "var" / "blobs"),
        s3_endpoint_url=get("S3_ENDPOINT_URL"),
        s3_access_key_id=get("S3_ACCESS_KEY_ID"),
        s3_secret_access_key=get("S3_SECRET_ACCESS_KEY"),
        s3_bucket=get("S3_BUCKET") or "oss-ticketing",
        attachment_download_url_ttl_seconds=_int(
            "ATTACHMENT_DOWNLOAD_URL_TTL_SECONDS",
            get("ATTACHMENT_DOWNLOAD_URL_TTL_SECONDS"),
            300,
            1,
            7 * 86400,
        ),
        google_client_id=get("GOOGLE_CLIENT_ID"),
        google_client_secret=get("GOOGLE_CLIENT_SECRET"),
        gmail_api_base_url=get("GMAIL_API_BASE_URL") or Settings.gmail_api_base_url,
        google_auth_uri=get("GOOGLE_AUTH_URI") or Settings.google_auth_uri,
        google_token_uri=get("GOOGLE_TOKEN_URI") or Settings.google_token_uri,
        google_oauth_redirect_uri=get("GOOGLE_OAUTH_REDIRECT_URI")
        or Settings.google_oauth_redirect_uri,
        google_oidc_client_id=get("GOOGLE_OIDC_CLIENT_ID"),
        google_oidc_client_secret=get("GOOGLE_OIDC_CLIENT_SECRET"),
        google_oidc_discovery_url=get("GOOGLE_OIDC_DISCOVERY_URL")
        or Settings.google_oidc_discovery_url,
        google_oidc_redirect_uri=get("GOOGLE_OIDC_REDIRECT_URI")
        or Settings.google_oidc_redirect_uri,
        frontend_url=_origin_url("FRONTEND_URL", get("FRONTEND_URL") or Settings.frontend_url),
        gmail_pubsub_topic=topic,
        gmail_push_audience=audience,
        gmail_push_service_account=service_account,
        gmail_push_certs_url=get("GMAIL_PUSH_CERTS_URL") or Settings.gmail_push_certs_url,
        gmail_push_token=get("GMAIL_PUSH_TOKEN"),
        cors_origins=_origins("CORS_ORIGINS", get("CORS_ORIGINS"), Settings.cors_origins),
        sync_poll_seconds_setting=(
            _int("SYNC_POLL_SECONDS", get("SYNC_POLL_SECONDS"), 60, 5, 3600)
            if get("SYNC_POLL_SECONDS")
            else None
        ),
        enable_prometheus_metrics=_bool(get("ENABLE_PROMETHEUS_METRICS"), False),
        rate_limit_requests_per_minute=_int(
            "RATE_LIMIT_REQUESTS_PER_MINUTE",
            get("RATE_LIMIT_REQUESTS_PER_MINUTE"),
            600,
            0,
            1_000_000,
        ),
        trust_forwarded_for=_bool(get("TRUST_FORWARDED_FOR"), False),
        access_log=_bool(get("ACCESS_LOG"), False),
    )
