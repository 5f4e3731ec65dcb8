"""Local OAuth 2.0 authorization server: the stand-in for Google/Microsoft.

Mailroom's test suite, benchmarks and demo connect mailboxes against this server
instead of a real provider. It is built from Authlib's server parts:

* ``GET/POST /authorize``: authorization code grant with a plain HTML consent page
  (e-mail + password, Allow/Deny). PKCE is mandatory and only ``S256`` is accepted.
* ``POST /token``: ``authorization_code`` (with ``code_verifier``) and ``refresh_token``
  grants; clients authenticate with ``client_secret_post`` or ``client_secret_basic``.
* ``POST /introspect``: RFC 7662, for the resource servers (Dovecot) only, HTTP Basic.
* ``POST /revoke``: RFC 7009.
* ``GET /.well-known/oauth-authorization-server`` (RFC 8414) and ``GET /healthz``.
* ``/testing/...``: switches that make tests reproduce provider-side events
  (expired/revoked tokens, a dead client secret, temporary outages) and count requests.

State lives in memory behind one lock, so the server is safe to run threaded.
It is a development tool: plain HTTP, passwords in the clear, nothing persisted.

Run it with ``python -m devservers.oauth_server --help``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.authenticate_client import ClientAuthentication
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask, jsonify, render_template_string, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = [
    "AUTHORIZATION_CODE_LIFETIME",
    "AuthServer",
    "AuthServerConfig",
    "ClientSpec",
    "create_auth_app",
    "main",
]

#: Seconds an authorization code stays usable (RFC 6749 recommends at most 10 minutes).
AUTHORIZATION_CODE_LIFETIME = 600

TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

#: Dead token records are dropped every this many issued tokens.
PRUNE_EVERY = 1000

#: Key of the server state in ``app.extensions``.
EXTENSION_KEY = "devservers.oauth_server"


# --------------------------------------------------------------------------- config


@dataclass
class ClientSpec:
    """A registered OAuth client (Mailroom).

    ``token_endpoint_auth_method`` is the method the client is registered with; like
    Google and Microsoft, the server accepts both ``client_secret_post`` and
    ``client_secret_basic`` from every client.
    """

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    token_endpoint_auth_method: str = "client_secret_post"

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ValueError("a client needs a client_id and a client_secret")
        if isinstance(self.redirect_uris, str):
            self.redirect_uris = [self.redirect_uris]
        self.redirect_uris = list(self.redirect_uris)
        if not self.redirect_uris:
            raise ValueError(f"client {self.client_id!r} needs at least one redirect URI")
        if self.token_endpoint_auth_method not in TOKEN_ENDPOINT_AUTH_METHODS:
            raise ValueError(
                f"client {self.client_id!r}: token_endpoint_auth_method must be one of "
                f"{', '.join(TOKEN_ENDPOINT_AUTH_METHODS)}"
            )


@dataclass
class AuthServerConfig:
    """What the server knows: users, clients, resource servers and token policy.

    ``clients`` takes :class:`ClientSpec` objects or plain dicts with the same keys.
    """

    #: login e-mail -> password
    users: dict[str, str] = field(default_factory=dict)
    clients: list[ClientSpec] = field(default_factory=list)
    #: resource-server id (e.g. Dovecot) -> secret, for /introspect
    introspection_clients: dict[str, str] = field(default_factory=dict)
    access_token_lifetime: int = 3600
    issue_refresh_tokens: bool = True
    rotate_refresh_tokens: bool = True
    testing_switches: bool = True

    def __post_init__(self) -> None:
        self.clients = [c if isinstance(c, ClientSpec) else ClientSpec(**c) for c in self.clients]
        ids = [c.client_id for c in self.clients]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate client ids: {', '.join(duplicates)}")
        lowered = [u.casefold() for u in self.users]
        if len(set(lowered)) != len(lowered):
            raise ValueError("user e-mails must be unique (compared case-insensitively)")
        if int(self.access_token_lifetime) < 1:
            raise ValueError("access_token_lifetime must be at least 1 second")
        self.access_token_lifetime = int(self.access_token_lifetime)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class User:
    email: str

    def get_user_id(self) -> str:
        return self.email


class Client(ClientMixin):
    """An OAuth client as Authlib's grants see it."""

    def __init__(self, spec: ClientSpec, state: ServerState):
        self.spec = spec
        self.client_id = spec.client_id
        self._state = state

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.spec.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        # Any scope string is accepted and granted as requested.
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.spec.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if self._state.client_disabled(self.client_id):
            return False  # /testing/invalid-client: the secret "expired"
        return secrets.compare_digest(self.spec.client_secret.encode(), str(client_secret).encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # Confidential clients only; both secret methods everywhere.
        return method in TOKEN_ENDPOINT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "refresh_token":
            return self._state.config.issue_refresh_tokens
        return grant_type == "authorization_code"


class ResourceServer(ClientMixin):
    """A resource server (Dovecot) allowed to call /introspect with HTTP Basic."""

    def __init__(self, client_id: str, client_secret: str):
        self.client_id = client_id
        self._secret = client_secret

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self._secret.encode(), str(client_secret).encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" and endpoint == IntrospectionEndpoint.ENDPOINT_NAME


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str | None  # as sent in the authorization request (None if omitted)
    scope: str
    user_email: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used: bool = False

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token(TokenMixin):
    """One token response: an access token and, maybe, a refresh token."""

    access_token: str
    refresh_token: str | None
    client_id: str
    user_email: str
    scope: str
    token_type: str
    issued_at: int
    expires_in: int
    access_expires_at: float
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    # is_expired/is_revoked describe the access token: that is what /introspect reports.
    def is_expired(self) -> bool:
        return time.time() >= self.access_expires_at

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> User:
        return User(self.user_email)


# --------------------------------------------------------------------------- state


class ServerState:
    """All mutable state of one server, guarded by one re-entrant lock."""

    def __init__(self, config: AuthServerConfig):
        self.config = config
        self.lock = threading.RLock()
        self._users = {email.casefold(): (email, pw) for email, pw in config.users.items()}
        self._clients = {spec.client_id: Client(spec, self) for spec in config.clients}
        self._resource_servers = {
            cid: ResourceServer(cid, secret) for cid, secret in config.introspection_clients.items()
        }
        self._codes: dict[str, AuthorizationCode] = {}
        self._by_access: dict[str, Token] = {}
        self._by_refresh: dict[str, Token] = {}
        self._disabled_clients: set[str] = set()
        self._fail_next: tuple[int, int, str] | None = None  # (status, remaining, error)
        self._token_requests: Counter[str] = Counter()
        self._introspections = 0
        self._saves = 0

    # users and clients
    def canonical_user(self, email: str) -> str | None:
        found = self._users.get(str(email).strip().casefold())
        return found[0] if found else None

    def check_user_password(self, email: str, password: str) -> User | None:
        found = self._users.get(str(email).strip().casefold())
        if found and secrets.compare_digest(found[1].encode(), str(password).encode()):
            return User(found[0])
        return None

    def get_user(self, email: str) -> User | None:
        canonical = self.canonical_user(email)
        return User(canonical) if canonical else None

    def query_client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def query_resource_server(self, client_id: str) -> ResourceServer | None:
        return self._resource_servers.get(client_id)

    def client_disabled(self, client_id: str) -> bool:
        with self.lock:
            return client_id in self._disabled_clients

    def set_client_disabled(self, client_id: str, disabled: bool) -> None:
        with self.lock:
            if disabled:
                self._disabled_clients.add(client_id)
            else:
                self._disabled_clients.discard(client_id)

    # authorization codes
    def save_code(self, code: AuthorizationCode) -> None:
        with self.lock:
            now = time.time()
            for stale in [c for c, v in self._codes.items() if v.used or v.expires_at <= now]:
                del self._codes[stale]
            self._codes[code.code] = code

    def find_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        with self.lock:
            found = self._codes.get(code)
            if (
                found is None
                or found.used
                or found.client_id != client_id
                or found.expires_at <= time.time()
            ):
                return None
            return found

    def claim_code(self, code: AuthorizationCode) -> bool:
        """Mark a code used; False if another request got there first."""
        with self.lock:
            if code.used or self._codes.get(code.code) is not code:
                return False
            code.used = True
            del self._codes[code.code]
            return True

    # tokens
    def save_token(self, token: dict[str, Any], client_id: str, user_email: str) -> Token:
        now = int(time.time())
        expires_in = int(token.get("expires_in") or self.config.access_token_lifetime)
        record = Token(
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            client_id=client_id,
            user_email=user_email,
            scope=token.get("scope", ""),
            token_type=token.get("token_type", "Bearer"),
            issued_at=now,
            expires_in=expires_in,
            access_expires_at=now + expires_in,
        )
        with self.lock:
            self._by_access[record.access_token] = record
            if record.refresh_token:
                self._by_refresh[record.refresh_token] = record
            self._saves += 1
            if self._saves % PRUNE_EVERY == 0:
                self._prune()
        return record

    def _prune(self) -> None:
        """Forget tokens that are dead on both sides; unknown tokens behave the same
        (introspection inactive, refresh invalid_grant), so benchmarks stay bounded."""
        now = time.time()
        for record in list(self._by_access.values()):
            access_dead = record.access_revoked or record.access_expires_at <= now
            refresh_dead = record.refresh_token is None or record.refresh_revoked
            if access_dead and refresh_dead:
                del self._by_access[record.access_token]
                if record.refresh_token:
                    self._by_refresh.pop(record.refresh_token, None)

    def find_access_token(self, access_token: str) -> Token | None:
        """The record of an access token, also when expired or revoked."""
        with self.lock:
            return self._by_access.get(access_token)

    def find_refresh_token(self, refresh_token: str, *, usable_only: bool = True) -> Token | None:
        with self.lock:
            found = self._by_refresh.get(refresh_token)
            if found is not None and usable_only and found.refresh_revoked:
                return None
            return found

    def revoke_refresh_token(self, record: Token) -> None:
        with self.lock:
            record.refresh_revoked = True

    def revoke_token_string(self, record: Token, token_string: str) -> None:
        """RFC 7009: revoking a refresh token also revokes its access token."""
        with self.lock:
            if token_string == record.refresh_token:
                record.refresh_revoked = True
            record.access_revoked = True

    def expire_user(self, email: str) -> int:
        """Expire all access tokens of a user now; the count of tokens touched."""
        count = 0
        with self.lock:
            now = time.time()
            for record in self._by_access.values():
                if record.user_email == email and record.access_expires_at > now:
                    record.access_expires_at = now - 1
                    count += 1
        return count

    def revoke_user(self, email: str) -> int:
        """Revoke all access and refresh tokens of a user; the count of token responses."""
        count = 0
        with self.lock:
            for record in self._by_access.values():
                if record.user_email == email and not (
                    record.access_revoked and (record.refresh_revoked or not record.refresh_token)
                ):
                    record.access_revoked = True
                    record.refresh_revoked = True
                    count += 1
            for code in self._codes.values():
                if code.user_email == email:
                    code.used = True
        return count

    # test switches and statistics
    def set_fail_next(self, status: int, count: int, error: str) -> None:
        with self.lock:
            self._fail_next = (status, count, error) if count > 0 else None

    def take_failure(self) -> tuple[int, str] | None:
        with self.lock:
            if self._fail_next is None:
                return None
            status, remaining, error = self._fail_next
            self._fail_next = (status, remaining - 1, error) if remaining > 1 else None
            return status, error

    def count_token_request(self, grant_type: str) -> None:
        with self.lock:
            self._token_requests[grant_type] += 1

    def count_introspection(self) -> None:
        with self.lock:
            self._introspections += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            token_requests = {"authorization_code": 0, "refresh_token": 0}
            token_requests.update(self._token_requests)
            return {"token_requests": token_requests, "introspections": self._introspections}

    def reset_stats(self) -> None:
        with self.lock:
            self._token_requests.clear()
            self._introspections = 0


# --------------------------------------------------------------------------- Authlib parts


def _state(grant_or_endpoint: Any) -> ServerState:
    return grant_or_endpoint.server.devstate


class S256CodeChallenge(CodeChallenge):
    """PKCE that is mandatory for every client and accepts only ``S256``.

    Authlib's ``CodeChallenge(required=True)`` insists on a verifier only for public
    clients and lets a request without a challenge pass; Mailroom is a confidential
    client and the providers it talks to require PKCE, so this server does too.
    Errors are the standard ``invalid_request``, redirected to the client.
    """

    DEFAULT_CODE_CHALLENGE_METHOD = "plain"  # what RFC 7636 says a missing method means
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        method = data.get("code_challenge_method") or self.DEFAULT_CODE_CHALLENGE_METHOD
        if method not in self.SUPPORTED_CODE_CHALLENGE_METHOD:
            raise InvalidRequestError(
                f"Transform algorithm not supported: code_challenge_method={method}, use S256"
            )
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant, result):
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_ENDPOINT_AUTH_METHODS)

    def save_authorization_code(self, code, request):
        data = request.payload.data
        _state(self).save_code(
            AuthorizationCode(
                code=code,
                client_id=request.client.get_client_id(),
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope or "",
                user_email=request.user.email,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                expires_at=time.time() + AUTHORIZATION_CODE_LIFETIME,
            )
        )

    def query_authorization_code(self, code, client):
        return _state(self).find_code(code, client.get_client_id())

    def delete_authorization_code(self, authorization_code):
        pass  # already removed by claim_code

    def authenticate_user(self, authorization_code):
        return _state(self).get_user(authorization_code.user_email)

    def create_token_response(self):
        # Claim the code before issuing tokens, so that of two concurrent exchanges
        # of the same code exactly one wins.
        if not _state(self).claim_code(self.request.authorization_code):
            raise InvalidGrantError("Invalid 'code' in request.")
        return super().create_token_response()


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(TOKEN_ENDPOINT_AUTH_METHODS)

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:  # type: ignore[override]  # noqa: N802
        return _state(self).config.rotate_refresh_tokens

    def authenticate_refresh_token(self, refresh_token):
        return _state(self).find_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token):
        return _state(self).get_user(refresh_token.user_email)

    def revoke_old_credential(self, refresh_token):
        if _state(self).config.rotate_refresh_tokens:
            _state(self).revoke_refresh_token(refresh_token)

    def create_token_response(self):
        # Check-and-rotate under the lock: of concurrent refreshes with one refresh
        # token exactly one gets new tokens when rotating.
        state = _state(self)
        with state.lock:
            if self.request.refresh_token.refresh_revoked:
                raise InvalidGrantError()
            return super().create_token_response()


class DovecotIntrospectionEndpoint(IntrospectionEndpoint):
    """RFC 7662 for the configured resource servers, HTTP Basic only.

    Only access tokens are introspected: a refresh token presented to the mail
    server as a bearer token is reported inactive, as a real provider would.
    """

    CLIENT_AUTH_METHODS = ["client_secret_basic"]

    def authenticate_endpoint_client(self, request):
        state = self.server.devstate
        client = ClientAuthentication(state.query_resource_server)(
            request, self.CLIENT_AUTH_METHODS, self.ENDPOINT_NAME
        )
        request.client = client
        return client

    def query_token(self, token_string, token_type_hint):
        return self.server.devstate.find_access_token(token_string)

    def check_permission(self, token, client, request):
        return True  # resource servers may introspect every token

    def introspect_token(self, token):
        return {
            "active": True,
            "username": token.user_email,
            "sub": token.user_email,
            "scope": token.scope,
            "client_id": token.client_id,
            "token_type": token.token_type,
            "exp": int(token.access_expires_at),
            "iat": token.issued_at,
        }


class ClientRevocationEndpoint(RevocationEndpoint):
    """RFC 7009 for the OAuth clients (their own tokens only)."""

    CLIENT_AUTH_METHODS = list(TOKEN_ENDPOINT_AUTH_METHODS)

    def query_token(self, token_string, token_type_hint):
        state = self.server.devstate
        lookups = [
            lambda: state.find_access_token(token_string),
            lambda: state.find_refresh_token(token_string, usable_only=False),
        ]
        if token_type_hint == "refresh_token":
            lookups.reverse()
        for lookup in lookups:
            found = lookup()
            if found is not None:
                return found
        return None

    def revoke_token(self, token, request):
        self.server.devstate.revoke_token_string(token, request.form["token"])


class DevAuthorizationServer(AuthorizationServer):
    def __init__(self, app: Flask, state: ServerState):
        self.devstate = state
        super().__init__(app, query_client=state.query_client, save_token=self._save_token)
        config = state.config

        def access_token(**_: Any) -> str:
            return secrets.token_urlsafe(32)

        def refresh_token(**_: Any) -> str:
            return secrets.token_urlsafe(48)

        def expires_in(client: Any, grant_type: str) -> int:
            return config.access_token_lifetime

        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token,
                refresh_token if config.issue_refresh_tokens else None,
                expires_in,
            ),
        )
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        if config.issue_refresh_tokens:
            self.register_grant(RefreshTokenGrant)
        self.register_endpoint(DovecotIntrospectionEndpoint)
        self.register_endpoint(ClientRevocationEndpoint)

    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        self.devstate.save_token(token, request.client.get_client_id(), request.user.email)


# --------------------------------------------------------------------------- Flask app

_CONSENT_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - local OAuth server</title></head>
<body>
<h1>Sign in</h1>
<p>The application <strong id="client-id">{{ client_id }}</strong> asks for access to your
mailbox.</p>
<p>Requested scopes:</p>
<ul id="scopes">
{% for scope in scopes %}  <li><code>{{ scope }}</code></li>
{% else %}  <li>(none)</li>
{% endfor %}</ul>
{% if error %}<p id="error" role="alert" style="color: #b00020">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
  <p><label for="email">E-mail</label>
     <input id="email" name="email" type="email" autocomplete="username"
            value="{{ email }}" required></p>
  <p><label for="password">Password</label>
     <input id="password" name="password" type="password"
            autocomplete="current-password" required></p>
  <p><button type="submit" name="action" value="allow">Allow</button>
     <button type="submit" name="action" value="deny" formnovalidate>Deny</button></p>
</form>
</body>
</html>
"""

_ERROR_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Authorization error - local OAuth server</title></head>
<body>
<h1>Authorization error</h1>
<p id="error" role="alert"><code>{{ error }}</code>
{%- if description %}: {{ description }}{% endif %}</p>
</body>
</html>
"""


def _json_body() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def _bad_request(message: str, status: int = 400):
    return jsonify(error="invalid_request", error_description=message), status


def create_auth_app(config: AuthServerConfig) -> Flask:
    """Build the Flask app of the authorization server for ``config``."""
    app = Flask(__name__)
    state = ServerState(config)
    server = DevAuthorizationServer(app, state)
    app.extensions[EXTENSION_KEY] = state

    def consent_page(grant, *, error: str | None = None, email: str = "", status: int = 200):
        html = render_template_string(
            _CONSENT_PAGE,
            client_id=grant.request.client.get_client_id(),
            scopes=scope_to_list(grant.request.scope) or [],
            action=request.full_path,
            error=error,
            email=email,
        )
        return html, status, {"Cache-Control": "no-store"}

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            if error.redirect_uri:  # client and redirect URI are known: tell the client
                return server.handle_error_response(None, error)
            html = render_template_string(
                _ERROR_PAGE, error=error.error, description=error.get_error_description()
            )
            return html, error.status_code or 400
        if request.method == "GET":
            return consent_page(grant, email=request.args.get("login_hint", ""))
        action = request.form.get("action")
        if action == "deny":
            return server.create_authorization_response(grant.request, None, grant)
        email = request.form.get("email", "")
        if action != "allow":
            return consent_page(grant, error="Choose Allow or Deny.", email=email, status=400)
        user = state.check_user_password(email, request.form.get("password", ""))
        if user is None:
            return consent_page(grant, error="Wrong e-mail or password.", email=email)
        return server.create_authorization_response(grant.request, user, grant)

    @app.post("/token")
    def issue_token():
        state.count_token_request(request.form.get("grant_type") or "(missing)")
        failure = state.take_failure()
        if failure is not None:
            status, error = failure
            body = {"error": error, "error_description": "Simulated failure (testing switch)"}
            return jsonify(body), status, {"Cache-Control": "no-store", "Pragma": "no-cache"}
        return server.create_token_response()

    @app.post("/introspect")
    def introspect():
        state.count_introspection()
        return server.create_endpoint_response(DovecotIntrospectionEndpoint.ENDPOINT_NAME)

    @app.post("/revoke")
    def revoke():
        return server.create_endpoint_response(ClientRevocationEndpoint.ENDPOINT_NAME)

    @app.get("/.well-known/oauth-authorization-server")
    def metadata():
        base = request.host_url.rstrip("/")
        return jsonify(
            issuer=base,
            authorization_endpoint=f"{base}/authorize",
            token_endpoint=f"{base}/token",
            introspection_endpoint=f"{base}/introspect",
            revocation_endpoint=f"{base}/revoke",
            response_types_supported=["code"],
            grant_types_supported=["authorization_code"]
            + (["refresh_token"] if config.issue_refresh_tokens else []),
            code_challenge_methods_supported=["S256"],
            token_endpoint_auth_methods_supported=list(TOKEN_ENDPOINT_AUTH_METHODS),
            revocation_endpoint_auth_methods_supported=list(TOKEN_ENDPOINT_AUTH_METHODS),
            introspection_endpoint_auth_methods_supported=["client_secret_basic"],
        )

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    if config.testing_switches:
        _add_testing_switches(app, state)
    return app


def _add_testing_switches(app: Flask, state: ServerState) -> None:
    def user_from_body():
        body = _json_body()
        if body is None or not isinstance(body.get("username"), str):
            return None, _bad_request('JSON body {"username": ...} expected')
        canonical = state.canonical_user(body["username"])
        if canonical is None:
            return None, _bad_request(f"unknown user {body['username']!r}", 404)
        return canonical, None

    @app.post("/testing/expire")
    def testing_expire():
        user, problem = user_from_body()
        if problem:
            return problem
        return jsonify(username=user, expired=state.expire_user(user))

    @app.post("/testing/revoke")
    def testing_revoke():
        user, problem = user_from_body()
        if problem:
            return problem
        return jsonify(username=user, revoked=state.revoke_user(user))

    @app.post("/testing/invalid-client")
    def testing_invalid_client():
        body = _json_body()
        if body is None or not isinstance(body.get("client_id"), str):
            return _bad_request('JSON body {"client_id": ..., "enabled": true|false} expected')
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            return _bad_request("'enabled' must be true or false")
        if state.query_client(body["client_id"]) is None:
            return _bad_request(f"unknown client {body['client_id']!r}", 404)
        state.set_client_disabled(body["client_id"], enabled)
        return jsonify(client_id=body["client_id"], enabled=enabled)

    @app.post("/testing/fail-next")
    def testing_fail_next():
        body = _json_body()
        if body is None:
            return _bad_request('JSON body {"status": 503, "count": N} expected')
        status, count = body.get("status", 503), body.get("count", 1)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            return _bad_request("'status' must be an HTTP error status (400-599)")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return _bad_request("'count' must be an integer >= 0")
        default_error = "temporarily_unavailable" if status == 503 else "server_error"
        error = body.get("error", default_error)
        if not isinstance(error, str) or not error:
            return _bad_request("'error' must be a non-empty string")
        state.set_fail_next(status, count, error)
        return jsonify(status=status, count=count, error=error)

    @app.get("/testing/stats")
    def testing_stats():
        return jsonify(state.stats())

    @app.post("/testing/reset-stats")
    def testing_reset_stats():
        state.reset_stats()
        return jsonify(state.stats())


# --------------------------------------------------------------------------- runner


class _QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class AuthServer:
    """Runs the authorization server on a werkzeug thread in this process.

    ``port=0`` picks a free port; ``url`` is known once started. Use as a context
    manager or call ``start()``/``stop()``. Request logging is off unless
    ``log_requests=True``.
    """

    def __init__(
        self,
        config: AuthServerConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_requests: bool = False,
    ):
        self.config = config
        self.host = host
        self.port = port
        self.app = create_auth_app(config)
        self._log_requests = log_requests
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> ServerState:
        return self.app.extensions[EXTENSION_KEY]

    def start(self) -> AuthServer:
        if self._server is not None:
            return self
        handler = WSGIRequestHandler if self._log_requests else _QuietRequestHandler
        try:
            server = make_server(
                self.host, self.port, self.app, threaded=True, request_handler=handler
            )
        except SystemExit as exc:  # werkzeug exits on bind errors; a library must not
            raise OSError(f"cannot listen on {self.host}:{self.port}") from exc
        self._server = server
        self.port = server.port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits for one poll at most
            name=f"oauth-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None and not self.port:
            raise RuntimeError("the server is not started; its port is not known yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def authorization_url(self) -> str:
        return f"{self.url}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def introspection_url_for(self, client_id: str) -> str:
        """The introspection URL with a resource server's credentials in it, the form
        Dovecot's ``introspection_url`` takes: ``http://ID:SECRET@HOST:PORT/introspect``."""
        secret = self.config.introspection_clients[client_id]
        userinfo = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
        return self.introspection_url.replace("://", f"://{userinfo}@", 1)

    @property
    def revocation_url(self) -> str:
        return f"{self.url}/revoke"

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/oauth-authorization-server"


# --------------------------------------------------------------------------- CLI


def _parse_user(value: str) -> tuple[str, str]:
    email, sep, password = value.partition(":")
    if not sep or not email or not password:
        raise argparse.ArgumentTypeError("expected EMAIL:PASSWORD")
    return email, password


def _parse_client(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError("expected CLIENT_ID:SECRET:REDIRECT_URI")
    return parts[0], parts[1], parts[2]


def _parse_pair(value: str) -> tuple[str, str]:
    name, sep, secret = value.partition(":")
    if not sep or not name or not secret:
        raise argparse.ArgumentTypeError("expected ID:SECRET")
    return name, secret


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devservers.oauth_server",
        description=(
            "Local OAuth 2.0 authorization server standing in for Google/Microsoft in "
            "Mailroom's tests, benchmarks and demo: authorization code + PKCE (S256), "
            "refresh tokens, RFC 7662 introspection for Dovecot, RFC 7009 revocation."
        ),
        epilog=(
            "example: python -m devservers.oauth_server --port 8710 "
            "--user demo@example.test:demo-password "
            "--client "
            "mailroom:SECRET:http://127.0.0.1:5000/home-api/authentication/mail/oauth2/code "
            "--introspection-client dovecot:SECRET"
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8710,
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--user",
        dest="users",
        action="append",
        default=[],
        type=_parse_user,
        metavar="EMAIL:PASSWORD",
        help="a user who can sign in (repeatable)",
    )
    parser.add_argument(
        "--client",
        dest="clients",
        action="append",
        default=[],
        type=_parse_client,
        metavar="CLIENT_ID:SECRET:REDIRECT_URI",
        help="an OAuth client (repeatable; repeat with the same id and secret to add "
        "redirect URIs). Accepts client_secret_post and client_secret_basic.",
    )
    parser.add_argument(
        "--introspection-client",
        dest="introspection_clients",
        action="append",
        default=[],
        type=_parse_pair,
        metavar="ID:SECRET",
        help="a resource server (e.g. Dovecot) allowed to call /introspect with "
        "HTTP Basic (repeatable)",
    )
    parser.add_argument(
        "--access-token-lifetime",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="access token lifetime in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--refresh-tokens",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="issue refresh tokens (default: yes)",
    )
    parser.add_argument(
        "--rotate-refresh-tokens",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rotate refresh tokens on use; without rotation the refresh "
        "response has no refresh_token (default: yes)",
    )
    parser.add_argument(
        "--testing-switches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enable the /testing/... endpoints (default: yes)",
    )
    parser.add_argument(
        "--log-requests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log each HTTP request to stderr (default: yes)",
    )
    return parser


def _config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    if not args.users:
        parser.error("at least one --user EMAIL:PASSWORD is required")
    if not args.clients:
        parser.error("at least one --client CLIENT_ID:SECRET:REDIRECT_URI is required")
    clients: dict[str, ClientSpec] = {}
    for client_id, secret, redirect_uri in args.clients:
        spec = clients.get(client_id)
        if spec is None:
            clients[client_id] = ClientSpec(client_id, secret, [redirect_uri])
        elif spec.client_secret != secret:
            parser.error(f"--client {client_id}: given twice with different secrets")
        elif redirect_uri not in spec.redirect_uris:
            spec.redirect_uris.append(redirect_uri)
    try:
        return AuthServerConfig(
            users=dict(args.users),
            clients=list(clients.values()),
            introspection_clients=dict(args.introspection_clients),
            access_token_lifetime=args.access_token_lifetime,
            issue_refresh_tokens=args.refresh_tokens,
            rotate_refresh_tokens=args.rotate_refresh_tokens,
            testing_switches=args.testing_switches,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    config = _config_from_args(parser, args)
    if not _is_loopback(args.host):
        # Authlib refuses plain http except on loopback addresses.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
        print(
            f"warning: listening on {args.host}, not on loopback: plain HTTP, development use only",
            file=sys.stderr,
            flush=True,
        )

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = AuthServer(config, host=args.host, port=args.port, log_requests=args.log_requests)
    try:
        server.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines = [
        f"OAuth server listening on {server.url}",
        f"  authorization endpoint: {server.authorization_url}",
        f"  token endpoint:         {server.token_url}",
        f"  introspection endpoint: {server.introspection_url}",
        f"  revocation endpoint:    {server.revocation_url}",
        f"  metadata:               {server.metadata_url}",
        "  testing switches:       "
        + (f"{server.url}/testing/..." if config.testing_switches else "disabled"),
        f"  access token lifetime:  {config.access_token_lifetime} s; refresh tokens: "
        + (
            ("rotating" if config.rotate_refresh_tokens else "not rotating")
            if config.issue_refresh_tokens
            else "not issued"
        ),
        f"  users:   {', '.join(config.users)}",
        f"  clients: {', '.join(c.client_id for c in config.clients)}",
        f"  introspection clients: {', '.join(config.introspection_clients) or '(none)'}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("OAuth server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
