"""IMAP sessions for connectors: connect, authenticate, fetch in batches, delete."""

from .errors import AuthenticationFailed, MailboxError, TemporaryMailboxError
from .session import CopiedUids, FetchedMessage, ImapSettings, MailboxSession, open_mailbox

__all__ = [
    "AuthenticationFailed",
    "CopiedUids",
    "FetchedMessage",
    "ImapSettings",
    "MailboxError",
    "MailboxSession",
    "TemporaryMailboxError",
    "open_mailbox",
]
