"""The Schedule tab of the Smart Connector form: every N minutes, or weekdays and times.

An interval is stored in ``Connector.interval_minutes`` with ``weekly_schedule``
empty. A weekly schedule is stored as ``{"days": [...], "times": [...],
"timezone": ...}`` in ``weekly_schedule``, and ``interval_minutes`` keeps its
last value so that switching back restores it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

from wtforms import RadioField, SelectChoice, SelectField, SelectMultipleField, StringField
from wtforms.validators import StopValidation, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from intake.schedules import (
    MAX_EVERY_MINUTES,
    WEEKDAYS,
    Schedule,
    ScheduleError,
    next_run,
    parse_schedule,
)
from models import Connector

from .connector_fields import WholeNumberField, require_choice, strip_text

SCHEDULE_INTERVAL = "interval"
SCHEDULE_WEEKLY = "weekly"
SCHEDULE_KIND_CHOICES = [
    SelectChoice(SCHEDULE_INTERVAL, "Every N minutes"),
    SelectChoice(SCHEDULE_WEEKLY, "On chosen weekdays at chosen times"),
]
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_CHOICES = [SelectChoice(day, name) for day, name in zip(WEEKDAYS, DAY_NAMES, strict=True)]
DEFAULT_TIMEZONE = "UTC"
DEFAULT_INTERVAL_MINUTES = 5

MIN_INTERVAL_MINUTES, MAX_INTERVAL_MINUTES = 1, MAX_EVERY_MINUTES

# "8:00" is accepted and written back as "08:00".
_TIME_OF_DAY = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_TIME_SEPARATORS = re.compile(r"[,;\s]+")


@functools.cache
def timezone_choices() -> list[SelectChoice]:
    """Return the IANA time zones that this system's time zone database contains."""
    return [SelectChoice(name, name) for name in sorted(available_timezones())]


def parse_times(text: str) -> tuple[list[str], list[str]]:
    """Split the Times input into sorted "HH:MM" values, and return (times, rejected parts)."""
    times: set[str] = set()
    rejected = []
    for part in _TIME_SEPARATORS.split(text or ""):
        if not part:
            continue
        match = _TIME_OF_DAY.fullmatch(part)
        if match is None:
            rejected.append(part)
            continue
        times.add(f"{int(match[1]):02d}:{match[2]}")
    return sorted(times), rejected


class ScheduleFields:
    """Fields and checks of the Schedule tab, mixed into ConnectorForm."""

    schedule_kind = RadioField(
        "Run",
        choices=SCHEDULE_KIND_CHOICES,
        default=SCHEDULE_INTERVAL,
        validate_choice=False,
    )
    interval_minutes = WholeNumberField(
        "Schedule",
        default=DEFAULT_INTERVAL_MINUTES,
        invalid_message='Schedule "{value}" is not a number; enter whole minutes from 1 to 10080.',
        description="Minutes between two scans of the folder, from 1 to 10080 (one week).",
    )
    schedule_days = SelectMultipleField(
        "Days",
        choices=DAY_CHOICES,
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validate_choice=False,
    )
    schedule_times = StringField(
        "Times",
        filters=[strip_text],
        description="Times of day in 24-hour HH:MM, separated by commas, e.g. 08:00, 13:30.",
    )
    schedule_timezone = SelectField(
        "Time zone",
        choices=timezone_choices(),
        default=DEFAULT_TIMEZONE,
        validate_choice=False,
        description="The days and times are local times of this zone, in summer and winter.",
    )

    def validate_schedule_kind(self, field: RadioField) -> None:
        require_choice(field, SCHEDULE_KIND_CHOICES)

    def validate_interval_minutes(self, field: WholeNumberField) -> None:
        if self.schedule_kind.data == SCHEDULE_WEEKLY:
            # Unused while the weekly schedule is chosen: saving keeps the stored interval.
            field.errors = []
            field.data = None
            raise StopValidation()
        if field.process_errors:
            raise StopValidation()
        if field.data is None:
            raise ValidationError("Schedule is missing; enter whole minutes from 1 to 10080.")
        if not MIN_INTERVAL_MINUTES <= field.data <= MAX_INTERVAL_MINUTES:
            raise ValidationError(
                f"Schedule {field.data} minutes is out of range; enter 1 to 10080 minutes "
                "(10080 minutes is one week)."
            )

    def validate_schedule_days(self, field: SelectMultipleField) -> None:
        if self.schedule_kind.data != SCHEDULE_WEEKLY:
            return
        for day in field.data or []:
            if day not in WEEKDAYS:
                raise ValidationError(
                    f'Day "{day}" is not valid; check days from Monday to Sunday.'
                )
        if not field.data:
            raise ValidationError(
                "Days are missing; check at least one day for the weekly schedule."
            )

    def validate_schedule_times(self, field: StringField) -> None:
        if self.schedule_kind.data != SCHEDULE_WEEKLY:
            return
        times, rejected = parse_times(field.data or "")
        if rejected:
            raise ValidationError(
                f'Time "{rejected[0][:40]}" is not a time of day; enter times as HH:MM from '
                "00:00 to 23:59, separated by commas, e.g. 08:00, 13:30."
            )
        if not times:
            raise ValidationError(
                "Times are missing; enter at least one time of day, e.g. 08:00 or 08:00, 13:30."
            )
        field.data = ", ".join(times)

    def validate_schedule_timezone(self, field: SelectField) -> None:
        if self.schedule_kind.data != SCHEDULE_WEEKLY:
            return
        valid = {choice.value for choice in timezone_choices()}
        if field.data not in valid:
            raise ValidationError(
                f'Time zone "{str(field.data)[:80]}" is not known; choose one from the list, '
                "e.g. Europe/Prague or UTC."
            )

    def weekly_schedule_data(self) -> dict[str, Any] | None:
        """Return the weekly schedule to store, or None when the interval is chosen."""
        if self.schedule_kind.data != SCHEDULE_WEEKLY:
            return None
        times, _rejected = parse_times(self.schedule_times.data or "")
        days = set(self.schedule_days.data or [])
        return {
            "days": [day for day in WEEKDAYS if day in days],
            "times": times,
            "timezone": self.schedule_timezone.data or DEFAULT_TIMEZONE,
        }


def schedule_initial_data(connector: Connector) -> dict[str, Any]:
    """Return the Schedule tab's values of a saved connector."""
    values: dict[str, Any] = {"interval_minutes": connector.interval_minutes}
    weekly = connector.weekly_schedule
    if not weekly:
        values["schedule_kind"] = SCHEDULE_INTERVAL
        return values
    values.update(schedule_field_values(weekly))
    return values


def schedule_field_values(schedule: dict[str, Any]) -> dict[str, Any]:
    """Return the Schedule tab's values for a schedule as Robot Code writes it."""
    if "every_minutes" in schedule:
        return {"schedule_kind": SCHEDULE_INTERVAL, "interval_minutes": schedule["every_minutes"]}
    times = [str(moment) for moment in schedule.get("times") or []]
    return {
        "schedule_kind": SCHEDULE_WEEKLY,
        "schedule_days": [str(day) for day in schedule.get("days") or []],
        "schedule_times": ", ".join(times),
        "schedule_timezone": str(schedule.get("timezone") or DEFAULT_TIMEZONE),
    }


def connector_schedule(connector: Connector) -> Schedule | None:
    """Return the connector's schedule, or None when the stored weekly schedule is invalid."""
    try:
        if connector.weekly_schedule:
            return parse_schedule(dict(connector.weekly_schedule))
        return Schedule(every_minutes=connector.interval_minutes)
    except ScheduleError:
        return None


@dataclass(frozen=True)
class SavedSchedule:
    """The schedule columns of a connector before the form changes them."""

    exists: bool
    interval_minutes: int | None
    weekly_schedule: dict[str, Any] | None
    next_run_at: datetime | None
    last_run_at: datetime | None

    @classmethod
    def of(cls, connector: Connector | None) -> SavedSchedule:
        if connector is None or connector.id is None:
            return cls(False, None, None, None, None)
        weekly = dict(connector.weekly_schedule) if connector.weekly_schedule else None
        return cls(
            True,
            connector.interval_minutes,
            weekly,
            connector.next_run_at,
            connector.last_run_at,
        )


def planned_next_run(
    saved: SavedSchedule, interval_minutes: int, weekly: dict[str, Any] | None, now: datetime
) -> datetime:
    """Return the next run that saving this schedule sets.

    A new interval connector is due at once. A weekly schedule waits for its
    next day and time. An unchanged schedule keeps the planned run, and a
    changed interval counts from the last run, but never lies in the past.
    """
    if weekly:
        if saved.exists and saved.next_run_at is not None and weekly == saved.weekly_schedule:
            return saved.next_run_at
        return next_run(parse_schedule(weekly), now)
    if not saved.exists or saved.next_run_at is None:
        return now
    if interval_minutes == saved.interval_minutes and not saved.weekly_schedule:
        return saved.next_run_at
    base = saved.last_run_at or now
    return max(now, next_run(Schedule(every_minutes=interval_minutes), base))
