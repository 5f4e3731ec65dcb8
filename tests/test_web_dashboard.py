"""The dashboard shows connector state, token state and failed notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from models import (
    Client,
    Connector,
    Job,
    JobKind,
    MailAccount,
    MessageFailure,
    OAuthState,
    OutboxMessage,
    OutboxStatus,
    TokenStatus,
)

from .conftest import csrf_token, make_settings
from .test_web_connectors import LOCAL_PROVIDER, assert_authorization_redirect


def test_dashboard_lists_failures(logged_in, services) -> None:
    with services.db.session() as session:
        session.add(
            OutboxMessage(
                event="project_created",
                recipients="pm@example.org",
                subject="New project #7: Leaflet.pdf",
                body="b",
                message_id="<dashboard-test@mailroom.invalid>",
                status=OutboxStatus.FAILED,
                attempts=8,
                last_error="The server answered 550 5.1.1 mailbox unavailable.",
            )
        )
        session.add(
            MailAccount(
                provider="google",
                email="intake@example.com",
                token_status=TokenStatus.NEEDS_CONSENT,
                token_status_reason="Google rejected the stored grant: invalid_grant.",
            )
        )
        session.commit()
    page = logged_in.get("/")
    assert page.status_code == 200
    assert "New project #7: Leaflet.pdf" in page.text
    assert "550 5.1.1 mailbox unavailable" in page.text
    assert "Needs new consent: Google rejected the stored grant" in page.text


def test_dashboard_needs_login(client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url, oauth_providers=LOCAL_PROVIDER)


def add_account(services: Any, status: TokenStatus) -> int:
    with services.db.session() as session:
        account = MailAccount(
            provider="local",
            email=f"{status.value}@example.com",
            client_id="mailroom-app",
            client_secret_encrypted=services.box.encrypt("client secret"),
            token_status=status,
        )
        session.add(account)
        session.commit()
        return account.id


def test_generate_new_token_only_where_consent_is_needed(logged_in, services) -> None:
    needs = add_account(services, TokenStatus.NEEDS_CONSENT)
    active = add_account(services, TokenStatus.ACTIVE)
    page = logged_in.get("/")
    assert f'action="/mail-accounts/{needs}/token"' in page.text
    assert f'action="/mail-accounts/{active}/token"' not in page.text

    response = logged_in.post(
        f"/mail-accounts/{needs}/token", data={"csrf_token": csrf_token(logged_in, "/")}
    )
    assert_authorization_redirect(response, "mailroom-app", "needs_consent@example.com")
    with services.db.session() as session:
        state = session.scalars(sa.select(OAuthState)).one()
    assert state.mail_account_id == needs
    assert state.return_to == "/"


def test_generate_new_token_needs_csrf_and_an_account(logged_in, services) -> None:
    needs = add_account(services, TokenStatus.NEEDS_CONSENT)
    assert logged_in.post(f"/mail-accounts/{needs}/token").status_code == 400
    token = csrf_token(logged_in, "/")
    assert logged_in.post("/mail-accounts/999/token", data={"csrf_token": token}).status_code == 404


def test_dashboard_counts_quarantined_messages_and_jobs(logged_in, services) -> None:
    with services.db.session() as session:
        client = Client(name="Lark Media")
        connector = Connector(
            name="Lark orders", client=client, host="imap.example.com", username="o@example.com"
        )
        session.add(connector)
        session.flush()
        for uid, quarantined in ((1, True), (2, True), (3, False)):
            session.add(
                MessageFailure(
                    connector_id=connector.id,
                    uidvalidity=7,
                    uid=uid,
                    attempts=3,
                    last_error="The ZIP archive is damaged.",
                    quarantined_at=datetime.now(UTC) if quarantined else None,
                )
            )
        session.add_all(
            Job(kind=JobKind.PROJECT, name=f"Project {number}", client=client)
            for number in range(1234)
        )
        session.commit()
        connector_id = connector.id
    page = logged_in.get("/")
    assert (
        f'href="/configuration/integration/smart-connectors/{connector_id}#quarantine">'
        "2 messages</a>"
    ) in page.text
    assert ">1,234</a>" in page.text
    assert "<title>Dashboard" in page.text
    assert "<h2" not in page.text.split("</title>", 1)[0]
