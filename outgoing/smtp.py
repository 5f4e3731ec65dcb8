"""SMTP with TLS and SASL XOAUTH2 or password, and server answers in plain words.

smtplib does the protocol; Flask-Mail builds the messages. Certificates are
always verified, and a connection type with TLS never falls back to plain
text.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models import ConnectionType

logger = logging.getLogger(__name__)


class SendError(Exception):
    """Sending failed; the message says why in plain words."""

    temporary = False

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporarySendError(SendError):
    """Worth retrying later: a 4xx answer, a timeout, or a daily limit."""

    temporary = True


class PermanentSendError(SendError):
    """Retrying cannot help until someone changes a setting."""


class TokenRejected(PermanentSendError):
    """The server rejected the access token (535 5.7.8 after an XOAUTH2 challenge)."""


@dataclass(frozen=True)
class SmtpEndpoint:
    host: str
    port: int
    connection_type: ConnectionType
    timeout: float = 30.0
    ca_file: Path | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_server(value: str) -> tuple[str, int]:
    """Split "host:port" and check both parts; raise ValueError naming the fix."""
    text = (value or "").strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(
            f"SMTP Server {text!r} has no port; write it as host:port, e.g. smtp.example.com:587"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"SMTP Server port {port_text!r} is not a port number from 1 to 65535")
    if any(ch.isspace() for ch in host) or "/" in host:
        raise ValueError(f"SMTP Server host {host!r} is not a host name")
    return host.strip("[]"), int(port_text)


def _context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _xoauth2(login: str, token: str) -> str:
    return f"user={login}\x01auth=Bearer {token}\x01\x01"


def _text(answer: bytes | str) -> str:
    return answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)


def explain_answer(code: int, answer: str, login: str | None = None) -> SendError:
    """Turn an SMTP error answer into an error whose message says what to do."""
    answer = " ".join(answer.split())
    if "5.7.139" in answer:
        return PermanentSendError(
            f"Microsoft 365 refused SMTP AUTH for {login or 'this mailbox'} ({code} {answer}). "
            "Authenticated SMTP is disabled for the mailbox or the tenant: an Exchange admin "
            "can enable it in the Microsoft 365 admin center (Mail > Manage email apps).",
            code=code,
        )
    if "SendAsDenied" in answer:
        return PermanentSendError(
            f"The account {login or ''} is not allowed to send as the sender address "
            f"({code} {answer}). Make E-mail Address the mailbox that gave consent, or grant "
            "that mailbox Send As permission.",
            code=code,
        )
    if "5.4.5" in answer or "sending limit" in answer.lower():
        return TemporarySendError(
            f"The provider's daily sending limit is reached ({code} {answer}); "
            "the message is retried later.",
            code=code,
        )
    if code == 535:
        return PermanentSendError(
            f"The server rejected the login {login!r} ({code} {answer}); check the login and "
            "password, or generate a new token.",
            code=code,
        )
    if code == 454 or 400 <= code < 500:
        return TemporarySendError(f"The server responded {code} {answer}; will retry.", code=code)
    return PermanentSendError(f"The server rejected the message: {code} {answer}.", code=code)


def _greeting_hint(endpoint: SmtpEndpoint) -> str:
    if endpoint.connection_type != ConnectionType.SSL:
        return "the port may expect implicit TLS: choose Connection Type SSL for a port such as 465"
    return "check the SMTP Server and the firewall"


def _open(endpoint: SmtpEndpoint) -> smtplib.SMTP:
    context = _context(endpoint.ca_file)
    where = str(endpoint)
    try:
        if endpoint.connection_type == ConnectionType.SSL:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                endpoint.host, endpoint.port, timeout=endpoint.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(endpoint.host, endpoint.port, timeout=endpoint.timeout)
        smtp.ehlo()
        if endpoint.connection_type == ConnectionType.TLS:
            if not smtp.has_extn("starttls"):
                smtp.close()
                raise PermanentSendError(
                    f"{where} does not offer STARTTLS, and Connection Type TLS requires it; "
                    "choose SSL for a port such as 465, or check the port"
                )
            smtp.starttls(context=context)
            smtp.ehlo()
        return smtp
    except ssl.SSLCertVerificationError as exc:
        raise PermanentSendError(
            f"The TLS certificate of {where} is not trusted ({exc.verify_message}); check the "
            "SMTP Server name, or install the server's CA certificate"
        ) from None
    except ssl.SSLError as exc:
        raise PermanentSendError(
            f"{where} does not speak implicit TLS ({exc.reason}); choose Connection Type TLS "
            "for a STARTTLS port such as 587"
        ) from None
    except TimeoutError:
        raise TemporarySendError(
            f"No SMTP greeting from {where} within {endpoint.timeout:g} s; "
            f"{_greeting_hint(endpoint)}"
        ) from None
    except socket.gaierror:
        raise PermanentSendError(
            f"SMTP Server host {endpoint.host!r} cannot be resolved; check the name"
        ) from None
    except ConnectionRefusedError:
        raise TemporarySendError(
            f"Nothing accepts connections at {where}; check the SMTP Server and port"
        ) from None
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read timeout during the greeting as a disconnect.
        raise TemporarySendError(
            f"No SMTP greeting from {where} ({exc}); {_greeting_hint(endpoint)}"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise explain_answer(exc.smtp_code, _text(exc.smtp_error)) from None
    except OSError as exc:
        raise TemporarySendError(f"Cannot connect to {where}: {exc.strerror or exc}") from None


def _login(smtp: smtplib.SMTP, login: str, password: str | None, access_token: str | None) -> None:
    try:
        if access_token is not None:
            # smtplib sends the initial response; a 334 challenge (the
            # server's JSON error) gets an empty reply, then the 535.
            smtp.auth(
                "XOAUTH2", lambda challenge=None: "" if challenge else _xoauth2(login, access_token)
            )
        else:
            smtp.login(login, password or "")
    except smtplib.SMTPAuthenticationError as exc:
        answer = _text(exc.smtp_error)
        if access_token is not None and "5.7.139" not in answer:
            raise TokenRejected(
                f"The server rejected the access token for {login!r} ({exc.smtp_code} {answer})",
                code=exc.smtp_code,
            ) from None
        raise explain_answer(exc.smtp_code, answer, login) from None
    except smtplib.SMTPNotSupportedError:
        raise PermanentSendError(
            "The server offers no login on this connection; choose Connection Type SSL or TLS"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise explain_answer(exc.smtp_code, _text(exc.smtp_error), login) from None


def send_bytes(
    endpoint: SmtpEndpoint,
    *,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    login: str | None = None,
    password: str | None = None,
    access_token: str | None = None,
) -> None:
    """Deliver ``message`` through ``endpoint``; raise a SendError on failure."""
    if (password is not None or access_token is not None) and (
        endpoint.connection_type == ConnectionType.NOT_SECURED
    ):
        raise PermanentSendError(
            "Mailroom never sends a password or token without TLS; choose Connection Type SSL "
            "or TLS"
        )
    smtp = _open(endpoint)
    try:
        if login and (password is not None or access_token is not None):
            _login(smtp, login, password, access_token)
        refused = smtp.sendmail(sender, list(recipients), message)
        if refused:
            details = "; ".join(
                f"{rcpt}: {code} {_text(text)}" for rcpt, (code, text) in refused.items()
            )
            logger.warning("the server rejected some recipients: %s", details)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        raise explain_answer(code, _text(text), login) from None
    except smtplib.SMTPSenderRefused as exc:
        raise explain_answer(exc.smtp_code, _text(exc.smtp_error), login) from None
    except smtplib.SMTPDataError as exc:
        raise explain_answer(exc.smtp_code, _text(exc.smtp_error), login) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise TemporarySendError(
            f"{endpoint} closed the connection while sending ({exc})"
        ) from None
    except TimeoutError:
        raise TemporarySendError(f"{endpoint} timed out while sending") from None
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
