"""Contract fuzzing in CI (issue 15): schemathesis against the served OpenAPI document.

A short, deterministic profile (schemathesis.toml: fixed seed, deterministic generation,
every operation, a development-login session and its CSRF header on every request) run
against `ticketing serve` on a fresh database. It fails on any 5xx, any response that the
document does not describe, and any request handled against the document (schema-valid
refused, schema-violating accepted).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.openapi import document
from devtools.fake_gmail import FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeGmailServer
from devtools.fake_oidc import FakeOpenIDProvider, serve_provider_in_thread
from tests.fixtures.api import TEST_SECRET
from tests.fixtures.seed import Seed
from tests.processes import REPO, clean_env, free_port, healthz_once_up, serving

# Long: property-based requests against a served API.
pytestmark = pytest.mark.slow

SCHEMATHESIS = [str(Path(sys.executable).parent / "schemathesis")]
# The CI profile: 10 examples per operation (about 20 s). The longer profile is the same
# test with SCHEMATHESIS_MAX_EXAMPLES=400 (README).
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10")


def _server_env(
    db_url: str, gmail: FakeGmailServer, oidc: FakeOpenIDProvider, port: int
) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=db_url,
        APP_ENV="test",
        SECRET_KEY=TEST_SECRET,
        ALLOW_DEV_LOGIN="true",
        RATE_LIMIT_REQUESTS_PER_MINUTE="0",
        ENABLE_PROMETHEUS_METRICS="true",  # so that GET /metrics, documented, exists
        GMAIL_PUSH_TOKEN="push-secret",  # and POST /webhooks/gmail/pubsub
        # The connect flow runs end to end against the fake Gmail (which knows no codes).
        GOOGLE_CLIENT_ID=FAKE_CLIENT_ID,
        GOOGLE_CLIENT_SECRET=FAKE_CLIENT_SECRET,
        GOOGLE_TOKEN_URI=gmail.token_uri,
        GMAIL_API_BASE_URL=gmail.base_url,
        # Sign in with Google against the fake OpenID provider, so that its start redirects.
        GOOGLE_OIDC_CLIENT_ID=oidc.client_id,
        GOOGLE_OIDC_CLIENT_SECRET=oidc.client_secret,
        GOOGLE_OIDC_DISCOVERY_URL=oidc.discovery_url,
        GOOGLE_OIDC_REDIRECT_URI=f"http://127.0.0.1:{port}/auth/google/callback",
    )


def _seed_ticket(db, port: int) -> int:
    """A ticket with a message in the organisation the hooks log in to; its id."""
    base = f"http://127.0.0.1:{port}"
    with requests.Session() as http:
        csrf = http.get(f"{base}/auth/csrf", timeout=10).json()["csrf_token"]
        login = http.post(
            f"{base}/auth/dev/login",
            json={"email": "fuzz@schemathesis.example", "organization_name": "Schemathesis"},
            headers={"x-csrf-token": csrf},
            timeout=10,
        ).json()
    seed = Seed(db, login["organization"]["id"])
    ticket_id = seed.ticket()
    seed.message(ticket_id)
    return ticket_id


def test_schemathesis_short_profile_finds_nothing(db, db_url, fake_gmail_thread, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    oidc = FakeOpenIDProvider(redirect_uris=(f"http://127.0.0.1:{port}/auth/google/callback",))
    with (
        serve_provider_in_thread(oidc),
        serving(
            "--port",
            str(port),
            env=_server_env(db_url, fake_gmail_thread, oidc, port),
            log_path=log_path,
        ) as server,
    ):
        try:
            assert healthz_once_up(port, server, 60) is not None, log_path.read_text()
            ticket_id = _seed_ticket(db, port)
            run = subprocess.run(
                [
                    *SCHEMATHESIS,
                    "--config-file",
                    str(REPO / "schemathesis.toml"),
                    "--no-color",
                    "run",
                    f"http://127.0.0.1:{port}/openapi.json",
                    "--max-examples",
                    MAX_EXAMPLES,
                ],
                env=clean_env(PYTHONPATH=str(REPO), SCHEMATHESIS_TICKET_ID=str(ticket_id)),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=240 if MAX_EXAMPLES == "10" else None,
                check=False,
            )
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    # Every operation but GET /openapi.json, which schemathesis leaves out as the schema's
    # own location.
    operations = sum(len(methods) for methods in document()["paths"].values()) - 1
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) == operations, output[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", output), output[-3000:]
    assert "Server error" not in output
