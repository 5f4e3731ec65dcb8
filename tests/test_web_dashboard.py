"""The dashboard shows connector state, token state and failed notifications."""

from __future__ import annotations

from models import MailAccount, OutboxMessage, OutboxStatus, TokenStatus


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
