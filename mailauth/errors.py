"""Token failures, classified by what a person has to do about them."""


class TokenError(Exception):
    """Base class; the message is safe to show and never contains a secret."""


class ConsentRequired(TokenError):
    """The provider rejected the grant (``invalid_grant``) or there is no token.

    Someone must click "Generate new token" again.
    """


class ClientConfigError(TokenError):
    """The app registration is wrong (``invalid_client``, e.g. an expired secret)."""


class TemporaryTokenError(TokenError):
    """Network error or 5xx from the provider: retry later, consent is still fine."""
