"""Smart Connector pages: the newer settings, Robot Code, Test Connector and quarantine.

Page tests read the rendered form as a browser would, change some fields and
post it back. Test Connector runs against the real Dovecot of ``mail_stack``
with a mailbox that logs in with a password over STARTTLS.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
import sqlalchemy as sa
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask.testing import FlaskClient

from celery_config import SCANS_QUEUE
from config import Settings
from intake import run_connector
from intake.schedules import next_run, parse_schedule
from models import (
    AfterProcessing,
    Aggregation,
    Connector,
    ConnectorRun,
    ConnectorStore,
    Job,
    MessageFailure,
    RunProblem,
    RunStatus,
    SourceLocation,
    StoreRole,
)
from outgoing.notifications import EVENTS
from robotcode import dump_robot_code
from tasks.connectors import scan

from .conftest import csrf_token, make_settings
from .mailhelpers import PDF_BYTES, message_with_files, message_without_files
from .servers import PASSWORD_USER, PASSWORD_USER_PASSWORD, MailStack
from .test_web_connectors import (  # noqa: F401  (fixtures)
    BASE,
    LOCAL_PROVIDER,
    MAILBOX_PASSWORD,
    NEW,
    SAVED_PLACEHOLDER,
    browser_page,
    connector_named,
    ids,
    live_url,
    password_fields,
    read_form,
    saved_password_connector,
    submit,
    user_client,
    validate_form,
)

STORE_PASSWORD = "store-pw-Tq93-never-in-html"


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path, redis_url: str) -> Settings:
    """Settings for the local OAuth provider, or for the mail stack when a test uses it."""
    if "mail_stack" not in request.fixturenames:
        return make_settings(tmp_path, redis_url, oauth_providers=LOCAL_PROVIDER)
    stack: MailStack = request.getfixturevalue("mail_stack")
    return make_settings(
        tmp_path,
        redis_url,
        oauth_providers=stack.provider_config(),
        ca_file=stack.dovecot.ca_file,
        mail_timeout=3.0,
    )


def edit_url(connector_id: int) -> str:
    return f"{BASE}/{connector_id}/edit"


def squeeze(html: str) -> str:
    """Return ``html`` with each run of whitespace turned into one space, as a browser shows it."""
    return " ".join(html.split())


def form_values(client: FlaskClient, url: str) -> dict[str, str]:
    return dict(read_form(client.get(url).text).values)


def ssh_keys() -> tuple[str, str]:
    """Return a fresh Ed25519 private key in OpenSSH format and its public key line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def store(prefix: str, **values: Any) -> dict[str, Any]:
    return {f"{prefix}-{key}": value for key, value in values.items()}


# Form unit tests ------------------------------------------------------------


def test_form_accepts_every_new_setting(app, services, ids) -> None:
    private_key, public_key = ssh_keys()
    data = password_fields(
        ids,
        aggregation="per_email",
        after_processing="move",
        move_to_folder="INBOX/Processed",
        process_mail_after="2026-11-30T08:15",
        include_inline_images="y",
        unpack_zip="y",
        max_attempts="20",
        schedule_kind="weekly",
        schedule_days=["mon", "fri"],
        schedule_times="8:00, 13:30",
        schedule_timezone="Europe/Prague",
        **store("store_success", location="folder", path="translations/done"),
        **store(
            "store_error",
            location="sftp",
            host="files.example.com",
            port="2222",
            username="mailroom",
            private_key=private_key,
            known_host_key=public_key,
            path="/errors",
        ),
    )
    form = validate_form(app, services, data)
    assert form.errors == {}
    assert form.process_mail_after.data == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    assert form.weekly_schedule_data() == {
        "days": ["mon", "fri"],
        "times": ["08:00", "13:30"],
        "timezone": "Europe/Prague",
    }


def test_form_weekly_ignores_bad_interval(app, services, ids) -> None:
    data = password_fields(
        ids,
        interval_minutes="often",
        schedule_kind="weekly",
        schedule_days=["tue"],
        schedule_times="07:45",
        schedule_timezone="UTC",
    )
    form = validate_form(app, services, data)
    assert form.errors == {}


BAD_OPTION_INPUTS = [
    ({"after_processing": "archive"}, "after_processing",
     'After processing an e-mail "archive" is not valid; choose Delete, Move to folder or Leave '
     "it and mark it seen."),
    ({"after_processing": "move", "move_to_folder": ""}, "move_to_folder",
     "Move to folder is missing; enter the IMAP folder for processed e-mails, e.g. "
     "INBOX/Processed, or choose another action."),
    ({"after_processing": "move", "move_to_folder": "INBOX/Orders"}, "move_to_folder",
     'Move to folder "INBOX/Orders" is the folder this connector scans; enter another folder, '
     "e.g. INBOX/Processed."),
    ({"after_processing": "move", "move_to_folder": "Done\nX"}, "move_to_folder",
     'Move to folder "Done\nX" is not a valid folder name; use at most 255 characters without '
     "line breaks, e.g. INBOX/Processed."),
    ({"process_mail_after": "yesterday"}, "process_mail_after",
     'Process only mail received after "yesterday" is not a date and time; enter it as '
     "2026-12-01 08:00."),
    ({"max_attempts": "0"}, "max_attempts",
     "Attempts before quarantine 0 is out of range; enter a whole number from 1 to 20."),
    ({"max_attempts": "21"}, "max_attempts",
     "Attempts before quarantine 21 is out of range; enter a whole number from 1 to 20."),
    ({"max_attempts": "three"}, "max_attempts",
     'Attempts before quarantine "three" is not a number; enter a whole number from 1 to 20.'),
    ({"max_attempts": ""}, "max_attempts",
     "Attempts before quarantine is missing; enter a whole number from 1 to 20, usually 3."),
    ({"quarantine_folder": "INBOX/Orders"}, "quarantine_folder",
     'Quarantine folder "INBOX/Orders" is the folder this connector scans; enter another '
     "folder, e.g. Mailroom/Errors, or leave it empty."),
    ({"folder": "INBOX", "quarantine_folder": "inbox"}, "quarantine_folder",
     'Quarantine folder "inbox" is the folder this connector scans; enter another folder, '
     "e.g. Mailroom/Errors, or leave it empty."),
    ({"after_processing": "move", "move_to_folder": "Done", "quarantine_folder": "Done"},
     "quarantine_folder",
     'Quarantine folder "Done" is also the Move to folder for processed e-mails; enter a '
     "separate folder, e.g. Mailroom/Errors, so that failed e-mails stay apart."),
    ({"quarantine_folder": "Errors*"}, "quarantine_folder",
     'Quarantine folder "Errors*" contains * or %, which IMAP reads as wildcards when it looks '
     "the folder up; remove them, e.g. Mailroom/Errors."),
    ({"quarantine_folder": "Fehler/Übersetzung"}, "quarantine_folder",
     'Quarantine folder "Fehler/Übersetzung" contains letters outside ASCII, which Mailroom '
     "cannot send as an IMAP folder name yet; use ASCII letters, e.g. Mailroom/Errors."),
    ({"quarantine_folder": "Errors\nX"}, "quarantine_folder",
     'Quarantine folder "Errors\nX" is not a valid folder name; use at most 255 characters '
     "without line breaks, e.g. Mailroom/Errors, or leave it empty."),
    ({"quarantine_folder": "E" * 256}, "quarantine_folder",
     f'Quarantine folder "{"E" * 80}" is not a valid folder name; use at most 255 characters '
     "without line breaks, e.g. Mailroom/Errors, or leave it empty."),
    ({"schedule_kind": "hourly"}, "schedule_kind",
     'Run "hourly" is not valid; choose Every N minutes or On chosen weekdays at chosen times.'),
    ({"schedule_kind": "weekly", "schedule_times": "08:00"}, "schedule_days",
     "Days are missing; check at least one day for the weekly schedule."),
    ({"schedule_kind": "weekly", "schedule_days": ["mon", "someday"], "schedule_times": "08:00"},
     "schedule_days", 'Day "someday" is not valid; check days from Monday to Sunday.'),
    ({"schedule_kind": "weekly", "schedule_days": ["mon"], "schedule_times": "08:00, 25:00"},
     "schedule_times", 'Time "25:00" is not a time of day; enter times as HH:MM from 00:00 to '
     "23:59, separated by commas, e.g. 08:00, 13:30."),
    ({"schedule_kind": "weekly", "schedule_days": ["mon"], "schedule_times": " "},
     "schedule_times", "Times are missing; enter at least one time of day, e.g. 08:00 or "
     "08:00, 13:30."),
    ({"schedule_kind": "weekly", "schedule_days": ["mon"], "schedule_times": "08:00",
      "schedule_timezone": "Mars/Olympus"}, "schedule_timezone",
     'Time zone "Mars/Olympus" is not known; choose one from the list, e.g. Europe/Prague or '
     "UTC."),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "name", "message"), BAD_OPTION_INPUTS)
def test_form_rejects_bad_option(app, services, ids, changes, name, message) -> None:
    form = validate_form(app, services, password_fields(ids, **changes))
    assert form.errors == {name: [message]}


BAD_STORE_INPUTS = [
    ({"location": "dropbox"}, "location",
     'Location "dropbox" is not valid; choose Nowhere, Folder under the file store, FTP or SFTP.'),
    ({"location": "folder", "path": ""}, "path",
     "Path is missing; enter a folder inside the file store's locations folder, e.g. "
     "translations/done."),
    ({"location": "folder", "path": "../outside"}, "path",
     'Path "../outside" must name a folder inside the file store\'s locations folder, without '
     'a leading "/" or "..", e.g. translations/done.'),
    ({"location": "folder", "path": "/srv/files"}, "path",
     'Path "/srv/files" must name a folder inside the file store\'s locations folder, without '
     'a leading "/" or "..", e.g. translations/done.'),
    ({"location": "ftp", "host": "", "username": "u", "path": "/out"}, "host",
     "Host Name is missing; enter the server name, e.g. files.example.com."),
    ({"location": "ftp", "host": "ftp://files.example.com", "username": "u", "path": "/out"},
     "host", 'Host Name "ftp://files.example.com" is not a server name; enter only the name or '
     "IP address, e.g. files.example.com, without a scheme, a path or a port."),
    ({"location": "ftp", "host": "files.example.com", "port": "70000", "username": "u",
      "path": "/out"}, "port",
     "Port 70000 is out of range; enter a port from 1 to 65535, or leave it empty for the "
     "standard port (21 for FTP, 22 for SFTP)."),
    ({"location": "ftp", "host": "files.example.com", "port": "ftp", "username": "u",
      "path": "/out"}, "port",
     'Port "ftp" is not a number; enter a port from 1 to 65535, or leave it empty for the '
     "standard port."),
    ({"location": "ftp", "host": "files.example.com", "username": "", "path": "/out"},
     "username", "Username is missing; enter the login of the server account (anonymous for "
     "an anonymous FTP server)."),
    ({"location": "ftp", "host": "files.example.com", "username": "u", "path": ""}, "path",
     "Path is missing; enter the folder on the server, e.g. /outgoing, or . for the login "
     "folder."),
    ({"location": "ftp", "host": "files.example.com", "username": "u", "path": "/out",
      "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "private_key",
     "Private key is used only with SFTP; clear it or choose SFTP."),
]  # fmt: skip


@pytest.mark.parametrize(("values", "name", "message"), BAD_STORE_INPUTS)
def test_form_rejects_bad_store(app, services, ids, values, name, message) -> None:
    data = password_fields(ids, **store("store_success", **values))
    form = validate_form(app, services, data)
    assert form.errors == {"store_success": {name: [message]}}


def test_form_checks_sftp_store(app, services, ids) -> None:
    sftp = {"location": "sftp", "host": "files.example.com", "username": "u", "path": "/out"}
    form = validate_form(app, services, password_fields(ids, **store("store_error", **sftp)))
    assert form.errors == {
        "store_error": {
            "known_host_key": [
                "Known host key is missing; paste the server's public key line, e.g. the "
                "content of /etc/ssh/ssh_host_ed25519_key.pub on the server."
            ],
            "password": [
                "Password or private key is missing; SFTP needs one of them, so enter a "
                "password or paste a private key."
            ],
        }
    }

    bad = {**sftp, "known_host_key": "ssh-ed25519 not-base64", "private_key": "not a key"}
    form = validate_form(app, services, password_fields(ids, **store("store_error", **bad)))
    assert form.errors == {
        "store_error": {
            "known_host_key": [
                'Known host key "ssh-ed25519 not-base64" is not a public key line; paste a '
                'line such as "ssh-ed25519 AAAA..." from /etc/ssh/ssh_host_ed25519_key.pub '
                "on the server."
            ],
            "private_key": [
                "The private key setting is not a valid Ed25519, ECDSA or RSA private key. "
                "Paste the whole key file, from the BEGIN line to the END line."
            ],
        }
    }


def test_form_robot_code_errors_name_lines(app, services, ids) -> None:
    text = (
        "name: Acme orders\n"
        "client: Acme Pharma Ltd\n"
        "rules:\n"
        "  accept_senders: ['(']\n"
        "  colour: blue\n"
    )
    data = password_fields(ids, robot_code=text, robot_code_base="name: Acme orders\n")
    form = validate_form(app, services, data)
    assert form.errors == {
        "robot_code": [
            "Line 4: rules.accept_senders[0]: '(' is not a valid regular expression: missing ), "
            "unterminated subpattern at position 0",
            "Line 5: rules.colour: unknown key. Use one of accept_senders, skip_senders, "
            "accept_subjects, skip_subjects, include_files, exclude_files, job_name, "
            "deadline_days, deadline_hours, notes.",
        ]
    }


def test_form_robot_code_unknown_names(app, services, ids) -> None:
    text = "name: Acme orders\nclient: Acme Pharma\ntarget_languages: [de, xx]\nservice: Poetry\n"
    form = validate_form(app, services, password_fields(ids, robot_code=text))
    assert form.errors == {
        "robot_code": [
            "Line 2: client: 'Acme Pharma' is not a client in Mailroom. Write a client's name "
            "exactly as the Client list shows it, such as 'Acme Pharma Ltd'.",
            "Line 3: target_languages: 'xx' is not a language in Mailroom. Write a code from "
            "the language lists, such as en or de.",
            "Line 4: service: 'Poetry' is not a service in Mailroom. Write a name from the "
            "service list, such as 'Desktop Publishing'.",
        ]
    }


def test_form_robot_code_unchanged_is_ignored(app, services, ids) -> None:
    text = "name: Other name\nclient: Borealis Legal\nrules:\n  notes: Kept.\n"
    form = validate_form(app, services, password_fields(ids, robot_code=text, robot_code_base=text))
    assert form.errors == {}
    assert form.name.data == "Acme orders"
    assert form.client.data == ids["acme"]
    assert form.robot_code_merge.rules == {"notes": "Kept."}


def test_form_robot_code_wins_where_edited(app, services, ids) -> None:
    base = (
        "name: Acme orders\n"
        "client: Acme Pharma Ltd\n"
        "source:\n"
        "  location: email\n"
        "  authorization: password\n"
        "  host: imap.example.com\n"
        "  username: orders@example.com\n"
    )
    text = base.replace("Acme Pharma Ltd", "Borealis Legal") + "  port: 143\n"
    data = password_fields(ids, name="Typed in the form", robot_code=text, robot_code_base=base)
    form = validate_form(app, services, data)
    assert form.errors == {
        "budget_code": [
            'Budget code "AP-REG" is not a code of Borealis Legal; choose one of BL-LIT or leave '
            "it empty."
        ]
    }
    assert form.name.data == "Typed in the form"  # unchanged in the text, so the form wins
    assert form.client.data == ids["borealis"]
    assert form.port.data == 143


# Saving through the page ------------------------------------------------------


def test_create_saves_definition_options(logged_in, services, ids) -> None:
    changes = password_fields(
        ids,
        aggregation="per_email",
        after_processing="move",
        move_to_folder="INBOX/Processed",
        process_mail_after="2026-11-30T08:15",
        include_inline_images="y",
        unpack_zip="y",
        max_attempts="5",
    )
    response = submit(logged_in, NEW, changes)
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.aggregation == Aggregation.PER_EMAIL
    assert connector.after_processing == AfterProcessing.MOVE
    assert connector.move_to_folder == "INBOX/Processed"
    assert connector.process_mail_after == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    assert connector.options == {"include_inline_images": True, "unpack_zip": True,
                                 "max_attempts": 5}  # fmt: skip

    values = form_values(logged_in, edit_url(connector.id))
    assert values["aggregation"] == "per_email"
    assert values["after_processing"] == "move"
    assert values["move_to_folder"] == "INBOX/Processed"
    assert values["process_mail_after"] == "2026-11-30T08:15"
    assert values["include_inline_images"] == "y"
    assert values["unpack_zip"] == "y"
    assert values["max_attempts"] == "5"

    page = logged_in.get(f"{BASE}/{connector.id}").text
    assert "Process every e-mail separately" in page
    assert "Move to folder INBOX/Processed" in page
    assert "2026-11-30 08:15 UTC" in page
    assert "Includes inline images; unpacks ZIP archives; quarantines an e-mail after 5" in page


def test_other_actions_drop_move_folder(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    submit(logged_in, url, {"after_processing": "move", "move_to_folder": "Done"})
    assert connector_named(services, "Acme orders").move_to_folder == "Done"
    response = submit(logged_in, url, {"after_processing": "mark_seen", "process_mail_after": ""})
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.after_processing == AfterProcessing.MARK_SEEN
    assert connector.move_to_folder is None
    assert connector.process_mail_after is None


def test_new_connector_defaults(logged_in, services, saved_password_connector) -> None:
    connector = connector_named(services, "Acme orders")
    assert connector.aggregation == Aggregation.BATCH
    assert connector.after_processing == AfterProcessing.DELETE
    assert connector.options == {"include_inline_images": False, "unpack_zip": False,
                                 "max_attempts": 3}  # fmt: skip
    assert connector.notifications == {
        event: {"person_responsible": True, "client_contact": False} for event in EVENTS
    }
    assert connector.weekly_schedule is None
    assert connector.rules == {}
    with services.db.session() as session:
        assert session.scalars(sa.select(ConnectorStore)).all() == []


def test_post_without_new_fields_keeps_defaults(logged_in, services, ids) -> None:
    """A script that posts only the older fields gets the defaults, not errors."""
    token = csrf_token(logged_in, NEW)
    response = logged_in.post(NEW, data={**password_fields(ids), "csrf_token": token})
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.options["max_attempts"] == 3
    assert connector.notifications["project_created"]["person_responsible"] is True


def test_weekly_schedule_saved_with_next_run(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    weekly = {
        "schedule_kind": "weekly",
        "schedule_days": ["wed", "mon"],
        "schedule_times": "13:30, 8:00",
        "schedule_timezone": "Europe/Prague",
    }
    before = datetime.now(UTC)
    response = submit(logged_in, url, weekly)
    after = datetime.now(UTC)
    assert response.status_code == 302, read_form(response.text).errors
    connector = connector_named(services, "Acme orders")
    assert connector.weekly_schedule == {
        "days": ["mon", "wed"],
        "times": ["08:00", "13:30"],
        "timezone": "Europe/Prague",
    }
    assert connector.interval_minutes == 15  # kept for a switch back
    schedule = parse_schedule(connector.weekly_schedule)
    assert connector.next_run_at in {next_run(schedule, before), next_run(schedule, after)}
    local = connector.next_run_at.astimezone(schedule.zone)
    assert local.strftime("%a %H:%M") in {"Mon 08:00", "Mon 13:30", "Wed 08:00", "Wed 13:30"}

    page = logged_in.get(f"{BASE}/{saved_password_connector}").text
    assert "Mon, Wed at 08:00 and 13:30 (Europe/Prague)" in page
    assert connector.next_run_at.strftime("%Y-%m-%d %H:%M UTC") in page
    assert f"{local.strftime('%a %Y-%m-%d %H:%M')} Europe/Prague" in page

    edit = logged_in.get(url)
    values = read_form(edit.text).values
    assert ("schedule_kind", "weekly") in values
    assert [v for k, v in values if k == "schedule_days"] == ["mon", "wed"]
    assert ("schedule_times", "08:00, 13:30") in values
    assert ("schedule_timezone", "Europe/Prague") in values
    next_run_line = edit.text.split('id="next-run"', 1)[1].split("</p>", 1)[0]
    assert connector.next_run_at.strftime("%Y-%m-%d %H:%M UTC") in next_run_line

    # Saving again keeps the planned run, and switching back restores the interval.
    assert submit(logged_in, url, {}).status_code == 302
    assert connector_named(services, "Acme orders").next_run_at == connector.next_run_at
    back = datetime.now(UTC)
    assert submit(logged_in, url, {"schedule_kind": "interval"}).status_code == 302
    connector = connector_named(services, "Acme orders")
    assert connector.weekly_schedule is None
    assert connector.interval_minutes == 15
    assert back <= connector.next_run_at <= datetime.now(UTC) + timedelta(minutes=15)
    assert "Every 15 minutes" in logged_in.get(f"{BASE}/{saved_password_connector}").text


def test_schedule_tab_previews_next_run(logged_in, ids) -> None:
    page = logged_in.get(f"{NEW}?tab=schedule")
    assert 'aria-selected="true"' in page.text.split('id="schedule-tab"', 1)[1].split(">", 1)[0]
    next_run_line = squeeze(page.text.split('id="next-run"', 1)[1].split("</p>", 1)[0])
    assert "Next run: as soon as the connector is saved, then every 5 minutes." in next_run_line

    weekly = {
        "schedule_kind": "weekly",
        "schedule_days": ["sat"],
        "schedule_times": "07:00",
        "schedule_timezone": "America/New_York",
        "name": "",  # keeps the form from saving, so the page shows again
    }
    response = submit(logged_in, NEW, password_fields(ids, **weekly))
    assert response.status_code == 200
    schedule = parse_schedule({"days": ["sat"], "times": ["07:00"], "timezone": "America/New_York"})
    expected = next_run(schedule, datetime.now(UTC))
    line = response.text.split('id="next-run"', 1)[1].split("</p>", 1)[0]
    assert expected.strftime("%Y-%m-%d %H:%M UTC") in line
    assert "Sat" in line
    assert "07:00 America/New_York" in line


def test_notification_checkboxes_saved(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    values = form_values(logged_in, url)
    assert values["notifications_shown"] == "1"
    assert values["notify__project_created__person_responsible"] == "y"
    assert "notify__project_created__client_contact" not in values

    changes = {
        "notify__project_created__person_responsible": None,  # unchecked
        "notify__processing_error__client_contact": "y",
        "notify__connector_recovered__person_responsible": None,
    }
    response = submit(logged_in, url, changes)
    assert response.status_code == 302, read_form(response.text).errors
    expected = {event: {"person_responsible": True, "client_contact": False} for event in EVENTS}
    expected["project_created"]["person_responsible"] = False
    expected["processing_error"]["client_contact"] = True
    expected["connector_recovered"]["person_responsible"] = False
    assert connector_named(services, "Acme orders").notifications == expected

    values = form_values(logged_in, url)
    assert "notify__project_created__person_responsible" not in values
    assert values["notify__processing_error__client_contact"] == "y"
    page = logged_in.get(f"{BASE}/{saved_password_connector}").text
    section = page.split('id="notifications"', 1)[1].split("</dl>", 1)[0]
    assert 'A project was created</dt><dd class="col-sm-5">nobody' in section
    assert 'A run failed</dt><dd class="col-sm-5">Person Responsible, Client contact' in section


def test_store_secrets_are_write_only(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    private_key, public_key = ssh_keys()
    sftp = store(
        "store_success",
        location="sftp",
        host="files.example.com",
        port="2222",
        username="mailroom",
        password=STORE_PASSWORD,
        private_key=private_key,
        known_host_key=public_key,
        path="/done",
    )
    ftp = store(
        "store_error", location="ftp", host="127.0.0.1", username="anonymous", ftp_tls="y",
        path="errors",
    )  # fmt: skip
    response = submit(logged_in, url, {**sftp, **ftp})
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        rows = {row.role: row for row in session.scalars(sa.select(ConnectorStore))}
    success, error = rows[StoreRole.SUCCESS], rows[StoreRole.ERROR]
    assert (success.location, success.host, success.port, success.username, success.path) == (
        SourceLocation.SFTP, "files.example.com", 2222, "mailroom", "/done",
    )  # fmt: skip
    assert success.known_host_key == public_key
    assert services.box.decrypt(success.password_encrypted) == STORE_PASSWORD
    assert services.box.decrypt(success.private_key_encrypted) == private_key
    assert (error.location, error.ftp_tls, error.port, error.path) == (
        SourceLocation.FTP, True, None, "errors",
    )  # fmt: skip

    for page_url in (url, f"{BASE}/{saved_password_connector}",
                     f"{BASE}/{saved_password_connector}/export"):  # fmt: skip
        text = logged_in.get(page_url).text
        assert STORE_PASSWORD not in text, page_url
        assert "PRIVATE KEY" not in text, page_url
    edit = logged_in.get(url).text
    values = dict(read_form(edit).values)
    assert values["store_success-password"] == ""
    assert values["store_success-private_key"] == ""
    assert values["store_success-known_host_key"] == public_key
    assert edit.count(f'placeholder="{SAVED_PLACEHOLDER}"') == 3  # mailbox, store password, key
    show = logged_in.get(f"{BASE}/{saved_password_connector}").text
    assert "SFTP mailroom@files.example.com:2222, path /done" in show
    assert "FTPS anonymous@127.0.0.1, path errors" in show

    # Empty inputs keep the secrets, and the checkbox removes one.
    assert submit(logged_in, url, {}).status_code == 302
    with services.db.session() as session:
        row = session.scalars(sa.select(ConnectorStore).where(
            ConnectorStore.role == StoreRole.SUCCESS)).one()  # fmt: skip
        assert services.box.decrypt(row.password_encrypted) == STORE_PASSWORD
    response = submit(logged_in, url, {"store_success-forget_password": "y"})
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        row = session.scalars(sa.select(ConnectorStore).where(
            ConnectorStore.role == StoreRole.SUCCESS)).one()  # fmt: skip
        assert row.password_encrypted is None
        assert row.private_key_encrypted is not None

    # Without the key too, SFTP has no credentials left.
    response = submit(logged_in, url, {"store_success-forget_private_key": "y"})
    assert response.status_code == 200
    assert read_form(response.text).errors == {
        "store_success-password": [
            "Password or private key is missing; SFTP needs one of them, so enter a password "
            "or paste a private key."
        ]
    }

    # A folder keeps no server credentials, and Nowhere deletes the row.
    folder = store("store_success", location="folder", path="done")
    assert submit(logged_in, url, {**folder, "store_error-location": "none"}).status_code == 302
    with services.db.session() as session:
        row = session.scalars(sa.select(ConnectorStore)).one()
    assert (row.role, row.location, row.path) == (StoreRole.SUCCESS, SourceLocation.FOLDER, "done")
    assert (row.host, row.username, row.password_encrypted, row.private_key_encrypted) == (
        None, None, None, None,
    )  # fmt: skip


def test_failed_save_asks_for_store_secrets(logged_in, ids) -> None:
    changes = password_fields(
        ids, name="", **store("store_success", location="ftp", host="files.example.com",
                              username="u", password=STORE_PASSWORD, path="/x"),
    )  # fmt: skip
    response = submit(logged_in, NEW, changes)
    assert response.status_code == 200
    assert STORE_PASSWORD not in response.text
    assert "Enter the passwords and private keys of the store sections again" in response.text


# Robot Code -----------------------------------------------------------------


def robot_code_of(client: FlaskClient, connector_id: int) -> str:
    return form_values(client, edit_url(connector_id))["robot_code"]


def test_robot_code_shows_whole_definition(logged_in, services, saved_password_connector) -> None:
    text = robot_code_of(logged_in, saved_password_connector)
    data = yaml.safe_load(text)
    assert data["name"] == "Acme orders"
    assert data["client"] == "Acme Pharma Ltd"
    assert data["source"]["host"] == "imap.example.com"
    assert data["source"]["authorization"] == "password"
    assert data["schedule"] == {"every_minutes": 15}
    assert data["target_languages"] == ["de", "fr"]
    assert MAILBOX_PASSWORD not in text

    new_text = form_values(logged_in, NEW)["robot_code"]
    assert yaml.safe_load(new_text)["source"]["location"] == "email"


def test_robot_code_edits_reach_form(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    data = yaml.safe_load(robot_code_of(logged_in, saved_password_connector))
    data["source"]["host"] = "mail.example.net"
    data["source"]["after_processing"] = "mark_seen"
    data["files_aggregation"] = "per_email"
    data["schedule"] = {"days": ["fri"], "times": ["17:00"], "timezone": "Europe/Prague"}
    data["notifications"]["quote_created"]["client_contact"] = True
    data["options"]["max_attempts"] = 7
    data["rules"] = {
        "skip_subjects": ["(?i)^out of office"],
        "job_name": "{{ subject }}",
        "deadline_days": 5,
        "notes": "Use the glossary.",
    }
    response = submit(logged_in, url, {"robot_code": dump_robot_code(data), "name": "Renamed"})
    assert response.status_code == 302, read_form(response.text).errors

    connector = connector_named(services, "Renamed")  # the form's edit is kept too
    assert connector.host == "mail.example.net"
    assert connector.after_processing == AfterProcessing.MARK_SEEN
    assert connector.aggregation == Aggregation.PER_EMAIL
    assert connector.weekly_schedule == {"days": ["fri"], "times": ["17:00"],
                                         "timezone": "Europe/Prague"}  # fmt: skip
    assert connector.notifications["quote_created"]["client_contact"] is True
    assert connector.options["max_attempts"] == 7
    assert connector.rules == data["rules"]

    values = form_values(logged_in, url)
    assert values["host"] == "mail.example.net"
    assert values["after_processing"] == "mark_seen"
    assert values["aggregation"] == "per_email"
    assert values["schedule_kind"] == "weekly"
    assert values["schedule_times"] == "17:00"
    assert values["notify__quote_created__client_contact"] == "y"
    assert values["max_attempts"] == "7"
    saved = yaml.safe_load(values["robot_code"])
    assert saved["rules"] == data["rules"]
    assert saved["name"] == "Renamed"

    # Removing the rules from the text removes them.
    del saved["rules"]
    response = submit(logged_in, url, {"robot_code": dump_robot_code(saved)})
    assert response.status_code == 302, read_form(response.text).errors
    assert connector_named(services, "Renamed").rules == {}


def test_form_edit_keeps_robot_code_rules(logged_in, services, saved_password_connector) -> None:
    with services.db.session() as session:
        session.get(Connector, saved_password_connector).rules = {"notes": "Keep me."}
        session.commit()
    url = edit_url(saved_password_connector)
    assert submit(logged_in, url, {"host": "imap2.example.com"}).status_code == 302
    connector = connector_named(services, "Acme orders")
    assert connector.host == "imap2.example.com"
    assert connector.rules == {"notes": "Keep me."}


def test_robot_code_errors_show_line_numbers(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    text = robot_code_of(logged_in, saved_password_connector)
    lines = text.splitlines()
    port_line = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("port:"))
    lines[port_line - 1] = "  port: 70000"
    bad = "\n".join(lines) + "\nrules:\n  deadline_days: 0\n  job_name: '{{ subject'\n"
    total = len(lines)
    response = submit(logged_in, url, {"robot_code": bad})
    assert response.status_code == 200
    errors = read_form(response.text).errors
    assert list(errors) == ["robot_code"]
    messages = errors["robot_code"]
    assert (
        messages[0] == f"Line {port_line}: source.port: 70000 is greater than the maximum of 65535"
    )
    assert messages[1] == f"Line {total + 2}: rules.deadline_days: 0 is less than the minimum of 1"
    assert messages[2].startswith(f"Line {total + 3}: rules.job_name: ")
    assert len(messages) == 3
    # The Robot Code tab opens, the text stays as typed, and nothing was saved.
    tab_link = response.text.split('id="robot-code-tab"', 1)[1].split(">", 1)[0]
    assert 'aria-selected="true"' in tab_link
    assert dict(read_form(response.text).values)["robot_code"].rstrip() == bad.rstrip()
    assert connector_named(services, "Acme orders").port == 993


def test_robot_code_value_form_rejects(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    text = robot_code_of(logged_in, saved_password_connector)
    line = text.splitlines().index("budget_code: AP-REG") + 1
    response = submit(logged_in, url, {"robot_code": text.replace("AP-REG", "BL-LIT")})
    assert response.status_code == 200
    message = (
        'Budget code "BL-LIT" is not a code of Acme Pharma Ltd; choose one of AP-2026, AP-REG '
        "or leave it empty."
    )
    errors = read_form(response.text).errors
    assert errors == {
        "budget_code": [message],
        "robot_code": [f"Line {line}: budget_code: {message}"],
    }
    # The value is now in the form field, so correcting the field alone saves.
    fixed = submit_page(logged_in, url, response.text, {"budget_code": "AP-2026"})
    assert fixed.status_code == 302, read_form(fixed.text).errors
    assert connector_named(services, "Acme orders").budget_code == "AP-2026"


def submit_page(client: FlaskClient, url: str, html: str, changes: dict[str, Any]) -> Any:
    """Post the form of an already loaded page with ``changes``, as the Save button does."""
    values = dict(read_form(html).values)
    values.update(changes)
    values["save"] = "Save"
    return client.post(url, data=values)


def test_new_connector_with_robot_code_rules(logged_in, services, ids) -> None:
    text = form_values(logged_in, NEW)["robot_code"]
    data = yaml.safe_load(text)
    data.update(name="Acme orders", client="Acme Pharma Ltd")
    data["source"].update(
        authorization="password", host="imap.example.com", username="orders@example.com"
    )
    data["rules"] = {"include_files": ["*.docx"]}
    changes = password_fields(ids, robot_code=dump_robot_code(data))
    response = submit(logged_in, NEW, changes)
    assert response.status_code == 302, read_form(response.text).errors
    assert connector_named(services, "Acme orders").rules == {"include_files": ["*.docx"]}


# Connector page: quarantine and run history -----------------------------------


def add_failures(services: Any, connector_id: int) -> tuple[int, int]:
    """Add a quarantined message and one still being retried, and return their ids."""
    with services.db.session() as session:
        quarantined = MessageFailure(
            connector_id=connector_id,
            uidvalidity=1,
            uid=7,
            sender="Ana <ana@example.org>",
            subject="Offer without files",
            attempts=3,
            last_error="the e-mail has no attachments",
            first_seen_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
            last_seen_at=datetime(2026, 11, 30, 9, 10, tzinfo=UTC),
            quarantined_at=datetime(2026, 11, 30, 9, 10, tzinfo=UTC),
        )
        retrying = MessageFailure(
            connector_id=connector_id,
            uidvalidity=1,
            uid=8,
            subject="Still retried",
            attempts=1,
            last_error="timed out",
        )
        session.add_all([quarantined, retrying])
        session.commit()
        return quarantined.id, retrying.id


def test_quarantine_list_and_process_again(logged_in, services, saved_password_connector) -> None:
    url = f"{BASE}/{saved_password_connector}"
    quarantined_id, retrying_id = add_failures(services, saved_password_connector)
    page = logged_in.get(url).text
    table = page.split('id="quarantine-table"', 1)[1].split("</table>", 1)[0]
    assert "Ana &lt;ana@example.org&gt;" in table
    assert "Offer without files" in table
    assert "<td>3</td>" in table
    assert "the e-mail has no attachments" in table
    assert "2026-11-30 09:10 UTC" in table
    assert "Still retried" not in table
    release_url = f"{url}/quarantine/{quarantined_id}/release"
    assert f'action="{release_url}"' in table

    response = logged_in.post(
        release_url, data={"csrf_token": csrf_token(logged_in, url)}, follow_redirects=True
    )
    assert response.request.path == url
    assert (
        "The e-mail &#34;Offer without files&#34; from Ana &lt;ana@example.org&gt; left "
        "quarantine, so the next run processes it again." in response.text
    )
    assert "No e-mails are quarantined." in response.text
    with services.db.session() as session:
        assert session.get(MessageFailure, quarantined_id) is None
        assert session.get(MessageFailure, retrying_id) is not None

    again = logged_in.post(
        release_url, data={"csrf_token": csrf_token(logged_in, url)}, follow_redirects=True
    )
    assert "That e-mail is no longer in quarantine, so nothing was changed." in again.text


def test_process_again_needs_admin_and_csrf(
    logged_in, user_client, services, saved_password_connector
) -> None:
    url = f"{BASE}/{saved_password_connector}"
    quarantined_id, _ = add_failures(services, saved_password_connector)
    release_url = f"{url}/quarantine/{quarantined_id}/release"
    assert logged_in.post(release_url).status_code == 400
    page = user_client.get(url).text
    assert "Offer without files" in page
    assert "Process again</button>" not in page
    assert "Test Connector" not in page
    token = csrf_token(user_client, url)
    for action in (release_url, f"{url}/test", f"{url}/test/finish"):
        assert user_client.post(action, data={"csrf_token": token}).status_code == 403, action
    with services.db.session() as session:
        assert session.get(MessageFailure, quarantined_id) is not None


def test_release_of_other_connector_is_refused(
    logged_in, services, ids, saved_password_connector
) -> None:
    response = submit(logged_in, NEW, password_fields(ids, name="Second"))
    assert response.status_code == 302
    second = connector_named(services, "Second").id
    quarantined_id, _ = add_failures(services, saved_password_connector)
    url = f"{BASE}/{second}"
    response = logged_in.post(
        f"{url}/quarantine/{quarantined_id}/release",
        data={"csrf_token": csrf_token(logged_in, url)},
        follow_redirects=True,
    )
    assert "That e-mail is no longer in quarantine" in response.text
    with services.db.session() as session:
        assert session.get(MessageFailure, quarantined_id) is not None


def test_run_history_shows_counts(logged_in, services, saved_password_connector) -> None:
    with services.db.session() as session:
        for number, trigger in enumerate(("schedule", "manual", "test", "cli")):
            run = ConnectorRun(
                connector_id=saved_password_connector,
                trigger=trigger,
                status=RunStatus.PARTIAL,
                started_at=datetime(2026, 12, 1, 8, number, tzinfo=UTC),
                messages_seen=10 + number,
                jobs_created=20 + number,
                messages_skipped=30 + number,
                messages_deleted=40 + number,
            )
            run.problems = [RunProblem(uid=uid, reason="broken") for uid in range(number + 1)]
            session.add(run)
        session.commit()
    page = logged_in.get(f"{BASE}/{saved_password_connector}").text
    header = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert "Skipped" in header
    assert "Errors" in header
    for number, trigger in enumerate(("schedule", "manual", "test", "cli")):
        row = page.split(f"2026-12-01 08:0{number} UTC", 1)[1].split("</tr>", 1)[0]
        cells = [cell.split("</td>")[0].strip() for cell in row.split("<td>")[1:]]
        assert cells[1] == trigger
        assert cells[3:8] == [str(10 + number), str(20 + number), str(30 + number),
                              str(40 + number), str(number + 1)]  # fmt: skip


def test_test_connector_rejects_bad_posts(logged_in, saved_password_connector) -> None:
    url = f"{BASE}/{saved_password_connector}"
    assert logged_in.post(f"{url}/test").status_code == 400
    token = csrf_token(logged_in, url)
    assert logged_in.post(f"{url}/test/finish", data={"csrf_token": token}).status_code == 400
    bad = {"csrf_token": token, "token": "not a token!"}
    assert logged_in.post(f"{url}/test/finish", data=bad).status_code == 400
    assert logged_in.get(f"{url}/test").status_code == 405
    assert logged_in.post(f"{BASE}/999/test", data={"csrf_token": token}).status_code == 404


# Test Connector against Dovecot ------------------------------------------------


@pytest.fixture
def mailbox(mail_stack: MailStack) -> MailStack:
    mail_stack.empty_folder(PASSWORD_USER)
    return mail_stack


@pytest.fixture
def dovecot_connector(logged_in: FlaskClient, services, ids, mailbox: MailStack) -> int:
    """A connector made through the form that logs in with a password over STARTTLS."""
    changes = password_fields(
        ids,
        name="Office mailbox",
        aggregation="separately",
        host="127.0.0.1",
        port=str(mailbox.dovecot.imap_port),
        use_ssl=None,
        username=PASSWORD_USER,
        password=PASSWORD_USER_PASSWORD,
        folder="INBOX",
    )
    response = submit(logged_in, NEW, changes)
    assert response.status_code == 302, read_form(response.text).errors
    return connector_named(services, "Office mailbox").id


def two_pdfs(subject: str) -> bytes:
    return message_with_files(
        subject,
        [("a.pdf", PDF_BYTES, "application/pdf"), ("b.pdf", PDF_BYTES, "application/pdf")],
    )


def mailbox_state(stack: MailStack) -> list[tuple[int, bytes]]:
    """Return (UID, flags) of every message in the password user's INBOX."""
    uids = stack.dovecot.list_uids(PASSWORD_USER)
    if not uids:
        return []
    with stack.dovecot.master_session(PASSWORD_USER) as imap:
        imap.select("INBOX", readonly=True)
        _, lines = imap.uid("FETCH", ",".join(map(str, uids)), "(FLAGS)")
    return list(zip(uids, [line for line in lines if isinstance(line, bytes)], strict=True))


def run_test_connector(client: FlaskClient, connector_id: int, fragment: bool) -> Any:
    url = f"{BASE}/{connector_id}"
    headers = {"X-Requested-With": "XMLHttpRequest"} if fragment else {}
    return client.post(f"{url}/test", data={"csrf_token": csrf_token(client, url)}, headers=headers)


def test_test_connector_lists_mail(logged_in, services, dovecot_connector, mailbox) -> None:
    mailbox.dovecot.deliver(PASSWORD_USER, two_pdfs("Previewed order"))
    mailbox.dovecot.deliver(PASSWORD_USER, message_without_files("Only a question"))
    before = mailbox_state(mailbox)
    assert len(before) == 2

    response = run_test_connector(logged_in, dovecot_connector, fragment=True)
    assert response.status_code == 200
    text = squeeze(response.text)
    assert "<html" not in text
    assert f"Logged in to 127.0.0.1:{mailbox.dovecot.imap_port} as {PASSWORD_USER}" in text
    assert "Folder: <code>INBOX</code>" in text
    assert "2 e-mails in the folder are for this connector, and a run would process 2" in text
    first, second = text.split("data-test-message=")[1:3]
    assert "client@example.org" in first
    assert "Previewed order" in first
    assert "2026-11-30 09:15 UTC" in first
    assert f"<li>a.pdf ({len(PDF_BYTES)} Bytes)</li>" in first
    assert f"<li>b.pdf ({len(PDF_BYTES)} Bytes)</li>" in first
    assert "<li>a.pdf</li><li>b.pdf</li>" in first  # one job per file
    assert "Only a question" in second
    assert "No attachments: no job; the e-mail would stay in the folder" in second
    assert f'action="{BASE}/{dovecot_connector}/test/finish"' in text
    assert 'name="token" type="hidden" value="' in text
    assert mailbox_state(mailbox) == before  # not even a \Seen flag changed

    page = run_test_connector(logged_in, dovecot_connector, fragment=False)
    assert page.text.lstrip().lower().startswith("<!doctype html>")
    assert "Test Connector: Office mailbox" in page.text
    assert "Previewed order" in page.text
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count(Job.id))) == 0


def test_finish_test_processes_previewed_mail(
    logged_in, services, settings, dovecot_connector, mailbox
) -> None:
    mailbox.dovecot.deliver(PASSWORD_USER, two_pdfs("Previewed order"))
    response = run_test_connector(logged_in, dovecot_connector, fragment=True)
    token = response.text.split('name="token" type="hidden" value="', 1)[1].split('"', 1)[0]
    mailbox.dovecot.deliver(PASSWORD_USER, two_pdfs("Arrived after the test"))

    url = f"{BASE}/{dovecot_connector}"
    finish = logged_in.post(
        f"{url}/test/finish",
        data={"csrf_token": csrf_token(logged_in, url), "token": token},
        follow_redirects=True,
    )
    assert finish.request.path == url
    assert "Finish Test started: the previewed e-mails are being processed." in finish.text
    queue = redis_lib.Redis.from_url(settings.redis_url).lrange(SCANS_QUEUE, 0, -1)
    assert len(queue) == 1
    headers = json.loads(queue[0])["headers"]
    assert headers["task"] == "mailroom.connectors.scan"
    assert headers["argsrepr"] == f"({dovecot_connector}, 'test', '{token}')"

    # What the worker would do with the queued message.
    scan.apply(args=(dovecot_connector, "test", token))
    with services.db.session() as session:
        jobs = session.scalars(sa.select(Job).order_by(Job.id)).all()
        assert [job.name for job in jobs] == ["a.pdf", "b.pdf"]
        assert {job.source_subject for job in jobs} == {"Previewed order"}
    remaining = mailbox.dovecot.list_uids(PASSWORD_USER)
    assert len(remaining) == 1
    assert b"Arrived after the test" in mailbox.dovecot.fetch(PASSWORD_USER, remaining[0])
    page = logged_in.get(url).text
    row = page.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert "<td>test</td>" in row
    assert "<td>2</td>" in row  # jobs created


def test_test_connector_error_names_setting(logged_in, services, dovecot_connector) -> None:
    with services.db.session() as session:
        session.get(Connector, dovecot_connector).folder = "Orders"
        session.commit()
    response = run_test_connector(logged_in, dovecot_connector, fragment=True)
    assert response.status_code == 200
    assert "The test failed." in response.text
    assert "Folder &#39;Orders&#39; cannot be opened" in response.text
    assert "Finish Test</button>" not in response.text
    assert f'href="{BASE}/{dovecot_connector}/edit"' in response.text


def test_quarantine_from_real_runs(logged_in, services, dovecot_connector, mailbox) -> None:
    url = edit_url(dovecot_connector)
    assert submit(logged_in, url, {"max_attempts": "2", "password": ""}).status_code == 302
    mailbox.dovecot.deliver(PASSWORD_USER, message_without_files("No files here"))
    ctx = services.intake_context()
    run_connector(ctx, dovecot_connector, "manual")
    run_connector(ctx, dovecot_connector, "manual")
    page = logged_in.get(f"{BASE}/{dovecot_connector}").text
    table = page.split('id="quarantine-table"', 1)[1].split("</table>", 1)[0]
    assert "No files here" in table
    assert "<td>2</td>" in table
    with services.db.session() as session:
        failure_id = session.scalars(sa.select(MessageFailure.id)).one()

    show = f"{BASE}/{dovecot_connector}"
    response = logged_in.post(
        f"{show}/quarantine/{failure_id}/release",
        data={"csrf_token": csrf_token(logged_in, show)},
        follow_redirects=True,
    )
    assert "left quarantine, so the next run processes it again" in response.text
    outcome = run_connector(ctx, dovecot_connector, "manual")
    assert len(outcome.problems) == 1  # tried again, and it fails again
    assert len(mailbox.dovecot.list_uids(PASSWORD_USER)) == 1


def test_quarantine_folder_saved_and_shown(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    response = submit(logged_in, url, {"quarantine_folder": " Mailroom/Errors ", "password": ""})
    assert response.status_code == 302, read_form(response.text).errors
    assert connector_named(services, "Acme orders").quarantine_folder == "Mailroom/Errors"

    page = logged_in.get(url).text
    label = page.split('for="quarantine_folder"', 1)[1].split("</label>", 1)[0]
    assert label.endswith("Quarantine folder")
    assert 'id="quarantine_folder"' in page
    assert 'aria-describedby="quarantine_folder-help"' in page
    values = dict(read_form(page).values)
    assert values["quarantine_folder"] == "Mailroom/Errors"
    assert "quarantine_folder: Mailroom/Errors" in values["robot_code"]
    show = logged_in.get(f"{BASE}/{saved_password_connector}").text
    assert "moves it to folder &#34;Mailroom/Errors&#34;" in show

    cleared = submit(logged_in, url, {"quarantine_folder": "", "password": ""})
    assert cleared.status_code == 302, read_form(cleared.text).errors
    assert connector_named(services, "Acme orders").quarantine_folder is None


def test_robot_code_sets_quarantine_folder(logged_in, services, saved_password_connector) -> None:
    url = edit_url(saved_password_connector)
    text = robot_code_of(logged_in, saved_password_connector)
    data = yaml.safe_load(text)
    data["source"]["quarantine_folder"] = "Mailroom/Errors"
    response = submit(logged_in, url, {"robot_code": dump_robot_code(data), "password": ""})
    assert response.status_code == 302, read_form(response.text).errors
    assert connector_named(services, "Acme orders").quarantine_folder == "Mailroom/Errors"

    # A value the form rejects names the Robot Code line as well.
    data["source"]["quarantine_folder"] = "INBOX/Orders"
    edited = dump_robot_code(data)
    line = edited.splitlines().index("  quarantine_folder: INBOX/Orders") + 1
    response = submit(logged_in, url, {"robot_code": edited, "password": ""})
    assert response.status_code == 200
    message = (
        'Quarantine folder "INBOX/Orders" is the folder this connector scans; enter another '
        "folder, e.g. Mailroom/Errors, or leave it empty."
    )
    assert read_form(response.text).errors == {
        "quarantine_folder": [message],
        "robot_code": [f"Line {line}: source.quarantine_folder: {message}"],
    }
    assert connector_named(services, "Acme orders").quarantine_folder == "Mailroom/Errors"


def test_process_again_from_quarantine_folder(
    logged_in, services, settings, dovecot_connector, mailbox
) -> None:
    folder = f"Mailroom/Errors-{uuid.uuid4().hex[:8]}"
    url = edit_url(dovecot_connector)
    response = submit(
        logged_in, url, {"max_attempts": "1", "quarantine_folder": folder, "password": ""}
    )
    assert response.status_code == 302, read_form(response.text).errors
    with services.db.session() as session:
        session.get(Connector, dovecot_connector).rules = {"include_files": ["*.docx"]}
        session.commit()
    mailbox.dovecot.deliver(
        PASSWORD_USER, message_with_files("Offer", [("offer.pdf", PDF_BYTES, "application/pdf")])
    )
    try:
        ctx = services.intake_context()
        assert run_connector(ctx, dovecot_connector, "manual").status == RunStatus.PARTIAL
        assert mailbox.dovecot.list_uids(PASSWORD_USER) == []
        assert len(mailbox.dovecot.list_uids(PASSWORD_USER, folder)) == 1

        show = f"{BASE}/{dovecot_connector}"
        page = logged_in.get(show).text
        table = page.split('id="quarantine-table"', 1)[1].split("</table>", 1)[0]
        assert "Offer" in table
        assert f'<td class="text-break">{folder}</td>' in table
        assert "No attachment matches the connector&#39;s file patterns" in table
        with services.db.session() as session:
            failure_id = session.scalars(sa.select(MessageFailure.id)).one()

        response = logged_in.post(
            f"{show}/quarantine/{failure_id}/release",
            data={"csrf_token": csrf_token(logged_in, show)},
            follow_redirects=True,
        )
        assert response.request.path == show
        assert (
            f"The e-mail &#34;Offer&#34; from client@example.org is being processed from folder "
            f"&#34;{folder}&#34;." in response.text
        )
        queue = redis_lib.Redis.from_url(settings.redis_url).lrange(SCANS_QUEUE, 0, -1)
        assert len(queue) == 1
        headers = json.loads(queue[0])["headers"]
        assert headers["task"] == "mailroom.connectors.scan"
        assert headers["argsrepr"] == f"({dovecot_connector}, 'retry')"
        assert headers["kwargsrepr"] == f"{{'failure_id': {failure_id}}}"

        # The rule was the reason; the worker then runs the queued task.
        with services.db.session() as session:
            session.get(Connector, dovecot_connector).rules = {}
            session.commit()
        scan.apply(args=(dovecot_connector, "retry"), kwargs={"failure_id": failure_id})
        assert mailbox.dovecot.list_uids(PASSWORD_USER, folder) == []
        with services.db.session() as session:
            jobs = session.scalars(sa.select(Job)).all()
            assert [job.source_subject for job in jobs] == ["Offer"]
            assert session.scalars(sa.select(MessageFailure)).all() == []
        page = logged_in.get(show).text
        assert "No e-mails are quarantined." in page
        newest_run = page.split("<tbody>", 1)[1].split("</tr>", 1)[0]
        assert "<td>retry</td>" in newest_run
    finally:
        with mailbox.dovecot.master_session(PASSWORD_USER) as imap:
            imap.delete(f'"{folder}"')


# In a browser ------------------------------------------------------------------


def log_in_browser(page: Any, live_url: str) -> None:
    page.goto(f"{live_url}/login")
    page.get_by_label("E-mail Address").fill("admin@example.com")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()


def test_form_tabs_in_browser(live_url, browser_page, admin, services, ids) -> None:
    page = browser_page
    log_in_browser(page, live_url)
    page.goto(f"{live_url}{NEW}")

    # Move to folder shows only for that action.
    assert page.locator("#move_to_folder").is_hidden()
    page.get_by_role("radio", name="Move to folder").check()
    assert page.locator("#move_to_folder").is_visible()

    # A store section shows the fields of its location only.
    assert page.locator("#store_success-host").is_hidden()
    page.locator("#store_success-location").select_option("sftp")
    assert page.locator("#store_success-host").is_visible()
    assert page.locator("#store_success-known_host_key").is_visible()
    assert page.locator("#store_success-ftp_tls").is_hidden()
    page.locator("#store_success-location").select_option("folder")
    assert page.locator("#store_success-host").is_hidden()
    assert page.locator("#store_success-path").is_visible()

    # The tabs switch without loading a page, and the schedule shows its own fields.
    page.get_by_role("tab", name="Schedule").click()
    assert page.locator("#interval_minutes").is_visible()
    assert page.locator("#schedule_times").is_hidden()
    page.get_by_role("radio", name="On chosen weekdays at chosen times").check()
    assert page.locator("#schedule_times").is_visible()
    assert page.locator("#interval_minutes").is_hidden()
    page.get_by_role("tab", name="E-mail Notifications").click()
    assert page.get_by_label("A run failed: Client contact").is_visible()
    page.get_by_role("tab", name="Robot Code").click()
    assert "location: email" in page.get_by_role("textbox", name="Robot Code").input_value()
    assert page.locator("#name").is_hidden()


def test_test_connector_dialog_in_browser(
    live_url, browser_page, dovecot_connector, mailbox
) -> None:
    mailbox.dovecot.deliver(PASSWORD_USER, two_pdfs("Shown in the dialog"))
    page = browser_page
    log_in_browser(page, live_url)
    page.goto(f"{live_url}{BASE}/{dovecot_connector}")
    page.get_by_role("button", name="Test Connector").click()
    dialog = page.locator("#test-connector-dialog")
    dialog.get_by_text("Shown in the dialog").wait_for()
    assert "a.pdf" in dialog.inner_text()
    assert page.url == f"{live_url}{BASE}/{dovecot_connector}"  # no page was loaded
    dialog.get_by_role("button", name="Finish Test").click()
    page.get_by_text("Finish Test started: the previewed e-mails are being processed.").wait_for()
