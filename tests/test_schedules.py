"""Connector schedules: parsing, next runs across DST changes, descriptions."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from intake.schedules import Schedule, ScheduleError, describe, next_run, parse_schedule

PRAGUE = ZoneInfo("Europe/Prague")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def prague(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PRAGUE, fold=fold)


def weekly(days: list[str], times: list[str], timezone: str = "Europe/Prague") -> Schedule:
    return parse_schedule({"days": days, "times": times, "timezone": timezone})


# Parsing


def test_parse_every_minutes() -> None:
    schedule = parse_schedule({"every_minutes": 5})

    assert schedule == Schedule(every_minutes=5)
    assert schedule.as_dict() == {"every_minutes": 5}


def test_parse_weekly_sorts_days_and_times() -> None:
    schedule = weekly(["fri", "mon"], ["12:30", "08:00"])

    assert schedule.days == ("mon", "fri")
    assert schedule.times == (time(8, 0), time(12, 30))
    assert schedule.timezone == "Europe/Prague"
    assert schedule.as_dict() == {
        "days": ["mon", "fri"],
        "times": ["08:00", "12:30"],
        "timezone": "Europe/Prague",
    }


def test_parse_weekly_defaults_to_utc() -> None:
    schedule = parse_schedule({"days": ["mon"], "times": ["08:00"]})

    assert schedule.timezone == "UTC"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "schedule", "schedule: set every_minutes, or days and times"),
        (
            {"every_minutes": 5, "days": ["mon"]},
            "schedule",
            "schedule: set either every_minutes, or days and times, but not both",
        ),
        (
            {"every_minutes": 0},
            "schedule.every_minutes",
            "schedule.every_minutes: 0 is out of range. "
            "Use a whole number of minutes from 1 to 10080.",
        ),
        (
            {"every_minutes": 10081},
            "schedule.every_minutes",
            "schedule.every_minutes: 10081 is out of range. "
            "Use a whole number of minutes from 1 to 10080.",
        ),
        (
            {"every_minutes": "5"},
            "schedule.every_minutes",
            "schedule.every_minutes: '5' is not a whole number. "
            "Use a whole number of minutes from 1 to 10080.",
        ),
        (
            {"every_minutes": True},
            "schedule.every_minutes",
            "schedule.every_minutes: True is not a whole number. "
            "Use a whole number of minutes from 1 to 10080.",
        ),
        (
            {"times": ["08:00"]},
            "schedule.days",
            "schedule.days: missing. List at least one day, such as [mon].",
        ),
        (
            {"days": ["mon"]},
            "schedule.times",
            'schedule.times: missing. List at least one time, such as ["08:00"].',
        ),
        (
            {"days": ["monday"], "times": ["08:00"]},
            "schedule.days",
            "schedule.days: 'monday' is not a day. Use mon, tue, wed, thu, fri, sat, sun.",
        ),
        (
            {"days": ["mon", "mon"], "times": ["08:00"]},
            "schedule.days",
            "schedule.days: 'mon' is listed twice. Remove one.",
        ),
        (
            {"days": "mon", "times": ["08:00"]},
            "schedule.days",
            "schedule.days: 'mon' is not a list. Write it as [mon, tue].",
        ),
        (
            {"days": ["mon"], "times": ["8:00"]},
            "schedule.times",
            "schedule.times: '8:00' is not a time. "
            'Write it as "HH:MM" in quotes, from 00:00 to 23:59.',
        ),
        (
            {"days": ["mon"], "times": [750]},
            "schedule.times",
            "schedule.times: 750 is not a time. "
            'Write it as "HH:MM" in quotes, from 00:00 to 23:59.',
        ),
        (
            {"days": ["mon"], "times": ["24:00"]},
            "schedule.times",
            "schedule.times: '24:00' is not a time. "
            'Write it as "HH:MM" in quotes, from 00:00 to 23:59.',
        ),
        (
            {"days": ["mon"], "times": ["08:00", "08:00"]},
            "schedule.times",
            "schedule.times: '08:00' is listed twice. Remove one.",
        ),
        (
            {"days": ["mon"], "times": ["08:00"], "timezone": "Europe/Pragu"},
            "schedule.timezone",
            "schedule.timezone: 'Europe/Pragu' is not a known time zone. "
            "Use an IANA name such as Europe/Prague, America/New_York or UTC.",
        ),
        (
            {"days": ["mon"], "times": ["08:00"], "timezone": "/etc/passwd"},
            "schedule.timezone",
            "schedule.timezone: '/etc/passwd' is not a known time zone. "
            "Use an IANA name such as Europe/Prague, America/New_York or UTC.",
        ),
        (
            {"days": ["mon"], "times": ["08:00"], "timezone": 1},
            "schedule.timezone",
            "schedule.timezone: 1 is not a time zone name. Use an IANA name such as Europe/Prague.",
        ),
        (
            {"every_minutes": 5, "cron": "* * * * *"},
            "schedule.cron",
            "schedule.cron: unknown field. Use every_minutes, or days, times and timezone.",
        ),
    ],
)
def test_parse_schedule_rejects_invalid(data: dict, field: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(data)

    assert str(caught.value) == message
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_parse_schedule_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="schedule: must be a mapping"):
        parse_schedule(["every_minutes", 5])  # type: ignore[arg-type]


def test_schedule_constructor_checks_values() -> None:
    with pytest.raises(ScheduleError, match="schedule.days: 'funday' is not a day"):
        Schedule(days=("funday",), times=(time(8),))


# Every N minutes


def test_every_minutes_adds_interval() -> None:
    schedule = Schedule(every_minutes=5)

    assert next_run(schedule, utc(2026, 3, 1, 10, 0)) == utc(2026, 3, 1, 10, 5)


def test_every_minutes_returns_utc() -> None:
    schedule = Schedule(every_minutes=90)

    result = next_run(schedule, prague(2026, 3, 1, 10, 0))

    assert result == utc(2026, 3, 1, 10, 30)
    assert result.tzinfo is UTC


def test_next_run_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        next_run(Schedule(every_minutes=5), datetime(2026, 3, 1, 10, 0))


# Weekly


def test_weekly_later_the_same_day() -> None:
    schedule = weekly(["mon", "tue", "wed", "thu", "fri"], ["08:00", "12:30"])

    # Wednesday 2026-01-07 09:00 in Prague (UTC+1).
    assert next_run(schedule, utc(2026, 1, 7, 8, 0)) == utc(2026, 1, 7, 11, 30)


def test_weekly_skips_weekend() -> None:
    schedule = weekly(["mon", "tue", "wed", "thu", "fri"], ["08:00", "12:30"])

    # Friday 2026-01-09 12:31 in Prague, after the last run of the week.
    result = next_run(schedule, utc(2026, 1, 9, 11, 31))

    assert result == utc(2026, 1, 12, 7, 0)
    assert result.astimezone(PRAGUE) == prague(2026, 1, 12, 8, 0)


def test_weekly_from_saturday() -> None:
    schedule = weekly(["mon", "tue", "wed", "thu", "fri"], ["08:00"])

    assert next_run(schedule, utc(2026, 1, 10, 12, 0)) == utc(2026, 1, 12, 7, 0)


def test_weekly_is_strictly_after() -> None:
    schedule = weekly(["mon"], ["08:00"])

    monday_eight = utc(2026, 1, 12, 7, 0)

    assert next_run(schedule, monday_eight) == utc(2026, 1, 19, 7, 0)
    assert next_run(schedule, monday_eight - timedelta(seconds=1)) == monday_eight


def test_weekly_uses_local_date_not_utc_date() -> None:
    schedule = weekly(["tue"], ["00:30"])

    # Monday 23:45 UTC is already Tuesday 00:45 in Prague, so the run is a week away.
    assert next_run(schedule, utc(2026, 1, 12, 23, 45)) == utc(2026, 1, 19, 23, 30)


def test_weekly_in_utc() -> None:
    schedule = weekly(["sat"], ["06:15"], timezone="UTC")

    assert next_run(schedule, utc(2026, 1, 7, 0, 0)) == utc(2026, 1, 10, 6, 15)


def test_weekly_keeps_wall_time_across_spring_forward() -> None:
    schedule = weekly(["fri", "mon"], ["08:00"])

    before = next_run(schedule, utc(2026, 3, 26, 12, 0))
    after = next_run(schedule, before)

    assert before == utc(2026, 3, 27, 7, 0)  # Friday, CET (UTC+1)
    assert after == utc(2026, 3, 30, 6, 0)  # Monday, CEST (UTC+2)
    assert after.astimezone(PRAGUE).hour == 8


def test_weekly_missing_time_runs_when_clocks_change() -> None:
    # On 2026-03-29 Prague clocks jump from 02:00 CET to 03:00 CEST.
    schedule = weekly(["sun"], ["02:30"])

    result = next_run(schedule, utc(2026, 3, 28, 12, 0))

    assert result == utc(2026, 3, 29, 1, 0)
    assert result.astimezone(PRAGUE) == prague(2026, 3, 29, 3, 0)


def test_weekly_missing_time_runs_once() -> None:
    # 02:30 does not exist and 03:00 is the moment the clocks change.
    schedule = weekly(["sun"], ["02:30", "03:00"])

    first = next_run(schedule, utc(2026, 3, 28, 12, 0))
    second = next_run(schedule, first)

    assert first == utc(2026, 3, 29, 1, 0)
    assert second == utc(2026, 4, 5, 0, 30)


def test_weekly_missing_time_next_week_is_normal() -> None:
    schedule = weekly(["sun"], ["02:30"])

    result = next_run(schedule, utc(2026, 3, 29, 1, 0))

    assert result == utc(2026, 4, 5, 0, 30)
    assert result.astimezone(PRAGUE) == prague(2026, 4, 5, 2, 30)


def test_weekly_repeated_hour_runs_once() -> None:
    # On 2026-10-25 Prague clocks go back from 03:00 CEST to 02:00 CET, so 02:30 occurs twice.
    schedule = weekly(["sun"], ["02:30"])

    first = next_run(schedule, utc(2026, 10, 24, 12, 0))
    second = next_run(schedule, first)

    assert first == utc(2026, 10, 25, 0, 30)
    assert first.astimezone(PRAGUE) == prague(2026, 10, 25, 2, 30, fold=0)
    assert second == utc(2026, 11, 1, 1, 30)


def test_weekly_repeated_hour_not_run_at_second_occurrence() -> None:
    schedule = weekly(["sun"], ["02:30"])

    # 00:45 UTC is 02:45 CEST, between the two occurrences of 02:30.
    assert next_run(schedule, utc(2026, 10, 25, 0, 45)) == utc(2026, 11, 1, 1, 30)


def test_weekly_keeps_wall_time_across_fall_back() -> None:
    schedule = weekly(["sat", "sun"], ["08:00"])

    saturday = next_run(schedule, utc(2026, 10, 23, 12, 0))
    sunday = next_run(schedule, saturday)

    assert saturday == utc(2026, 10, 24, 6, 0)  # CEST (UTC+2)
    assert sunday == utc(2026, 10, 25, 7, 0)  # CET (UTC+1)


def test_weekly_runs_every_listed_day_for_a_week() -> None:
    schedule = weekly(["mon", "wed", "fri"], ["08:00", "17:45"])

    runs = []
    moment = utc(2026, 1, 4, 12, 0)  # Sunday
    for _ in range(6):
        moment = next_run(schedule, moment)
        runs.append(moment.astimezone(PRAGUE).strftime("%a %H:%M"))

    assert runs == ["Mon 08:00", "Mon 17:45", "Wed 08:00", "Wed 17:45", "Fri 08:00", "Fri 17:45"]


# Descriptions


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"every_minutes": 1}, "Every minute"),
        ({"every_minutes": 5}, "Every 5 minutes"),
        ({"every_minutes": 60}, "Every hour"),
        ({"every_minutes": 120}, "Every 2 hours"),
        ({"every_minutes": 90}, "Every 90 minutes"),
        (
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "times": ["08:00", "12:30"],
                "timezone": "Europe/Prague",
            },
            "Mon–Fri at 08:00 and 12:30 (Europe/Prague)",
        ),
        ({"days": ["mon", "wed", "fri"], "times": ["08:00"]}, "Mon, Wed, Fri at 08:00 (UTC)"),
        ({"days": ["sat", "sun"], "times": ["09:15"]}, "Sat, Sun at 09:15 (UTC)"),
        (
            {"days": ["mon", "tue", "wed", "fri"], "times": ["07:00", "12:00", "16:30"]},
            "Mon–Wed, Fri at 07:00, 12:00 and 16:30 (UTC)",
        ),
        (
            {"days": ["sun", "sat", "fri", "thu", "wed", "tue", "mon"], "times": ["06:00"]},
            "Every day at 06:00 (UTC)",
        ),
    ],
)
def test_describe(data: dict, text: str) -> None:
    assert describe(parse_schedule(data)) == text


def test_schedule_error_pickles() -> None:
    error = ScheduleError("schedule.timezone", "'Mars/Base' is not a known time zone.")

    copy = pickle.loads(pickle.dumps(error))

    assert copy.field == "schedule.timezone"
    assert str(copy) == str(error)


# Weekly runs checked minute by minute


def expected_runs(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Return the runs between start and end by checking every UTC minute.

    A minute is a run when its local time is a listed time on a listed day, on the
    first occurrence of a repeated hour. When the clocks jump forward, the minute
    of the change is a run for each listed time that the jump skips.
    """
    zone = schedule.zone
    runs = []
    minute = start
    previous_local = (minute - timedelta(minutes=1)).astimezone(zone)
    while minute < end:
        local = minute.astimezone(zone)
        weekday = local.strftime("%a").lower()
        wall = local.replace(tzinfo=None)
        if weekday in schedule.days:
            if local.fold == 0 and local.time() in schedule.times:
                runs.append(minute)
            elif wall - previous_local.replace(tzinfo=None) > timedelta(minutes=1):
                skipped_from = previous_local.replace(tzinfo=None) + timedelta(minutes=1)
                skipped = any(
                    skipped_from <= datetime.combine(wall.date(), moment) < wall
                    for moment in schedule.times
                )
                if skipped:
                    runs.append(minute)
        previous_local = local
        minute += timedelta(minutes=1)
    return runs


@pytest.mark.parametrize(
    ("timezone", "start"),
    [
        ("Europe/Prague", utc(2026, 3, 25)),
        ("Europe/Prague", utc(2026, 10, 21)),
        ("America/New_York", utc(2026, 3, 5)),
        ("America/New_York", utc(2026, 10, 29)),
        # Lord Howe Island moves its clocks by 30 minutes.
        ("Australia/Lord_Howe", utc(2026, 4, 1)),
        ("Australia/Lord_Howe", utc(2026, 9, 30)),
    ],
)
def test_weekly_matches_minute_scan(timezone: str, start: datetime) -> None:
    schedule = weekly(["sat", "sun"], ["01:45", "02:00", "02:15", "02:45", "23:59"], timezone)
    end = start + timedelta(days=9)

    runs = []
    moment = start
    while True:
        moment = next_run(schedule, moment)
        if moment >= end:
            break
        runs.append(moment)

    assert runs == expected_runs(schedule, start, end)
