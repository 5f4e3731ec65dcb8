"""Outgoing e-mail: SMTP sessions, the notification outbox and what it says."""

from .smtp import (
    PermanentSendError,
    SendError,
    SmtpEndpoint,
    TemporarySendError,
    parse_server,
    send_bytes,
)

__all__ = [
    "PermanentSendError",
    "SendError",
    "SmtpEndpoint",
    "TemporarySendError",
    "parse_server",
    "send_bytes",
]
