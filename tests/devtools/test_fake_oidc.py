"""The fake OpenID provider holds clients to Google's rules: registered client and redirect
URI, single-use codes bound to client and redirect URI, PKCE, and ID tokens that
google-auth verifies against the published key set."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from google.auth import jwt

from devtools.fake_oidc import FakeGoogleUser, FakeOpenIDProvider, serve_provider
from kernel.google_signin import jwk_to_pem

REDIRECT = "http://app.test/callback"
VERIFIER = "v" * 64


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenIDProvider]:
    fake = FakeOpenIDProvider(redirect_uris=(REDIRECT,))
    fake.sign_in_as(FakeGoogleUser("ann@acme.example", hosted_domain="acme.example"))
    async with serve_provider(fake) as served:
        yield served


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


async def _authorize(provider: FakeOpenIDProvider, **overrides: Any) -> aiohttp.ClientResponse:
    query = {
        "client_id": provider.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "s1",
        "nonce": "n" * 20,
        "code_challenge": _challenge(VERIFIER),
        "code_challenge_method": "S256",
        **overrides,
    }
    url = provider.discovery()["authorization_endpoint"] + "?" + urlencode(query)
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, allow_redirects=False) as response,
    ):
        await response.read()
        return response


async def _code(provider: FakeOpenIDProvider) -> str:
    response = await _authorize(provider)
    assert response.status == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


async def _token(provider: FakeOpenIDProvider, **form: str) -> tuple[int, dict[str, Any]]:
    body = {
        "grant_type": "authorization_code",
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        **form,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(provider.discovery()["token_endpoint"], data=body) as response,
    ):
        return response.status, await response.json()


async def test_authorize_refuses_unknown_clients_redirects_and_scopes(provider):
    assert (await _authorize(provider, client_id="someone-else")).status == 401
    assert (await _authorize(provider, redirect_uri="http://evil.test/cb")).status == 400
    assert (await _authorize(provider, response_type="token")).status == 400
    assert (await _authorize(provider, scope="email")).status == 400
    assert (await _authorize(provider, code_challenge_method="S512")).status == 400


async def test_codes_are_single_use_and_bound_to_client_redirect_and_verifier(provider):
    status, body = await _token(provider, code=await _code(provider), client_secret="wrong")
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await _token(provider, code=await _code(provider), redirect_uri="http://x/")
    assert (status, body["error"]) == (400, "redirect_uri_mismatch")
    status, body = await _token(provider, code=await _code(provider), code_verifier="w" * 64)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await _token(provider, code="never-issued")
    assert (status, body["error"]) == (400, "invalid_grant")

    code = await _code(provider)
    status, body = await _token(provider, code=code)
    assert status == 200, body
    again, body2 = await _token(provider, code=code)
    assert (again, body2["error"]) == (400, "invalid_grant")

    # The ID token verifies against the published keys, with the claims Google sends.
    keys = {key["kid"]: jwk_to_pem(key) for key in provider.issuer.jwks()["keys"]}
    claims = jwt.decode(body["id_token"], certs=keys, audience=provider.client_id)
    assert claims["iss"] == provider.base_url
    assert (claims["email"], claims["email_verified"], claims["hd"]) == (
        "ann@acme.example",
        True,
        "acme.example",
    )
    assert claims["nonce"] == "n" * 20
    assert provider.discovery()["issuer"] == provider.base_url


async def test_a_personal_account_has_no_hd_claim(provider):
    provider.sign_in_as(FakeGoogleUser("bob@gmail.example"))
    status, body = await _token(provider, code=await _code(provider))
    assert status == 200
    claims = jwt.decode(body["id_token"], verify=False)
    assert "hd" not in claims
