"""Building test e-mails and giving consent at the local OAuth server."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import parse_qs, urlsplit

import requests

from mailauth.consent import finish_consent, start_consent
from models import MailAccount

PDF_BYTES = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
DOCX_BYTES = b"PK\x03\x04" + bytes(range(256)) * 8


def message_with_files(
    subject: str, files: list[tuple[str, bytes, str]], sender: str = "client@example.org"
) -> bytes:
    """Return a multipart message with a text body and ``files`` as attachments."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "intake@example.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2026, 11, 30, 9, 15, tzinfo=UTC))
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content(f"Please translate the attached files.\n\n{subject}\n")
    for name, data, content_type in files:
        maintype, subtype = content_type.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(message)


def message_rfc2231(name_bytes: bytes, data: bytes) -> bytes:
    """A message whose attachment name is RFC 2231 encoded, as Thunderbird sends it."""
    encoded = "".join(f"%{b:02X}" if b > 127 or b in b" %'*;" else chr(b) for b in name_bytes)
    body = base64.encodebytes(data).decode()
    return (
        "From: Jiří Novák <jiri@example.org>\r\n"
        "To: intake@example.com\r\n"
        "Subject: =?UTF-8?Q?P=C5=99eklad_smlouvy?=\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n"
        "Message-ID: <rfc2231-test@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Dobrý den, v příloze.\r\n"
        "--b1\r\n"
        "Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename*=UTF-8''{encoded}\r\n"
        "\r\n"
        f"{body}"
        "--b1--\r\n"
    ).encode()


def message_without_files(subject: str = "Just a question") -> bytes:
    message = EmailMessage()
    message["From"] = "client@example.org"
    message["To"] = "intake@example.com"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content("Could you call me back?\n")
    return bytes(message)


def give_consent(authorization_url: str, email: str, password: str) -> str:
    """Sign in and press Allow on the consent page; return the redirect to Mailroom."""
    with requests.Session() as http:
        page = http.get(authorization_url, allow_redirects=False, timeout=10)
        assert page.status_code == 200, page.text
        match = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert match, page.text
        base = authorization_url.split("/authorize", 1)[0]
        answer = http.post(
            base + match.group(1).replace("&amp;", "&"),
            data={"email": email, "password": password, "action": "allow"},
            allow_redirects=False,
            timeout=10,
        )
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def consent_directly(services, account_id: int, user_id: int, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    """Give consent for ``account_id`` through the real flow, without the web pages."""
    redirect_uri = "http://localhost/home-api/authentication/mail/oauth2/code"
    with services.db.session() as session:
        account = session.get(MailAccount, account_id)
        url = start_consent(
            session,
            account=account,
            provider=services.providers[account.provider],
            box=services.box,
            user_id=user_id,
            session_binding="tests",
            redirect_uri=redirect_uri,
            return_to="/",
            now=datetime.now(UTC),
        )
        session.commit()
    query = {
        k: v[0] for k, v in parse_qs(urlsplit(give_consent(url, email, password)).query).items()
    }
    with services.db.session() as session:
        finish_consent(
            session,
            state=query.get("state"),
            code=query.get("code"),
            error=query.get("error"),
            error_description=None,
            user_id=user_id,
            session_binding="tests",
            providers=services.providers,
            box=services.box,
            redirect_uri=redirect_uri,
            http_timeout=10,
            now=datetime.now(UTC),
        )
