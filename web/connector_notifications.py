"""The E-mail Notifications tab: who gets an e-mail about each event, one checkbox per pair.

The settings are stored in ``Connector.notifications`` as
``{event: {"person_responsible": bool, "client_contact": bool}}`` with every
event of ``outgoing.notifications.EVENTS`` written out, so a later change of
DEFAULT_RECIPIENTS does not silently change what a saved connector sends.
"""

from __future__ import annotations

from typing import Any

from wtforms import BooleanField, HiddenField

from outgoing.notifications import DEFAULT_RECIPIENTS, EVENTS

RECIPIENTS = ("person_responsible", "client_contact")
RECIPIENT_LABELS = {"person_responsible": "Person Responsible", "client_contact": "Client contact"}
EVENT_LABELS = {
    "project_created": "A project was created",
    "quote_created": "A quote was created",
    "processing_error": "A run failed",
    "token_needs_consent": "The mailbox's OAuth2 token needs new consent",
    "connector_recovered": "The connector works again after failed runs",
}
# The template renders this marker, so a request without it, such as from a
# script that posts only the older fields, leaves the settings unchanged.
SHOWN_MARKER = "1"


def notify_field_name(event: str, recipient: str) -> str:
    return f"notify__{event}__{recipient}"


def event_label(event: str) -> str:
    return EVENT_LABELS.get(event, event.replace("_", " ").capitalize())


class NotificationFields:
    """One checkbox per event and recipient, mixed into ConnectorForm."""

    notifications_shown = HiddenField()

    def notification_rows(self) -> list[tuple[str, list[BooleanField]]]:
        """Return (event label, checkboxes in RECIPIENTS order) for the template."""
        return [
            (
                event_label(event),
                [getattr(self, notify_field_name(event, recipient)) for recipient in RECIPIENTS],
            )
            for event in EVENTS
        ]

    def notifications_data(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        """Return the settings to store, or ``saved`` when the tab was not part of the request."""
        if self.notifications_shown.data != SHOWN_MARKER:
            return dict(saved) if saved else default_notifications()
        return {
            event: {
                recipient: bool(getattr(self, notify_field_name(event, recipient)).data)
                for recipient in RECIPIENTS
            }
            for event in EVENTS
        }


for _event in EVENTS:
    for _recipient in RECIPIENTS:
        setattr(
            NotificationFields,
            notify_field_name(_event, _recipient),
            BooleanField(
                f"{event_label(_event)}: {RECIPIENT_LABELS[_recipient]}",
                default=DEFAULT_RECIPIENTS.get(_recipient, False),
            ),
        )


def default_notifications() -> dict[str, Any]:
    return {event: {r: DEFAULT_RECIPIENTS.get(r, False) for r in RECIPIENTS} for event in EVENTS}


def notification_initial_data(saved: dict[str, Any] | None) -> dict[str, Any]:
    """Return the checkbox values for stored settings. Pairs not stored get DEFAULT_RECIPIENTS."""
    values = {}
    for event in EVENTS:
        chosen = {**DEFAULT_RECIPIENTS, **((saved or {}).get(event) or {})}
        for recipient in RECIPIENTS:
            values[notify_field_name(event, recipient)] = bool(chosen.get(recipient))
    return values
