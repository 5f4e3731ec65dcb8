"""OAuth 2.0 for mail accounts: providers, consent, token storage and refresh."""

from .crypto import SecretBox
from .errors import ClientConfigError, ConsentRequired, TemporaryTokenError, TokenError
from .providers import Provider, load_providers

__all__ = [
    "ClientConfigError",
    "ConsentRequired",
    "Provider",
    "SecretBox",
    "TemporaryTokenError",
    "TokenError",
    "load_providers",
]
