"""Robot Code: parsing with line-numbered errors, writing, and the intake rules."""

from __future__ import annotations

import json
import logging
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator

from extraction.models import MessageInfo
from robotcode import (
    ROBOT_CODE_SCHEMA,
    RobotCodeError,
    deadline,
    dump_robot_code,
    file_accepted,
    job_name,
    message_accepted,
    parse_robot_code,
    render_job_name,
)
from robotcode.schema import MAX_NODES, MAX_TEXT_CHARS

EXAMPLE = """\
name: Northwind intake
type: project
active: true
client: Northwind Pharma GmbH
budget_code: NWP-2026
person_responsible: maria.lopez@example.com
source_language: en
target_languages: [de, cs]
service: Translation
specialization: Pharmaceutical
files_aggregation: separately
source:
  location: email
  authorization: oauth2
  provider: google
  host: imap.gmail.com
  port: 993
  use_ssl: true
  username: intake@example.com
  folder: INBOX
  after_processing: move
  move_to: Processed
  process_mail_after: 2026-12-01T00:00:00Z
store_on_success: {location: folder, path: /srv/mailroom/done}
store_on_error: {location: sftp, path: /errors, host: files.example.com, port: 22, username: nw}
schedule:
  days: [mon, tue, wed, thu, fri]
  times: ["08:00", "12:30"]
  timezone: Europe/Prague
notifications:
  project_created: {person_responsible: true, client_contact: false}
  quote_created: {person_responsible: true}
  processing_error: {person_responsible: true, client_contact: false}
  token_needs_consent: {person_responsible: true}
  connector_recovered: {person_responsible: false}
rules:
  accept_senders: ["@northwind\\\\.example\\\\.com$"]
  skip_senders: []
  accept_subjects: []
  skip_subjects: ["(?i)^out of office"]
  include_files: ["*.docx", "*.pdf"]
  exclude_files: ["*.p7s", "image0*.png"]
  job_name: "{{ subject }} – {{ file_name }}"
  deadline_days: 5
  notes: |
    Check terminology against the NWP glossary.
    Ask Maria before using a new term.
options: {include_inline_images: false, unpack_zip: false, max_attempts: 3}
"""

HEADER = "name: Northwind intake\nclient: Northwind Pharma GmbH\n"


def parse_errors(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(RobotCodeError) as caught:
        parse_robot_code(text)
    return caught.value.errors


# Schema and successful parsing


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(ROBOT_CODE_SCHEMA)

    assert ROBOT_CODE_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_parse_full_example() -> None:
    data = parse_robot_code(EXAMPLE)

    assert data["name"] == "Northwind intake"
    assert data["target_languages"] == ["de", "cs"]
    assert data["source"]["process_mail_after"] == "2026-12-01T00:00:00+00:00"
    assert data["schedule"]["times"] == ["08:00", "12:30"]
    assert data["rules"]["accept_senders"] == ["@northwind\\.example\\.com$"]
    assert data["rules"]["job_name"] == "{{ subject }} – {{ file_name }}"
    assert data["rules"]["notes"].startswith("Check terminology")
    assert data["options"]["max_attempts"] == 3


def test_parse_minimal_document() -> None:
    assert parse_robot_code(HEADER) == {
        "name": "Northwind intake",
        "client": "Northwind Pharma GmbH",
    }


def test_parse_drops_null_values() -> None:
    data = parse_robot_code(HEADER + "budget_code:\nrules:\nsource_language: null\n")

    assert data == {"name": "Northwind intake", "client": "Northwind Pharma GmbH"}


def test_parse_accepts_json() -> None:
    text = json.dumps(
        {
            "name": "Northwind intake",
            "client": "Northwind Pharma GmbH",
            "schedule": {"every_minutes": 10},
        },
        indent="\t",
    )

    data = parse_robot_code(text)

    assert data["schedule"] == {"every_minutes": 10}


def test_parse_json_errors_have_lines() -> None:
    text = '{\n\t"name": "Northwind intake",\n\t"client": 3\n}'

    assert parse_errors(text) == [(3, "client: 3 is not of type 'string'")]


def test_parse_flow_mapping_that_is_not_json() -> None:
    data = parse_robot_code("{name: Northwind intake, client: Northwind Pharma GmbH}")

    assert data["client"] == "Northwind Pharma GmbH"


def test_parse_email_source_defaults_to_oauth2() -> None:
    text = HEADER + "source:\n  location: email\n  host: imap.example.com\n  username: u\n"

    assert parse_errors(text) == [
        (
            3,
            "source: 'provider' is a required property "
            "when location is email and authorization is oauth2",
        )
    ]


def test_parse_password_source_needs_no_provider() -> None:
    text = HEADER + (
        "source:\n"
        "  location: email\n"
        "  authorization: password\n"
        "  host: imap.example.com\n"
        "  username: u\n"
    )

    assert parse_robot_code(text)["source"]["authorization"] == "password"


def test_parse_folder_source() -> None:
    text = HEADER + "source: {location: folder, folder: /srv/mailroom/incoming}\n"

    assert parse_robot_code(text)["source"]["folder"] == "/srv/mailroom/incoming"


# Errors with lines


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            HEADER + "schedule:\n  every_minutes: 0\n",
            [(4, "schedule.every_minutes: 0 is less than the minimum of 1")],
        ),
        (
            HEADER + "schedule:\n  every_minutes: 10081\n",
            [(4, "schedule.every_minutes: 10081 is greater than the maximum of 10080")],
        ),
        (
            "name: Northwind intake\n",
            [(None, "'client' is a required property")],
        ),
        (
            HEADER + "type: weekly\n",
            [(3, "type: 'weekly' is not one of ['project', 'quote']")],
        ),
        (
            HEADER + "active: maybe\n",
            [(3, "active: 'maybe' is not of type 'boolean'")],
        ),
        (
            HEADER + "files_aggregation: per_mail\n",
            [
                (
                    3,
                    "files_aggregation: 'per_mail' is not one of "
                    "['separately', 'per_email', 'batch']",
                )
            ],
        ),
        (
            HEADER + "colour: blue\n",
            [
                (
                    3,
                    "colour: unknown key. Use one of name, type, active, client, budget_code, "
                    "person_responsible, source_language, target_languages, service, "
                    "specialization, files_aggregation, source, store_on_success, "
                    "store_on_error, schedule, notifications, rules, options.",
                )
            ],
        ),
        (
            HEADER + "options:\n  unpack_zip: true\n  max_attempts: 0\n",
            [(5, "options.max_attempts: 0 is less than the minimum of 1")],
        ),
        (
            HEADER + "person_responsible: maria\n",
            [
                (
                    3,
                    "person_responsible: 'maria' is not an e-mail address. "
                    "Write the user's login address, such as maria.lopez@example.com.",
                )
            ],
        ),
        (
            HEADER + "source_language: no\n",
            [
                (
                    3,
                    "source_language: False is not a language code. Write an ISO 639 code "
                    "such as en or pt-BR, and quote no, yes, on and off, which YAML reads "
                    "as booleans.",
                )
            ],
        ),
        (
            HEADER + "target_languages:\n  - de\n  - German\n",
            [
                (
                    5,
                    "target_languages[1]: 'German' is not a language code. Write an ISO 639 "
                    "code such as en or pt-BR, and quote no, yes, on and off, which YAML "
                    "reads as booleans.",
                )
            ],
        ),
        (
            HEADER + "target_languages: [de, de]\n",
            [(3, "target_languages: ['de', 'de'] has non-unique elements")],
        ),
        (
            HEADER + "notifications:\n  project_created: {person_responsible: yes, sms: true}\n",
            [
                (
                    4,
                    "notifications.project_created.sms: unknown key. "
                    "Use one of person_responsible, client_contact.",
                )
            ],
        ),
        (
            HEADER + "notifications:\n  job_finished: {person_responsible: true}\n",
            [
                (
                    4,
                    "notifications.job_finished: unknown key. Use one of project_created, "
                    "quote_created, processing_error, token_needs_consent, connector_recovered.",
                )
            ],
        ),
        (
            HEADER + "rules:\n  notes: " + "x" * 10_001 + "\n",
            [(4, "rules.notes: is longer than the maximum of 10000 characters")],
        ),
    ],
)
def test_parse_reports_schema_errors(text: str, errors: list) -> None:
    assert parse_errors(text) == errors


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            HEADER
            + "source:\n"
            + "  location: email\n"
            + "  provider: google\n"
            + "  host: imap.example.com\n"
            + "  username: intake@example.com\n"
            + "  after_processing: move\n",
            [(3, "source: 'move_to' is a required property when after_processing is move")],
        ),
        (
            HEADER
            + "source:\n"
            + "  location: email\n"
            + "  authorization: password\n"
            + "  host: imap.example.com\n"
            + "  username: intake@example.com\n"
            + "  after_processing: delete\n"
            + "  move_to: Processed\n",
            [
                (
                    9,
                    "source.move_to: is not used when after_processing is delete or "
                    "mark_seen. Remove it.",
                )
            ],
        ),
        (
            HEADER
            + "source:\n"
            + "  location: email\n"
            + "  authorization: password\n"
            + "  provider: google\n"
            + "  host: imap.example.com\n"
            + "  username: intake@example.com\n",
            [(6, "source.provider: is not used when authorization is password. Remove it.")],
        ),
        (
            HEADER + "source:\n  location: email\n  authorization: password\n",
            [
                (3, "source: 'host' is a required property when location is email"),
                (3, "source: 'username' is a required property when location is email"),
            ],
        ),
        (
            HEADER
            + "source:\n"
            + "  location: ftp\n"
            + "  host: files.example.com\n"
            + "  username: nw\n"
            + "  authorization: oauth2\n",
            [
                (3, "source: 'folder' is a required property when location is folder, ftp or sftp"),
                (
                    7,
                    "source.authorization: is not used when location is folder, ftp or sftp. "
                    "Remove it.",
                ),
            ],
        ),
        (
            HEADER + "source:\n  location: folder\n  folder: /in\n  host: files.example.com\n",
            [(6, "source.host: is not used when location is folder. Remove it.")],
        ),
        (
            HEADER + "source:\n  location: pigeon\n",
            [(4, "source.location: 'pigeon' is not one of ['email', 'folder', 'ftp', 'sftp']")],
        ),
        (
            HEADER + "source:\n  folder: INBOX\n",
            [(3, "source: 'location' is a required property")],
        ),
        (
            HEADER
            + "source:\n"
            + "  location: email\n"
            + "  authorization: password\n"
            + "  host: imaps://intake:secret@imap.example.com\n"
            + "  username: intake@example.com\n",
            [
                (
                    6,
                    "source.host: 'imaps://intake:secret@imap.example.com' is not a host name. "
                    "Write only the name or IP address, without a scheme, user name or "
                    "password.",
                )
            ],
        ),
        (
            HEADER + "source:\n  location: folder\n  folder: /in\n  port: 70000\n",
            [
                (6, "source.port: 70000 is greater than the maximum of 65535"),
                (6, "source.port: is not used when location is folder. Remove it."),
            ],
        ),
        (
            HEADER + "store_on_success:\n  location: sftp\n  path: /done\n",
            [
                (3, "store_on_success: 'host' is a required property when location is ftp or sftp"),
                (
                    3,
                    "store_on_success: 'username' is a required property "
                    "when location is ftp or sftp",
                ),
            ],
        ),
        (
            HEADER + "store_on_error: {location: folder}\n",
            [
                (
                    3,
                    "store_on_error: 'path' is a required property "
                    "when location is folder, ftp or sftp",
                )
            ],
        ),
        (
            HEADER + "store_on_error:\n  location: none\n  path: /errors\n",
            [(5, "store_on_error.path: is not used when location is none. Remove it.")],
        ),
        (
            HEADER
            + "source:\n"
            + "  location: ftp\n"
            + "  host: files.example.com\n"
            + "  username: mailroom\n"
            + "  folder: incoming\n"
            + "  quarantine_folder: Mailroom/Errors\n",
            [
                (
                    8,
                    "source.quarantine_folder: is not used when location is folder, ftp or "
                    "sftp. Remove it.",
                )
            ],
        ),
    ],
)
def test_parse_reports_conditional_errors(text: str, errors: list) -> None:
    assert parse_errors(text) == errors


QUARANTINE_SOURCE = (
    HEADER
    + "source:\n"
    + "  location: email\n"
    + "  authorization: password\n"
    + "  host: imap.example.com\n"
    + "  username: intake@example.com\n"
)
QUARANTINE_FOLDER_HELP = (
    "is not a folder name for quarantined e-mails. Write an IMAP folder name in ASCII "
    'letters, digits and punctuation other than * and %, without "//" and without "/" at '
    "the start or end, such as Mailroom/Errors."
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("'Errors*'", "'Errors*'"),
        ("'50%'", "'50%'"),
        ("Fehler/Übersetzung", "'Fehler/Übersetzung'"),
        ("Mailroom//Errors", "'Mailroom//Errors'"),
        ("/Errors", "'/Errors'"),
        ("Mailroom/", "'Mailroom/'"),
    ],
)
def test_parse_rejects_bad_quarantine_folder(value: str, shown: str) -> None:
    errors = parse_errors(QUARANTINE_SOURCE + f"  quarantine_folder: {value}\n")
    assert errors == [(8, f"source.quarantine_folder: {shown} {QUARANTINE_FOLDER_HELP}")]


@pytest.mark.parametrize("value", ["INBOX//Done", "/Done", "Done/"])
def test_parse_rejects_bad_move_to(value: str) -> None:
    text = QUARANTINE_SOURCE + f"  after_processing: move\n  move_to: {value}\n"
    errors = parse_errors(text)
    assert len(errors) == 1
    assert errors[0][1] == (
        f"source.move_to: {value!r} is not a folder name for processed e-mails. Write the "
        'IMAP folder name without "//" and without "/" at the start or end, such as '
        "INBOX/Processed."
    )


def test_parse_accepts_quarantine_folder() -> None:
    data = parse_robot_code(QUARANTINE_SOURCE + "  quarantine_folder: Mailroom/Errors\n")
    assert data["source"]["quarantine_folder"] == "Mailroom/Errors"
    assert parse_robot_code(dump_robot_code(data)) == data


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            HEADER + 'schedule:\n  days: [mon]\n  times: ["08:00", 12:30]\n',
            [
                (
                    5,
                    'schedule.times[1]: 750 is not a time of day. Write it in quotes as "HH:MM", '
                    "from 00:00 to 23:59, because YAML reads an unquoted 12:30 as a number.",
                )
            ],
        ),
        (
            HEADER + 'schedule:\n  days: [mon]\n  times:\n    - "8:00"\n',
            [
                (
                    6,
                    "schedule.times[0]: '8:00' is not a time of day. Write it in quotes as "
                    '"HH:MM", from 00:00 to 23:59, because YAML reads an unquoted 12:30 as a '
                    "number.",
                )
            ],
        ),
        (
            HEADER + 'schedule:\n  days: [mon]\n  times: ["08:00"]\n  timezone: Europe/Pragu\n',
            [
                (
                    6,
                    "schedule.timezone: 'Europe/Pragu' is not a known time zone. "
                    "Use an IANA name such as Europe/Prague, America/New_York or UTC.",
                )
            ],
        ),
        (
            HEADER + "schedule:\n  every_minutes: 5\n  days: [mon]\n",
            [
                (
                    3,
                    "schedule: set either every_minutes, or days and times with an optional "
                    "timezone",
                )
            ],
        ),
        (
            HEADER + "schedule:\n  timezone: Europe/Prague\n",
            [
                (
                    3,
                    "schedule: set either every_minutes, or days and times with an optional "
                    "timezone",
                )
            ],
        ),
        (
            HEADER + 'schedule:\n  days: [monday]\n  times: ["08:00"]\n',
            [
                (
                    4,
                    "schedule.days[0]: 'monday' is not one of "
                    "['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']",
                )
            ],
        ),
        (
            HEADER + "rules:\n  deadline_days: 2\n  deadline_hours: 4\n",
            [(3, "rules: set deadline_days or deadline_hours, but not both")],
        ),
        (
            HEADER + "rules:\n  deadline_days: 0\n",
            [(4, "rules.deadline_days: 0 is less than the minimum of 1")],
        ),
        (
            HEADER + "source:\n"
            "  location: email\n"
            "  authorization: password\n"
            "  host: imap.example.com\n"
            "  username: u\n"
            "  process_mail_after: 2026-12-01\n",
            [
                (
                    8,
                    "source.process_mail_after: '2026-12-01' is not a date and time with a "
                    "time zone. Write it as 2026-12-01T00:00:00Z.",
                )
            ],
        ),
        (
            HEADER + "source:\n"
            "  location: email\n"
            "  authorization: password\n"
            "  host: imap.example.com\n"
            "  username: u\n"
            "  process_mail_after: 2026-12-01T08:00:00\n",
            [
                (
                    8,
                    "source.process_mail_after: '2026-12-01T08:00:00' is not a date and time "
                    "with a time zone. Write it as 2026-12-01T00:00:00Z.",
                )
            ],
        ),
    ],
)
def test_parse_reports_value_errors(text: str, errors: list) -> None:
    assert parse_errors(text) == errors


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            HEADER
            + "rules:\n"
            + "  skip_subjects:\n"
            + '    - "(?i)^out of office"\n'
            + '    - "(unclosed"\n',
            [
                (
                    6,
                    "rules.skip_subjects[1]: '(unclosed' is not a valid regular expression: "
                    "missing ), unterminated subpattern at position 0",
                )
            ],
        ),
        (
            HEADER + "rules:\n  accept_senders: ['*@example.com']\n",
            [
                (
                    4,
                    "rules.accept_senders[0]: '*@example.com' is not a valid regular "
                    "expression: nothing to repeat at position 0",
                )
            ],
        ),
        (
            HEADER + 'rules:\n  job_name: "{{ subject }"\n',
            [
                (
                    4,
                    "rules.job_name: invalid template: unexpected '}' (template line 1)",
                )
            ],
        ),
        (
            HEADER + 'rules:\n  job_name: "{{ subjet }}"\n',
            [
                (
                    4,
                    "rules.job_name: unknown variable 'subjet'. "
                    "Use subject, sender, file_name, files, connector, date.",
                )
            ],
        ),
        (
            HEADER + "rules:\n  job_name: \"{{ ''.__class__.__mro__ }}\"\n",
            [
                (
                    4,
                    "rules.job_name: '__mro__' is not allowed because templates cannot use "
                    "attributes that start with an underscore",
                ),
                (
                    4,
                    "rules.job_name: '__class__' is not allowed because templates cannot use "
                    "attributes that start with an underscore",
                ),
            ],
        ),
        (
            HEADER + "rules:\n  job_name: \"{{ subject|attr('__class__') }}\"\n",
            [
                (
                    4,
                    "rules.job_name: '__class__' is not allowed because templates cannot use "
                    "attributes that start with an underscore",
                )
            ],
        ),
        (
            HEADER + 'rules:\n  job_name: "{% if subject %}{{ subject|shout }}{% endif %}"\n',
            [(4, "rules.job_name: unknown filter 'shout'")],
        ),
        (
            HEADER
            + "rules:\n  job_name: |\n    {% for f in files %}{{ f }}\n    {% endfor %}\n    "
            + "{{ connector }} {{ date.strftime('%Y') }}\n",
            [],
        ),
    ],
)
def test_parse_checks_patterns_and_templates(text: str, errors: list) -> None:
    if not errors:
        parse_robot_code(text)
        return
    assert parse_errors(text) == errors


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        (HEADER + "source:\n  location: email\n  password: hunter2\n", 5, "source.password"),
        (HEADER + "client_secret: abc\n", 3, "client_secret"),
        (HEADER + "store_on_error:\n  location: sftp\n  private_key: abc\n", 5,
         "store_on_error.private_key"),
        (HEADER + "source:\n  location: ftp\n  api-key: abc\n", 5, "source.api-key"),
        (HEADER + "options:\n  token: abc\n", 4, "options.token"),
    ],
)  # fmt: skip
def test_parse_rejects_secrets(text: str, line: int, path: str) -> None:
    errors = parse_errors(text)

    expected = (
        line,
        f"{path}: secrets do not belong in Robot Code. "
        "Remove the line and set the secret in the connector form.",
    )
    assert expected in errors
    assert not any("unknown key" in message for _, message in errors)


def test_parse_reports_every_error_in_line_order() -> None:
    text = (
        "name: Northwind intake\n"  # 1
        "client: Northwind Pharma GmbH\n"  # 2
        "rules:\n"  # 3
        "  skip_subjects: ['(']\n"  # 4
        "schedule:\n"  # 5
        "  every_minutes: 0\n"  # 6
        "type: weekly\n"  # 7
    )

    error = parse_errors(text)

    assert [line for line, _ in error] == [4, 6, 7]


def test_parse_error_text_lists_lines() -> None:
    with pytest.raises(RobotCodeError) as caught:
        parse_robot_code(HEADER + "schedule:\n  every_minutes: 0\ntype: weekly\n")

    assert str(caught.value) == (
        "line 4: schedule.every_minutes: 0 is less than the minimum of 1\n"
        "line 5: type: 'weekly' is not one of ['project', 'quote']"
    )


def test_parse_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="'client' is a required property"):
        parse_robot_code("name: x\n")


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("", [(None, "the Robot Code is empty. Write at least name and client.")]),
        (
            "# only a comment\n",
            [(None, "the Robot Code is empty. Write at least name and client.")],
        ),
        (
            "- name\n- client\n",
            [(1, "the Robot Code must be a mapping of keys such as name and client, not a list")],
        ),
        (
            "name: [Northwind\nclient: x\n",
            [(2, "invalid YAML: expected ',' or ']', but got ':'")],
        ),
        (
            "name: Northwind\n  client: x\n",
            [(2, "invalid YAML: mapping values are not allowed here")],
        ),
        (
            "name: Northwind\nclient: Northwind Pharma GmbH\nname: Southwind\n",
            [
                (
                    3,
                    "duplicate key 'name'. Remove one of them, because the later one would "
                    "replace the earlier.",
                )
            ],
        ),
        (
            "name: !!python/object/apply:os.system ['true']\nclient: x\n",
            [
                (
                    1,
                    "invalid YAML: could not determine a constructor for the tag "
                    "'tag:yaml.org,2002:python/object/apply:os.system'",
                )
            ],
        ),
    ],
)
def test_parse_rejects_unreadable_documents(text: str, errors: list) -> None:
    assert parse_errors(text) == errors


def test_parse_rejects_alias_expansion() -> None:
    text = (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    )

    assert parse_errors(text) == [
        (
            None,
            f"the Robot Code has more than {MAX_NODES} values, counting each use of an "
            "alias. Write the values out without anchors and aliases.",
        )
    ]


def test_parse_rejects_oversized_text() -> None:
    text = HEADER + "rules:\n  notes: " + "x" * MAX_TEXT_CHARS + "\n"

    errors = parse_errors(text)

    assert len(errors) == 1
    assert errors[0][0] is None
    assert errors[0][1].endswith(f"more than the maximum of {MAX_TEXT_CHARS}")


# Writing


def test_dump_round_trip() -> None:
    data = parse_robot_code(EXAMPLE)

    text = dump_robot_code(data)

    assert parse_robot_code(text) == data


def test_dump_is_stable_and_ordered() -> None:
    data = parse_robot_code(EXAMPLE)
    shuffled = dict(reversed(list(data.items())))
    shuffled["source"] = dict(reversed(list(data["source"].items())))

    text = dump_robot_code(shuffled)

    assert text == dump_robot_code(data)
    assert text.startswith("name: Northwind intake\ntype: project\nactive: true\n")
    assert "\n  location: email\n  authorization: oauth2\n" in text


def test_dump_is_readable() -> None:
    text = dump_robot_code(parse_robot_code(EXAMPLE))

    assert "target_languages: [de, cs]\n" in text
    assert "days: [mon, tue, wed, thu, fri]\n" in text
    assert "job_name: '{{ subject }} – {{ file_name }}'\n" in text
    assert "  notes: |\n    Check terminology against the NWP glossary.\n" in text
    assert "&id" not in text


def test_dump_quotes_values_yaml_would_misread() -> None:
    data = {
        "name": "2026-01-01",
        "client": "yes",
        "source_language": "no",
        "schedule": {"days": ["mon"], "times": ["12:30"]},
    }

    text = dump_robot_code(data)

    assert parse_robot_code(text) == data


def test_dump_leaves_out_null_values() -> None:
    text = dump_robot_code({"name": "A", "client": "B", "budget_code": None})

    assert text == "name: A\nclient: B\n"


# Message rules


def info(sender: str | None = "Maria Lopez <maria@northwind.example.com>",
         subject: str | None = "Offer 2026-114") -> MessageInfo:  # fmt: skip
    return MessageInfo(
        message_id="<1@example.com>",
        sender=sender,
        subject=subject,
        date=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )


NORTHWIND_RULES = {
    "accept_senders": [r"@northwind\.example\.com$"],
    "skip_senders": [r"^noreply@"],
    "accept_subjects": [],
    "skip_subjects": ["(?i)^out of office", r"^Automatic reply"],
}


@pytest.mark.parametrize(
    ("sender", "subject", "result"),
    [
        ("Maria Lopez <maria@northwind.example.com>", "Offer", (True, None)),
        ("maria@northwind.example.com", "Offer", (True, None)),
        ("Maria <MARIA@Northwind.Example.COM>", "Offer", (True, None)),
        (
            "Eve <eve@northwind.example.com.evil.test>",
            "Offer",
            (False, "sender 'eve@northwind.example.com.evil.test' matches none of accept_senders"),
        ),
        (
            "Northwind <noreply@northwind.example.com>",
            "Offer",
            (False, "sender 'noreply@northwind.example.com' matches skip_senders '^noreply@'"),
        ),
        (
            "NoReply@northwind.example.com",
            "Offer",
            (False, "sender 'NoReply@northwind.example.com' matches skip_senders '^noreply@'"),
        ),
        (
            None,
            "Offer",
            (False, "the message has no sender, and accept_senders is set"),
        ),
        (
            "maria@northwind.example.com",
            "Out of office",
            (False, "subject 'Out of office' matches skip_subjects '(?i)^out of office'"),
        ),
        (
            "maria@northwind.example.com",
            "OUT OF OFFICE until Monday",
            (
                False,
                "subject 'OUT OF OFFICE until Monday' matches skip_subjects '(?i)^out of office'",
            ),
        ),
        (
            "maria@northwind.example.com",
            "Automatic reply: Offer",
            (False, "subject 'Automatic reply: Offer' matches skip_subjects '^Automatic reply'"),
        ),
        # Subject patterns are case-sensitive unless they contain (?i).
        ("maria@northwind.example.com", "automatic reply: Offer", (True, None)),
        ("maria@northwind.example.com", None, (True, None)),
    ],
)
def test_message_accepted(sender: str | None, subject: str | None, result: tuple) -> None:
    assert message_accepted(NORTHWIND_RULES, info(sender, subject)) == result


@pytest.mark.parametrize(
    ("rules", "subject", "result"),
    [
        ({}, "Anything", (True, None)),
        ({"accept_subjects": []}, "Anything", (True, None)),
        ({"accept_subjects": [r"^Order \d+"]}, "Order 15: manual", (True, None)),
        (
            {"accept_subjects": [r"^Order \d+"]},
            "Re: Order 15",
            (False, "subject 'Re: Order 15' matches none of accept_subjects"),
        ),
        (
            {"accept_subjects": [r"^Order \d+"], "skip_subjects": ["(?i)draft"]},
            "Order 15 DRAFT",
            (False, "subject 'Order 15 DRAFT' matches skip_subjects '(?i)draft'"),
        ),
        (
            {"accept_subjects": ["^$"]},
            None,
            (True, None),
        ),
    ],
)
def test_message_accepted_subjects(rules: dict, subject: str | None, result: tuple) -> None:
    assert message_accepted(rules, info("maria@northwind.example.com", subject)) == result


def test_message_accepted_limits_subject_length() -> None:
    rules = {"skip_subjects": [r"TAIL$"]}
    long_subject = "x" * 998 + "TAIL"

    accepted, reason = message_accepted(rules, info(subject=long_subject))

    assert accepted is True
    assert reason is None


def test_message_accepted_limits_sender_length() -> None:
    rules = {"skip_senders": [r"tail\.example$"]}
    long_sender = "a" * 1000 + "@tail.example"

    accepted, reason = message_accepted(rules, info(sender=long_sender))

    assert accepted is True
    assert reason is None


# File rules


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("contract.docx", True),
        ("Contract.DOCX", True),
        ("leaflet.pdf", True),
        ("leaflet.PDF", True),
        ("smime.p7s", False),
        ("image001.png", False),
        ("IMAGE002.PNG", False),
        ("photo.png", False),
        ("notes.txt", False),
        ("archive/contract.docx", True),
        ("archive\\image001.png", False),
        ("contract.docx.p7s", False),
    ],
)
def test_file_accepted(name: str, accepted: bool) -> None:
    rules = {"include_files": ["*.docx", "*.pdf"], "exclude_files": ["*.p7s", "image0*.png"]}

    assert file_accepted(rules, name) is accepted


@pytest.mark.parametrize(
    ("rules", "name", "accepted"),
    [
        ({}, "anything.bin", True),
        ({"include_files": []}, "anything.bin", True),
        ({"exclude_files": ["*.P7S"]}, "smime.p7s", False),
        ({"exclude_files": ["winmail.dat"]}, "WINMAIL.DAT", False),
        ({"include_files": ["offer_??.xlsx"]}, "offer_12.xlsx", True),
        ({"include_files": ["offer_??.xlsx"]}, "offer_123.xlsx", False),
        ({"include_files": ["[ab]*.txt"]}, "Beta.txt", True),
        ({"include_files": ["*.docx"], "exclude_files": ["*.docx"]}, "a.docx", False),
    ],
)
def test_file_accepted_patterns(rules: dict, name: str, accepted: bool) -> None:
    assert file_accepted(rules, name) is accepted


# Job names


JOB: dict[str, Any] = {
    "subject": "Offer 2026-114",
    "sender": "Maria Lopez <maria@northwind.example.com>",
    "file_name": "contract.docx",
    "files": ["contract.docx", "annex.pdf"],
    "connector": "Northwind intake",
    "date": datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
}


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("{{ subject }} – {{ file_name }}", "Offer 2026-114 – contract.docx"),
        ("{{ connector }}: {{ files|length }} files", "Northwind intake: 2 files"),
        ("{{ files|join(', ') }}", "contract.docx, annex.pdf"),
        ("{{ date.strftime('%Y-%m-%d') }} {{ file_name }}", "2026-03-02 contract.docx"),
        ("{{ sender }}", "Maria Lopez <maria@northwind.example.com>"),
        ("  {{ subject }}\n\n  {{ file_name }}  ", "Offer 2026-114 contract.docx"),
        ("{{ subject|upper }}", "OFFER 2026-114"),
        ("<{{ subject }}> & co", "<Offer 2026-114> & co"),
    ],
)
def test_job_name_renders_template(template: str, name: str) -> None:
    assert job_name({"job_name": template}, **JOB) == name


def test_job_name_missing_variables_render_empty() -> None:
    rules = {"job_name": "{{ subject }}|{{ missing }}|{{ missing.deeper }}|{{ file_name }}"}

    name = job_name(rules, **{**JOB, "subject": None})

    assert name == "|||contract.docx"


def test_job_name_limited_to_300_characters() -> None:
    rules = {"job_name": "{{ file_name }} {% for i in range(400) %}x{% endfor %}"}

    name = job_name(rules, **JOB)

    assert len(name) == 300
    assert name.startswith("contract.docx xxx")


def test_job_name_empty_result_uses_default() -> None:
    rules = {"job_name": "{{ subject }}"}

    name, error = render_job_name(rules, **{**JOB, "subject": "  "})

    assert name == "contract.docx"
    assert error is None


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ subject.__class__.__mro__[1].__subclasses__() }}",
        "{{ date.__class__ }}",
        "{{ subject|attr('__class__') }}",
        "{{ files.__len__() }}",
    ],
)
def test_job_name_blocks_python_internals(template: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="robotcode.rules"):
        name = job_name({"job_name": template}, **JOB)

    assert name == "contract.docx"
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.ERROR
    assert "SecurityError" in caplog.records[0].getMessage()
    assert "Northwind intake" in caplog.records[0].getMessage()


def test_render_job_name_reports_security_error() -> None:
    name, error = render_job_name({"job_name": "{{ ''.__class__.__mro__ }}"}, **JOB)

    assert name == "contract.docx"
    assert error == (
        "job_name template failed: SecurityError: "
        "access to attribute '__class__' of a str is not allowed"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
        ("{{ 'x' * 1000000 }}", "SecurityError: '*' would build a value longer than 10000 items"),
        ("{{ 10 ** 100000 }}", "SecurityError: '**' exponents above 100 are not allowed"),
        ("{{ files.append('x') }}", "UndefinedError"),
        ("{% if %}", "TemplateSyntaxError"),
    ],
)
def test_render_job_name_falls_back_on_errors(template: str, message: str) -> None:
    name, error = render_job_name({"job_name": template}, **JOB)

    assert name == "contract.docx"
    assert error is not None
    assert message in error


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({}, "contract.docx"),
        ({"file_name": None}, "Offer 2026-114"),
        ({"file_name": None, "subject": " Offer \n 2026-114 "}, "Offer 2026-114"),
        ({"file_name": None, "subject": None}, "Northwind intake: 2 files, 2026-03-02 09:30 UTC"),
        (
            {"file_name": None, "subject": "", "files": ["a.docx"], "date": None},
            "Northwind intake: 1 file",
        ),
    ],
)
def test_job_name_default_without_template(changes: dict, name: str) -> None:
    assert job_name({}, **{**JOB, **changes}) == name


# Deadlines


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"deadline_days": 5}, datetime(2026, 3, 7, 9, 30, tzinfo=UTC)),
        ({"deadline_hours": 36}, datetime(2026, 3, 3, 21, 30, tzinfo=UTC)),
        ({}, None),
        ({"notes": "no deadline"}, None),
    ],
)
def test_deadline(rules: dict, expected: datetime | None) -> None:
    assert deadline(rules, datetime(2026, 3, 2, 9, 30, tzinfo=UTC)) == expected


def test_deadline_keeps_time_zone() -> None:
    received = datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=2)))

    result = deadline({"deadline_days": 1}, received)

    assert result == datetime(2026, 3, 3, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert result is not None
    assert result.utcoffset() == timedelta(hours=2)


def test_deadline_days_are_calendar_days_across_dst() -> None:
    prague = ZoneInfo("Europe/Prague")
    received = datetime(2026, 3, 27, 9, 0, tzinfo=prague)

    result = deadline({"deadline_days": 5}, received)

    assert result == datetime(2026, 4, 1, 9, 0, tzinfo=prague)


def test_parse_error_pickles() -> None:
    errors = parse_errors(HEADER + "type: weekly\n")

    copy = pickle.loads(pickle.dumps(RobotCodeError(errors)))

    assert copy.errors == errors
    assert str(copy) == "line 3: type: 'weekly' is not one of ['project', 'quote']"
