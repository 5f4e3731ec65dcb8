"""Connector schedules: a fixed interval, or wall-clock times on chosen weekdays.

Weekly times are local times in an IANA time zone, so a connector set to 08:00 in
Europe/Prague runs at 08:00 Prague time in both winter and summer. All instants that
go in or out of this module are timezone-aware and returned in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in ``datetime.weekday()`` order, as written in a schedule."""

MAX_EVERY_MINUTES = 7 * 24 * 60
"""Maximum interval of one week, the same limit the connector form applies."""

TIME_PATTERN = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")

_FIELDS = ("every_minutes", "days", "times", "timezone")


class ScheduleError(ValueError):
    """An invalid schedule. ``field`` is the dotted name of the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[ScheduleError], tuple[str, str]]:
        # Pickle, as Celery does with task errors, from both arguments.
        return type(self), (self.field, self.message)


@dataclass(frozen=True)
class Schedule:
    """Either ``every_minutes``, or ``days`` and ``times`` in ``timezone``.

    ``days`` are names from WEEKDAYS in week order and ``times`` are sorted local
    times. Construction raises ScheduleError when the two forms are mixed or a
    value is out of range, so every Schedule can compute a next run.
    """

    every_minutes: int | None = None
    days: tuple[str, ...] = ()
    times: tuple[time, ...] = ()
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        weekly = bool(self.days or self.times)
        if self.every_minutes is not None and weekly:
            raise ScheduleError(
                "schedule", "set either every_minutes, or days and times, but not both"
            )
        if self.every_minutes is None and not weekly:
            raise ScheduleError("schedule", "set every_minutes, or days and times")

        if self.every_minutes is not None:
            if not 1 <= self.every_minutes <= MAX_EVERY_MINUTES:
                raise ScheduleError(
                    "schedule.every_minutes",
                    f"{self.every_minutes} is out of range. "
                    f"Use a whole number of minutes from 1 to {MAX_EVERY_MINUTES}.",
                )
            return

        if not self.days:
            raise ScheduleError("schedule.days", "missing. List at least one day, such as [mon].")
        if not self.times:
            raise ScheduleError(
                "schedule.times", 'missing. List at least one time, such as ["08:00"].'
            )
        for day in self.days:
            if day not in WEEKDAYS:
                raise ScheduleError(
                    "schedule.days", f"{day!r} is not a day. Use {', '.join(WEEKDAYS)}."
                )
        _zone(self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def as_dict(self) -> dict[str, Any]:
        """Return the schedule in the form that parse_schedule reads."""
        if self.every_minutes is not None:
            return {"every_minutes": self.every_minutes}
        return {
            "days": list(self.days),
            "times": [moment.strftime("%H:%M") for moment in self.times],
            "timezone": self.timezone,
        }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError covers keys that are not zone names at all, such as absolute paths.
        raise ScheduleError(
            "schedule.timezone",
            f"{name!r} is not a known time zone. "
            "Use an IANA name such as Europe/Prague, America/New_York or UTC.",
        ) from None


def parse_schedule(data: dict[str, Any]) -> Schedule:
    """Build a Schedule from its plain form, as stored in Robot Code.

    Raises ScheduleError, a ValueError, whose message names the field and the fix.
    """
    if not isinstance(data, dict):
        raise ScheduleError(
            "schedule",
            "must be a mapping such as {every_minutes: 5} or "
            '{days: [mon, fri], times: ["08:00"], timezone: Europe/Prague}',
        )
    unknown = [str(key) for key in data if key not in _FIELDS]
    if unknown:
        raise ScheduleError(
            f"schedule.{unknown[0]}",
            "unknown field. Use every_minutes, or days, times and timezone.",
        )

    if "every_minutes" in data:
        if any(key in data for key in ("days", "times", "timezone")):
            raise ScheduleError(
                "schedule", "set either every_minutes, or days and times, but not both"
            )
        return Schedule(every_minutes=_parse_minutes(data["every_minutes"]))

    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise ScheduleError(
            "schedule.timezone",
            f"{timezone!r} is not a time zone name. Use an IANA name such as Europe/Prague.",
        )
    return Schedule(
        days=_parse_days(data.get("days")),
        times=_parse_times(data.get("times")),
        timezone=timezone,
    )


def _parse_minutes(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleError(
            "schedule.every_minutes",
            f"{value!r} is not a whole number. "
            f"Use a whole number of minutes from 1 to {MAX_EVERY_MINUTES}.",
        )
    return value


def _parse_days(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ScheduleError("schedule.days", f"{value!r} is not a list. Write it as [mon, tue].")
    seen: set[str] = set()
    for day in value:
        if day not in WEEKDAYS:
            raise ScheduleError(
                "schedule.days", f"{day!r} is not a day. Use {', '.join(WEEKDAYS)}."
            )
        if day in seen:
            raise ScheduleError("schedule.days", f"{day!r} is listed twice. Remove one.")
        seen.add(day)
    return tuple(day for day in WEEKDAYS if day in seen)


def _parse_times(value: Any) -> tuple[time, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ScheduleError(
            "schedule.times", f'{value!r} is not a list. Write it as ["08:00", "12:30"].'
        )
    parsed: set[time] = set()
    for text in value:
        match = TIME_PATTERN.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            # YAML 1.1 reads an unquoted 12:30 as the base-60 number 750.
            raise ScheduleError(
                "schedule.times",
                f'{text!r} is not a time. Write it as "HH:MM" in quotes, from 00:00 to 23:59.',
            )
        moment = time(int(match[1]), int(match[2]))
        if moment in parsed:
            raise ScheduleError("schedule.times", f"{text!r} is listed twice. Remove one.")
        parsed.add(moment)
    return tuple(sorted(parsed))


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """Return the first run strictly after ``after``, in UTC.

    A weekly time that does not exist on a spring-forward day runs at the first
    valid instant after it, which is the moment the clocks change. A time that
    occurs twice on a fall-back day runs once, at its first occurrence.
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after must be timezone-aware, got the naive datetime {after}")
    after = after.astimezone(UTC)

    if schedule.every_minutes is not None:
        return after + timedelta(minutes=schedule.every_minutes)

    zone = schedule.zone
    start = after.astimezone(zone).date()
    # The local date of ``after`` comes round again after seven days, so the next
    # run falls on one of these eight dates.
    for offset in range(8):
        day = start + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in schedule.days:
            continue
        for moment in schedule.times:
            instant = _instant(day, moment, zone)
            if instant > after:
                return instant
    raise AssertionError(f"no run found within a week for {schedule}")


def _instant(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """Return the UTC instant of a local wall-clock time, resolved across DST changes."""
    wall = datetime.combine(day, moment)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        # fold=0 picks the first of two occurrences when the hour repeats.
        return first

    # The wall time falls in a gap. fold=1 applies the offset after the change,
    # which gives a UTC instant before the gap, and fold=0 one after it. The
    # search finds the first second whose local time is at or after ``wall``.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = first
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return after


def describe(schedule: Schedule) -> str:
    """Return a one-line English description, such as "Mon–Fri at 08:00 (Europe/Prague)"."""
    if schedule.every_minutes is not None:
        return _describe_interval(schedule.every_minutes)
    times = _join_and([moment.strftime("%H:%M") for moment in schedule.times])
    return f"{_describe_days(schedule.days)} at {times} ({schedule.timezone})"


def _describe_interval(minutes: int) -> str:
    if minutes == 1:
        return "Every minute"
    if minutes == 60:
        return "Every hour"
    if minutes % 60 == 0:
        return f"Every {minutes // 60} hours"
    return f"Every {minutes} minutes"


def _describe_days(days: tuple[str, ...]) -> str:
    if len(days) == len(WEEKDAYS):
        return "Every day"

    # Group consecutive weekdays, so mon, tue, wed, fri reads "Mon–Wed, Fri".
    indexes = sorted(WEEKDAYS.index(day) for day in days)
    groups: list[list[int]] = []
    for index in indexes:
        if groups and index == groups[-1][-1] + 1:
            groups[-1].append(index)
        else:
            groups.append([index])

    parts = []
    for group in groups:
        names = [WEEKDAYS[index].capitalize() for index in group]
        if len(names) >= 3:
            parts.append(f"{names[0]}–{names[-1]}")
        else:
            parts.extend(names)
    return ", ".join(parts)


def _join_and(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} and {items[-1]}"
