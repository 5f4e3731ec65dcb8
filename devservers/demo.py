"""A demo anyone can run: Mailroom with a local mailbox and OAuth 2.0 server.

``make demo`` starts the local authorization server, a Dovecot holding a
demo mailbox with a few e-mails from clients, an SMTP sink that prints the
notifications Mailroom sends, and Mailroom itself (web, workers, beat) on a
separate demo database. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_MAILBOX = "intake@northwind.example.com"
DEMO_MAILBOX_PASSWORD = "demo-consent"
DEMO_ADMIN_PASSWORD = "mailroom-demo"
CLIENT_ID = "mailroom-demo"
CLIENT_SECRET = "mailroom-demo-secret"


def demo_messages() -> list[bytes]:
    """Return realistic client e-mails: attachments, a non-ASCII name, and one without files."""

    def message(sender: str, subject: str, text: str, files: list[tuple[str, bytes, str]]) -> bytes:
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = DEMO_MAILBOX
        mail["Subject"] = subject
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain="northwind.example.com")
        mail.set_content(text)
        for name, data, content_type in files:
            maintype, subtype = content_type.split("/", 1)
            mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return bytes(mail)

    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return [
        message(
            "Greta Vogel <greta.vogel@northwind.example.com>",
            "Patient leaflet for DE and CS",
            "Hello,\n\nplease translate the attached leaflet and label text.\n\nGreta\n",
            [
                ("Patient leaflet v3.docx", b"PK\x03\x04 demo leaflet " * 200, docx),
                (
                    "Label text.txt",
                    "Store below 25 °C.\nKeep out of reach of children.\n".encode(),
                    "text/plain",
                ),
            ],
        ),  # fmt: skip
        message(
            "Greta Vogel <greta.vogel@northwind.example.com>",
            "Smlouva o dílo – překlad",
            "Dobrý den,\n\nv příloze posílám smlouvu.\n",
            [
                (
                    "Smlouva o dílo č. 42.pdf",
                    b"%PDF-1.4\n% demo contract\n%%EOF\n",
                    "application/pdf",
                )
            ],
        ),
        message(
            "Daniel Okafor <d.okafor@contoso-legal.example.com>",
            "Question about our last invoice",
            "Could you call me back? No files this time.\n",
            [],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run Mailroom with a demo mailbox and a local OAuth 2.0 server on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=5000, help="Mailroom's web port (default 5000)")
    parser.add_argument(
        "--auth-port", type=int, default=8710, help="the OAuth server's port (default 8710)"
    )
    parser.add_argument(
        "--reset", action="store_true", help="delete the demo database, files and mailbox first"
    )
    args = parser.parse_args(argv)

    os.chdir(BASE_DIR)
    sys.path.insert(0, str(BASE_DIR))
    import launcher

    launcher.write_env(launcher.ENV_FILE)
    demo_dir = BASE_DIR / "instance" / "demo"
    if args.reset and demo_dir.exists():
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True, exist_ok=True)

    from .dovecot import Dovecot, find_dovecot
    from .mail_sink import PrintingSink
    from .oauth_server import AuthServer, AuthServerConfig, ClientSpec

    if find_dovecot() is None:
        sys.exit("Dovecot is not installed; run ./scripts/install-system-packages.sh first")

    web = f"http://127.0.0.1:{args.port}"
    auth = AuthServer(
        AuthServerConfig(
            users={DEMO_MAILBOX: DEMO_MAILBOX_PASSWORD},
            clients=[
                ClientSpec(
                    client_id=CLIENT_ID,
                    client_secret=CLIENT_SECRET,
                    redirect_uris=[f"{web}/home-api/authentication/mail/oauth2/code"],
                )
            ],
            introspection_clients={"dovecot": "demo-introspection"},
        ),
        port=args.auth_port,
    ).start()
    sink = PrintingSink().start()
    dovecot = Dovecot(
        demo_dir / "dovecot",
        introspection_url=f"http://dovecot:demo-introspection@127.0.0.1:{auth.port}/introspect",
        relay=("127.0.0.1", sink.port),
    )
    dovecot.start()
    try:
        if not dovecot.list_uids(DEMO_MAILBOX):
            for raw in demo_messages():
                dovecot.deliver(DEMO_MAILBOX, raw)

        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{demo_dir / 'mailroom.db'}",
            "FILES_ROOT": str(demo_dir / "files"),
            "PUBLIC_URL": web,
            "MAIL_CA_FILE": str(dovecot.ca_file),
            "BEAT_TICK_SECONDS": "2",
            "OAUTH_PROVIDERS": json.dumps(
                {
                    "demo": {
                        "label": "Demo OAuth server",
                        "authorization_url": auth.authorization_url,
                        "token_url": auth.token_url,
                        "scopes": ["mail", "offline_access"],
                        "imap_host": "127.0.0.1",
                        "smtp_host": "127.0.0.1",
                    }
                }
            ),
        }
        os.environ.update(env)
        from config import load_settings

        settings = load_settings(launcher.ENV_FILE)
        children = []
        redis_process = launcher.ensure_redis(settings.redis_url, demo_dir)
        if redis_process:
            children.append(redis_process)
        admin_password = launcher.prepare_database(settings.database_url, DEMO_ADMIN_PASSWORD)
        _prepare_demo_data(settings, dovecot)
        children += launcher.start_app("127.0.0.1", args.port, 2, demo_dir, env)

        print(
            f"""
Mailroom demo is running at {web}/

1. Log in as {launcher.FIRST_ADMIN} with the password {admin_password or DEMO_ADMIN_PASSWORD}.
2. Open Configuration > Integration > Smart Connectors >
   "Northwind e-mail intake". Its next run says "waiting for a token".
3. Click "Generate new token". On the demo OAuth server's page, sign in as
   {DEMO_MAILBOX} with the password {DEMO_MAILBOX_PASSWORD} and click Allow.
4. Back on the connector page, the token is active and the connector runs
   within a few seconds; reload the page to see the run.
5. Open Projects: the two e-mails with attachments became three projects,
   with their files. The e-mail without files stays in the mailbox and is
   listed on the connector page. Notifications sent by Mailroom are printed
   here by the demo's SMTP sink.

Press Ctrl-C to stop. `make demo DEMO_ARGS=--reset` starts over with a fresh mailbox.
"""
        )
        launcher.supervise(children)
    finally:
        dovecot.stop()
        sink.stop()
        auth.stop()
    return 0


def _prepare_demo_data(settings, dovecot) -> None:  # type: ignore[no-untyped-def]
    """Create the demo connector and the company SMTP settings, once."""
    import sqlalchemy as sa

    from intake.definition import apply_definition
    from mailauth import SecretBox
    from models import ConnectionType, Connector, SmtpAuthMethod, SmtpSettings
    from runtime import build_services

    services = build_services(settings)
    box = SecretBox(settings.encryption_keys)
    with services.db.session() as session:
        if session.scalars(sa.select(Connector)).first() is not None:
            return
        connector = apply_definition(
            session,
            {
                "name": "Northwind e-mail intake",
                "type": "project",
                "client": "Northwind Pharma GmbH",
                "budget_code": "NWP-2026",
                "files_aggregation": "separately",
                "source": {
                    "location": "email",
                    "authorization": "oauth2",
                    "provider": "demo",
                    "host": "127.0.0.1",
                    "port": dovecot.imaps_port,
                    "use_ssl": True,
                    "username": DEMO_MAILBOX,
                    "folder": "INBOX",
                },
                "person_responsible": "maria.lopez@example.com",
                "source_language": "en",
                "target_languages": ["de", "cs"],
                "service": "Translation",
                "specialization": "Pharmaceutical",
                "schedule": {"every_minutes": 1},
            },
        )
        connector.next_run_at = datetime.now(UTC)
        session.add(connector)
        account = connector.mail_account
        assert account is not None  # an OAuth2 definition always links an account
        account.client_id = CLIENT_ID
        account.client_secret_encrypted = box.encrypt(CLIENT_SECRET)
        session.add(
            SmtpSettings(
                branch_id=None,
                auth_method=SmtpAuthMethod.OAUTH2,
                host="127.0.0.1",
                port=dovecot.submission_port,
                email_address=DEMO_MAILBOX,
                connection_type=ConnectionType.TLS,
                mail_account=account,
            )
        )
        session.commit()
    services.db.dispose()


if __name__ == "__main__":
    sys.exit(main())
