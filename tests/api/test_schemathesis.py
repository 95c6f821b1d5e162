"""Contract fuzzing in CI (issue 15): schemathesis against the served OpenAPI document.

A short, deterministic profile (schemathesis.toml: fixed seed, deterministic generation,
every operation, a development-login session and its CSRF header on every request) run
against `ticketing serve` on a fresh database. It fails on any 5xx, any response that the
document does not describe, and any request handled against the document (schema-valid
refused, schema-violating accepted). The longer profile is the README's command.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from app.openapi import document
from tests.fixtures.api import TEST_SECRET
from tests.test_cli import REPO, _env, _free_port, _healthz_once_up, _serving

SCHEMATHESIS = [str(Path(sys.executable).parent / "schemathesis")]
CI_EXAMPLES = "10"


def _server_env(db_url: str) -> dict[str, str]:
    return _env(
        DATABASE_URL=db_url,
        APP_ENV="test",
        SECRET_KEY=TEST_SECRET,
        ALLOW_DEV_LOGIN="true",
        RATE_LIMIT_REQUESTS_PER_MINUTE="0",
        ENABLE_PROMETHEUS_METRICS="true",  # so that GET /metrics, documented, exists
        # A Gmail client that can start the connect flow; its token endpoint answers nothing.
        GOOGLE_CLIENT_ID="schemathesis",
        GOOGLE_CLIENT_SECRET="schemathesis",
        GOOGLE_TOKEN_URI="http://127.0.0.1:9/token",
    )


def test_schemathesis_short_profile_finds_nothing(db_url, tmp_path):
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with _serving("--port", str(port), env=_server_env(db_url), log_path=log_path) as server:
        try:
            assert _healthz_once_up(port, server, 60) is not None, log_path.read_text()
            run = subprocess.run(
                [
                    *SCHEMATHESIS,
                    "--config-file",
                    str(REPO / "schemathesis.toml"),
                    "--no-color",
                    "run",
                    f"http://127.0.0.1:{port}/openapi.json",
                    "--max-examples",
                    CI_EXAMPLES,
                ],
                env=_env(PYTHONPATH=str(REPO)),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=240,
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
