"""Mailbox failures with messages that name the setting to fix."""


class MailboxError(Exception):
    """Connecting, logging in or reading failed; the message names the cause."""


class AuthenticationFailed(MailboxError):
    """The server rejected the password or the access token."""


class TemporaryMailboxError(MailboxError):
    """The server or its authentication backend is unavailable for now."""
