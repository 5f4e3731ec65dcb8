"""OAuth 2.0 providers as configuration.

Google and Microsoft are defaults; ``OAUTH_PROVIDERS`` (a JSON object) can
override any field of them or add providers such as a company's own server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_PROVIDERS: dict[str, dict[str, Any]] = {
    "google": {
        "label": "Google",
        "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "scopes": ["https://mail.google.com/"],
        # Without offline access and forced consent Google returns no refresh
        # token on the second consent for the same client.
        "authorization_params": {"access_type": "offline", "prompt": "consent"},
        "imap_host": "imap.gmail.com",
        "smtp_host": "smtp.gmail.com",
    },
    "microsoft": {
        "label": "Microsoft 365",
        "authorization_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "scopes": [
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
        ],
        "authorization_params": {},
        "imap_host": "outlook.office365.com",
        "smtp_host": "smtp.office365.com",
    },
}


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    authorization_url: str
    token_url: str
    scopes: tuple[str, ...]
    authorization_params: dict[str, str] = field(default_factory=dict)
    imap_host: str | None = None
    smtp_host: str | None = None


def load_providers(overrides: dict[str, dict[str, Any]]) -> dict[str, Provider]:
    """Merge ``overrides`` over the defaults and validate every provider."""
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in DEFAULT_PROVIDERS.items()}
    for key, values in overrides.items():
        if not isinstance(values, dict):
            raise ValueError(f"OAUTH_PROVIDERS[{key!r}] must be an object of provider fields")
        merged.setdefault(key, {}).update(values)

    known = {f.name for f in fields(Provider)} - {"key"}
    providers = {}
    for key, values in merged.items():
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"OAUTH_PROVIDERS[{key!r}] has unknown fields {sorted(unknown)}; "
                f"allowed: {sorted(known)}"
            )
        missing = [
            name for name in ("authorization_url", "token_url", "scopes") if not values.get(name)
        ]
        if missing:
            raise ValueError(f"OAUTH_PROVIDERS[{key!r}] is missing {', '.join(missing)}")
        providers[key] = Provider(
            key=key,
            label=str(values.get("label") or key),
            authorization_url=values["authorization_url"],
            token_url=values["token_url"],
            scopes=tuple(values["scopes"]),
            authorization_params=dict(values.get("authorization_params") or {}),
            imap_host=values.get("imap_host"),
            smtp_host=values.get("smtp_host"),
        )
    return providers
