"""Jinja filters shared by the templates."""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup


def utc_time(value: datetime | None, empty: str = "—") -> Markup:
    """Show a UTC time to the minute in a ``<time>`` element, or ``empty`` when unset.

    A filter rather than a macro: the job list calls it three times per row,
    and a macro call costs several times more.
    """
    if value is None:
        return Markup.escape(empty)
    return Markup('<time datetime="%s">%s</time>') % (
        value.isoformat(),
        value.strftime("%Y-%m-%d %H:%M UTC"),
    )
