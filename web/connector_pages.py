"""Page data beyond the connector form: tabs, the planned next run, summaries, Finish Test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import HiddenField
from wtforms.validators import DataRequired, Length, Regexp

from intake.failures import DEFAULT_MAX_ATTEMPTS
from intake.schedules import ScheduleError, describe, parse_schedule
from models import AfterProcessing, Connector, StoreRole
from outgoing.notifications import DEFAULT_RECIPIENTS, EVENTS

from .connector_forms import AGGREGATION_CHOICES, ConnectorForm
from .connector_notifications import RECIPIENT_LABELS, RECIPIENTS, event_label
from .connector_schedule import (
    MAX_INTERVAL_MINUTES,
    MIN_INTERVAL_MINUTES,
    SavedSchedule,
    connector_schedule,
    planned_next_run,
)
from .connector_stores import STORE_TITLES, describe_store, saved_stores

FORM_TABS = [
    ("definition", "Definition"),
    ("schedule", "Schedule"),
    ("notifications", "E-mail Notifications"),
    ("robot-code", "Robot Code"),
]
_SCHEDULE_FIELDS = {
    "schedule_kind",
    "interval_minutes",
    "schedule_days",
    "schedule_times",
    "schedule_timezone",
}


def field_tab(name: str | None) -> str:
    """Return the key of the tab that shows the field called ``name``."""
    if name in _SCHEDULE_FIELDS:
        return "schedule"
    if name is not None and name.startswith("notify__"):
        return "notifications"
    if name == "robot_code":
        return "robot-code"
    return "definition"


def tab_errors(form: ConnectorForm) -> dict[str, int]:
    """Return the number of fields with errors on each tab, for the badges on the tab links."""
    counts = {key: 0 for key, _label in FORM_TABS}
    for name, errors in form.errors.items():
        # A store section reports its fields' errors as a dict, one entry per field.
        counts[field_tab(name)] += len(errors) if isinstance(errors, dict) else 1
    return counts


def open_tab(form: ConnectorForm, requested: str | None) -> str:
    """Return the tab to show: the first with an error, else the requested one, else the first."""
    counts = tab_errors(form)
    for key, _label in FORM_TABS:
        if counts[key]:
            return key
    keys = [key for key, _label in FORM_TABS]
    return requested if requested in keys else keys[0]


@dataclass(frozen=True)
class NextRun:
    """The run that saving the form plans, for the Schedule tab."""

    at: datetime
    immediate: bool  # a new interval connector runs as soon as it is saved
    local: str | None = None  # the time in the schedule's zone, for a weekly schedule


def form_next_run(
    form: ConnectorForm, connector: Connector | None, now: datetime
) -> NextRun | None:
    """Compute with intake.schedules the next run that saving the form's schedule would set.

    Returns None while the schedule fields hold invalid values.
    """
    saved = SavedSchedule.of(connector)
    weekly = form.weekly_schedule_data()
    interval = form.interval_minutes.data
    try:
        if weekly is not None:
            schedule = parse_schedule(weekly)
            interval = saved.interval_minutes or MIN_INTERVAL_MINUTES
        elif not isinstance(interval, int) or not (
            MIN_INTERVAL_MINUTES <= interval <= MAX_INTERVAL_MINUTES
        ):
            return None
        at = planned_next_run(saved, interval, weekly, now)
    except ScheduleError:
        return None
    if weekly is None:
        return NextRun(at=at, immediate=not saved.exists)
    local = at.astimezone(ZoneInfo(schedule.timezone)).strftime("%a %Y-%m-%d %H:%M")
    return NextRun(at=at, immediate=False, local=f"{local} {schedule.timezone}")


@dataclass(frozen=True)
class ConnectorSummary:
    """The connector's settings as the connector page lists them."""

    aggregation: str
    after_processing: str
    process_mail_after: datetime | None
    options: str
    schedule: str
    next_run_local: str | None
    stores: list[tuple[str, str]]
    notifications: list[tuple[str, str]]


def connector_summary(session: Session, connector: Connector) -> ConnectorSummary:
    labels = {choice.value: choice.label for choice in AGGREGATION_CHOICES}
    options = connector.options or {}
    option_texts = []
    if options.get("include_inline_images"):
        option_texts.append("includes inline images")
    if options.get("unpack_zip"):
        option_texts.append("unpacks ZIP archives")
    attempts = options.get("max_attempts") or DEFAULT_MAX_ATTEMPTS
    quarantine = f"quarantines an e-mail after {attempts} failed attempts"
    if connector.quarantine_folder:
        quarantine += f' and moves it to folder "{connector.quarantine_folder}"'
    option_texts.append(quarantine)

    schedule = connector_schedule(connector)
    next_run_local = None
    if schedule is not None and schedule.every_minutes is None and connector.next_run_at:
        local = connector.next_run_at.astimezone(schedule.zone).strftime("%a %Y-%m-%d %H:%M")
        next_run_local = f"{local} {schedule.timezone}"

    stores = saved_stores(session, connector)
    return ConnectorSummary(
        aggregation=labels.get(connector.aggregation.value, connector.aggregation.value),
        after_processing=_after_processing_text(connector),
        process_mail_after=connector.process_mail_after,
        options=_sentence(option_texts),
        schedule=describe(schedule) if schedule is not None else "invalid schedule; edit it",
        next_run_local=next_run_local,
        stores=[(STORE_TITLES[role], describe_store(stores.get(role))) for role in StoreRole],
        notifications=_notification_texts(connector.notifications),
    )


def _sentence(parts: list[str]) -> str:
    text = "; ".join(parts)
    return text[:1].upper() + text[1:]


def _after_processing_text(connector: Connector) -> str:
    if connector.after_processing == AfterProcessing.MOVE:
        return f"Move to folder {connector.move_to_folder}"
    if connector.after_processing == AfterProcessing.MARK_SEEN:
        return "Leave it and mark it seen"
    return "Delete"


def _notification_texts(saved: dict[str, Any] | None) -> list[tuple[str, str]]:
    texts = []
    for event in EVENTS:
        chosen = {**DEFAULT_RECIPIENTS, **((saved or {}).get(event) or {})}
        names = [RECIPIENT_LABELS[r] for r in RECIPIENTS if chosen.get(r)]
        texts.append((event_label(event), ", ".join(names) or "nobody"))
    return texts


class FinishTestForm(FlaskForm):
    """Carries the token of a Test Connector preview to Finish Test."""

    token = HiddenField(
        validators=[
            DataRequired(),
            Length(max=64),
            # secrets.token_urlsafe gives letters, digits, "-" and "_".
            Regexp(r"^[A-Za-z0-9_-]+$"),
        ]
    )
