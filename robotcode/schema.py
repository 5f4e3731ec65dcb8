"""Robot Code: a connector's whole definition as a YAML document.

ROBOT_CODE_SCHEMA is the JSON Schema (draft 2020-12) of the document.
parse_robot_code loads and validates a document and reports each error with its
line, and dump_robot_code writes data back as YAML in a fixed key order.

Robot Code contains no secrets. Passwords, client secrets and keys are set in
the connector form only, and a document that contains one is rejected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from intake.schedules import MAX_EVERY_MINUTES, WEEKDAYS, ScheduleError, parse_schedule

from .templates import check_template

MAX_TEXT_CHARS = 100_000
"""Maximum length of Robot Code text. A full definition with every section is
about 2,000 characters."""

MAX_NODES = 10_000
"""Maximum number of values in a document, counting each use of a YAML alias
again, so that a few nested aliases cannot expand into millions of values."""

REGEX_FIELDS = ("accept_senders", "skip_senders", "accept_subjects", "skip_subjects")
EVENTS = (
    "project_created",
    "quote_created",
    "processing_error",
    "token_needs_consent",
    "connector_recovered",
)

# Unknown keys with these names are reported as secrets, not as unknown keys.
_SECRET_KEY = re.compile(
    r"(.*[_-])?(password|passwd|passphrase|secret|token|key|api_?key|credentials?)",
    re.IGNORECASE,
)


# The start of a pattern for an IMAP folder name without an empty level: no "//"
# and no "/" at either end, which servers such as Dovecot reject.
_NO_EMPTY_FOLDER_LEVEL = r"^(?!/)(?!.*//)(?!.*/$)"


def _forbidden() -> dict[str, Any]:
    """Return a subschema that no value passes, for a key not allowed in a ``then``."""
    return {"not": {}}


def _server_only_settings() -> list[dict[str, Any]]:
    """Return the rules that keep ``ftp_tls`` to FTP and ``known_host_key`` to SFTP."""
    return [
        {
            "if": {
                "properties": {"location": {"not": {"const": "ftp"}}},
                "required": ["location"],
            },
            "then": {"properties": {"ftp_tls": _forbidden()}},
        },
        {
            "if": {
                "properties": {"location": {"not": {"const": "sftp"}}},
                "required": ["location"],
            },
            "then": {"properties": {"known_host_key": _forbidden()}},
        },
    ]


def _string_list(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "default": [],
        "description": description,
    }


# "errorMessage" is a keyword of this schema, not of JSON Schema: a message, or a
# mapping from keyword to message, that replaces the validator's own. "{value}"
# stands for the offending value. Validators that do not know the keyword ignore it.
ROBOT_CODE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Robot Code",
    "description": "A Mailroom connector's definition. Secrets are set in the form only.",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "client"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "type": {"enum": ["project", "quote"], "default": "project"},
        "active": {"type": "boolean", "default": True},
        "client": {"type": "string", "minLength": 1, "description": "Client name."},
        "budget_code": {"type": "string", "minLength": 1, "maxLength": 64},
        "person_responsible": {
            "type": "string",
            "pattern": r"^[^@\s]+@[^@\s]+$",
            "description": "E-mail address of a Mailroom user.",
            "errorMessage": "{value} is not an e-mail address. "
            "Write the user's login address, such as maria.lopez@example.com.",
        },
        "source_language": {"$ref": "#/$defs/language"},
        "target_languages": {
            "type": "array",
            "items": {"$ref": "#/$defs/language"},
            "uniqueItems": True,
            "default": [],
        },
        "service": {"type": "string", "minLength": 1, "description": "Service name."},
        "specialization": {"type": "string", "minLength": 1},
        "files_aggregation": {
            "enum": ["separately", "per_email", "batch"],
            "default": "separately",
            "description": "One job per file, per e-mail, or for all files of one scan.",
        },
        "source": {"$ref": "#/$defs/source"},
        "store_on_success": {"$ref": "#/$defs/storage"},
        "store_on_error": {"$ref": "#/$defs/storage"},
        "schedule": {"$ref": "#/$defs/schedule"},
        "notifications": {
            "type": "object",
            "additionalProperties": False,
            "properties": {event: {"$ref": "#/$defs/recipients"} for event in EVENTS},
        },
        "rules": {"$ref": "#/$defs/rules"},
        "options": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "include_inline_images": {"type": "boolean", "default": False},
                "unpack_zip": {"type": "boolean", "default": False},
                "max_attempts": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 20,
                    "default": 3,
                    "description": "Attempts at one message before it is reported as failed.",
                },
            },
        },
    },
    "$defs": {
        "language": {
            "type": "string",
            "pattern": r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
            "errorMessage": "{value} is not a language code. Write an ISO 639 code such "
            "as en or pt-BR, and quote no, yes, on and off, which YAML reads as booleans.",
        },
        "host": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": r"^[A-Za-z0-9._:\[\]-]+$",
            "errorMessage": "{value} is not a host name. Write only the name or IP "
            "address, without a scheme, user name or password.",
        },
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "ftp_tls": {
            "type": "boolean",
            "default": False,
            "description": "FTP only: use explicit TLS (FTPS).",
        },
        "known_host_key": {
            "type": "string",
            "minLength": 1,
            "description": "SFTP only: the server's public key as one known_hosts line, "
            "such as the output of ssh-keyscan.",
        },
        "source": {
            "type": "object",
            "additionalProperties": False,
            "required": ["location"],
            "description": "Where input files come from.",
            "properties": {
                "location": {"enum": ["email", "folder", "ftp", "sftp"]},
                "authorization": {"enum": ["oauth2", "password"], "default": "oauth2"},
                "provider": {"type": "string", "minLength": 1},
                "host": {"$ref": "#/$defs/host"},
                "port": {"$ref": "#/$defs/port"},
                "use_ssl": {"type": "boolean", "default": True},
                "username": {"type": "string", "minLength": 1, "maxLength": 254},
                "folder": {
                    "type": "string",
                    "minLength": 1,
                    "description": "IMAP folder, or the path for folder, ftp and sftp.",
                },
                "after_processing": {
                    "enum": ["delete", "move", "mark_seen"],
                    "default": "delete",
                },
                "move_to": {
                    "type": "string",
                    "minLength": 1,
                    "pattern": _NO_EMPTY_FOLDER_LEVEL + r".*$",
                    "errorMessage": {
                        "pattern": "{value} is not a folder name for processed e-mails. "
                        'Write the IMAP folder name without "//" and without "/" at the '
                        "start or end, such as INBOX/Processed."
                    },
                },
                "quarantine_folder": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    # Printable ASCII without the LIST wildcards % and *, and no empty level.
                    "pattern": _NO_EMPTY_FOLDER_LEVEL + r"[ !-$&-)+-~]*$",
                    "description": "IMAP folder that a quarantined e-mail moves to; "
                    "created if missing. Left out, it stays in the scanned folder.",
                    "errorMessage": {
                        "pattern": "{value} is not a folder name for quarantined e-mails. "
                        "Write an IMAP folder name in ASCII letters, digits and punctuation "
                        'other than * and %, without "//" and without "/" at the start or '
                        "end, such as Mailroom/Errors."
                    },
                },
                "process_mail_after": {
                    "type": "string",
                    "format": "date-time",
                    "description": "Mail older than this is ignored on first activation.",
                },
                "ftp_tls": {"$ref": "#/$defs/ftp_tls"},
                "known_host_key": {"$ref": "#/$defs/known_host_key"},
            },
            "allOf": [
                {
                    "if": {
                        "properties": {"location": {"const": "email"}},
                        "required": ["location"],
                    },
                    "then": {"required": ["host", "username"]},
                },
                {
                    "if": {
                        "properties": {
                            "location": {"const": "email"},
                            "authorization": {"const": "oauth2"},
                        },
                        "required": ["location"],
                    },
                    "then": {"required": ["provider"]},
                },
                {
                    "if": {
                        "properties": {"authorization": {"const": "password"}},
                        "required": ["authorization"],
                    },
                    "then": {"properties": {"provider": _forbidden()}},
                },
                {
                    "if": {
                        "properties": {"location": {"enum": ["folder", "ftp", "sftp"]}},
                        "required": ["location"],
                    },
                    "then": {
                        "required": ["folder"],
                        "properties": {
                            "authorization": _forbidden(),
                            "provider": _forbidden(),
                            "after_processing": _forbidden(),
                            "move_to": _forbidden(),
                            "quarantine_folder": _forbidden(),
                            "process_mail_after": _forbidden(),
                        },
                    },
                },
                {
                    "if": {
                        "properties": {"location": {"enum": ["ftp", "sftp"]}},
                        "required": ["location"],
                    },
                    "then": {"required": ["host", "username"]},
                },
                {
                    "if": {
                        "properties": {"location": {"const": "folder"}},
                        "required": ["location"],
                    },
                    "then": {
                        "properties": {
                            "host": _forbidden(),
                            "port": _forbidden(),
                            "use_ssl": _forbidden(),
                            "username": _forbidden(),
                        },
                    },
                },
                *_server_only_settings(),
                {
                    "if": {
                        "properties": {"after_processing": {"const": "move"}},
                        "required": ["after_processing"],
                    },
                    "then": {"required": ["move_to"]},
                },
                {
                    "if": {
                        "properties": {"after_processing": {"enum": ["delete", "mark_seen"]}},
                        "required": ["after_processing"],
                    },
                    "then": {"properties": {"move_to": _forbidden()}},
                },
            ],
        },
        "storage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["location"],
            "description": "Where a job's files are copied after processing.",
            "properties": {
                "location": {"enum": ["none", "folder", "ftp", "sftp"]},
                "path": {"type": "string", "minLength": 1},
                "host": {"$ref": "#/$defs/host"},
                "port": {"$ref": "#/$defs/port"},
                "username": {"type": "string", "minLength": 1, "maxLength": 254},
                "ftp_tls": {"$ref": "#/$defs/ftp_tls"},
                "known_host_key": {"$ref": "#/$defs/known_host_key"},
            },
            "allOf": [
                {
                    "if": {
                        "properties": {"location": {"enum": ["folder", "ftp", "sftp"]}},
                        "required": ["location"],
                    },
                    "then": {"required": ["path"]},
                },
                *_server_only_settings(),
                {
                    "if": {
                        "properties": {"location": {"enum": ["ftp", "sftp"]}},
                        "required": ["location"],
                    },
                    "then": {"required": ["host", "username"]},
                },
                {
                    "if": {
                        "properties": {"location": {"enum": ["none", "folder"]}},
                        "required": ["location"],
                    },
                    "then": {
                        "properties": {
                            "host": _forbidden(),
                            "port": _forbidden(),
                            "username": _forbidden(),
                        },
                    },
                },
                {
                    "if": {"properties": {"location": {"const": "none"}}, "required": ["location"]},
                    "then": {"properties": {"path": _forbidden()}},
                },
            ],
        },
        "schedule": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "every_minutes": {"type": "integer", "minimum": 1, "maximum": MAX_EVERY_MINUTES},
                "days": {
                    "type": "array",
                    "items": {"enum": list(WEEKDAYS)},
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "times": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                        "errorMessage": "{value} is not a time of day. Write it in quotes "
                        'as "HH:MM", from 00:00 to 23:59, because YAML reads an unquoted '
                        "12:30 as a number.",
                    },
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "timezone": {
                    "type": "string",
                    "minLength": 1,
                    "default": "UTC",
                    "description": "IANA time zone of days and times, such as Europe/Prague.",
                },
            },
            "oneOf": [
                {
                    "required": ["every_minutes"],
                    "not": {
                        "anyOf": [
                            {"required": ["days"]},
                            {"required": ["times"]},
                            {"required": ["timezone"]},
                        ]
                    },
                },
                {"required": ["days", "times"], "not": {"required": ["every_minutes"]}},
            ],
            "errorMessage": {
                "oneOf": "set either every_minutes, or days and times with an optional timezone"
            },
        },
        "recipients": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "person_responsible": {"type": "boolean"},
                "client_contact": {"type": "boolean"},
            },
        },
        "rules": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "accept_senders": _string_list(
                    "Regular expressions for the sender's address. Empty accepts all."
                ),
                "skip_senders": _string_list("Regular expressions for the sender's address."),
                "accept_subjects": _string_list(
                    "Regular expressions for the subject. Empty accepts all."
                ),
                "skip_subjects": _string_list("Regular expressions for the subject."),
                "include_files": _string_list(
                    "Shell-style file name patterns, ignoring case. Empty includes all."
                ),
                "exclude_files": _string_list("Shell-style file name patterns, ignoring case."),
                "job_name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 2000,
                    "description": "Jinja template with subject, sender, file_name, files, "
                    "connector and date.",
                },
                "deadline_days": {"type": "integer", "minimum": 1, "maximum": 365},
                "deadline_hours": {"type": "integer", "minimum": 1, "maximum": 8760},
                "notes": {"type": "string", "maxLength": 10_000},
            },
            "not": {"required": ["deadline_days", "deadline_hours"]},
            "errorMessage": {"not": "set deadline_days or deadline_hours, but not both"},
        },
    },
}

_VALIDATOR = Draft202012Validator(ROBOT_CODE_SCHEMA)

LineError = tuple[int | None, str]
"""An error as (1-based line, message). The line is None for the whole document."""


class RobotCodeError(ValueError):
    """Invalid Robot Code. ``errors`` lists every error found as (line, message)."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        super().__init__(
            "\n".join(
                message if line is None else f"line {line}: {message}" for line, message in errors
            )
        )

    def __reduce__(self) -> tuple[type[RobotCodeError], tuple[list[LineError]]]:
        # Pickle, as Celery does with task errors, from errors instead of the joined text.
        return type(self), (self.errors,)


def parse_robot_code(text: str) -> dict[str, Any]:
    """Load Robot Code from YAML or JSON text, validate it and return the data.

    A key with an empty or null value counts as not set and is left out of the
    result. YAML dates and times become ISO 8601 strings. Loading uses only
    PyYAML's SafeLoader or json.loads, and checking uses re.compile and a Jinja
    sandbox, so nothing in the text is executed.

    Raises RobotCodeError with every error found, each with its line where known.
    """
    if len(text) > MAX_TEXT_CHARS:
        message = f"the text has {len(text)} characters, more than the maximum of {MAX_TEXT_CHARS}"
        raise RobotCodeError([(None, message)])
    data, root = _load(text)
    if data is None:
        raise RobotCodeError([(None, "the Robot Code is empty. Write at least name and client.")])
    if not isinstance(data, dict):
        message = (
            "the Robot Code must be a mapping of keys such as name and client, "
            f"not a {type(data).__name__}"
        )
        line = root.start_mark.line + 1 if root is not None else None
        raise RobotCodeError([(line, message)])

    data = _normalize(data)
    errors = _duplicate_keys(root)
    schema_errors = list(_VALIDATOR.iter_errors(data))
    for error in schema_errors:
        errors.extend(_explain(error, root))
    errors.extend(_check_values(data, root, schema_errors))
    if errors:
        raise RobotCodeError(_sorted_unique(errors))
    return data


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    """Return the data and the YAML node tree, which maps data paths to lines.

    Text that starts with "{" is tried as JSON first, because JSON allows tabs
    where YAML does not. The node tree is None when YAML cannot read the JSON text.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            try:
                # Valid JSON has tabs only between tokens, where spaces mean the same.
                root = yaml.compose(text.replace("\t", " "), Loader=yaml.SafeLoader)
            except (yaml.YAMLError, RecursionError):
                root = None
            _check_size(root)
            return data, root

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(root)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        problem = error.problem or error.context or "unreadable"
        raise RobotCodeError([(line, f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as error:
        raise RobotCodeError([(None, f"invalid YAML: {error}")]) from None
    except RecursionError:
        raise RobotCodeError([(None, "invalid YAML: the values are nested too deeply")]) from None
    return data, root


def _check_size(root: yaml.Node | None) -> None:
    count = 0
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            message = (
                f"the Robot Code has more than {MAX_NODES} values, counting each use of an "
                "alias. Write the values out without anchors and aliases."
            )
            raise RobotCodeError([(None, message)])
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _normalize(value: Any) -> Any:
    """Drop null values and turn YAML dates and times into ISO 8601 strings."""
    if isinstance(value, dict):
        return {key: _normalize(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


# Paths and lines


def _dotted(path: Any) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _with_path(path: Any, message: str) -> str:
    dotted = _dotted(path)
    return f"{dotted}: {message}" if dotted else message


def _locate(root: yaml.Node | None, path: Any) -> tuple[yaml.Node | None, yaml.Node | None, bool]:
    """Follow ``path`` through the node tree and return (key node, value node, complete).

    When the path leaves the tree, as for a missing key, the last nodes reached are
    returned with complete set to False.
    """
    key_node: yaml.Node | None = None
    node = root
    for part in path:
        found: tuple[yaml.Node | None, yaml.Node] | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                # The last of duplicate keys wins, as in yaml.safe_load.
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    found = (key, value)
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            found = (None, node.value[part])
        if found is None:
            return key_node, node, False
        key_node, node = found
    return key_node, node, True


def _line(root: yaml.Node | None, path: Any, *, of_key: bool = False) -> int | None:
    """Return the 1-based line of the value at ``path``, or of its key.

    A scalar reports its own line. A mapping or list reports the line of its key,
    where a reader looks for it. The document itself has no line.
    """
    if root is None or not list(path):
        return None
    key_node, node, complete = _locate(root, path)
    if node is None:
        return None
    if complete and not of_key and isinstance(node, yaml.ScalarNode):
        return node.start_mark.line + 1
    if key_node is not None:
        return key_node.start_mark.line + 1
    return node.start_mark.line + 1


def _duplicate_keys(root: yaml.Node | None) -> list[LineError]:
    errors: list[LineError] = []
    stack = [root] if root is not None else []
    seen_nodes: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            names: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in names:
                        message = (
                            f"duplicate key {key.value!r}. Remove one of them, because "
                            "the later one would replace the earlier."
                        )
                        errors.append((key.start_mark.line + 1, message))
                    names.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return errors


# Schema errors


def _explain(error: ValidationError, root: yaml.Node | None) -> Iterator[LineError]:
    """Turn one schema error into messages with lines."""
    path = list(error.absolute_path)

    if error.validator == "additionalProperties":
        allowed = error.schema.get("properties", {})
        for key in error.instance:
            if key in allowed:
                continue
            line = _line(root, [*path, key], of_key=True)
            if isinstance(key, str) and _SECRET_KEY.fullmatch(key):
                yield (
                    line,
                    _with_path(
                        [*path, key],
                        "secrets do not belong in Robot Code. Remove the line and set "
                        "the secret in the connector form.",
                    ),
                )
            else:
                yield (
                    line,
                    _with_path([*path, key], f"unknown key. Use one of {', '.join(allowed)}."),
                )
        return

    yield _line(root, path), _with_path(path, _message(error))


def _message(error: ValidationError) -> str:
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if isinstance(custom, dict):
        custom = custom.get(str(error.validator))
    if isinstance(custom, str):
        return custom.replace("{value}", _short_repr(error.instance))

    condition = _condition(error)
    if _is_forbidden(error):
        if condition:
            return f"is not used when {condition}. Remove it."
        return "is not allowed here. Remove it."
    if error.validator == "maxLength":
        return f"is longer than the maximum of {error.validator_value} characters"
    message = error.message
    if len(message) > 300:
        message = message[:297] + "..."
    if condition and error.validator == "required":
        return f"{message} when {condition}"
    return message


def _is_forbidden(error: ValidationError) -> bool:
    return error.validator == "not" and error.validator_value == {}


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _condition(error: ValidationError) -> str | None:
    """Describe the ``if`` of the ``then`` that raised ``error``, such as "location is ftp"."""
    node: Any = ROBOT_CODE_SCHEMA
    branch = None
    try:
        for part in error.schema_path:
            # jsonschema leaves "$ref" out of schema_path, so follow references here.
            while isinstance(node, dict) and "$ref" in node and part not in node:
                node = ROBOT_CODE_SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            if part == "then":
                branch = node
            node = node[part]
    except (KeyError, IndexError, TypeError):
        return None
    if branch is None:
        return None

    parts = []
    for name, rule in branch.get("if", {}).get("properties", {}).items():
        if "const" in rule:
            parts.append(f"{name} is {rule['const']}")
        elif "enum" in rule:
            parts.append(f"{name} is {_join_or(rule['enum'])}")
    return " and ".join(parts) or None


def _join_or(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} or {items[-1]}"


# Checks beyond the schema


def _check_values(
    data: dict[str, Any], root: yaml.Node | None, schema_errors: list[ValidationError]
) -> list[LineError]:
    """Check what JSON Schema cannot: regular expressions, templates, dates, time zones.

    Each check skips values of the wrong type, which the schema already reports.
    """
    problems: list[LineError] = []
    rules = data.get("rules")
    if isinstance(rules, dict):
        problems.extend(_check_patterns(rules, root))
        template = rules.get("job_name")
        if isinstance(template, str):
            line = _line(root, ["rules", "job_name"])
            problems.extend((line, f"rules.job_name: {text}") for text in check_template(template))

    source = data.get("source")
    if isinstance(source, dict) and isinstance(source.get("process_mail_after"), str):
        value = source["process_mail_after"]
        if not _is_aware_datetime(value):
            message = (
                f"source.process_mail_after: {value!r} is not a date and time with a time "
                "zone. Write it as 2026-12-01T00:00:00Z."
            )
            problems.append((_line(root, ["source", "process_mail_after"]), message))

    # parse_schedule repeats some schema checks, so it runs only on a schedule the
    # schema accepted, and each mistake is reported once.
    schedule = data.get("schedule")
    schedule_errors = [e for e in schema_errors if list(e.absolute_path)[:1] == ["schedule"]]
    if isinstance(schedule, dict) and not schedule_errors:
        try:
            parse_schedule(schedule)
        except ScheduleError as error:
            problems.append((_line(root, error.field.split(".")), str(error)))
    return problems


def _check_patterns(rules: dict[str, Any], root: yaml.Node | None) -> list[LineError]:
    problems: list[LineError] = []
    for field in REGEX_FIELDS:
        patterns = rules.get(field)
        if not isinstance(patterns, list):
            continue
        for index, pattern in enumerate(patterns):
            if not isinstance(pattern, str):
                continue
            try:
                re.compile(pattern)
            except re.error as error:
                position = "" if error.pos is None else f" at position {error.pos}"
                message = (
                    f"rules.{field}[{index}]: {pattern!r} is not a valid regular expression: "
                    f"{error.msg}{position}"
                )
                problems.append((_line(root, ["rules", field, index]), message))
    return problems


def _is_aware_datetime(text: str) -> bool:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.tzinfo is not None


def _sorted_unique(errors: list[LineError]) -> list[LineError]:
    unique = list(dict.fromkeys(errors))
    # Errors about the whole document come first, the rest in line order.
    return sorted(unique, key=lambda error: -1 if error[0] is None else error[0])


# Writing


class _Dumper(yaml.SafeDumper):
    """A SafeDumper that writes short lists inline and multi-line text as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    scalars = all(isinstance(item, str | int | float | bool) for item in value)
    inline = scalars and sum(len(str(item)) + 2 for item in value) <= 60
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=inline)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def dump_robot_code(data: dict[str, Any]) -> str:
    """Write Robot Code data as YAML that parse_robot_code reads back to the same data.

    Keys follow the order of ROBOT_CODE_SCHEMA, with unknown keys after them, so the
    same definition always gives the same text. Null values are left out.
    """
    ordered = _ordered(data, ROBOT_CODE_SCHEMA)
    return yaml.dump(
        ordered,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=4096,
    )


def _ordered(value: Any, schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = ROBOT_CODE_SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict):
        properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
        keys = [key for key in properties if key in value]
        keys += [key for key in value if key not in properties]
        return {
            key: _ordered(value[key], properties.get(key)) for key in keys if value[key] is not None
        }
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema, dict) else None
        return [_ordered(item, items) for item in value]
    return value
