"""Token endpoint calls through Authlib, with failures classified."""

from __future__ import annotations

from typing import Any

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from .errors import ClientConfigError, ConsentRequired, TemporaryTokenError
from .providers import Provider

# OAuth error codes (RFC 6749 section 5.2) that need the admin, not the user.
_CLIENT_ERRORS = {"invalid_client", "unauthorized_client", "unsupported_grant_type"}


def oauth_session(
    provider: Provider, client_id: str, client_secret: str | None, redirect_uri: str | None = None
) -> OAuth2Session:
    return OAuth2Session(
        client_id=client_id,
        client_secret=client_secret,
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
    )


def call_token_endpoint(provider: Provider, action: str, call: Any) -> dict[str, Any]:
    """Run ``call()`` (a fetch or refresh) and map failures to our error classes.

    ``action`` names the step in messages, e.g. "refreshing the access token".
    """
    try:
        token = call()
    except OAuthError as exc:
        description = f" ({exc.description})" if exc.description else ""
        if exc.error == "invalid_grant":
            raise ConsentRequired(
                f"{provider.label} rejected the stored grant while {action}: "
                f'invalid_grant{description}. Click "Generate new token" to give consent again.'
            ) from None
        if exc.error in _CLIENT_ERRORS:
            raise ClientConfigError(
                f"{provider.label} rejected the app registration while {action}: "
                f"{exc.error}{description}. Check the Client Id and Client Secret "
                "(a client secret may have expired)."
            ) from None
        raise TemporaryTokenError(
            f"{provider.label} responded {exc.error}{description} while {action}; will retry"
        ) from None
    except requests.Timeout:
        raise TemporaryTokenError(
            f"{provider.label} timed out while {action}; will retry"
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise TemporaryTokenError(
            f"{provider.label} responded HTTP {status} while {action}; will retry"
        ) from None
    except (requests.RequestException, ValueError) as exc:
        raise TemporaryTokenError(
            f"Could not reach {provider.label}'s token endpoint while {action}: "
            f"{type(exc).__name__}; will retry"
        ) from None
    if "access_token" not in token:
        raise TemporaryTokenError(
            f"{provider.label}'s token response had no access_token while {action}; will retry"
        )
    return dict(token)
