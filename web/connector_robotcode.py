"""The Robot Code tab: the connector's whole definition as YAML, edited next to the form.

The page sends the text twice: in the text area, and unchanged in a hidden field
(the base). On save, a text equal to its base is ignored apart from its
``rules``, so the form fields win. A changed text is parsed with
``parse_robot_code``. Each value that differs from the base is copied into its
form field before the form validates, so the text wins for what was edited in
it and the form's own checks apply to it. Values the text leaves out keep the
form's value, except ``rules``, which only the text edits: removing a rule from
the text removes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session
from wtforms import Field, HiddenField, TextAreaField

from intake.definition import export_connector
from intake.failures import DEFAULT_MAX_ATTEMPTS
from models import Client, Connector, Language, Service, Specialization, User
from outgoing.notifications import EVENTS
from robotcode import RobotCodeError, dump_robot_code, parse_robot_code

from .connector_notifications import RECIPIENTS, default_notifications, notify_field_name
from .connector_schedule import schedule_field_values

Path = tuple[str | int, ...]
Converter = Callable[[Session, Any], dict[str, Any]]


class RobotCodeFields:
    """The text area and its base, mixed into ConnectorForm."""

    robot_code = TextAreaField(
        "Robot Code",
        description="The whole definition as YAML. Edit the rules here: sender and subject "
        "rules, file patterns, the job name template, the deadline and notes. Values you "
        "change here replace the form's values when you save, and values you remove keep the "
        "form's value. Passwords and keys are set in the form only.",
    )
    robot_code_base = HiddenField()


def robot_code_text(connector: Connector | None) -> str:
    """Return the Robot Code the form starts with, from the saved connector or the defaults."""
    if connector is None:
        return dump_robot_code(new_connector_data())
    return dump_robot_code(export_connector(connector))


def new_connector_data() -> dict[str, Any]:
    """Return the defaults of a new connector as Robot Code.

    The name, client, host, username and OAuth2 provider have no default, so
    the text leaves them out, and a text edited before the first save must add them.
    """
    return {
        "type": "project",
        "active": True,
        "files_aggregation": "separately",
        "source": {
            "location": "email",
            "authorization": "oauth2",
            "port": 993,
            "use_ssl": True,
            "folder": "INBOX",
            "after_processing": "delete",
        },
        "schedule": {"every_minutes": 5},
        "notifications": default_notifications(),
        "options": {
            "include_inline_images": False,
            "unpack_zip": False,
            "max_attempts": DEFAULT_MAX_ATTEMPTS,
        },
    }


@dataclass
class RobotCodeMerge:
    """The result of merging the Robot Code text into the form: rules, errors and changed fields."""

    rules: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    # Form field name (store fields as "store_success-host") -> (Robot Code path, line).
    sources: dict[str, tuple[Path, int | None]] = field(default_factory=dict)


def merge_robot_code(form: Any, session: Session, saved_rules: dict[str, Any]) -> RobotCodeMerge:
    """Copy the values edited in the Robot Code text into ``form`` and return the rules.

    Errors name their line, like "Line 7: source.port: ...". After a clean
    merge the base becomes the posted text, because the fields now hold its
    values: when the page shows again, the text counts as unchanged until it is
    edited again.
    """
    text = normalize_text(form.robot_code.data)
    base = normalize_text(form.robot_code_base.data)
    if not text:
        return RobotCodeMerge(rules=dict(saved_rules))
    if text == base:
        try:
            data = parse_robot_code(text)
        except RobotCodeError:
            # The text came from the database or an earlier merge, so an error
            # here describes saved data the admin did not edit.
            return RobotCodeMerge(rules=dict(saved_rules))
        return RobotCodeMerge(rules=dict(data.get("rules") or {}))

    try:
        data = parse_robot_code(text)
    except RobotCodeError as error:
        errors = [_with_line(line, message) for line, message in error.errors]
        return RobotCodeMerge(rules=dict(saved_rules), errors=errors)

    merge = RobotCodeMerge(rules=dict(data.get("rules") or {}))
    base_data = load_base(base)
    lines = LineFinder(text)
    for path, convert in _LEAVES:
        if not _contains(data, path):
            continue
        value = _value_at(data, path)
        if _contains(base_data, path) and _value_at(base_data, path) == value:
            continue
        line = lines.line(path)
        try:
            values = convert(session, value)
        except LookupError as error:
            merge.errors.append(_with_line(line, f"{dotted(path)}: {error}"))
            continue
        for name, field_value in values.items():
            set_field_value(form_field(form, name), field_value)
            merge.sources[name] = (path, line)
    if not merge.errors:
        form.robot_code_base.data = form.robot_code.data
    return merge


def source_errors(form: Any, merge: RobotCodeMerge) -> list[str]:
    """Repeat each form error of a value that came from the text, with the text's line."""
    messages = []
    for name, (path, line) in merge.sources.items():
        for error in form_field(form, name).errors:
            messages.append(_with_line(line, f"{dotted(path)}: {error}"))
    return messages


def normalize_text(text: str | None) -> str:
    """Return ``text`` with the CR LF line breaks of form posts turned into LF, and stripped."""
    return (text or "").replace("\r\n", "\n").strip()


def load_base(text: str) -> dict[str, Any]:
    """Load the base text without validation, because only its values are compared."""
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    return _plain(data) if isinstance(data, dict) else {}


def _plain(value: Any) -> Any:
    # The same clean-up as parse_robot_code: null drops out, dates become ISO 8601 text.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def form_field(form: Any, name: str) -> Field:
    """Return the field called ``name``. A name such as "store_success-host" is a store field."""
    section, _, sub_name = name.partition("-")
    if sub_name:
        return form[section].form[sub_name]
    return form[name]


def set_field_value(target: Field, value: Any) -> None:
    """Set a field as if the browser had sent ``value``, dropping its own parse error."""
    target.data = value
    target.raw_data = []
    target.process_errors = []


def dotted(path: Path) -> str:
    """Return ``path`` as Robot Code errors write it, such as "rules.accept_senders[0]"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def _with_line(line: int | None, message: str) -> str:
    return f"Line {line}: {message}" if line is not None else message


def _contains(data: Any, path: Path) -> bool:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _value_at(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


class LineFinder:
    """Find the 1-based line of a value in YAML text, for error messages."""

    def __init__(self, text: str) -> None:
        try:
            # JSON allows tabs between tokens where YAML does not, and spaces mean the same.
            self.root: yaml.Node | None = yaml.compose(text.replace("\t", " "), yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, path: Path) -> int | None:
        node = self.root
        line = None
        for part in path:
            found = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        found = (key, value)
            if found is None:
                return line
            key_node, node = found
            line = key_node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            line = node.start_mark.line + 1
        return line


# Converters from a Robot Code value to form field values --------------------


def _to(name: str) -> Converter:
    def convert(session: Session, value: Any) -> dict[str, Any]:
        return {name: value}

    return convert


def _to_both(name: str, other_name: str) -> Converter:
    def convert(session: Session, value: Any) -> dict[str, Any]:
        return {name: value, other_name: value}

    return convert


def _example(session: Session, column: Any) -> str:
    first = session.scalar(sa.select(column).order_by(column).limit(1))
    return f", such as {first!r}" if first is not None else ""


def _client(session: Session, value: Any) -> dict[str, Any]:
    client_id = session.scalar(sa.select(Client.id).where(Client.name == value))
    if client_id is None:
        raise LookupError(
            f"{value!r} is not a client in Mailroom. Write a client's name exactly as the "
            f"Client list shows it{_example(session, Client.name)}."
        )
    return {"client": str(client_id)}


def _person(session: Session, value: Any) -> dict[str, Any]:
    user_id = session.scalar(sa.select(User.id).where(sa.func.lower(User.email) == value.lower()))
    if user_id is None:
        raise LookupError(
            f"{value!r} is not a Mailroom user. Write the login address of a user, or choose "
            "Nobody in the form and remove the line."
        )
    return {"person_responsible": str(user_id)}


def _language_id(session: Session, code: str) -> str:
    language_id = session.scalar(
        sa.select(Language.id).where(sa.func.lower(Language.code) == code.lower())
    )
    if language_id is None:
        raise LookupError(
            f"{code!r} is not a language in Mailroom. Write a code from the language lists, "
            "such as en or de."
        )
    return str(language_id)


def _source_language(session: Session, value: Any) -> dict[str, Any]:
    return {"source_language": _language_id(session, value)}


def _target_languages(session: Session, value: Any) -> dict[str, Any]:
    return {"target_languages": [_language_id(session, code) for code in value]}


def _named(model: Any, name: str, label: str) -> Converter:
    def convert(session: Session, value: Any) -> dict[str, Any]:
        row_id = session.scalar(sa.select(model.id).where(model.name == value))
        if row_id is None:
            raise LookupError(
                f"{value!r} is not a {label} in Mailroom. Write a name from the {label} "
                f"list{_example(session, model.name)}."
            )
        return {name: str(row_id)}

    return convert


def _process_mail_after(session: Session, value: Any) -> dict[str, Any]:
    # parse_robot_code accepted it as an ISO 8601 date and time with a zone.
    return {"process_mail_after": datetime.fromisoformat(value).astimezone(UTC)}


def _schedule(session: Session, value: Any) -> dict[str, Any]:
    return schedule_field_values(value)


def _leaves() -> Iterator[tuple[Path, Converter]]:
    """List each Robot Code value that a form field holds, with its converter."""
    for key, name in (
        ("name", "name"),
        ("type", "job_kind"),
        ("active", "active"),
        ("budget_code", "budget_code"),
        ("files_aggregation", "aggregation"),
    ):
        yield (key,), _to(name)

    yield ("client",), _client
    yield ("person_responsible",), _person
    yield ("source_language",), _source_language
    yield ("target_languages",), _target_languages
    yield ("service",), _named(Service, "service", "service")
    yield ("specialization",), _named(Specialization, "specialization", "specialization")

    for key, name in (
        ("location", "files_location"),
        ("authorization", "auth_method"),
        ("provider", "provider"),
        ("use_ssl", "use_ssl"),
        ("after_processing", "after_processing"),
        ("move_to", "move_to_folder"),
        ("quarantine_folder", "quarantine_folder"),
    ):
        yield ("source", key), _to(name)
    # The mailbox and the folder, FTP or SFTP source have separate inputs, and the
    # chosen Files location decides which of the two the form checks and saves.
    for key, name, location_name in (
        ("host", "host", "host"),
        ("port", "port", "port"),
        ("username", "username", "username"),
        ("folder", "folder", "path"),
    ):
        yield ("source", key), _to_both(name, f"location_source-{location_name}")
    for key in ("ftp_tls", "known_host_key"):
        yield ("source", key), _to(f"location_source-{key}")
    yield ("source", "process_mail_after"), _process_mail_after

    for key in ("include_inline_images", "unpack_zip", "max_attempts"):
        yield ("options", key), _to(key)

    for event in EVENTS:
        for recipient in RECIPIENTS:
            yield ("notifications", event, recipient), _to(notify_field_name(event, recipient))

    for section, prefix in (
        ("store_on_success", "store_success"),
        ("store_on_error", "store_error"),
    ):
        for key in ("location", "path", "host", "port", "username", "ftp_tls", "known_host_key"):
            yield (section, key), _to(f"{prefix}-{key}")

    # The two forms of a schedule exclude each other, so it is compared as a whole.
    yield ("schedule",), _schedule


_LEAVES = list(_leaves())
