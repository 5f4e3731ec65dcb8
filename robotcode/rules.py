"""The ``rules`` section of Robot Code applied to messages, files and jobs.

Each function takes the ``rules`` mapping as parse_robot_code returned it, where
a missing key means the rule is off.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from extraction.models import MessageInfo

from .templates import render_template

logger = logging.getLogger(__name__)

MAX_HEADER_CHARS = 998
"""Subjects and senders are cut to this length before matching, which bounds the
input of a regular expression. 998 is the maximum line length in RFC 5322."""

MAX_JOB_NAME_CHARS = 300
"""Maximum length of a job name, the same limit the intake applies."""


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """Compile a rule's regular expression once per process."""
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


def _first_match(patterns: Sequence[str], text: str, ignore_case: bool) -> str | None:
    # NOTE: the length limit bounds the input, not the pattern. A pattern with
    # nested repetition such as (a+)+$ can still backtrack for a very long time.
    for pattern in patterns:
        if compile_pattern(pattern, ignore_case).search(text):
            return pattern
    return None


def sender_address(sender: str | None) -> str:
    """Return the address part of a From header, or the whole header if it has none."""
    if not sender:
        return ""
    sender = sender[:MAX_HEADER_CHARS]
    _name, address = parseaddr(sender)
    return address or sender


def message_accepted(rules: Mapping[str, Any], info: MessageInfo) -> tuple[bool, str | None]:
    """Apply the sender and subject rules and return (accepted, reason when skipped).

    Sender patterns are matched case-insensitively against the address only, such
    as maria@northwind.example.com, because addresses are not case-sensitive in
    practice. Subject patterns are matched as written, so add (?i) to ignore case.
    An empty accept list accepts everything, and a skip match always wins.
    """
    sender = sender_address(info.sender)
    subject = (info.subject or "")[:MAX_HEADER_CHARS]

    accept_senders = rules.get("accept_senders") or []
    if accept_senders and _first_match(accept_senders, sender, ignore_case=True) is None:
        if not sender:
            return False, "the message has no sender, and accept_senders is set"
        return False, f"sender {sender!r} matches none of accept_senders"
    skipped_by = _first_match(rules.get("skip_senders") or [], sender, ignore_case=True)
    if skipped_by is not None:
        return False, f"sender {sender!r} matches skip_senders {skipped_by!r}"

    accept_subjects = rules.get("accept_subjects") or []
    if accept_subjects and _first_match(accept_subjects, subject, ignore_case=False) is None:
        return False, f"subject {subject!r} matches none of accept_subjects"
    skipped_by = _first_match(rules.get("skip_subjects") or [], subject, ignore_case=False)
    if skipped_by is not None:
        return False, f"subject {subject!r} matches skip_subjects {skipped_by!r}"

    return True, None


def file_accepted(rules: Mapping[str, Any], name: str) -> bool:
    """Return whether a file passes include_files and exclude_files.

    Patterns are shell-style (``*``, ``?``, ``[abc]``) and ignore case, so
    ``*.docx`` matches Report.DOCX. They are matched against the last component of
    ``name``. An empty include list includes every file, and an exclude match wins.
    """
    base_name = re.split(r"[/\\]", name)[-1].casefold()

    include = rules.get("include_files") or []
    if include and not any(fnmatch.fnmatchcase(base_name, p.casefold()) for p in include):
        return False
    exclude = rules.get("exclude_files") or []
    return not any(fnmatch.fnmatchcase(base_name, p.casefold()) for p in exclude)


def default_job_name(
    *,
    subject: str | None,
    file_name: str | None,
    files: Sequence[str],
    connector: str,
    date: datetime | None,
) -> str:
    """Return the name a job gets without a template: the file, the subject, or a summary."""
    if file_name:
        return _clean_name(file_name)
    if subject and subject.strip():
        return _clean_name(subject)
    count = f"{len(files)} file" if len(files) == 1 else f"{len(files)} files"
    if date is None:
        return _clean_name(f"{connector}: {count}")
    stamp = date.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _clean_name(f"{connector}: {count}, {stamp}")


def _clean_name(text: str) -> str:
    """Collapse whitespace, line breaks included, and cut to MAX_JOB_NAME_CHARS."""
    return " ".join(text.split())[:MAX_JOB_NAME_CHARS].strip()


def render_job_name(
    rules: Mapping[str, Any],
    *,
    subject: str | None,
    sender: str | None,
    file_name: str | None,
    files: Sequence[str],
    connector: str,
    date: datetime | None,
) -> tuple[str, str | None]:
    """Render the job_name template and return (name, error).

    On a template error the name is the default name and ``error`` describes the
    failure. A template that renders only whitespace also gets the default name,
    without an error, because an empty subject is a normal case.
    """
    fallback = default_job_name(
        subject=subject, file_name=file_name, files=files, connector=connector, date=date
    )
    source = rules.get("job_name")
    if not source:
        return fallback, None

    context = {
        "subject": subject,
        "sender": sender,
        "file_name": file_name,
        "files": tuple(files),
        "connector": connector,
        "date": date,
    }
    try:
        rendered = render_template(source, context)
    except Exception as error:  # template expressions can raise any exception
        return fallback, f"job_name template failed: {type(error).__name__}: {error}"

    name = _clean_name(rendered)
    return (name or fallback), None


def job_name(
    rules: Mapping[str, Any],
    *,
    subject: str | None,
    sender: str | None,
    file_name: str | None,
    files: Sequence[str],
    connector: str,
    date: datetime | None,
) -> str:
    """Render the job name, logging a template error and using the default name instead.

    The template runs in a Jinja sandbox with autoescaping off. Undefined values
    render empty, and the result is trimmed, its whitespace collapsed, and cut to
    MAX_JOB_NAME_CHARS characters.
    """
    name, error = render_job_name(
        rules,
        subject=subject,
        sender=sender,
        file_name=file_name,
        files=files,
        connector=connector,
        date=date,
    )
    if error is not None:
        logger.error("connector %r: %s. Used the default job name %r.", connector, error, name)
    return name


def deadline(rules: Mapping[str, Any], received: datetime) -> datetime | None:
    """Return the job deadline, deadline_days or deadline_hours after ``received``.

    Days are calendar days, not working days. Returns None when neither is set.
    """
    days = rules.get("deadline_days")
    if days is not None:
        return received + timedelta(days=days)
    hours = rules.get("deadline_hours")
    if hours is not None:
        return received + timedelta(hours=hours)
    return None
