"""Field classes and checks shared by the parts of the Smart Connector form."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from wtforms import Field, IntegerField, SelectChoice, StringField, TextAreaField
from wtforms.validators import ValidationError

# A DNS name of letters, digits, dots and hyphens. IP addresses are checked with ipaddress.
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

# The formats a datetime-local input sends, with and without seconds, and a space
# instead of the "T" for people who type the value without such an input.
_LOCAL_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M")


def strip_text(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class WholeNumberField(IntegerField):
    """An integer input whose parse error names the typed text.

    ``invalid_message`` is formatted with ``value``. An empty input gives
    ``None``, so the field's own validator can report the missing value. A
    field left out of the request keeps its default, so a client that posts
    only the older fields does not get errors for the newer ones.
    """

    def __init__(self, *args: Any, invalid_message: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invalid_message = invalid_message

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist:
            return
        raw = str(valuelist[0]).strip()
        if not raw:
            self.data = None
            return
        try:
            self.data = int(raw)
        except ValueError:
            self.data = None
            raise ValueError(self.invalid_message.format(value=raw)) from None


class UtcDateTimeField(StringField):
    """A datetime-local input read as UTC, giving an aware datetime or None when empty.

    ``invalid_message`` is formatted with ``value``.
    """

    def __init__(self, *args: Any, invalid_message: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invalid_message = invalid_message

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist:
            return
        raw = str(valuelist[0]).strip()
        if not raw:
            self.data = None
            return
        for pattern in _LOCAL_DATETIME_FORMATS:
            try:
                self.data = datetime.strptime(raw, pattern).replace(tzinfo=UTC)
            except ValueError:
                continue
            return
        self.data = None
        raise ValueError(self.invalid_message.format(value=raw))

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        if isinstance(self.data, datetime):
            return self.data.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        return ""


class WriteOnlyTextAreaField(TextAreaField):
    """A text area for a secret, such as a private key, that never shows its value."""

    def _value(self) -> str:
        return ""


def require_choice(field: Field, choices: list[SelectChoice]) -> None:
    names = [choice.label for choice in choices]
    labels = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    if not field.data:
        raise ValidationError(f"{field.label.text} is missing; choose {labels}.")
    if field.data not in {choice.value for choice in choices}:
        raise ValidationError(f'{field.label.text} "{field.data}" is not valid; choose {labels}.')


def add_error(field: Field, message: str) -> None:
    # Field.errors is a tuple until the field was validated, a list afterwards.
    field.errors = [*field.errors, message]


def get_by_id(session: Session, model: Any, raw: str) -> Any:
    # Longer digit strings would overflow a 64-bit integer column.
    if not raw.isdigit() or len(raw) > 18:
        return None
    return session.get(model, int(raw))


def id_text(value: int | None) -> str:
    return "" if value is None else str(value)


def is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.match(host)) and ".." not in host
    return True
