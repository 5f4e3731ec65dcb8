"""Tests of the local OAuth 2.0 authorization server (devservers.oauth_server).

Everything goes over real HTTP on loopback with ``requests``; nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devservers import oauth_server
from devservers.oauth_server import AuthServer, AuthServerConfig, ClientSpec

REPO_ROOT = Path(__file__).resolve().parents[1]

REDIRECT_URI = "http://127.0.0.1:5000/home-api/authentication/mail/oauth2/code"
CLIENT_ID = "mailroom"
CLIENT_SECRET = "mailroom-secret"
OTHER_CLIENT_ID = "other-app"
OTHER_CLIENT_SECRET = "other-secret"
OTHER_REDIRECT_URI = "http://127.0.0.1:6000/callback"
USER = "demo@example.test"
PASSWORD = "demo-password"
USER2 = "second@example.test"
PASSWORD2 = "second-password"
DOVECOT = ("dovecot", "dovecot-secret")
GOOGLE_SCOPE = "https://mail.google.com/"


def make_config(**overrides: Any) -> AuthServerConfig:
    values: dict[str, Any] = dict(
        users={USER: PASSWORD, USER2: PASSWORD2},
        clients=[
            ClientSpec(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], "client_secret_post"),
            ClientSpec(
                OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, [OTHER_REDIRECT_URI], "client_secret_basic"
            ),
        ],
        introspection_clients=dict([DOVECOT]),
    )
    values.update(overrides)
    return AuthServerConfig(**values)


@pytest.fixture
def server():
    with AuthServer(make_config()) as srv:
        yield srv


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


# ----------------------------------------------------------------- helpers


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def auth_params(challenge: str | None, **extra) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": GOOGLE_SCOPE,
        "state": "state-" + secrets.token_hex(4),
    }
    if challenge is not None:
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def redirect_target(location: str) -> str:
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def consent(http, server, params, *, email=USER, password=PASSWORD, action="allow"):
    """GET the consent form, then submit it like a browser would."""
    page = http.get(server.authorization_url, params=params, allow_redirects=False)
    assert page.status_code == 200, page.text
    match = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert match, page.text
    form_action = match.group(1).replace("&amp;", "&")
    return http.post(
        server.url + form_action,
        data={"email": email, "password": password, "action": action},
        allow_redirects=False,
    )


def get_code(http, server, challenge, **extra) -> str:
    params = auth_params(challenge, **extra)
    response = consent(http, server, params)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert redirect_target(location) == params.get("redirect_uri", REDIRECT_URI)
    query = query_of(location)
    assert query["state"] == params["state"]
    return query["code"]


def exchange(
    http,
    server,
    code,
    verifier,
    *,
    basic=False,
    client=(CLIENT_ID, CLIENT_SECRET),
    redirect_uri=REDIRECT_URI,
):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    if basic:
        return http.post(server.token_url, data=data, auth=client)
    data.update(client_id=client[0], client_secret=client[1])
    return http.post(server.token_url, data=data)


def refresh(http, server, refresh_token, *, basic=False, client=(CLIENT_ID, CLIENT_SECRET)):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if basic:
        return http.post(server.token_url, data=data, auth=client)
    data.update(client_id=client[0], client_secret=client[1])
    return http.post(server.token_url, data=data)


def introspect(http, server, token, auth=DOVECOT):
    return http.post(server.introspection_url, data={"token": token}, auth=auth)


def login(http, server, **extra) -> dict:
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge, **extra)
    response = exchange(http, server, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()


def login_as(http, server, email, password) -> dict:
    verifier, challenge = pkce_pair()
    response = consent(http, server, auth_params(challenge), email=email, password=password)
    code = query_of(response.headers["Location"])["code"]
    return exchange(http, server, code, verifier).json()


# ----------------------------------------------------------------- authorization code flow


def test_full_code_flow_with_pkce(server, http):
    verifier, challenge = pkce_pair()
    params = auth_params(challenge)
    page = http.get(server.authorization_url, params=params, allow_redirects=False)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert re.search(r'<label for="email">E-mail</label>', html)
    assert re.search(r'<input id="email" name="email"', html)
    assert re.search(r'<label for="password">Password</label>', html)
    assert re.search(r'<input id="password" name="password" type="password"', html)
    assert re.search(r"<button[^>]*>Allow</button>", html)
    assert re.search(r"<button[^>]*>Deny</button>", html)
    assert CLIENT_ID in html
    assert GOOGLE_SCOPE in html

    response = consent(http, server, params)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert redirect_target(location) == REDIRECT_URI
    query = query_of(location)
    assert query["state"] == params["state"]
    assert "error" not in query

    token_response = exchange(http, server, query["code"], verifier)
    assert token_response.status_code == 200, token_response.text
    assert token_response.headers["Content-Type"].startswith("application/json")
    assert token_response.headers["Cache-Control"] == "no-store"
    token = token_response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["scope"] == GOOGLE_SCOPE
    assert token["access_token"] and token["refresh_token"]
    assert token["access_token"] != token["refresh_token"]

    info = introspect(http, server, token["access_token"]).json()
    assert info["active"] is True
    assert info["username"] == USER
    assert info["scope"] == GOOGLE_SCOPE
    assert info["client_id"] == CLIENT_ID
    assert info["token_type"] == "Bearer"
    assert abs(info["exp"] - (time.time() + 3600)) < 10


def test_client_secret_basic_is_accepted_too(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    response = exchange(http, server, code, verifier, basic=True)
    assert response.status_code == 200, response.text
    response = refresh(http, server, response.json()["refresh_token"], basic=True)
    assert response.status_code == 200, response.text


def test_client_registered_for_basic_may_use_post(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(
        http, server, challenge, client_id=OTHER_CLIENT_ID, redirect_uri=OTHER_REDIRECT_URI
    )
    response = exchange(
        http,
        server,
        code,
        verifier,
        client=(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET),
        redirect_uri=OTHER_REDIRECT_URI,
    )
    assert response.status_code == 200, response.text
    assert introspect(http, server, response.json()["access_token"]).json()["client_id"] == (
        OTHER_CLIENT_ID
    )


@pytest.mark.parametrize(
    "scope",
    [GOOGLE_SCOPE, "mail offline_access", "https://outlook.office.com/IMAP.AccessAsUser.All"],
)
def test_any_scope_and_extra_params_are_accepted(server, http, scope):
    token = login(
        http, server, scope=scope, access_type="offline", prompt="consent", login_hint=USER
    )
    assert token["scope"] == scope
    assert introspect(http, server, token["access_token"]).json()["scope"] == scope


def test_login_hint_prefills_email(server, http):
    _, challenge = pkce_pair()
    page = http.get(server.authorization_url, params=auth_params(challenge, login_hint=USER))
    assert f'value="{USER}"' in page.text


def test_code_reuse_is_rejected(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    assert exchange(http, server, code, verifier).status_code == 200
    again = exchange(http, server, code, verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_code_of_another_client_is_rejected(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    response = exchange(http, server, code, verifier, client=(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET))
    assert response.json()["error"] == "invalid_grant"


def test_wrong_verifier_is_rejected(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    wrong, _ = pkce_pair()
    response = exchange(http, server, code, wrong)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # the right verifier still works afterwards: the failed attempt did not use the code
    assert exchange(http, server, code, verifier).status_code == 200


def test_missing_verifier_is_rejected(server, http):
    _, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    response = exchange(http, server, code, None)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_wrong_redirect_uri_at_token_endpoint_is_rejected(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    response = exchange(http, server, code, verifier, redirect_uri="http://127.0.0.1:5000/other")
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "pkce",
    [
        {},  # no challenge at all
        {"code_challenge_method": "S256"},  # method without challenge
        {"code_challenge": "x" * 43},  # no method: means "plain"
        {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
        {"code_challenge": "x" * 43, "code_challenge_method": "S512"},
    ],
    ids=["missing", "method-only", "implicit-plain", "plain", "unknown-method"],
)
def test_authorization_without_s256_challenge_is_rejected(server, http, pkce):
    params = auth_params(None, **pkce)
    response = http.get(server.authorization_url, params=params, allow_redirects=False)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert redirect_target(location) == REDIRECT_URI
    query = query_of(location)
    assert query["error"] == "invalid_request"
    assert query["state"] == params["state"]
    assert "code" not in query
    # submitting the form anyway does not issue a code either
    post = http.post(
        server.authorization_url,
        params=params,
        data={"email": USER, "password": PASSWORD, "action": "allow"},
        allow_redirects=False,
    )
    assert query_of(post.headers["Location"])["error"] == "invalid_request"


def test_wrong_password_rerenders_the_form(server, http):
    verifier, challenge = pkce_pair()
    params = auth_params(challenge)
    response = consent(http, server, params, password="not-the-password")
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "Wrong e-mail or password" in response.text
    assert "<form" in response.text and f'value="{USER}"' in response.text
    response = consent(http, server, params, email="nobody@example.test")
    assert "Wrong e-mail or password" in response.text
    # the right password then works on the same request
    response = consent(http, server, params)
    assert response.status_code == 302
    code = query_of(response.headers["Location"])["code"]
    assert exchange(http, server, code, verifier).status_code == 200


def test_email_is_case_insensitive_and_username_canonical(server, http):
    token = login_as(http, server, USER.upper(), PASSWORD)
    assert introspect(http, server, token["access_token"]).json()["username"] == USER


def test_deny_gives_access_denied(server, http):
    _, challenge = pkce_pair()
    params = auth_params(challenge)
    response = consent(http, server, params, email="", password="", action="deny")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert redirect_target(location) == REDIRECT_URI
    query = query_of(location)
    assert query["error"] == "access_denied"
    assert query["state"] == params["state"]
    assert "code" not in query


@pytest.mark.parametrize(
    "override",
    [{"client_id": "unknown"}, {"redirect_uri": "http://127.0.0.1:9/evil"}],
    ids=["unknown-client", "unregistered-redirect-uri"],
)
def test_bad_client_or_redirect_uri_never_redirects(server, http, override):
    _, challenge = pkce_pair()
    response = http.get(
        server.authorization_url, params=auth_params(challenge, **override), allow_redirects=False
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "Authorization error" in response.text


def test_unsupported_response_type_is_redirected(server, http):
    _, challenge = pkce_pair()
    response = http.get(
        server.authorization_url,
        params=auth_params(challenge, response_type="token"),
        allow_redirects=False,
    )
    assert query_of(response.headers["Location"])["error"] == "unsupported_response_type"


def test_token_endpoint_errors_are_standard_json(server, http):
    bad_secret = http.post(
        server.token_url,
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "redirect_uri": REDIRECT_URI,
            "code_verifier": "v" * 43,
            "client_id": CLIENT_ID,
            "client_secret": "wrong",
        },
    )
    assert bad_secret.status_code in (400, 401)
    assert bad_secret.json()["error"] == "invalid_client"
    unknown_grant = http.post(
        server.token_url, data={"grant_type": "password"}, auth=(CLIENT_ID, CLIENT_SECRET)
    )
    assert unknown_grant.status_code == 400
    assert unknown_grant.json()["error"] == "unsupported_grant_type"
    bad_code = exchange(http, server, "no-such-code", "v" * 43)
    assert bad_code.json()["error"] == "invalid_grant"


# ----------------------------------------------------------------- refresh tokens


def test_refresh_rotation(server, http):
    first = login(http, server)
    response = refresh(http, server, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["expires_in"] == 3600
    assert second["token_type"] == "Bearer"
    assert second["scope"] == GOOGLE_SCOPE
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert introspect(http, server, second["access_token"]).json()["active"] is True

    old = refresh(http, server, first["refresh_token"])
    assert old.status_code == 400
    assert old.json()["error"] == "invalid_grant"
    assert refresh(http, server, second["refresh_token"]).status_code == 200


def test_no_rotation_mode():
    with AuthServer(make_config(rotate_refresh_tokens=False)) as server, requests.Session() as http:
        first = login(http, server)
        assert "refresh_token" in first
        for _ in range(3):
            response = refresh(http, server, first["refresh_token"])
            assert response.status_code == 200, response.text
            body = response.json()
            assert "refresh_token" not in body
            assert body["expires_in"] == 3600
            assert introspect(http, server, body["access_token"]).json()["active"] is True


def test_dead_tokens_are_pruned_without_changing_behaviour(server, http, monkeypatch):
    monkeypatch.setattr(oauth_server, "PRUNE_EVERY", 3)
    first = login(http, server)
    second = refresh(http, server, first["refresh_token"]).json()
    http.post(
        server.revocation_url,
        data={"token": first["access_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    third = refresh(http, server, second["refresh_token"]).json()  # 3rd save: prune
    assert server.state.find_access_token(first["access_token"]) is None
    assert server.state.find_access_token(second["access_token"]) is not None
    assert introspect(http, server, first["access_token"]).json() == {"active": False}
    assert refresh(http, server, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(http, server, third["refresh_token"]).status_code == 200


def test_refresh_tokens_can_be_turned_off():
    with AuthServer(make_config(issue_refresh_tokens=False)) as server, requests.Session() as http:
        token = login(http, server)
        assert "refresh_token" not in token
        response = refresh(http, server, "anything")
        assert response.json()["error"] == "unsupported_grant_type"


def test_refresh_token_of_another_client_is_rejected(server, http):
    token = login(http, server)
    response = refresh(
        http, server, token["refresh_token"], client=(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET)
    )
    assert response.json()["error"] == "invalid_grant"


def test_refresh_with_wider_scope_is_rejected(server, http):
    token = login(http, server)
    response = http.post(
        server.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "scope": GOOGLE_SCOPE + " extra",
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.json()["error"] == "invalid_scope"


def _concurrent_refreshes(server, refresh_token, n=10):
    barrier = threading.Barrier(n)

    def one(_):
        with requests.Session() as session:
            barrier.wait(timeout=10)
            response = refresh(session, server, refresh_token)
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_refreshes_with_rotation_exactly_one_wins(server, http):
    token = login(http, server)
    results = _concurrent_refreshes(server, token["refresh_token"])
    winners = [body for status, body in results if status == 200]
    losers = [body for status, body in results if status != 200]
    assert len(winners) == 1
    assert len(losers) == 9
    assert all(body["error"] == "invalid_grant" for body in losers)
    assert refresh(http, server, winners[0]["refresh_token"]).status_code == 200
    stats = http.get(server.url + "/testing/stats").json()
    assert stats["token_requests"]["refresh_token"] == 11


def test_concurrent_refreshes_without_rotation_all_succeed():
    with AuthServer(make_config(rotate_refresh_tokens=False)) as server, requests.Session() as http:
        token = login(http, server)
        results = _concurrent_refreshes(server, token["refresh_token"])
        assert [status for status, _ in results] == [200] * 10
        assert len({body["access_token"] for _, body in results}) == 10


def test_concurrent_code_exchanges_exactly_one_wins(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    barrier = threading.Barrier(8)

    def one(_):
        with requests.Session() as session:
            barrier.wait(timeout=10)
            return exchange(session, server, code, verifier).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(one, range(8)))
    assert statuses == [200] + [400] * 7


# ----------------------------------------------------------------- introspection and revocation


def test_introspection_inactive_cases(server, http):
    token = login(http, server)
    assert introspect(http, server, "no-such-token").json() == {"active": False}
    # a refresh token is never a valid bearer token for the mail server
    assert introspect(http, server, token["refresh_token"]).json() == {"active": False}
    response = http.post(
        server.introspection_url,
        data={"token": token["access_token"], "token_type_hint": "access_token"},
        auth=DOVECOT,
    )
    assert response.json()["active"] is True


def test_introspection_requires_basic_auth(server, http):
    token = login(http, server)["access_token"]
    for auth in [None, ("dovecot", "wrong"), ("unknown", "x"), (CLIENT_ID, CLIENT_SECRET)]:
        response = introspect(http, server, token, auth=auth)
        assert response.status_code == 401, auth
        assert response.json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    # credentials in the form body are not accepted either
    response = http.post(
        server.introspection_url,
        data={"token": token, "client_id": DOVECOT[0], "client_secret": DOVECOT[1]},
    )
    assert response.status_code == 401


def test_introspection_requires_token_param(server, http):
    response = http.post(server.introspection_url, data={}, auth=DOVECOT)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_access_token_expires():
    with AuthServer(make_config(access_token_lifetime=1)) as server, requests.Session() as http:
        token = login(http, server)
        assert token["expires_in"] == 1
        deadline = time.time() + 5
        while introspect(http, server, token["access_token"]).json()["active"]:
            assert time.time() < deadline, "token never expired"
            time.sleep(0.2)
        assert introspect(http, server, token["access_token"]).json() == {"active": False}
        # the refresh token still works and gives a fresh access token
        fresh = refresh(http, server, token["refresh_token"]).json()
        assert introspect(http, server, fresh["access_token"]).json()["active"] is True


def test_revocation_endpoint(server, http):
    token = login(http, server)
    response = http.post(
        server.revocation_url,
        data={"token": token["access_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 200
    assert introspect(http, server, token["access_token"]).json() == {"active": False}
    # the refresh token survives revoking the access token
    second = refresh(http, server, token["refresh_token"]).json()
    # revoking a refresh token (client_secret_post) kills it and its access token
    response = http.post(
        server.revocation_url,
        data={
            "token": second["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert response.status_code == 200
    assert refresh(http, server, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert introspect(http, server, second["access_token"]).json() == {"active": False}
    # unknown tokens are fine (RFC 7009), bad client credentials are not
    assert (
        http.post(
            server.revocation_url, data={"token": "nope"}, auth=(CLIENT_ID, CLIENT_SECRET)
        ).status_code
        == 200
    )
    assert (
        http.post(
            server.revocation_url, data={"token": "nope"}, auth=(CLIENT_ID, "wrong")
        ).status_code
        == 401
    )


# ----------------------------------------------------------------- test switches


def test_switch_expire(server, http):
    mine = login(http, server)
    other = login_as(http, server, USER2, PASSWORD2)
    response = http.post(server.url + "/testing/expire", json={"username": USER})
    assert response.status_code == 200
    assert response.json()["expired"] == 1
    assert introspect(http, server, mine["access_token"]).json() == {"active": False}
    assert introspect(http, server, other["access_token"]).json()["active"] is True
    # expiry is not revocation: refreshing works and yields an active token
    fresh = refresh(http, server, mine["refresh_token"]).json()
    assert introspect(http, server, fresh["access_token"]).json()["active"] is True


def test_switch_revoke(server, http):
    first = login(http, server)
    second = login(http, server)
    other = login_as(http, server, USER2, PASSWORD2)
    response = http.post(server.url + "/testing/revoke", json={"username": USER})
    assert response.status_code == 200
    for token in (first, second):
        assert introspect(http, server, token["access_token"]).json() == {"active": False}
        response = refresh(http, server, token["refresh_token"])
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
    assert introspect(http, server, other["access_token"]).json()["active"] is True
    assert refresh(http, server, other["refresh_token"]).status_code == 200
    # the user can connect again afterwards
    assert introspect(http, server, login(http, server)["access_token"]).json()["active"]


def test_switch_revoke_also_kills_pending_codes(server, http):
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    http.post(server.url + "/testing/revoke", json={"username": USER})
    assert exchange(http, server, code, verifier).json()["error"] == "invalid_grant"


def test_switch_invalid_client(server, http):
    token = login(http, server)
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    response = http.post(
        server.url + "/testing/invalid-client", json={"client_id": CLIENT_ID, "enabled": True}
    )
    assert response.status_code == 200
    for basic in (False, True):
        response = refresh(http, server, token["refresh_token"], basic=basic)
        assert response.status_code in (400, 401)
        assert response.json()["error"] == "invalid_client"
    assert exchange(http, server, code, verifier).json()["error"] == "invalid_client"
    # other clients are not affected, issued access tokens stay valid
    verifier2, challenge2 = pkce_pair()
    code2 = get_code(
        http, server, challenge2, client_id=OTHER_CLIENT_ID, redirect_uri=OTHER_REDIRECT_URI
    )
    assert (
        exchange(
            http,
            server,
            code2,
            verifier2,
            basic=True,
            client=(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET),
            redirect_uri=OTHER_REDIRECT_URI,
        ).status_code
        == 200
    )
    assert introspect(http, server, token["access_token"]).json()["active"] is True

    http.post(
        server.url + "/testing/invalid-client", json={"client_id": CLIENT_ID, "enabled": False}
    )
    assert refresh(http, server, token["refresh_token"]).status_code == 200
    assert exchange(http, server, code, verifier).status_code == 200


def test_switch_fail_next(server, http):
    token = login(http, server)
    response = http.post(server.url + "/testing/fail-next", json={"status": 503, "count": 2})
    assert response.status_code == 200
    for _ in range(2):
        failed = refresh(http, server, token["refresh_token"])
        assert failed.status_code == 503
        assert failed.json()["error"] == "temporarily_unavailable"
    # the failures did not consume the refresh token
    response = refresh(http, server, token["refresh_token"])
    assert response.status_code == 200

    http.post(server.url + "/testing/fail-next", json={"status": 500, "count": 1})
    verifier, challenge = pkce_pair()
    code = get_code(http, server, challenge)
    failed = exchange(http, server, code, verifier)
    assert failed.status_code == 500
    assert failed.json()["error"] == "server_error"
    assert exchange(http, server, code, verifier).status_code == 200


def test_switch_stats_and_reset(server, http):
    empty = {"token_requests": {"authorization_code": 0, "refresh_token": 0}, "introspections": 0}
    assert http.get(server.url + "/testing/stats").json() == empty
    token = login(http, server)
    refresh(http, server, token["refresh_token"])
    refresh(http, server, token["refresh_token"])  # rejected, still counted
    introspect(http, server, token["access_token"])
    stats = http.get(server.url + "/testing/stats").json()
    assert stats == {
        "token_requests": {"authorization_code": 1, "refresh_token": 2},
        "introspections": 1,
    }
    response = http.post(server.url + "/testing/reset-stats")
    assert response.status_code == 200
    assert http.get(server.url + "/testing/stats").json() == empty


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/testing/expire", {"username": "nobody@example.test"}, 404),
        ("/testing/expire", {}, 400),
        ("/testing/revoke", ["not", "an", "object"], 400),
        ("/testing/invalid-client", {"client_id": "unknown", "enabled": True}, 404),
        ("/testing/invalid-client", {"client_id": CLIENT_ID, "enabled": "yes"}, 400),
        ("/testing/fail-next", {"status": 200, "count": 1}, 400),
        ("/testing/fail-next", {"status": 503, "count": -1}, 400),
    ],
)
def test_switch_input_is_validated(server, http, path, body, status):
    response = http.post(server.url + path, json=body)
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"


def test_switches_can_be_disabled():
    with AuthServer(make_config(testing_switches=False)) as server, requests.Session() as http:
        assert http.get(server.url + "/testing/stats").status_code == 404
        assert http.post(server.url + "/testing/expire", json={"username": USER}).status_code == 404
        assert http.get(server.url + "/healthz").status_code == 200


# ----------------------------------------------------------------- runner, config, CLI


def test_runner_urls_and_metadata(server, http):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    assert server.authorization_url == server.url + "/authorize"
    assert server.token_url == server.url + "/token"
    assert server.introspection_url == server.url + "/introspect"
    port = server.url.rsplit(":", 1)[1]
    assert server.introspection_url_for("dovecot") == (
        f"http://dovecot:dovecot-secret@127.0.0.1:{port}/introspect"
    )
    meta = http.get(server.metadata_url).json()
    assert meta["issuer"] == server.url
    assert meta["authorization_endpoint"] == server.authorization_url
    assert meta["token_endpoint"] == server.token_url
    assert meta["introspection_endpoint"] == server.introspection_url
    assert meta["code_challenge_methods_supported"] == ["S256"]


def test_runner_start_stop():
    server = AuthServer(make_config())
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    url = server.url
    try:
        with requests.Session() as http:
            assert http.get(url + "/healthz").json() == {"status": "ok"}
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError), requests.Session() as http:
        http.get(url + "/healthz", timeout=2)


def test_config_accepts_dict_clients_and_validates():
    spec: Any = {"client_id": "a", "client_secret": "b", "redirect_uris": ["http://127.0.0.1/cb"]}
    config = AuthServerConfig(clients=[spec])
    assert config.clients[0].token_endpoint_auth_method == "client_secret_post"
    assert config.access_token_lifetime == 3600
    assert config.rotate_refresh_tokens and config.issue_refresh_tokens
    assert config.testing_switches
    with pytest.raises(ValueError):
        ClientSpec("a", "b", ["http://127.0.0.1/cb"], "private_key_jwt")
    with pytest.raises(ValueError):
        AuthServerConfig(access_token_lifetime=0)
    with pytest.raises(ValueError):
        AuthServerConfig(
            clients=[ClientSpec("a", "b", ["http://x/cb"]), ClientSpec("a", "c", ["http://x/cb"])]
        )


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return [sys.executable, "-m", "devservers.oauth_server", *args], env


def test_cli_help():
    cmd, env = _cli("--help")
    result = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in (
        "--port",
        "--user",
        "--client",
        "--introspection-client",
        "--access-token-lifetime",
        "--host",
        "--no-rotate-refresh-tokens",
    ):
        assert option in result.stdout


def test_cli_rejects_bad_arguments():
    cmd, env = _cli("--user", "no-password", "--client", "a:b:http://127.0.0.1/cb")
    result = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "EMAIL:PASSWORD" in result.stderr


def test_cli_serves_and_stops_on_sigterm():
    cmd, env = _cli(
        "--port",
        "0",
        "--no-log-requests",
        "--user",
        f"{USER}:{PASSWORD}",
        "--client",
        f"{CLIENT_ID}:{CLIENT_SECRET}:{REDIRECT_URI}",
        "--introspection-client",
        f"{DOVECOT[0]}:{DOVECOT[1]}",
        "--access-token-lifetime",
        "120",
    )
    with subprocess.Popen(
        cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first_line = proc.stdout.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first_line)
            assert match, first_line + proc.stderr.read()
            base = match.group(1)

            class Running:
                url = base
                authorization_url = base + "/authorize"
                token_url = base + "/token"
                introspection_url = base + "/introspect"

            with requests.Session() as http:
                token = login(http, Running)
                assert token["expires_in"] == 120
                assert introspect(http, Running, token["access_token"]).json()["active"]
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0
        assert "stopped" in out
