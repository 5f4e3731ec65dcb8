"""The ``flask`` commands an operator scripts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml

from models import Connector, User


def test_users_create_and_list(app) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "Pm@Example.com", "--admin", "--name", "PM"],
        input="long enough password\nlong enough password\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created admin user pm@example.com." in result.output
    listing = runner.invoke(args=["users", "list"])
    assert "pm@example.com\tPM\tadmin\tcan log in" in listing.output
    again = runner.invoke(
        args=["users", "create", "pm@example.com", "--password", "another password"]
    )
    assert again.exit_code != 0
    assert "a user pm@example.com already exists" in again.output


def test_users_create_rejects_short_password(app) -> None:
    result = app.test_cli_runner().invoke(
        args=["users", "create", "x@example.com", "--password", "short"]
    )
    assert result.exit_code != 0
    assert "must be at least 8 characters" in result.output


def test_seed_command(app, services) -> None:
    result = app.test_cli_runner().invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    assert "3 clients" in result.output
    with services.db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == 2


DEFINITION = """
name: Contoso legal intake
type: quote
active: true
client: Contoso Legal LLP
budget_code: CL-LIT
person_responsible: tomasz.nowak@example.com
source_language: en
target_languages: [de, fr]
service: Translation
specialization: Legal
files_aggregation: batch
source:
  location: email
  authorization: oauth2
  provider: microsoft
  host: outlook.office365.com
  port: 993
  use_ssl: true
  username: Intake@Contoso-Legal.example.com
  folder: Quotes
  after_processing: move
  move_to: Processed
  quarantine_folder: Mailroom/Errors
schedule:
  days: [mon, tue, wed, thu, fri]
  times: ["08:00", "13:30"]
  timezone: Europe/Prague
notifications:
  quote_created: {person_responsible: true, client_contact: true}
rules:
  skip_subjects: ["(?i)^out of office"]
  job_name: "{{ subject }}"
options:
  max_attempts: 5
"""


def test_connector_import_export_round_trip(app, services, seeded, tmp_path) -> None:
    source = tmp_path / "connector.yaml"
    source.write_text(DEFINITION)
    runner = app.test_cli_runner()
    created = runner.invoke(args=["connectors", "import", str(source)])
    assert created.exit_code == 0, created.output
    assert "Created connector" in created.output
    with services.db.session() as session:
        connector = session.scalars(sa.select(Connector)).one()
        assert connector.mail_account.email == "intake@contoso-legal.example.com"
        connector_id = connector.id
    exported = runner.invoke(args=["connectors", "export", str(connector_id)])
    assert yaml.safe_load(exported.output) == yaml.safe_load(DEFINITION)
    updated = runner.invoke(args=["connectors", "import", str(source)])
    assert "Updated connector" in updated.output


def test_connector_import_names_the_bad_field(app, seeded, tmp_path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(DEFINITION.replace("budget_code: CL-LIT", "budget_code: NOPE"))
    result = app.test_cli_runner().invoke(args=["connectors", "import", str(source)])
    assert result.exit_code != 0
    assert "budget_code: 'NOPE' is not a budget code of Contoso Legal LLP" in result.output


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("Quotes", "source.quarantine_folder: 'Quotes' is the folder this connector scans"),
        ("Processed", "source.quarantine_folder: 'Processed' is also source.move_to"),
    ],
)
def test_connector_import_checks_quarantine_folder(app, seeded, tmp_path, folder, message) -> None:
    source = tmp_path / "same-folder.yaml"
    source.write_text(DEFINITION.replace("Mailroom/Errors", folder))
    result = app.test_cli_runner().invoke(args=["connectors", "import", str(source)])
    assert result.exit_code != 0
    assert message in result.output


def test_connector_import_reports_lines(app, seeded, tmp_path) -> None:
    source = tmp_path / "bad-schedule.yaml"
    source.write_text(DEFINITION.replace('times: ["08:00", "13:30"]', 'times: ["8 am"]'))
    result = app.test_cli_runner().invoke(args=["connectors", "import", str(source)])
    assert result.exit_code != 0
    assert "is not valid Robot Code" in result.output
    assert "line 27: schedule.times[0]: '8 am' is not a time of day" in result.output


def test_connectors_run_unknown_id(app) -> None:
    result = app.test_cli_runner().invoke(args=["connectors", "run", "4242"])
    assert result.exit_code != 0
    assert "connector 4242 does not exist" in result.output


def test_secrets_rotate_reencrypts(app, services) -> None:
    from cryptography.fernet import Fernet

    from mailauth import SecretBox
    from models import MailAccount

    with services.db.session() as session:
        session.add(
            MailAccount(
                provider="google",
                email="a@example.com",
                client_secret_encrypted=services.box.encrypt("client-secret"),
            )
        )
        session.commit()
    old_key = services.settings.encryption_keys[0]
    new_key = Fernet.generate_key().decode()
    services.box = SecretBox([new_key, old_key])
    result = app.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 1 secrets" in result.output
    with services.db.session() as session:
        stored = session.scalars(sa.select(MailAccount.client_secret_encrypted)).one()
    assert SecretBox([new_key]).decrypt(stored) == "client-secret"
